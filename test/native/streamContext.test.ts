// Stream sessions (native/StreamContext.*, native/core/qg_stream_context.*): what evaluate refuses, then the numbers —
// the head against float64 on the same hidden states, the whole model against the float64 reference forward of the
// source safetensors, 32 interleaved sessions against each fed alone, KV-cache reuse — and the planted verdicts.

import t from "tap";
import type {Test} from "tap";
import type {AddonStreamContext, AddonStreamModel, AddonStreamRequest, AddonStreamResult} from "../../src/native/AddonTypes.js";
import {plantedVerdicts} from "../helpers/plantedStream.js";
import {ReferenceModel} from "../helpers/referenceForward.js";
import {
    CHATML_EXCHANGE, allOutputs, convertedFixture, createStreamContext, expectError, loadStreamModel, maxAbsDiff, outputWidths,
    randomTokens, referenceHead, referenceRows, seededRandom
} from "./streamTestKit.js";

const QUERY = 1;
const RESPONSE = 2;
const BOTH = 3;

const tinyF32 = await convertedFixture(t, "tiny-stream", "F32", "f32");
const model = await loadStreamModel(t, tinyF32);
const widths = outputWidths(model.info());
const tokens = model.tokenize(CHATML_EXCHANGE, true);

const request = (sequence: number, ids: Int32Array, outputs: Int32Array, heads = BOTH, hidden = false): AddonStreamRequest =>
    ({sequence, tokens: ids, outputs, heads, hidden});

t.test("evaluate and the sequence calls refuse bad arguments", async (t) => {
    const context = await createStreamContext(t, model, {contextSize: 64, maxSequences: 4});
    const s = context.acquireSequence();
    const ok = request(s, Int32Array.from([1, 2, 3]), Int32Array.from([2]));
    const typeErrors: [string, unknown, string][] = [
        ["not an array", undefined, "Expected requests to be an array but received undefined"],
        ["an element not an object", [1], "Expected requests[0] to be an object but received number 1"],
        ["tokens an array", [{...ok, tokens: [1, 2, 3]}], "Expected requests[0].tokens to be an Int32Array but received an array"],
        ["outputs a Float32Array", [{...ok, outputs: new Float32Array(1)}], "Expected requests[0].outputs to be an Int32Array but received a Float32Array"],
        ["sequence a string", [{...ok, sequence: "0"}], "Expected requests[0].sequence to be a 32-bit integer but received a string"],
        ["heads missing", [{...ok, heads: undefined}], "Expected requests[0].heads to be a 32-bit integer but received undefined"],
        ["hidden a string", [{...ok, hidden: "yes"}], "Expected requests[0].hidden to be a boolean but received a string"]
    ];
    for (const [name, requests, message] of typeErrors) {
        await t.test(name, async (t) => {
            await expectError(t, () => context.evaluate(requests as AddonStreamRequest[]), TypeError, `StreamContext.evaluate: ${message}`);
        });
    }
    const rangeErrors: [string, AddonStreamRequest[], string][] = [
        ["heads beyond the two bits", [{...ok, heads: 4}], "Expected requests[0].heads to be a bit set of 1 (query) and 2 (response) but received 4"],
        ["a sequence never acquired", [{...ok, sequence: 3}], "request 0: Expected an acquired sequence id but received 3"],
        ["a sequence id out of range", [{...ok, sequence: 99}], "request 0: Expected an acquired sequence id but received 99"],
        ["a token past the vocabulary", [{...ok, tokens: Int32Array.from([1, 151936, 3])}],
            "request 0: Expected token ids between 0 and 151935 but tokens[1] is 151936"],
        ["a negative token", [{...ok, tokens: Int32Array.from([-5, 2, 3])}],
            "request 0: Expected token ids between 0 and 151935 but tokens[0] is -5"],
        ["outputs not ascending", [{...ok, outputs: Int32Array.from([1, 1])}],
            "request 0: Expected outputs to be strictly ascending indices below 3 (the number of tokens) but outputs[1] is 1"],
        ["an output past the tokens", [{...ok, outputs: Int32Array.from([3])}],
            "request 0: Expected outputs to be strictly ascending indices below 3 (the number of tokens) but outputs[0] is 3"],
        ["one sequence in two requests", [ok, ok],
            "request 1: sequence 0 appears in an earlier request of the same evaluate; put all its tokens in one request"]
    ];
    for (const [name, requests, message] of rangeErrors) {
        await t.test(name, async (t) => {
            await expectError(t, () => context.evaluate(requests), RangeError, `StreamContext.evaluate: ${message}`);
        });
    }
    await t.test("sequence calls", async (t) => {
        await expectError(t, () => context.releaseSequence("0" as unknown as number), TypeError,
            "StreamContext.releaseSequence: Expected sequence to be a 32-bit integer but received a string");
        await expectError(t, () => context.releaseSequence(3), RangeError,
            "StreamContext.releaseSequence: Expected an acquired sequence id but received 3");
        await expectError(t, () => context.truncateSequence(s, 5), RangeError,
            "StreamContext.truncateSequence: Expected a length between 0 and 0 (the tokens sequence 0 holds) but received 5");
        await expectError(t, () => context.truncateSequence(s, -1), RangeError,
            "StreamContext.truncateSequence: Expected a length between 0 and 0 (the tokens sequence 0 holds) but received -1");
        await expectError(t, () => context.sequenceLength(-1), RangeError,
            "StreamContext.sequenceLength: Expected an acquired sequence id but received -1");
    });
    t.equal(context.sequenceLength(s), 0, "nothing was decoded by the refused calls");
});

