// KV cache element types (cacheTypeK / cacheTypeV of a Stream context): a q8_0 cache is really used (the head's
// probabilities move, by about as much as flash attention moves them), a copied q8_0 stream equals its source, and
// what llama.cpp cannot do, or would not check, is refused with what to pass instead.

import t from "tap";
import type {Test} from "tap";
import type {AddonStreamContext, AddonStreamContextOptions, AddonStreamModel} from "../../src/native/AddonTypes.js";
import {CHATML_EXCHANGE, allOutputs, convertedFixture, createStreamContext, expectError, loadStreamModel, maxAbsDiff} from "./streamTestKit.js";

const RESPONSE = 2;

const narrow = await loadStreamModel(t, await convertedFixture(t, "tiny-stream", "F32", "f32"));
const wide = await loadStreamModel(t, await convertedFixture(t, "tiny-stream-wide", "F32", "f32"));

/** The response head at every position of the exchange, fed to one new sequence. */
async function responseRows(context: AddonStreamContext, model: AddonStreamModel): Promise<Float32Array> {
    const tokens = model.tokenize(CHATML_EXCHANGE, true);
    const sequence = context.acquireSequence();
    const [result] = await context.evaluate([{sequence, tokens, outputs: allOutputs(tokens.length), heads: RESPONSE}]);
    return result.response!;
}

async function rowsWith(t: Test, options: Partial<AddonStreamContextOptions>): Promise<Float32Array> {
    return responseRows(await createStreamContext(t, wide, options), wide);
}

t.test("a q8_0 cache holds the keys (and with flash attention the values) and moves the probabilities a little", async (t) => {
    const f16 = await rowsWith(t, {});
    const keys = await rowsWith(t, {cacheTypeK: "q8_0"});
    const f16Flash = await rowsWith(t, {flashAttention: "on"});
    const both = await rowsWith(t, {flashAttention: "on", cacheTypeK: "q8_0", cacheTypeV: "q8_0"});
    const flashMoves = maxAbsDiff(f16Flash, f16);
    for (const [name, rows, reference] of [["keys q8_0", keys, f16], ["keys and values q8_0 (flash attention)", both, f16Flash]] as const) {
        const moved = maxAbsDiff(rows, reference);
        // a cache left at f16 would give the very same floats
        t.ok(moved > 1e-6, `${name}: the probabilities differ from f16's (max |Δ| ${moved.toExponential(2)}): the cache is q8_0`);
        t.ok(moved < 0.05, `${name}: by at most 0.05 (max |Δ| ${moved.toExponential(2)}; flash attention alone moves them ${flashMoves.toExponential(2)})`);
    }
});

t.test("a copied q8_0 stream gives what its source gives", async (t) => {
    const context = await createStreamContext(t, wide, {kvLayout: "per-sequence", cacheTypeK: "q8_0", maxSequences: 2, contextSize: 512});
    const tokens = wide.tokenize(CHATML_EXCHANGE, true);
    const cut = tokens.length - 6;
    const source = context.acquireSequence();
    await context.evaluate([{sequence: source, tokens: tokens.subarray(0, cut), outputs: Int32Array.of(), heads: 0}]);
    const copy = context.acquireSequence();
    context.copySequence(source, copy);
    const rest = tokens.subarray(cut);
    const [fromSource, fromCopy] = await context.evaluate([
        {sequence: source, tokens: rest, outputs: allOutputs(rest.length), heads: RESPONSE},
        {sequence: copy, tokens: rest, outputs: allOutputs(rest.length), heads: RESPONSE}
    ]);
    t.ok(maxAbsDiff(fromCopy.response!, fromSource.response!) < 1e-6, "the copy's next tokens score as the source's");
});

t.test("what llama.cpp cannot do is refused with what to pass", async (t) => {
    await expectError(t, () => wide.createContext({...baseOptions(), cacheTypeK: "q4_0" as "q8_0"}), RangeError,
        'StreamModel.createContext: Expected options.cacheTypeK to be "f16" or "q8_0" but received "q4_0"');
    await expectError(t, () => wide.createContext({...baseOptions(), cacheTypeV: "q8_0"}), Error,
        /^Expected flash attention on \(not auto\) for a q8_0 V cache \(llama\.cpp quantizes V only with flash attention\)$/);
    await expectError(t, () => wide.createContext({...baseOptions(), flashAttention: "auto", cacheTypeV: "q8_0"}), Error,
        /^Expected flash attention on \(not auto\) for a q8_0 V cache/);
    // without flash attention llama.cpp itself does not check that a head holds whole blocks
    await expectError(t, () => narrow.createContext({...baseOptions(), cacheTypeK: "q8_0"}), Error,
        /^Expected attention heads a multiple of 32 values wide for a q8_0 KV cache of keys \(q8_0 stores blocks of 32\) but this model's are 16 wide: use f16$/);
    await expectError(t, () => narrow.createContext({...baseOptions(), flashAttention: "on", cacheTypeV: "q8_0"}), Error,
        /q8_0 KV cache of values \(q8_0 stores blocks of 32\) but this model's are 16 wide: use f16$/);
    // the model still makes contexts afterwards
    t.ok((await responseRows(await createStreamContext(t, narrow), narrow)).length > 0, "an f16 context of the same model works");
});

function baseOptions(): AddonStreamContextOptions {
    return {contextSize: 256, maxSequences: 2, batchSize: 64, ubatchSize: 64, outputBatchSize: 64, threads: 1, flashAttention: "off",
        stopAfterHidden: true, kvLayout: "shared", cacheTypeK: "f16", cacheTypeV: "f16"};
}
