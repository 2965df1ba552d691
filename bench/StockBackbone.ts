// The baselines: the stock Qwen3 backbone (tied LM head) run through node-llama-cpp's low-level sequence API, on the
// llama.cpp that qwenguard itself uses in this process.

import type {Llama, LlamaContext, LlamaContextSequence, LlamaModel, Token} from "node-llama-cpp";

/** How the baseline context is made: the settings the Stream engine uses, so that only the work differs. */
export interface StockContextOptions {
    /** KV cells (the longest sequence the baseline runs). */
    contextSize: number,
    /** CPU threads: used as node-llama-cpp's ideal and minimum, so that it always runs with exactly this many. */
    threads: number,
    /** Most tokens per llama_decode (the Stream engine's default is 512). */
    batchSize: number,
    /** Default `"auto"`, as the Stream engine's context (llama_context_default_params): llama.cpp decides. */
    flashAttention?: "auto" | boolean
}

/**
 * One sequence of a node-llama-cpp context over the stock backbone, with the three ways a Qwen3 model is run:
 * tokens fed with no output (the floor), greedy generation (a chat model), and prompt evaluation.
 */
export class StockBackbone {
    private constructor(
        readonly model: LlamaModel,
        private readonly context: LlamaContext,
        readonly sequence: LlamaContextSequence
    ) {}

    /**
     * Loads the model and makes a one-sequence context.
     * @param llama - the runtime from `loadLlamaRuntime()` (one llama.cpp per process)
     * @param modelPath - the stock GGUF
     * @param gpuLayers - as the Stream model was loaded with
     */
    static async load(llama: Llama, modelPath: string, gpuLayers: number, options: StockContextOptions): Promise<StockBackbone> {
        const model = await llama.loadModel({modelPath, gpuLayers});
        const context = await model.createContext({
            contextSize: options.contextSize,
            batchSize: options.batchSize,
            threads: {ideal: options.threads, min: options.threads},
            flashAttention: options.flashAttention ?? "auto",
            sequences: 1
        });
        return new StockBackbone(model, context, context.getSequence());
    }

    /** Tokens the sequence holds. */
    get length(): number {
        return this.sequence.nextTokenIndex;
    }

    /** Appends tokens with no output at all: no LM head, no sampling (`evaluateWithoutGeneratingNewTokens`). */
    feed(tokens: readonly number[]): Promise<void> {
        return this.sequence.evaluateWithoutGeneratingNewTokens(tokens as Token[]);
    }

    /**
     * Greedy generation as a chat model runs: evaluates `input` in one pass with the last position's logits, samples
     * the most probable token, feeds it back, and so on until `count` tokens have been generated (or the model ends
     * its answer). Every generated token after the first costs one single-token llama_decode with the LM head.
     * @returns how many tokens were generated
     */
    async generate(input: readonly number[], count: number): Promise<number> {
        let generated = 0;
        for await (const token of this.generator(input)) {
            void token;
            if (++generated >= count)
                break;
        }
        return generated;
    }

    /**
     * The greedy generator itself, for stepping it one token at a time: each `next()` is one llama_decode with the LM
     * head (the first one over all of `input`) and one greedy sample. Call `return()` when done.
     */
    generator(input: readonly number[]): AsyncGenerator<Token, void, void> {
        return this.sequence.evaluate(input as Token[], {temperature: 0});
    }

    /** Keeps the first `length` tokens of the sequence. */
    async truncate(length: number): Promise<void> {
        if (length < this.sequence.nextTokenIndex)
            await this.sequence.eraseContextTokenRanges([{start: length, end: this.sequence.nextTokenIndex}]);
    }

    /** Tokenizes with the model's vocabulary (special tokens parsed when `special`). */
    tokenize(text: string, special: boolean): Int32Array {
        return Int32Array.from(this.model.tokenize(text, special));
    }

    /** Frees the context and the model. */
    async dispose(): Promise<void> {
        await this.context.dispose();
        await this.model.dispose();
    }
}