t.test("more sequences than maxSequences are refused", async (t) => {
    const context = await createStreamContext(t, model, {maxSequences: 4});
    const ids = [0, 1, 2, 3].map(() => context.acquireSequence());
    t.same(ids, [0, 1, 2, 3]);
    await expectError(t, () => context.acquireSequence(), Error, "StreamContext.acquireSequence: All 4 sequences of this context are in use " +
        "(maxSequences 4): release one first, or create the context with a larger maxSequences");
    context.releaseSequence(2);
    t.equal(context.acquireSequence(), 2, "a released id is free again");
});

t.test("a request that would overflow the context is refused whole, and nothing is decoded", async (t) => {
    const context = await createStreamContext(t, model, {contextSize: 64, maxSequences: 2, batchSize: 16});
    const a = context.acquireSequence();
    const b = context.acquireSequence();
    const random = seededRandom(7);
    const first = await context.evaluate([request(a, randomTokens(random, 10), Int32Array.from([9]))]);
    await expectError(t, context.evaluate([request(a, randomTokens(random, 20), allOutputs(20)), request(b, randomTokens(random, 40), allOutputs(40))]),
        Error, "The context is full: the sequences hold 10 tokens and this evaluate adds 60, more than its contextSize of 64 cells; " +
        "release or truncate sequences, or create the context with a larger contextSize");
    t.equal(context.sequenceLength(a), 10);
    t.equal(context.sequenceLength(b), 0);
    t.equal(context.usedCells(), 10);

    const fits = await context.evaluate([request(b, randomTokens(seededRandom(8), 54), Int32Array.from([53]))]);
    t.equal(context.usedCells(), 64, "exactly full is fine");
    t.equal(fits[0].response?.length, widths.response);
    t.equal(first[0].query?.length, widths.query);
});

t.test("(a) the head matches float64 on the same hidden states, within 1e-5", async (t) => {
    for (const [dtype, outType] of [["F32", "f32"], ["BF16", "bf16"]] as const) {
        await t.test(`${dtype} checkpoint, ${outType} head`, async (t) => {
            const converted = dtype === "F32" ? tinyF32 : await convertedFixture(t, "tiny-stream", dtype, outType);
            const reference = await ReferenceModel.load(converted.hfDir);
            const loaded = dtype === "F32" ? model : await loadStreamModel(t, converted);
            const context = await createStreamContext(t, loaded);
            const [result] = await context.evaluate([request(context.acquireSequence(), tokens, allOutputs(tokens.length), BOTH, true)]);
            t.equal(result.hidden?.length, tokens.length * 64);
            const expected = referenceHead(reference, result.hidden!, 64);
            const queryError = maxAbsDiff(result.query!, expected.query);
            const responseError = maxAbsDiff(result.response!, expected.response);
            t.ok(queryError < 1e-5, `query head: max |Δ| ${queryError.toExponential(2)}`);
            t.ok(responseError < 1e-5, `response head: max |Δ| ${responseError.toExponential(2)}`);
        });
    }
});

