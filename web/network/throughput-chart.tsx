import {formatRate} from '../../tui/text-graphics.js';
import {THROUGHPUT_WINDOW_MS, type ThroughputSample} from './throughput-samples.js';

const WIDTH = 300;
const HEIGHT = 80;

/** Tokens/s over the last five minutes as inline SVG: a line over a filled area, scaled to the highest rate shown. */
export function ThroughputChart({samples}: {samples: ThroughputSample[]}) {
    const end = samples.at(-1)?.at ?? 0;
    const start = end - THROUGHPUT_WINDOW_MS;
    const highest = Math.max(0, ...samples.map((sample) => sample.tokensPerSecond));
    // Scaled to at least 1 token/s, so an idle node draws a flat line at the bottom.
    const peak = Math.max(1, highest);
    const x = (at: number) => ((at - start) / THROUGHPUT_WINDOW_MS) * WIDTH;
    const y = (rate: number) => HEIGHT - (rate / peak) * (HEIGHT - 4);
    const points = samples.map((sample) => `${x(sample.at).toFixed(1)},${y(sample.tokensPerSecond).toFixed(1)}`);
    const first = samples[0];
    const area = first === undefined ? '' : `M${x(first.at).toFixed(1)},${HEIGHT} L${points.join(' L')} L${x(end).toFixed(1)},${HEIGHT} Z`;
    const current = samples.at(-1)?.tokensPerSecond ?? 0;
    return (
        <figure class="chart">
            <figcaption>
                <span class="big-number">{formatRate(current)}</span> tokens/s now · peak {formatRate(highest)} · last 5 min
            </figcaption>
            <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} preserveAspectRatio="none" role="img" aria-label="tokens per second over the last five minutes">
                <line class="chart-axis" x1="0" y1={HEIGHT - 0.5} x2={WIDTH} y2={HEIGHT - 0.5}/>
                {samples.length > 1 && <path class="chart-area" d={area}/>}
                {samples.length > 1 && <polyline class="chart-line" points={points.join(' ')}/>}
            </svg>
            {samples.length < 2 && <p class="muted">Measuring: a sample every few seconds while this page is open.</p>}
        </figure>
    );
}
