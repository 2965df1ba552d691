// `npm run bench:integrations [-- --quick] [--size 0.6b]`: what the AI SDK middleware costs a streamed answer. The
// same streamText call on the same generator (node-llama-cpp, greedy, on the tiny Qwen3 model) runs unwrapped and
// wrapped in qwenguardMiddleware({stream}), rounds interleaved, each figure a ratio against the unwrapped run of the
// same round:
//  1. live: the generator as fast as it runs (~1 ms a token): the guard's own pace shows;
//  2. paced: the generator's answer replayed at 20 and 50 ms a delta (50 and 20 tokens/s, served LLMs' paces): whether
//     the guard keeps up with a real model.
// Time to first token: from the streamText call to the first text delta the consumer reads; total: to the end.
// Guards (each with the prompt judged before the model is called, and with promptCheck "parallel"): the planted tiny Stream model (it flags only its trigger words; strict policy), and the Stream model of the
// real size (not with --quick; random weights, so under a policy that never fires: {minProb: 1}: the same work per
// token, and no text held back for a run of unsafe tokens, as on safe traffic).
// Results: printed, and written to .cache/bench/integrations-<size>.json.

import {mkdir, writeFile} from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {streamText, wrapLanguageModel} from "ai";
import type {LanguageModelV4, LanguageModelV4StreamPart} from "@ai-sdk/provider";
import {StreamGuard, loadLlamaRuntime} from "../src/index.js";
import type {ServerPolicy} from "../src/index.js";
import {qwenguardMiddleware} from "../src/ai-sdk/index.js";
import {llamaLanguageModel, scriptedModel, textParts} from "../test/helpers/aiSdkModels.js";
import {cachedConvertedFixture} from "../test/helpers/plantedGen.js";
import {benchCacheDir, prepareBenchModels} from "./benchModels.js";
import type {BenchSize} from "./benchModels.js";
import {interleave} from "./interleave.js";
import {median, pairedRatio} from "./stats.js";
import type {Summary} from "./stats.js";

const args = process.argv.slice(2);
const quick = args.includes("--quick");
const sizeAt = args.indexOf("--size");
const size = (quick ? "tiny" : sizeAt >= 0 ? args[sizeAt + 1] : "0.6b") as BenchSize;
const threads = 2;
const plan = quick ? {rounds: 2, warmup: 1, answerTokens: 32, paceMs: [20]} : {rounds: 9, warmup: 1, answerTokens: 96, paceMs: [20, 50]};
const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
const PROMPT = "Tell me a story about a cat.";

/** One streamed answer: ms to the first text delta and ms to the end, and the text. */
async function streamOnce(model: LanguageModelV4): Promise<{ttft: number, total: number, text: string, finishReason: string}> {
    const started = performance.now();
    const result = streamText({model, prompt: PROMPT, maxOutputTokens: plan.answerTokens});
    let ttft = NaN;
    let text = "";
    for await (const delta of result.textStream) {
        if (Number.isNaN(ttft) && delta.length > 0)
            ttft = performance.now() - started;
        text += delta;
    }
    return {ttft, total: performance.now() - started, text, finishReason: await result.finishReason};
}

interface Section {
    name: string,
    /** Medians of each variant (ms). */
    ttftMs: Record<string, number>,
    totalMs: Record<string, number>,
    /** Each guarded variant against the unwrapped one, paired by round. */
    ttftRatio: Record<string, Summary>,
    totalRatio: Record<string, Summary>
}

/** Runs the unwrapped model and each guarded one, interleaved; checks that every guarded answer is the unwrapped one. */
interface BenchGuard {
    guard: StreamGuard,
    policy: ServerPolicy,
    promptCheck: "before" | "parallel"
}

