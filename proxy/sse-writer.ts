import type {Response} from 'express';

/** Server-sent events as OpenAI streams them: `data: <json>` frames, then `data: [DONE]`. */
export class SseWriter {
    private opened = false;

    constructor(private readonly res: Response) {}

    get isOpen() {
        return this.opened;
    }

    open() {
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
        if (!this.res.writableEnded)
            this.res.write(`data: ${JSON.stringify(data)}\n\n`);
    }

    done() {
        if (!this.res.writableEnded)
            this.res.end('data: [DONE]\n\n');
    }
}
