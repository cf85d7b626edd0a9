/** Peers that broke the protocol are shut out for a while, longer each time they do it again. */

const BAN_DURATIONS_MS = [60_000, 5 * 60_000, 30 * 60_000, 6 * 60 * 60_000];
/** A peer that behaved this long after its last ban starts again from the shortest ban. */
const FORGIVE_AFTER_MS = 24 * 60 * 60_000;

export interface BanRecord {
    peerId: string,
    reason: string,
    offences: number,
    bannedAt: number,
    until: number
}

export class BanList {
    private readonly records = new Map<string, BanRecord>();

    ban(peerId: string, reason: string, now = Date.now()): BanRecord {
        const previous = this.records.get(peerId);
        const offences = previous && now - previous.until < FORGIVE_AFTER_MS ? previous.offences + 1 : 1;
        const duration = BAN_DURATIONS_MS[Math.min(offences, BAN_DURATIONS_MS.length) - 1]!;
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