async function section(name: string, makeModel: () => LanguageModelV4, guards: Record<string, BenchGuard>): Promise<Section> {
    const ttft: Record<string, number[]> = {};
    let expected: string | null = null;
    const trial = (variant: string, guarded: BenchGuard | null) => ({
        name: variant,
        async run() {
            const base = makeModel();
            const model = guarded == null ? base : wrapLanguageModel({model: base, middleware: qwenguardMiddleware({stream: guarded.guard, policy: guarded.policy, promptCheck: guarded.promptCheck})});
            const answer = await streamOnce(model);
            await (base as {settled?: () => Promise<unknown>}).settled?.();
            if (answer.finishReason === "content-filter" || (expected != null && answer.text !== expected))
                throw new Error(`${name}/${variant}: the answer differs from the unwrapped one (${answer.finishReason}): the figures would not compare`);
            expected ??= answer.text;
            (ttft[variant] ??= []).push(answer.ttft);
            return answer.total;
        }
    });
    const trials = [trial("unwrapped", null), ...Object.entries(guards).map(([variant, guard]) => trial(variant, guard))];
    const total = await interleave(trials, {warmup: plan.warmup, rounds: plan.rounds, onRound: (round) => log(`${name}: round ${round + 1}/${plan.rounds}`)});
    for (const variant of Object.keys(ttft))
        ttft[variant] = ttft[variant].slice(plan.warmup); // the warm-up rounds' samples
    const guarded = Object.keys(guards);
    return {
        name,
        ttftMs: Object.fromEntries(Object.entries(ttft).map(([variant, samples]) => [variant, median(samples)])),
        totalMs: Object.fromEntries(Object.entries(total).map(([variant, samples]) => [variant, median(samples)])),
        ttftRatio: Object.fromEntries(guarded.map((variant) => [variant, pairedRatio(ttft[variant], ttft.unwrapped)])),
        totalRatio: Object.fromEntries(guarded.map((variant) => [variant, pairedRatio(total[variant], total.unwrapped)]))
    };
}

function print(result: Section): void {
    process.stdout.write(`\n${result.name}\n| variant | time to first token | × unwrapped | total | × unwrapped |\n| --- | --- | --- | --- | --- |\n`);
    for (const variant of Object.keys(result.totalMs)) {
        const ratio = (summary: Summary | undefined) => summary == null ? "1" : `${summary.median.toFixed(2)}×`;
        process.stdout.write(`| ${variant} | ${result.ttftMs[variant].toFixed(1)} ms | ${ratio(result.ttftRatio[variant])} | ` +
            `${result.totalMs[variant].toFixed(1)} ms | ${ratio(result.totalRatio[variant])} |\n`);
    }
}

const {llama} = await loadLlamaRuntime();
const generator = await llama.loadModel({modelPath: await cachedConvertedFixture("tiny-gen", "f32")});
const guardModels: Record<string, {model: string, policy: ServerPolicy}> = {
    "guarded (tiny Stream)": {model: await cachedConvertedFixture("planted-stream", "q8_0"), policy: "strict"}
};
if (!quick)
    guardModels[`guarded (Stream ${size})`] = {model: (await prepareBenchModels(size, {streamOnly: true, log})).stream.model, policy: {minProb: 1}};
const guards: Record<string, BenchGuard> = {};
for (const [variant, {model, policy}] of Object.entries(guardModels)) {
    const guard = await StreamGuard.load({model, threads, contextSize: 2048, maxSessions: 2});
    guards[variant] = {guard, policy, promptCheck: "before"};
    guards[`${variant.slice(0, -1)}, promptCheck parallel)`] = {guard, policy, promptCheck: "parallel"};
}

const results: Record<string, unknown> = {size, threads, quick, cpu: os.cpus()[0]?.model, loadAverageBefore: os.loadavg(), started: new Date().toISOString()};
const live = await section("live: node-llama-cpp on the tiny model", () => llamaLanguageModel(generator), guards);
print(live);

// the same answer replayed at a served model's pace (one delta per token)
const recorded: string[] = [];
const answer = streamText({model: llamaLanguageModel(generator), prompt: PROMPT, maxOutputTokens: plan.answerTokens});
for await (const delta of answer.textStream)
    recorded.push(delta);
const parts: LanguageModelV4StreamPart[] = textParts(recorded);
const paced: Section[] = [];
for (const paceMs of plan.paceMs) {
    paced.push(await section(`paced: the same answer at ${paceMs} ms a delta (${recorded.length} deltas)`,
        () => scriptedModel({stream: parts, delayMs: paceMs}), guards));
    print(paced.at(-1)!);
}

Object.assign(results, {live, paced, loadAverageAfter: os.loadavg()});
await mkdir(benchCacheDir, {recursive: true});
const out = path.join(benchCacheDir, `integrations-${quick ? "quick" : size}.json`);
await writeFile(out, JSON.stringify(results, null, 2) + "\n");
log(`written to ${out}`);
for (const guard of new Set(Object.values(guards).map(({guard}) => guard)))
    await guard.dispose();
await generator.dispose();
