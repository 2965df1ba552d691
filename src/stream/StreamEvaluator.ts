import type {AddonStreamContext, AddonStreamRequest, AddonStreamResult} from "../native/AddonTypes.js";

interface Pending {
    request: AddonStreamRequest,
    resolve: (result: AddonStreamResult) => void,
    reject: (error: unknown) => void
}

/**
 * Longest wait for the rest of a batch, as a share of the last decode's time: a batch that waits this long and fills
 * saves a whole decode; one that does not fill has cost at most this share of one. Capped by {@link MAX_WAIT_MS}.
 */
const WAIT_SHARE = 0.1;
const MAX_WAIT_MS = 10;

/**
 * Coalesces the requests that sessions make at the same time into one native evaluate call, so tokens of several
 * sessions share one llama_decode. Requests arriving while a call runs go into the next one.
 *
 * Sessions driven from outside (a server's clients, each waiting for its last answer before it sends its next token)
 * do not all arrive in one tick: the first would be decoded alone and the others in a second call while it waits,
 * two decodes a step where one would do, and the sessions stay out of step. So a batch smaller than the last one
 * waits a little for the rest (a turn of the event loop, then at most a tenth of the last decode's time, 10 ms): after one such step they arrive
 * together again. A lone session never waits (its batch is never smaller than the last).
 */
export class StreamEvaluator {
    /** Native evaluate calls made, the requests they held, and the tokens llama.cpp decoded in them (its timings). */
    readonly stats = {calls: 0, requests: 0, decodedTokens: 0};
    private pending: Pending[] = [];
    private running = false;
    /** Requests in the last batch decoded, and how long it took. */
    private lastBatch = 0;
    private lastDecodeMs = 0;
    private filled: (() => void) | undefined;

    constructor(private readonly context: AddonStreamContext) {}

    /** Queues a request; resolves with its result once the batch it joined has been decoded. */
    evaluate(request: AddonStreamRequest): Promise<AddonStreamResult> {
        return new Promise((resolve, reject) => {
            this.pending.push({request, resolve, reject});
            if (this.pending.length >= this.lastBatch)
                this.filled?.();
            if (!this.running) {
                this.running = true;
                // let the other sessions of this tick queue their requests before the batch is sent
                setImmediate(() => void this.drain());
            }
        });
    }

    /**
     * Waits until the pending requests are as many as the last batch: one turn of the event loop at least (what the
     * other clients sent meanwhile is read in it), then at most the bound.
     */
    private async gather(): Promise<void> {
        if (this.pending.length >= this.lastBatch)
            return;
        const bound = Math.min(MAX_WAIT_MS, WAIT_SHARE * this.lastDecodeMs);
        const start = performance.now();
        await new Promise((resolve) => setImmediate(resolve));
        const left = bound - (performance.now() - start);
        if (this.pending.length >= this.lastBatch || left <= 0)
            return;
        await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, left);
            this.filled = () => {
                clearTimeout(timer);
                resolve();
            };
        });
        this.filled = undefined;
    }

    private async drain(): Promise<void> {
        while (this.pending.length > 0) {
            await this.gather();
            const batch = this.pending;
            this.pending = [];
            const start = performance.now();
            // a synchronous throw (bad arguments, a context disposed meanwhile) becomes that call's rejection
            const evaluate = (requests: AddonStreamRequest[]) => Promise.resolve().then(() => this.context.evaluate(requests));
            const results = await evaluate(batch.map((item) => item.request)).then((value) => value, (error: unknown) => error as Error);
            if (Array.isArray(results)) {
                this.count(batch.length);
                batch.forEach((item, index) => item.resolve(results[index]));
            } else if (batch.length === 1) {
                batch[0].reject(results);
            } else {
                // the native call is all or nothing: retry each request alone, so only the one at fault fails
                for (const item of batch)
                    await evaluate([item.request]).then(([result]) => {
                        this.count(1);
                        item.resolve(result);
                    }, item.reject);
            }
            this.lastBatch = batch.length;
            this.lastDecodeMs = performance.now() - start;
        }
        this.running = false;
    }

    /** Counts a call that succeeded (the context's timings are those of the call that just finished; once the context
     * is disposed it has none, and its tokens are not counted). */
    private count(requests: number): void {
        this.stats.calls++;
        this.stats.requests += requests;
        try {
            this.stats.decodedTokens += this.context.lastTimings().tokens;
        } catch {
            // disposed meanwhile: the results are still good
        }
    }
}
