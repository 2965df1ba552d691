import type {LlamaContext} from "node-llama-cpp";

/** The one method of node-llama-cpp 3.21.1's native context object that this module wraps. */
interface NativeSampling {
    sampleToken: (...args: unknown[]) => Promise<unknown>;
}

/**
 * Makes the samplings of one node-llama-cpp context run one at a time.
 *
 * Why: when one decode holds several sequences, llama.cpp may compute their output rows out of order and records
 * the swaps that put them back; the first read of the logits applies the swaps and clears the list
 * (`llama_context::output_reorder`, not thread-safe). node-llama-cpp 3.21.1 starts one sampling AsyncWorker per
 * sequence right after such a decode, and those workers run on different threads: two of them can apply the swaps
 * at once (undoing them), and each sequence then samples the other's logits. Measured on the planted Gen model with
 * 2 parallel sequences per target: wrong answers in most rounds of 14 concurrent requests. Serialized, the first
 * sampling reorders alone and every later one reads settled rows. A sampling costs far less than the decode it
 * follows, so the decode batching that makes parallel sequences worth having is kept.
 * @throws Error when the context is not node-llama-cpp 3.21.1's (no native `sampleToken` to wrap)
 */
export function serializeSampling(context: LlamaContext): void {
    const native = (context as unknown as {_ctx?: Partial<NativeSampling>})._ctx;
    const sampleToken = native?.sampleToken;
    if (native == null || typeof sampleToken !== "function")
        throw new Error("Expected node-llama-cpp 3.21.1's native context (with sampleToken) to serialize its samplings, " +
            "but it has none: is another node-llama-cpp version installed?");
    let last: Promise<unknown> = Promise.resolve();
    const serialized = (...args: unknown[]) => {
        const sampled = last.then(() => sampleToken.apply(native, args));
        last = sampled.catch(() => undefined);
        return sampled;
    };
    // the native method is a read-only property of the prototype: shadow it on this one object
    Object.defineProperty(native, "sampleToken", {value: serialized, configurable: true});
}
