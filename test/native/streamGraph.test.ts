// How the Stream engine runs llama.cpp's graph (native/core/qg_stream_context.cpp): every output graph ends at the
// final-norm hidden states (the LM head never runs), and flash attention is a setting. Both must leave the numbers as
// llama.cpp's whole graph gives them.

import t from "tap";
import type {AddonStreamContext, AddonStreamContextOptions, AddonStreamRequest, AddonStreamResult} from "../../src/native/AddonTypes.js";
import {ReferenceModel} from "../helpers/referenceForward.js";
import {
    CHATML_EXCHANGE, allOutputs, convertedFixture, createStreamContext, loadStreamModel, maxAbsDiff, randomTokens, referenceRows, seededRandom
} from "./streamTestKit.js";

const BOTH = 3;

const tinyF32 = await convertedFixture(t, "tiny-stream", "F32", "f32");
const model = await loadStreamModel(t, tinyF32);
const chat = model.tokenize(CHATML_EXCHANGE, true);

/**
 * Feeds one sequence in three evaluates — every position scored, then plain tokens (embeddings off), then a mix —
 * and returns each evaluate's result and timings.
 */
async function feed(context: AddonStreamContext, long: Int32Array) {
    const sequence = context.acquireSequence();
    const plain = randomTokens(seededRandom(3), 40);
    const mixed = randomTokens(seededRandom(4), 30);
    const steps: AddonStreamRequest[] = [
        {sequence, tokens: long, outputs: allOutputs(long.length), heads: BOTH, hidden: true},
        {sequence, tokens: plain, outputs: new Int32Array(0), heads: BOTH, hidden: true},
        {sequence, tokens: mixed, outputs: Int32Array.from([0, 1, 2, 17, 29]), heads: BOTH, hidden: true}
    ];
    const runs: {result: AddonStreamResult, timings: ReturnType<AddonStreamContext["lastTimings"]>}[] = [];
    for (const step of steps) {
        const [result] = await context.evaluate([step]);
        runs.push({result, timings: context.lastTimings()});
    }
    return runs;
}

t.test("output graphs stop at the hidden states, with the numbers of llama.cpp's whole graph", async (t) => {
    // 600 outputs in one llama_decode of two ubatches (512 + 88)
    const long = randomTokens(seededRandom(2), 600);
    const options: Partial<AddonStreamContextOptions> = {contextSize: 1024, batchSize: 1024, ubatchSize: 512, outputBatchSize: 1024};
    const stopped = await feed(await createStreamContext(t, model, {...options, stopAfterHidden: true}), long);
    const whole = await feed(await createStreamContext(t, model, {...options, stopAfterHidden: false}), long);

    t.match(stopped[0].timings, {decodeCalls: 1, tokens: 600, outputs: 600, stoppedGraphs: 2}, "both ubatches of the scored batch stopped");
    t.match(stopped[1].timings, {decodeCalls: 1, tokens: 40, outputs: 0, stoppedGraphs: 0}, "a batch without outputs runs whole");
    // the mix: outputs 0–2 (one call), 3–16 plain, 17, 18–28 plain, 29
    t.match(stopped[2].timings, {decodeCalls: 5, tokens: 30, outputs: 5, stoppedGraphs: 3}, "every output run stopped, the plain runs not");
    t.same(whole.map((run) => run.timings.stoppedGraphs), [0, 0, 0], "stopAfterHidden false: no graph stopped");

    for (const i of [0, 2]) {
        const name = i === 0 ? "600 positions scored" : "5 positions scored after plain tokens, over a cache filled by stopped graphs";
        const {hidden, response, query} = stopped[i].result;
        t.equal(hidden?.length, stopped[i].timings.outputs * 64);
        t.equal(maxAbsDiff(hidden!, whole[i].result.hidden!), 0, `${name}: hidden states bit-identical`);
        t.equal(maxAbsDiff(response!, whole[i].result.response!), 0, `${name}: response head identical`);
        t.equal(maxAbsDiff(query!, whole[i].result.query!), 0, `${name}: query head identical`);
    }
});

t.test("outputBatchSize splits scored runs into llama_decode calls of that many rows, with the same numbers", async (t) => {
    const small = await createStreamContext(t, model, {batchSize: 64, outputBatchSize: 8});
    const large = await createStreamContext(t, model, {batchSize: 64, outputBatchSize: 64});
    const results = [];
    for (const context of [small, large]) {
        const [result] = await context.evaluate([{sequence: context.acquireSequence(), tokens: chat, outputs: allOutputs(chat.length), heads: BOTH}]);
        results.push({result, timings: context.lastTimings()});
    }
    t.equal(results[0].timings.decodeCalls, Math.ceil(chat.length / 8));
    t.equal(results[0].timings.stoppedGraphs, Math.ceil(chat.length / 8));
    t.equal(results[1].timings.decodeCalls, Math.ceil(chat.length / 64));
    t.ok(maxAbsDiff(results[0].result.response!, results[1].result.response!) < 1e-5, "the same probabilities");
});

// CPU flash attention multiplies Q·K in f16 and accumulates V·softmax in f16; without it llama.cpp's mul_mat path keeps
// f32 sums. Each is held to the bound the whole-model test holds the default to (2e-3 of the float64 forward), so they
// are within 4e-3 of each other; here off is measured at 4e-4 and on at 1.7e-3.
t.test("flash attention on and off: both within 2e-3 of the float64 reference, so within 4e-3 of each other", async (t) => {
    const reference = await ReferenceModel.load(tinyF32.hfDir);
    const tokens = Int32Array.from([...chat, ...randomTokens(seededRandom(9), 200)]);
    const expected = reference.hiddenStates([...tokens]).map((hidden) => referenceRows(reference.streamScores(hidden)));
    const results: Record<string, AddonStreamResult> = {};
    for (const flashAttention of ["off", "on"] as const) {
        const context = await createStreamContext(t, model, {flashAttention, batchSize: 64});
        [results[flashAttention]] = await context.evaluate([{sequence: context.acquireSequence(), tokens, outputs: allOutputs(tokens.length), heads: BOTH}]);
        const error = maxAbsDiff(results[flashAttention].response!, expected.flatMap((row) => row.response));
        t.ok(error < 2e-3, `flash attention ${flashAttention}: response probabilities over ${tokens.length} positions, max |Δ| vs float64 ${error.toExponential(2)}`);
    }
    const between = Math.max(maxAbsDiff(results.on.response!, results.off.response!), maxAbsDiff(results.on.query!, results.off.query!));
    t.ok(between < 4e-3, `on vs off: max |Δ| ${between.toExponential(2)}`);
});
