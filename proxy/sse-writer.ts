import type {Response} from 'express';

/**
 * Server-sent events as OpenAI streams them: `data: <json>` frames, then `data: [DONE]`. The 200 goes out with
 * the first frame, so a request refused before it produced anything (a full queue, a prompt too long) still gets
 * its real status.
 */
export class SseWriter {
    private opened = false;

    constructor(private readonly res: Response) {}

    get isOpen() {
        return this.opened;
    }

    private open() {
        this.res.status(200);
        this.res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
        this.res.setHeader('Cache-Control', 'no-cache');
        this.res.setHeader('Connection', 'keep-alive');
        this.res.setHeader('X-Accel-Buffering', 'no'); // reverse proxies must not hold tokens back
        this.res.flushHeaders();
        this.res.socket?.setNoDelay(true);
        this.opened = true;
    }

    send(data: unknown) {
        if (this.res.writableEnded)
            return;
        if (!this.opened)
            this.open();
        this.res.write(`data: ${JSON.stringify(data)}\n\n`);
    }

    done() {
        if (this.res.writableEnded)
            return;
        if (!this.opened)
            this.open();
        this.res.end('data: [DONE]\n\n');
    }
}
