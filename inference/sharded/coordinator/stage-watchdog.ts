import type {ActiveStage, Formation} from './pipeline-types.js';
import {shortPeerId} from '../../../core/display.js';

/** How often weight-transfer progress is reported while a pipeline loads. */
const TRANSFER_REPORT_INTERVAL_MS = 2_000;

export interface StageWatchdogOptions {
    /** How often it looks at the stages. */
    intervalMs: number,
    /** The formation running now; undefined between formations and once one failed. */
    formation: () => Formation | undefined,
    /** The engine's work: loading the model, requests running, and requests whose attempt has streamed no token yet. */
    work: () => {loading: boolean, running: number, prefilling: number},
    /** A stage kept the coordinator waiting past its deadline while work was in flight. */
    onStalled: (peerId: string, reason: string) => void,
    /** Weights sent to the stages so far, every few seconds while loading (the dashboard shows them live). */
    onTransfer: (stages: {peer: string, sentBytes: number, transferBytes: number}[]) => void
}

/** Watches a pipeline's remote stages (docs/architecture.md, "Sharding"): a stage that stalls is gone. */
export class StageWatchdog {
    private readonly options: StageWatchdogOptions;
    private timer: NodeJS.Timeout | undefined;
    private lastTransferReportAt = 0;

    constructor(options: StageWatchdogOptions) {
        this.options = options;
    }

    start() {
        this.timer = setInterval(() => this.check(), this.options.intervalMs);
        this.timer.unref();
    }

    stop() {
        clearInterval(this.timer);
    }

    private check() {
        const formation = this.options.formation();
        if (formation === undefined)
            return;
        const work = this.options.work();
        if (work.loading)
            this.reportTransfer(formation.stages);
        if (!work.loading && work.running === 0)
            return;
        const prefilling = work.loading || work.prefilling > 0;
        const now = performance.now();
        for (const stage of formation.stages) { // this node's own output device is not watched: it does not vanish silently
            const waiting = stage.endpoint.waitingMs(now);
            if (stage.endpoint.stall.stalled(waiting, prefilling)) {
                this.options.onStalled(stage.peerId, `no answer for ${Math.round(waiting)} ms (deadline ${Math.round(stage.endpoint.stall.deadlineMs(prefilling))} ms)`);
                return;
            }
        }
    }

    private reportTransfer(active: ActiveStage[]) {
        const now = Date.now();
        if (now - this.lastTransferReportAt < TRANSFER_REPORT_INTERVAL_MS)
            return;
        this.lastTransferReportAt = now;
        const stages = active.map((stage) => ({peer: shortPeerId(stage.peerId), sentBytes: stage.endpoint.bytesToStage, transferBytes: stage.transferBytes}));
        if (stages.some((stage) => stage.sentBytes > 0))
            this.options.onTransfer(stages);
    }
}
