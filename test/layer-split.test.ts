import test from 'ava';
import {layerSplit} from '../inference/sharded/layer-split.js';
import {StallDetector} from '../inference/stall-detector.js';

/**
 * Where llama.cpp puts each layer for the memory the stages report, computed as llama.cpp does (float cumulative
 * shares, `upper_bound`; llama-model.cpp): -1 for the coordinator's CPU, else the RPC device; the output layer last.
 */
function llamaPlacement(totalLayers: number, gpuLayers: number, reportedBytes: bigint[]): number[] {
    const shares = new Float32Array(reportedBytes.length);
    let sum = 0;
    reportedBytes.forEach((bytes, index) => {
        sum = Math.fround(sum + Number(bytes));
        shares[index] = sum;
    });
    for (let index = 0; index < shares.length; index++)
        shares[index] = Math.fround(shares[index]! / sum);
    const firstOffloaded = Math.max(totalLayers + 1 - gpuLayers, 0);
    const offloaded = Math.min(gpuLayers, totalLayers + 1);
    return Array.from({length: totalLayers + 1}, (_, layer) => {
        if (layer < firstOffloaded)
            return -1;
        const position = Math.fround((layer - firstOffloaded) / offloaded);
        const device = shares.findIndex((share) => share > position);
        return device === -1 ? shares.length : device; // llama.cpp would index past its devices
    });
}

function expectedPlacement(coordinatorLayers: number, remoteLayers: number[]) {
    const placement = Array.from({length: coordinatorLayers}, () => -1);
    remoteLayers.forEach((count, device) => {
        placement.push(...Array.from({length: count}, () => device));
    });
    placement.push(remoteLayers.length - 1); // the output layer
    return placement;
}

test('every split of up to 200 layers over up to 6 remote stages lands exactly as planned', (t) => {
    let checked = 0;
    for (let seed = 1; seed <= 4000; seed++) {
        // A deterministic spread of shapes: lopsided, even, single-layer stages, many layers.
        const stages = 1 + (seed % 6);
        const coordinatorLayers = (seed * 7) % 11;
        const remoteLayers = Array.from({length: stages}, (_, index) => 1 + ((seed * (index + 3) * 13) % (seed % 2 === 0 ? 5 : 37)));
        const total = coordinatorLayers + remoteLayers.reduce((sum, count) => sum + count, 0);
        if (total > 200)
            continue;
        const split = layerSplit(coordinatorLayers, remoteLayers);
        t.is(split.gpuLayers, total - coordinatorLayers + 1);
        t.deepEqual(llamaPlacement(total, split.gpuLayers, split.reportedBytes), expectedPlacement(coordinatorLayers, remoteLayers),
            `coordinator ${coordinatorLayers}, remote ${remoteLayers.join(',')}`);
        checked++;
    }
    t.true(checked > 1000);
});

test('the last device may take the output layer alone: the coordinator keeps the logits', (t) => {
    for (const [coordinatorLayers, remote] of [[0, [8]], [3, [2, 3]], [1, [1, 1, 1, 1, 1, 1, 1]], [0, [40, 41, 39]]] as const) {
        const devices = [...remote, 0];
        const total = coordinatorLayers + remote.reduce((sum, count) => sum + count, 0);
        const split = layerSplit(coordinatorLayers, devices);
        t.deepEqual(llamaPlacement(total, split.gpuLayers, split.reportedBytes), expectedPlacement(coordinatorLayers, devices));
        t.is(llamaPlacement(total, split.gpuLayers, split.reportedBytes).at(-1), remote.length, 'the output layer is on the last device');
    }
});

test('a split needs at least one device, each but the last with a layer', (t) => {
    t.throws(() => layerSplit(4, []), {instanceOf: RangeError});
    t.throws(() => layerSplit(4, [0, 2]), {instanceOf: RangeError});
    t.throws(() => layerSplit(4, [2, -1]), {instanceOf: RangeError});
    t.throws(() => layerSplit(-1, [2]), {instanceOf: RangeError});
    t.throws(() => layerSplit(1.5, [2]), {instanceOf: RangeError});
});

test('the stall deadline follows the median answer, with a floor, and a higher floor while a prompt is processed', (t) => {
    const stall = new StallDetector({floorMs: 1000, prefillFloorMs: 20_000, factor: 10, window: 5});
    t.is(stall.medianMs, null);
    t.is(stall.deadlineMs(false), 1000);
    t.is(stall.deadlineMs(true), 20_000);
    t.false(stall.stalled(1000, false));
    t.true(stall.stalled(1001, false));
    for (const ms of [200, 300, 250])
        stall.record(ms);
    t.is(stall.medianMs, 250);
    t.is(stall.deadlineMs(false), 2500);
    // One slow answer does not stretch the deadline: the median does not move much.
    stall.record(10_000);
    t.is(stall.deadlineMs(false), 3000);
    // Only the last `window` answers count.
    for (const ms of [150, 150, 150, 150, 150])
        stall.record(ms);
    t.is(stall.medianMs, 150);
    t.is(stall.deadlineMs(false), 1500);
    t.is(stall.deadlineMs(true), 20_000);
});

test('a burst of tokens after a long pass counts as one answer: a peer decoding speculatively is not taken for stalled', (t) => {
    // The defaults: 20 × the median, at least 1.5 s. A pass of 1.6 s yields 4 tokens, sent together: the first
    // frame after the pass, three more within a moment (or within 20 ms each on a busy machine).
    for (const spread of [0.2, 20]) {
        const stall = new StallDetector();
        for (let pass = 0; pass < 10; pass++)
            for (const ms of [1600, spread, spread, spread])
                stall.record(ms);
        t.is(stall.medianMs, 1600, `frames ${spread} ms apart`);
        t.is(stall.deadlineMs(false), 32_000);
        t.false(stall.stalled(2000, false), 'the next pass, a little longer');
    }
    // Passes too short to lift the deadline above the floor: their bursts count, and change nothing.
    const fast = new StallDetector();
    for (let pass = 0; pass < 10; pass++)
        for (const ms of [40, 0.2, 0.2, 0.2])
            fast.record(ms);
    t.is(fast.deadlineMs(false), 1500);
    // A fast peer's one slow answer is not a burst's head that hides the answers after it: the deadline stays.
    const hiccup = new StallDetector();
    for (const ms of [...Array(30).fill(3), 500, ...Array(30).fill(3)])
        hiccup.record(ms);
    t.is(hiccup.medianMs, 3);
    t.is(hiccup.deadlineMs(false), 1500);
    t.true(hiccup.stalled(1501, false));
});
