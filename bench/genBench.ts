// Gen figures (issue 8, item 5; issue 14): latency of GenGuard's score and generate modes against a naive
// node-llama-cpp chat call with the same template, and of score mode against its floor (the same uncached tokens and
// forced steps fed with no output to the stock backbone); the gain from reusing the template prefix; and items/s with
// 1 and N requests at once.

import type {Llama} from "node-llama-cpp";
import {GenGuard, MalformedAnswerError} from "../src/index.js";
import type {GenVerdict} from "../src/index.js";
import {tokenizeSegments} from "../src/conversation/TokenSegments.js";
import {genInstructionsBefore, genPromptSegments} from "../src/gen/genTemplate.js";
import {proseOfTokens} from "./benchTexts.js";
import {interleave, timed} from "./interleave.js";
import type {RoundOptions} from "./interleave.js";
import {pairedRatio, summarize} from "./stats.js";
import type {Summary} from "./stats.js";
import {StockBackbone} from "./StockBackbone.js";

/** What the Gen section measures, and how long. */
export interface GenBenchOptions {
    /** The Gen GGUF (the stock backbone: random weights of the real shape). */
    model: string,
    llama: Llama,
    threads: number,
    rounds: RoundOptions,
    /** User-prompt lengths of the latency figures (tokens of the user text). */
    inputTokens: number[],
    /** Requests submitted at once in the throughput figure. */
    throughputItems: number,
    /** Parallel sequences compared in the throughput figure (the first is the reference). */
    parallel: number[],
    log: (line: string) => void
}

/** Latency of one input length (ms per request). */
export interface GenLatency {
    inputTokens: number,
    /** Tokens of the rendered Gen prompt, and of those, how many GenGuard found in its KV cache (the template prefix). */
    promptTokens: number,
    cachedTokens: number,
    /** `moderatePrompt(text)`: score mode, template prefix reused. */
    score: Summary,
    /** `moderatePrompt(text, {mode: "generate"})`, template prefix reused. */
    generate: Summary,
    /** Tokens generate mode generated (random weights never end the answer: GenGuard's cap). */
    generateAnswerTokens: number,
    /** node-llama-cpp: the whole rendered prompt in an empty sequence, then greedy generation of a real answer's length. */
    naive: Summary,
    /** Tokens the naive call generates: those of a real prompt verdict plus the end-of-turn token. */
    naiveAnswerTokens: number,
    /** Per-round ratios naive / score and naive / generate. */
    speedup: {score: Summary, generate: Summary},
    /** The stock backbone, its sequence holding the template prefix: fed score mode's uncached tokens and forced steps
     * (the prompt tail with `Safety:`, then a level word with `\nCategories:`) with no output at all. */
    floor: Summary,
    /** Per-round ratio score / floor. */
    vsFloor: Summary
}

/** Score mode on a fresh GenGuard (nothing cached) against the next request on it (template prefix cached). */
export interface GenPrefixReuse {
    inputTokens: number,
    cold: Summary,
    warm: Summary,
    /** Per-repetition ratio cold / warm. */
    gain: Summary
}

export interface GenThroughput {
    parallel: number,
    items: number,
    /** Requests per second, all submitted at once, score mode. */
    itemsPerSecond: Summary
}

export interface GenResults {
    latency: GenLatency[],
    prefixReuse: GenPrefixReuse[],
    throughput: GenThroughput[],
    /** Per-round items/s of each parallel setting over the first. */
    throughputGain: Summary[],
    /** Warnings GenGuard gave about the model file (the fixture's embedded template is the plain Qwen3 one). */
    warnings: string[]
}

/** The answer a real model writes for an unsafe prompt; the naive call generates this many tokens plus end-of-turn. */
const REAL_PROMPT_ANSWER = "Safety: Unsafe\nCategories: Violent";

/** Room after the longest prompt: GenGuard keeps 64 tokens for the answer. */
const ANSWER_ROOM = 64;

/**
 * Runs the Gen section.
 * @returns the results of item 5
 */
