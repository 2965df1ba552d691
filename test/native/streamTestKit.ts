// Shared by the Stream engine tests: converted fixture models, the addon, and comparisons with the float64 reference.

import path from "node:path";
import type {Test} from "tap";
import {convert} from "../../gguf/convert/convert.js";
import type {OutType} from "../../gguf/convert/ModelConverter.js";
import {loadLlamaRuntime} from "../../src/native/loadAddon.js";
import type {
    Addon, AddonStreamContext, AddonStreamContextOptions, AddonStreamModel, AddonStreamModelInfo
} from "../../src/native/AddonTypes.js";
import {cachedFixture} from "../helpers/fixtures.js";
import type {FixtureKind} from "../helpers/fixtures.js";
import type {ReferenceModel, StreamScores} from "../helpers/referenceForward.js";
import {tempDir} from "../gguf/ggufTestKit.js";

export {expectError, tempDir} from "../gguf/ggufTestKit.js";

/** A fixture checkpoint and its conversion. */
export interface ConvertedStream {
    readonly hfDir: string;
    readonly modelPath: string;
    readonly headPath: string;
}

/**
 * Converts a fixture checkpoint (generated once into the fixture cache) into a temporary directory of the test.
 * @param kind - the fixture, e.g. `"tiny-stream"`
 * @param dtype - the checkpoint's dtype
 * @param outType - the GGUF's weight type
 */
export async function convertedFixture(
    t: Test, kind: FixtureKind, dtype: "BF16" | "F32", outType: OutType, seed = 1
): Promise<ConvertedStream> {
    const hfDir = await cachedFixture(kind, {dtype, seed});
    const dir = await tempDir(t);
    const modelPath = path.join(dir, `${kind}-${outType}.gguf`);
    const result = await convert(hfDir, {outFile: modelPath, outType});
    const headPath = result.companionFiles[0] ?? "";
    return {hfDir, modelPath, headPath};
}

/** The addon, loaded after node-llama-cpp's CPU flavour. */
export async function streamAddon(): Promise<Addon> {
    return (await loadLlamaRuntime({gpu: false})).addon;
}

/** Loads a converted model on the CPU; disposed when the test ends. */
export async function loadStreamModel(t: Test, model: ConvertedStream, headPath = model.headPath): Promise<AddonStreamModel> {
    const addon = await streamAddon();
    const loaded = await addon.StreamModel.load({modelPath: model.modelPath, headPath, gpuLayers: 0, useMmap: true});
    t.teardown(() => loaded.dispose().catch(() => {}));
    return loaded;
}

/** Small, single-threaded contexts keep the tests steady on a busy two-core machine; the rest as StreamGuard sets it on
 * the CPU. */
export const SMALL_CONTEXT: AddonStreamContextOptions = {
    contextSize: 512, maxSequences: 4, batchSize: 64, ubatchSize: 128, outputBatchSize: 64, threads: 1, flashAttention: "off", stopAfterHidden: true,
    kvLayout: "shared", cacheTypeK: "f16", cacheTypeV: "f16"
};

/** Creates a context, disposed (before its model) when the test ends. */
export async function createStreamContext(
    t: Test, model: AddonStreamModel, options: Partial<AddonStreamContextOptions> = {}
): Promise<AddonStreamContext> {
    const context = await model.createContext({...SMALL_CONTEXT, ...options});
    t.teardown(() => context.dispose());
    return context;
}

/** A rendered ChatML exchange, as the Stream protocol feeds it. */
export const CHATML_EXCHANGE = "<|im_start|>user\nHow do I bake bread at home?<|im_end|>\n" +
    "<|im_start|>assistant\n<think>\n\n</think>\n\nMix flour, water, salt and yeast, knead, let it rise, then bake.";

/** `count` token ids drawn from ordinary (non-special) vocabulary entries. */
export function randomTokens(random: () => number, count: number): Int32Array {
    return Int32Array.from({length: count}, () => Math.floor(random() * 150000));
}

/** A small deterministic generator (mulberry32) for test schedules. */
export function seededRandom(seed: number): () => number {
    let state = seed >>> 0;
    return () => {
        state = (state + 0x6d2b79f5) >>> 0;
        let x = state;
        x = Math.imul(x ^ (x >>> 15), x | 1);
        x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
        return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
    };
}

/** The largest absolute difference between two equally long arrays. */
export function maxAbsDiff(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
    if (actual.length !== expected.length)
        throw new Error(`Expected ${expected.length} values but got ${actual.length}`);
    let max = 0;
    for (let i = 0; i < actual.length; i++)
        max = Math.max(max, Math.abs(actual[i] - expected[i]));
    return max;
}

/** The reference's probabilities for one position in the addon's layout: `[risk..., category...]` per path. */
export function referenceRows(scores: StreamScores): {query: number[], response: number[]} {
    return {
        query: [...scores.queryRisk.probabilities, ...scores.queryCategory.probabilities],
        response: [...scores.responseRisk.probabilities, ...scores.responseCategory.probabilities]
    };
}

/** The float64 head applied to hidden states returned by the addon (`hidden: true`), row by row. */
export function referenceHead(reference: ReferenceModel, hidden: Float32Array, hiddenSize: number): {query: number[], response: number[]} {
    const query: number[] = [];
    const response: number[] = [];
    for (let row = 0; row < hidden.length / hiddenSize; row++) {
        const rows = referenceRows(reference.streamScores(Float64Array.from(hidden.subarray(row * hiddenSize, (row + 1) * hiddenSize))));
        query.push(...rows.query);
        response.push(...rows.response);
    }
    return {query, response};
}

/** Outputs per row of each path. */
export function outputWidths(info: AddonStreamModelInfo): {query: number, response: number} {
    return {
        query: info.queryRiskLabels.length + info.queryCategoryLabels.length,
        response: info.responseRiskLabels.length + info.responseCategoryLabels.length
    };
}

/** All positions of `count` tokens. */
export function allOutputs(count: number): Int32Array {
    return Int32Array.from({length: count}, (_, i) => i);
}