t.test("(b) every position's probabilities match the float64 reference forward within 2e-3 (f32 conversion)", async (t) => {
    const reference = await ReferenceModel.load(tinyF32.hfDir);
    const expected = reference.hiddenStates([...tokens]).map((hidden) => referenceRows(reference.streamScores(hidden)));
    const context = await createStreamContext(t, model, {batchSize: 16});
    const [result] = await context.evaluate([request(context.acquireSequence(), tokens, allOutputs(tokens.length))]);
    const responseError = maxAbsDiff(result.response!, expected.flatMap((row) => row.response));
    const queryError = maxAbsDiff(result.query!, expected.flatMap((row) => row.query));
    t.ok(responseError < 2e-3, `response probabilities over ${tokens.length} positions: max |Δ| ${responseError.toExponential(2)}`);
    t.ok(queryError < 2e-3, `query probabilities: max |Δ| ${queryError.toExponential(2)}`);
});

t.test("results hold what was asked for, at the positions asked for", async (t) => {
    const context = await createStreamContext(t, model);
    const all = await context.evaluate([request(context.acquireSequence(), tokens, allOutputs(tokens.length))]);
    const s = context.acquireSequence();
    const picked = Int32Array.from([0, 5, 6, 7, tokens.length - 1]);
    const [query, none] = await context.evaluate([request(s, tokens, picked, QUERY), request(context.acquireSequence(), tokens, new Int32Array(0), RESPONSE)]);
    t.same(Object.keys(query), ["query"], "only the query head");
    t.same(Object.keys(none), ["response"], "the response head, with no rows");
    t.equal(none.response?.length, 0);
    const expected = [...picked].flatMap((i) => [...all[0].query!.subarray(i * widths.query, (i + 1) * widths.query)]);
    t.ok(maxAbsDiff(query.query!, expected) < 1e-4, "a prompt decoded in output and non-output runs gives the same rows");
    t.equal(context.sequenceLength(s), tokens.length);
    t.equal(context.usedCells(), 3 * tokens.length);
});

t.test("(c) 32 sessions fed interleaved in random order give what each gives alone, within 1e-4 (3e-4 per sequence)", async (t) => {
    for (const kvLayout of ["shared", "per-sequence"] as const)
        await t.test(`KV layout ${kvLayout}`, (t) => interleavedSessions(t, kvLayout));
});