export async function runGenBench(options: GenBenchOptions): Promise<GenResults> {
    const {llama, threads, log} = options;
    const warnings: string[] = [];
    const onWarning = (message: string) => {
        if (!warnings.includes(message))
            warnings.push(message);
    };
    // GenGuard offloads everything when a GPU flavour is loaded; the naive call does the same
    const gpuLayers = llama.gpu === false ? 0 : 999;
    const naive = await StockBackbone.load(llama, options.model, gpuLayers, {contextSize: 4096, threads, batchSize: 512});
    const floor = await StockBackbone.load(llama, options.model, gpuLayers, {contextSize: 4096, threads, batchSize: 512});
    try {
        const tokenize = (text: string, special: boolean) => naive.tokenize(text, special);
        const texts = new TaggedTexts((text) => tokenize(text, false));
        const maxPrompt = Math.max(...options.inputTokens.map((tokens) => renderPrompt(texts.next(tokens), tokenize).length));
        const contextSize = Math.ceil((maxPrompt + ANSWER_ROOM + 16) / 256) * 256;
        const load = (parallel: number, size = contextSize) => GenGuard.load({model: options.model, threads, contextSize: size, parallel, gpuLayers, onWarning});

        log("gen: latency of score / generate / naive");
        const latency = await measureLatency(await load(1), naive, floor, texts, tokenize, options);
        log("gen: prefix reuse (fresh GenGuard per repetition)");
        const prefixReuse = await measurePrefixReuse(() => load(1), texts, options);
        log("gen: throughput");
        const shortest = Math.min(...options.inputTokens);
        const throughputContext = Math.ceil((renderPrompt(texts.next(shortest), tokenize).length + ANSWER_ROOM + 16) / 256) * 256;
        const {throughput, throughputGain} = await measureThroughput(options.parallel.map((parallel) => () => load(parallel, throughputContext)),
            texts, shortest, options);
        return {latency, prefixReuse, throughput, throughputGain, warnings};
    } finally {
        await naive.dispose();
        await floor.dispose();
    }
}

/** Distinct user prompts of a given length: each starts with its own number, so only the template prefix is shared. */
class TaggedTexts {
    private count = 0;

    constructor(private readonly tokenize: (text: string) => Int32Array) {}

    next(tokens: number): string {
        return proseOfTokens(tokens, this.tokenize, `${++this.count}. `);
    }
}

/** The Gen prompt of a user text, as GenGuard renders it (template segments; user text never becomes special tokens). */
function renderPrompt(text: string, tokenize: (text: string, special: boolean) => Int32Array): number[] {
    return tokenizeSegments(genPromptSegments([{role: "user", content: text}]).segments, tokenize);
}

/** Runs one GenGuard request, counting a malformed generated answer (random weights) as done. */
async function judge(gen: GenGuard, text: string, mode: "score" | "generate"): Promise<{verdict: GenVerdict | null, answer: string}> {
    try {
        const verdict = await gen.moderatePrompt(text, {mode});
        return {verdict, answer: verdict.text ?? ""};
    } catch (error) {
        if (error instanceof MalformedAnswerError)
            return {verdict: null, answer: error.text};
        throw error;
    }
}

