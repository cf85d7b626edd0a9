/** Peers that broke the protocol are shut out for a while, longer each time they do it again. */

export interface BanListOptions {
    /** The ban for a first offence, a second, …; the last repeats. Defaults to 1 min, 5 min, 30 min, 6 h. */
    durationsMs: number[],
    /** A peer that behaved this long after its last ban starts again from the shortest; defaults to 24 h. */
    forgiveAfterMs: number
}

export const banListDefaults: BanListOptions = {
    durationsMs: [60_000, 5 * 60_000, 30 * 60_000, 6 * 60 * 60_000],
    forgiveAfterMs: 24 * 60 * 60_000
};

export interface BanRecord {
    peerId: string,
    reason: string,
    offences: number,
    bannedAt: number,
    until: number
}

export class BanList {
    private readonly records = new Map<string, BanRecord>();
    private readonly options: BanListOptions;

    constructor(options: Partial<BanListOptions> = {}) {
        this.options = {...banListDefaults, ...options};
    }

    ban(peerId: string, reason: string, now = Date.now()): BanRecord {
        const previous = this.records.get(peerId);
        const {durationsMs, forgiveAfterMs} = this.options;
        const offences = previous && now - previous.until < forgiveAfterMs ? previous.offences + 1 : 1;
        const duration = durationsMs[Math.min(offences, durationsMs.length) - 1]!;
        const record = {peerId, reason, offences, bannedAt: now, until: now + duration};
        this.records.set(peerId, record);
        return record;
    }

    isBanned(peerId: string, now = Date.now()) {
        const record = this.records.get(peerId);
        return record !== undefined && record.until > now;
    }

    active(now = Date.now()) {
        return [...this.records.values()].filter((record) => record.until > now);
    }
}