async function interleavedSessions(t: Test, kvLayout: "shared" | "per-sequence"): Promise<void> {
    const random = seededRandom(2024);
    const sessions = Array.from({length: 32}, () => randomTokens(random, 8 + Math.floor(random() * 33)));
    // per sequence: 64 cells each, more than the longest session
    const context = await createStreamContext(t, model, {contextSize: 2048, maxSequences: 32, batchSize: 16, kvLayout});
    const ids = sessions.map(() => context.acquireSequence());
    const fed = sessions.map(() => 0);
    // expected rows, filled from the solo runs below: [session][position] → {query, response}
    const got: {session: number, position: number, heads: number, query?: Float32Array, response?: Float32Array}[] = [];
    let evaluates = 0;
    while (fed.some((n, i) => n < sessions[i].length)) {
        const order = ids.map((_, i) => i).filter((i) => fed[i] < sessions[i].length && random() < 0.6);
        order.sort(() => random() - 0.5);
        const requests: AddonStreamRequest[] = [];
        const meta: {session: number, start: number, outputs: number[], heads: number}[] = [];
        for (const i of order) {
            const count = Math.min(sessions[i].length - fed[i], 1 + Math.floor(random() * 8));
            const outputs = Array.from({length: count}, (_, k) => k).filter(() => random() < 0.5);
            const heads = 1 + Math.floor(random() * 3);
            requests.push(request(ids[i], sessions[i].subarray(fed[i], fed[i] + count), Int32Array.from(outputs), heads));
            meta.push({session: i, start: fed[i], outputs, heads});
            fed[i] += count;
        }
        if (requests.length === 0)
            continue;
        const results: AddonStreamResult[] = await context.evaluate(requests);
        evaluates++;
        results.forEach((result, r) => {
            const {session, start, outputs, heads} = meta[r];
            outputs.forEach((k, row) => got.push({
                session, position: start + k, heads,
                query: result.query?.subarray(row * widths.query, (row + 1) * widths.query),
                response: result.response?.subarray(row * widths.response, (row + 1) * widths.response)
            }));
        });
    }
    t.same(ids.map((id) => context.sequenceLength(id)), sessions.map((s) => s.length), "every session holds its tokens");
    t.equal(context.usedCells(), sessions.reduce((sum, s) => sum + s.length, 0));

    const solo = await createStreamContext(t, model, {contextSize: 64, maxSequences: 1, batchSize: 64});
    const alone: AddonStreamResult[] = [];
    for (const session of sessions) {
        const s = solo.acquireSequence();
        alone.push((await solo.evaluate([request(s, session, allOutputs(session.length))]))[0]);
        solo.releaseSequence(s);
    }
    let worst = 0;
    for (const row of got) {
        const expected = alone[row.session];
        if (row.heads & QUERY)
            worst = Math.max(worst, maxAbsDiff(row.query!, expected.query!.subarray(row.position * widths.query, (row.position + 1) * widths.query)));
        if (row.heads & RESPONSE)
            worst = Math.max(worst, maxAbsDiff(row.response!, expected.response!.subarray(row.position * widths.response, (row.position + 1) * widths.response)));
    }
    t.ok(got.length > 200, `${got.length} output rows compared over ${evaluates} evaluates`);
    // Rounding only (the median row differs by ~1e-7 in either layout): per sequence, llama.cpp splits a step into
    // smaller ubatches (equal tokens per sequence), whose matmul kernels round differently, and the tail reaches
    // 1.2e-4 on this random-weight f32 model. A row of another sequence's context would be off by orders more.
    const tolerance = kvLayout === "shared" ? 1e-4 : 3e-4;
    t.ok(worst < tolerance, `max |Δ| ${worst.toExponential(2)} (at most ${tolerance})`);
}

t.test("a KV stream per sequence: each holds contextSize / maxSequences tokens, and a step of consecutive ids is one graph", async (t) => {
    const context = await createStreamContext(t, model, {contextSize: 512, maxSequences: 4, batchSize: 64, kvLayout: "per-sequence"});
    t.equal(context.sequenceCells(), 128, "512 cells / 4 sequences");
    const ids = [0, 1, 2, 3].map(() => context.acquireSequence());
    const random = seededRandom(11);
    await context.evaluate([request(ids[0], randomTokens(random, 100), Int32Array.of(99)), request(ids[1], randomTokens(random, 128), Int32Array.of())]);
    t.equal(context.sequenceLength(ids[1]), 128, "a sequence may fill its stream exactly");
    await expectError(t, context.evaluate([request(ids[2], randomTokens(random, 5), Int32Array.of(4)), request(ids[0], randomTokens(random, 29), Int32Array.of(28))]),
        Error, "request 1: sequence 0 holds 100 tokens and this evaluate adds 29, more than the 128 cells of its KV stream (contextSize 512 / " +
        "maxSequences 4); truncate it, or create the context with a larger contextSize or fewer maxSequences");
    t.same(ids.map((id) => context.sequenceLength(id)), [100, 128, 0, 0], "refused whole: no sequence changed");
    t.equal(context.usedCells(), 228, "the refused request added nothing: 100 + 128 cells in use");

    const step = async (order: number[]) => {
        await context.evaluate(order.map((i) => request(ids[i], randomTokens(random, 1), Int32Array.of(0), RESPONSE)));
        return context.lastTimings().stoppedGraphs;
    };
    context.truncateSequence(ids[1], 100);
    t.equal(await step([0, 1, 2, 3]), 1, "sequences 0–3 in one graph");
    t.equal(await step([3, 1, 2, 0]), 1, "requests in any order: still one graph (the engine sorts them by sequence)");
    t.equal(await step([0, 2, 3]), 2, "a gap in the ids splits the step: 0, then 2–3");
});

