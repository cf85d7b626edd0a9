import type {Response} from 'express';

/**
 * A streamed response whose 200 goes out with its first frame, so a request refused before it produced anything
 * (a full queue, a prompt too long) still gets its real status.
 */
abstract class StreamWriter {
    private opened = false;

    constructor(private readonly res: Response, private readonly contentType: string) {}

    get isOpen() {
        return this.opened;
    }

    private open() {
        this.res.status(200);
        this.res.setHeader('Content-Type', this.contentType);
        this.res.setHeader('Cache-Control', 'no-cache');
        this.res.setHeader('Connection', 'keep-alive');
        this.res.setHeader('X-Accel-Buffering', 'no'); // reverse proxies must not hold tokens back
        this.res.flushHeaders();
        this.res.socket?.setNoDelay(true);
        this.opened = true;
    }

    protected write(frame: string) {
        if (this.res.writableEnded)
            return;
        if (!this.opened)
            this.open();
        this.res.write(frame);
    }

    protected finish(lastFrame: string) {
        this.write(lastFrame);
        if (!this.res.writableEnded)
            this.res.end();
    }
}

/** Server-sent events as OpenAI streams them: `data: <json>` frames, then `data: [DONE]`. */
export class SseWriter extends StreamWriter {
    constructor(res: Response) {
        super(res, 'text/event-stream; charset=utf-8');
    }

    send(data: unknown) {
        this.write(`data: ${JSON.stringify(data)}\n\n`);
    }

    done() {
        this.finish('data: [DONE]\n\n');
    }
}

/** Server-sent events with an `event:` name on each, as Anthropic streams: no end marker, the stream just ends. */
export class NamedSseWriter extends StreamWriter {
    constructor(res: Response) {
        super(res, 'text/event-stream; charset=utf-8');
    }

    send(event: string, data: object) {
        this.write(`event: ${event}\ndata: ${JSON.stringify({type: event, ...data})}\n\n`);
    }

    done() {
        this.finish('');
    }
}

/** One JSON object per line, as Ollama streams. */
export class NdjsonWriter extends StreamWriter {
    constructor(res: Response) {
        super(res, 'application/x-ndjson');
    }

    send(data: unknown) {
        this.write(`${JSON.stringify(data)}\n`);
    }

    done() {
        this.finish('');
    }
}
