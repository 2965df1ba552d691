import type {AddonStreamContext, AddonStreamRequest, AddonStreamResult} from "../native/AddonTypes.js";

interface Pending {
    request: AddonStreamRequest,
    resolve: (result: AddonStreamResult) => void,
    reject: (error: unknown) => void
}

/**
 * Coalesces the requests that sessions make at the same time into one native evaluate call, so tokens of several
 * sessions share one llama_decode. Requests arriving while a call runs go into the next one.
 */
export class StreamEvaluator {
    private pending: Pending[] = [];
    private running = false;

    constructor(private readonly context: AddonStreamContext) {}

    /** Queues a request; resolves with its result once the batch it joined has been decoded. */
    evaluate(request: AddonStreamRequest): Promise<AddonStreamResult> {
        return new Promise((resolve, reject) => {
            this.pending.push({request, resolve, reject});
            if (!this.running) {
                this.running = true;
                // let the other sessions of this tick queue their requests before the batch is sent
                setImmediate(() => void this.drain());
            }
        });
    }

    private async drain(): Promise<void> {
        while (this.pending.length > 0) {
            const batch = this.pending;
            this.pending = [];
            try {
                const results = await this.context.evaluate(batch.map((item) => item.request));
                batch.forEach((item, index) => item.resolve(results[index]));
            } catch (error) {
                // the native call is all or nothing: retry each request alone, so only the one at fault fails
                if (batch.length === 1)
                    batch[0].reject(error);
                else
                    for (const item of batch)
                        await this.context.evaluate([item.request]).then(([result]) => item.resolve(result), item.reject);
            }
        }
        this.running = false;
    }
}