t.test("a copied sequence continues as if it had been fed its source's tokens, in both layouts", async (t) => {
    const random = seededRandom(9);
    const prefix = randomTokens(random, 40);
    const rest = randomTokens(random, 12);
    for (const kvLayout of ["shared", "per-sequence"] as const) {
        const context = await createStreamContext(t, model, {contextSize: 256, maxSequences: 4, batchSize: 64, kvLayout});
        const [source, copy, fresh] = [context.acquireSequence(), context.acquireSequence(), context.acquireSequence()];
        await context.evaluate([request(source, prefix, Int32Array.of())]);
        context.copySequence(source, copy);
        t.equal(context.sequenceLength(copy), 40, `${kvLayout}: the copy holds the source's tokens`);
        await expectError(t, () => context.copySequence(source, copy), RangeError, "StreamContext.copySequence: Expected an empty target sequence, " +
            "but sequence 1 holds 40 tokens; truncate it to 0 first");
        await expectError(t, () => context.copySequence(source, source), RangeError,
            `StreamContext.copySequence: Expected a target sequence other than the source, but both are ${source}`);
        const [viaCopy, viaSource] = await context.evaluate([request(copy, rest, allOutputs(rest.length)), request(source, rest, allOutputs(rest.length))]);
        const [alone] = await context.evaluate([request(fresh, Int32Array.from([...prefix, ...rest]), Int32Array.from({length: rest.length}, (_, i) => 40 + i))]);
        const worst = Math.max(maxAbsDiff(viaCopy.response!, alone.response!), maxAbsDiff(viaSource.response!, alone.response!), maxAbsDiff(viaCopy.query!, alone.query!));
        // without the prefix's cells the copy's attention would see nothing before `rest`, and its outputs would differ
        t.ok(worst < 1e-4, `${kvLayout}: the copy, the source and a fresh feed agree (max |Δ| ${worst.toExponential(2)})`);

        // while another sequence's evaluate is in flight the copy waits for it in the engine; one in flight is refused
        const late = context.acquireSequence();
        context.truncateSequence(fresh, 0);
        const running = context.evaluate([request(fresh, prefix, Int32Array.of())]);
        await expectError(t, () => context.copySequence(fresh, late), Error, `StreamContext.copySequence: sequence ${fresh} has an evaluate in flight; await it first`);
        context.truncateSequence(source, 40);
        context.copySequence(source, late);
        await running;
        const [viaLate] = await context.evaluate([request(late, rest, allOutputs(rest.length))]);
        t.ok(maxAbsDiff(viaLate.response!, alone.response!) < 1e-4, `${kvLayout}: a copy made while another evaluate ran is the source's too`);
    }
});

t.test("both KV layouts give the same probabilities for the same sessions", async (t) => {
    const random = seededRandom(5);
    const sessions = [randomTokens(random, 30), randomTokens(random, 12), randomTokens(random, 21)];
    const run = async (kvLayout: "shared" | "per-sequence") => {
        const context = await createStreamContext(t, model, {contextSize: 192, maxSequences: 3, batchSize: 64, kvLayout});
        const ids = sessions.map(() => context.acquireSequence());
        return context.evaluate(sessions.map((tokens, i) => request(ids[i], tokens, allOutputs(tokens.length))));
    };
    const [shared, perSequence] = [await run("shared"), await run("per-sequence")];
    const worst = Math.max(...shared.flatMap((result, i) => [maxAbsDiff(perSequence[i].query!, result.query!), maxAbsDiff(perSequence[i].response!, result.response!)]));
    // the layouts' ubatches differ, so their rounding may (see the interleaved test)
    t.ok(worst < 3e-4, `max |Δ| ${worst.toExponential(2)} over ${sessions.length} sessions`);
});