async function measureLatency(gen: GenGuard, naive: StockBackbone, floor: StockBackbone, texts: TaggedTexts,
    tokenize: (text: string, special: boolean) => Int32Array, options: GenBenchOptions): Promise<GenLatency[]> {
    try {
        const naiveAnswerTokens = tokenize(REAL_PROMPT_ANSWER, false).length + 1;
        const prefix = tokenizeSegments([{special: "<|im_start|>"}, {text: genInstructionsBefore("prompt")}], tokenize);
        await floor.feed(prefix);
        const lines = {safety: tokenize("Safety:", false), level: tokenize(" Safe", false), categories: tokenize("\nCategories:", false)};
        const usage = new Map<number, {promptTokens: number, cachedTokens: number}>();
        const answerTokens = new Map<number, number[]>();
        const trials = options.inputTokens.flatMap((inputTokens) => [
            {name: `score${inputTokens}`, run: async () => {
                const text = texts.next(inputTokens);
                const {ms, value} = await timed(() => judge(gen, text, "score"));
                usage.set(inputTokens, value.verdict!.usage);
                return ms;
            }},
            {name: `generate${inputTokens}`, run: async () => {
                const text = texts.next(inputTokens);
                const {ms, value} = await timed(() => judge(gen, text, "generate"));
                answerTokens.set(inputTokens, [...(answerTokens.get(inputTokens) ?? []), tokenize(value.answer, false).length]);
                return ms;
            }},
            {name: `floor${inputTokens}`, run: async () => {
                const prompt = renderPrompt(texts.next(inputTokens), tokenize);
                await floor.truncate(prefix.length);
                const {ms} = await timed(async () => {
                    await floor.feed([...prompt.slice(prefix.length), ...lines.safety]);
                    await floor.feed([...lines.level, ...lines.categories]);
                });
                return ms;
            }},
            {name: `naive${inputTokens}`, run: async () => {
                const prompt = renderPrompt(texts.next(inputTokens), tokenize);
                await naive.truncate(0);
                const {ms} = await timed(() => naive.generate(prompt, naiveAnswerTokens));
                return ms;
            }}
        ]);
        const samples = await interleave(trials, {...options.rounds, onRound: (round) => options.log(`gen: latency round ${round + 1}/${options.rounds.rounds}`)});
        return options.inputTokens.map((inputTokens) => {
            const [score, generate, naiveMs, floorMs] = ["score", "generate", "naive", "floor"].map((mode) => samples[`${mode}${inputTokens}`]);
            return {
                inputTokens, ...usage.get(inputTokens)!,
                score: summarize(score), generate: summarize(generate),
                generateAnswerTokens: summarize(answerTokens.get(inputTokens)!).median,
                naive: summarize(naiveMs), naiveAnswerTokens,
                speedup: {score: pairedRatio(naiveMs, score), generate: pairedRatio(naiveMs, generate)},
                floor: summarize(floorMs), vsFloor: pairedRatio(score, floorMs)
            };
        });
    } finally {
        await gen.dispose();
    }
}

async function measurePrefixReuse(load: () => Promise<GenGuard>, texts: TaggedTexts, options: GenBenchOptions): Promise<GenPrefixReuse[]> {
    const results: GenPrefixReuse[] = [];
    for (const inputTokens of options.inputTokens) {
        const cold: number[] = [];
        const warm: number[] = [];
        for (let round = -options.rounds.warmup; round < options.rounds.rounds; round++) {
            const gen = await load();
            try {
                const first = await timed(() => judge(gen, texts.next(inputTokens), "score"));
                const second = await timed(() => judge(gen, texts.next(inputTokens), "score"));
                if (round >= 0) {
                    cold.push(first.ms);
                    warm.push(second.ms);
                }
            } finally {
                await gen.dispose();
            }
        }
        results.push({inputTokens, cold: summarize(cold), warm: summarize(warm), gain: pairedRatio(cold, warm)});
    }
    return results;
}

async function measureThroughput(loaders: Array<() => Promise<GenGuard>>, texts: TaggedTexts, inputTokens: number,
    options: GenBenchOptions): Promise<{throughput: GenThroughput[], throughputGain: Summary[]}> {
    const guards: GenGuard[] = [];
    try {
        for (const load of loaders)
            guards.push(await load());
        const items = options.throughputItems;
        const samples = await interleave(guards.map((gen) => ({
            name: String(gen.options.parallel),
            run: async () => {
                const batch = Array.from({length: items}, () => texts.next(inputTokens));
                const {ms} = await timed(() => Promise.all(batch.map((text) => judge(gen, text, "score"))));
                return items / (ms / 1000);
            }
        })), options.rounds);
        const reference = samples[String(options.parallel[0])];
        return {
            throughput: options.parallel.map((parallel) => ({parallel, items, itemsPerSecond: summarize(samples[String(parallel)])})),
            throughputGain: options.parallel.map((parallel) => pairedRatio(samples[String(parallel)], reference))
        };
    } finally {
        for (const gen of guards)
            await gen.dispose();
    }
}
