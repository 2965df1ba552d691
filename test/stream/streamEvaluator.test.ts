// The evaluator's batching with the real tiny Stream model: sessions that push at the same time share one native call,
// and sessions that fall out of step (a server's clients, each waiting for its last answer) are brought back into one
// call per step instead of two. Native calls are counted by a pass-through wrapper; every call reaches llama.cpp.

import t from "tap";
import type {Test} from "tap";
import type {AddonStreamContext, AddonStreamRequest} from "../../src/native/AddonTypes.js";
import {StreamEvaluator} from "../../src/stream/StreamEvaluator.js";
import {convertedFixture, createStreamContext, loadStreamModel} from "../native/streamTestKit.js";

const tiny = await convertedFixture(t, "tiny-stream", "F32", "f32");
const model = await loadStreamModel(t, tiny);

/**
 * An evaluator over a real context whose evaluate calls (all the evaluator makes) are counted, each with its batch
 * size, and passed through (with the timings the evaluator reads after each); `sessions` sequences acquired.
 */
async function countedEvaluator(t: Test, sessions: number): Promise<{evaluator: StreamEvaluator, batches: number[], sequences: number[]}> {
    const context = await createStreamContext(t, model, {maxSequences: sessions});
    const batches: number[] = [];
    const evaluator = new StreamEvaluator({
        evaluate: (requests: AddonStreamRequest[]) => {
            batches.push(requests.length);
            return context.evaluate(requests);
        },
        lastTimings: () => context.lastTimings()
    } as AddonStreamContext);
    return {evaluator, batches, sequences: Array.from({length: sessions}, () => context.acquireSequence())};
}

const step = (sequence: number, token: number): AddonStreamRequest =>
    ({sequence, tokens: Int32Array.of(token), outputs: Int32Array.of(0), heads: 3});
const nextMacrotask = () => new Promise((resolve) => setImmediate(resolve));

t.test("sessions that push in one tick share one call", async (t) => {
    const {evaluator, batches, sequences} = await countedEvaluator(t, 4);
    for (let i = 0; i < 3; i++)
        await Promise.all(sequences.map((sequence) => evaluator.evaluate(step(sequence, 100 + i))));
    t.same(batches, [4, 4, 4]);
});

t.test("sessions out of step (one a macrotask later) are brought back into one call a step", async (t) => {
    const {evaluator, batches, sequences: [a, b]} = await countedEvaluator(t, 2);
    await Promise.all([evaluator.evaluate(step(a, 100)), evaluator.evaluate(step(b, 100))]);
    for (let i = 1; i <= 5; i++) {
        const first = evaluator.evaluate(step(a, 100 + i));
        await nextMacrotask(); // b's request comes in a later macrotask, as a second client's message would
        await Promise.all([first, evaluator.evaluate(step(b, 100 + i))]);
    }
    t.same(batches, [2, 2, 2, 2, 2, 2], "one call of both sessions each step");
});

t.test("a session alone never waits, and one that stops costs the other one short wait", async (t) => {
    const {evaluator, batches, sequences: [a, b]} = await countedEvaluator(t, 2);
    await Promise.all([evaluator.evaluate(step(a, 100)), evaluator.evaluate(step(b, 100))]);
    for (let i = 1; i <= 3; i++)
        await evaluator.evaluate(step(a, 100 + i)); // b has stopped
    t.same(batches, [2, 1, 1, 1], "each step decoded, b not waited for beyond the bound");
});