t.test("truncating and feeding again gives the same outputs; a released sequence starts empty", async (t) => {
    const context = await createStreamContext(t, model);
    const s = context.acquireSequence();
    const [whole] = await context.evaluate([request(s, tokens, allOutputs(tokens.length))]);
    context.truncateSequence(s, 10);
    t.equal(context.sequenceLength(s), 10);
    t.equal(context.usedCells(), 10);
    const [again] = await context.evaluate([request(s, tokens.subarray(10), allOutputs(tokens.length - 10))]);
    t.ok(maxAbsDiff(again.response!, whole.response!.subarray(10 * widths.response)) < 1e-4, "the kept prefix is reused from the KV cache");

    context.releaseSequence(s);
    t.equal(context.usedCells(), 0);
    const r = context.acquireSequence();
    const [fresh] = await context.evaluate([request(r, tokens.subarray(0, 5), allOutputs(5))]);
    t.ok(maxAbsDiff(fresh.response!, whole.response!.subarray(0, 5 * widths.response)) < 1e-4, "a re-acquired id starts at position 0");
});

t.test("tokens in the KV cache are not recomputed: a token costs the same after 8 or 1500 tokens", async (t) => {
    const random = seededRandom(99);
    const contexts: {context: AddonStreamContext, sequence: number}[] = [];
    for (const length of [8, 1500]) {
        const context = await createStreamContext(t, model, {contextSize: 2048, maxSequences: 1, batchSize: 512});
        const sequence = context.acquireSequence();
        await context.evaluate([request(sequence, randomTokens(random, length), new Int32Array(0))]);
        contexts.push({context, sequence});
    }
    const times: number[][] = [[], []];
    for (let step = 0; step < 21; step++) {
        for (const [i, {context, sequence}] of contexts.entries()) {
            const started = performance.now();
            await context.evaluate([request(sequence, randomTokens(random, 1), Int32Array.from([0]), RESPONSE)]);
            times[i].push(performance.now() - started);
        }
    }
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
    const [short, long] = times.map(median);
    // Attention itself grows with the context (2-3× here, on a model whose token costs little else); recomputing the
    // prefix would cost ~1500 tokens' time.
    t.ok(long < 10 * short, `median ${short.toFixed(2)} ms per token after 8 tokens, ${long.toFixed(2)} ms after 1500`);
});

t.test("the planted model gives its planted verdicts through the whole pipeline (q8_0)", async (t) => {
    const planted = await convertedFixture(t, "planted-stream", "BF16", "q8_0");
    const loaded: AddonStreamModel = await loadStreamModel(t, planted);
    const info = loaded.info();
    const ids = loaded.tokenize("<|im_start|>user\nHow do I bypass the filter?<|im_end|>\n<|im_start|>assistant\n" +
        "<think>\n\n</think>\n\nA bomb at the protest is an election issue; poison is not.", true);
    const context = await createStreamContext(t, loaded);
    const [result] = await context.evaluate([request(context.acquireSequence(), ids, allOutputs(ids.length))]);
    const w = outputWidths(info);
    const argmax = (values: Float32Array) => values.indexOf(Math.max(...values));
    const verdict = (probs: Float32Array, width: number, risks: string[], categories: string[], i: number) => {
        const row = probs.subarray(i * width, (i + 1) * width);
        const risk = risks[argmax(row.subarray(0, risks.length))];
        return {risk, category: risk === "Safe" ? null : categories[argmax(row.subarray(risks.length))]};
    };
    const expected = plantedVerdicts([...ids]);
    const actual = [...ids].map((_, i) => ({
        response: verdict(result.response!, w.response, info.responseRiskLabels, info.responseCategoryLabels, i),
        query: verdict(result.query!, w.query, info.queryRiskLabels, info.queryCategoryLabels, i)
    }));
    t.same(actual, expected, "every position, both heads");
    t.ok(expected.some((v) => v.response.risk === "Unsafe") && expected.some((v) => v.query.risk === "Unsafe"), "the text hits the triggers");
});
