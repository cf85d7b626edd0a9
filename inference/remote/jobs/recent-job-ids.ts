/**
 * Job ids that ended lately, oldest forgotten first: frames for them still arrive for a while (a cancel crosses the
 * last tokens on the wire) and are no violation; a frame for a job id never seen is.
 */
export class RecentJobIds {
    private readonly ids = new Set<string>();

    constructor(private readonly capacity = 4096) {}

    add(jobId: string) {
        this.ids.add(jobId);
        if (this.ids.size > this.capacity)
            this.ids.delete(this.ids.values().next().value!);
    }

    has(jobId: string) {
        return this.ids.has(jobId);
    }
}
