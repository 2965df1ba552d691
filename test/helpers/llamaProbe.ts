// Reading what llama.cpp (through node-llama-cpp, CPU only) computes for a converted GGUF: the last token's logits and
// hidden state, for comparison with the float64 reference.

import {getLlama} from "node-llama-cpp";
import type {Llama, LlamaModel, Token} from "node-llama-cpp";

// One thread: the test models are tiny, and ggml's spinning worker threads slow a busy two-core machine down by an
// order of magnitude (41 short evaluations: 71 s with the default 6 threads, 4 s with one).
const THREADS = 1;

let llamaPromise: Promise<Llama> | undefined;

/** The process's CPU-only llama.cpp runtime (created once). */
export async function cpuLlama(): Promise<Llama> {
    llamaPromise ??= getLlama({gpu: false});
    return llamaPromise;
}

/**
 * Load a GGUF with an F32 KV cache and flash attention off, so that comparisons with the reference measure the
 * weights' precision and not llama.cpp's default F16 cache (which alone costs about 1e-3 relative error).
 * @param modelPath - the GGUF file
 */
export async function loadExactModel(modelPath: string): Promise<LlamaModel> {
    const llama = await cpuLlama();
    return llama.loadModel({
        modelPath,
        defaultContextFlashAttention: false,
        experimentalDefaultContextKvCacheKeyType: "F32",
        experimentalDefaultContextKvCacheValueType: "F32"
    });
}

/**
 * The logits after the last token, up to a constant: llama.cpp's next-token log-probabilities (node-llama-cpp returns
 * the softmax of the raw logits for greedy sampling), minus their mean.
 * @param model - a model with an LM head
 * @param tokens - the input, fed from position 0
 * @returns one centred logit per vocabulary entry
 */
export async function lastTokenCentredLogits(model: LlamaModel, tokens: readonly number[]): Promise<Float64Array> {
    const context = await model.createContext({contextSize: 512, threads: THREADS});
    try {
        const input = tokens as Token[];
        const results = await context.getSequence().controlledEvaluate([...input.slice(0, -1), [input[input.length - 1], {generateNext: {probabilities: true}}]]);
        const probabilities = results[results.length - 1]?.next?.probabilities;
        const vocabularySize = model.fileInfo.metadata.tokenizer.ggml.tokens.length;
        if (probabilities?.size !== vocabularySize)
            throw new Error(`Expected ${vocabularySize} next-token probabilities from llama.cpp but got ${probabilities?.size ?? "none"}`);

        const logProbabilities = new Float64Array(vocabularySize);
        for (const [token, probability] of probabilities)
            logProbabilities[token] = Math.log(probability);
        return centred(logProbabilities);
    } finally {
        await context.dispose();
    }
}

/**
 * The hidden state llama.cpp returns as the embedding of the last token (final RMSNorm output, pooling NONE), for
 * each prefix `tokens[0 … n-1]` with n in `prefixLengths`.
 * @param model - a `qwen3` model
 * @param tokens - the input
 * @param prefixLengths - the prefix lengths to evaluate (each a fresh pass from position 0)
 */
export async function lastTokenHiddenStates(model: LlamaModel, tokens: readonly number[], prefixLengths: readonly number[]): Promise<Float64Array[]> {
    const context = await model.createEmbeddingContext({contextSize: 512, threads: THREADS});
    try {
        const states: Float64Array[] = [];
        for (const length of prefixLengths)
            states.push(Float64Array.from((await context.getEmbeddingFor(tokens.slice(0, length) as Token[])).vector));
        return states;
    } finally {
        await context.dispose();
    }
}

/**
 * The values minus their mean (logits are defined up to a constant).
 * @param values - any numbers
 */
export function centred(values: ArrayLike<number>): Float64Array {
    const data = Float64Array.from(values);
    const mean = data.reduce((sum, value) => sum + value, 0) / data.length;
    return data.map((value) => value - mean);
}
