// Stream figures (issue 8, items 1–4): decode per token against the stock backbone's floor and a greedy generator,
// whole-response scoring against raw prompt evaluation, flatness over the context, and where a token's time goes.

import path from "node:path";
import type {Llama} from "node-llama-cpp";
import {StreamGuard} from "../src/index.js";
import type {Message, StreamSession} from "../src/index.js";
import type {Addon} from "../src/native/AddonTypes.js";
import {renderSegments, tokenizeSegments} from "../src/conversation/TokenSegments.js";
import type {TokenSegment} from "../src/conversation/TokenSegments.js";
import {streamAssistantHeaderSegments, streamPromptSegments} from "../src/stream/streamTemplate.js";
import type {BenchModels} from "./benchModels.js";
import {repoRoot} from "./benchModels.js";
import {proseOfTokens, proseTokens} from "./benchTexts.js";
import {EngineProbe} from "./EngineProbe.js";
import type {ProbeMode} from "./EngineProbe.js";
import {interleave, interleaveSteps, timed} from "./interleave.js";
import type {RoundOptions, StepTrial} from "./interleave.js";
import {measureNativeHeadShare} from "./nativeHeadShare.js";
import type {NativeHeadShare} from "./nativeHeadShare.js";
import {pairedRatio, pairedSteps, summarize, summarizeSteps} from "./stats.js";
import type {Summary} from "./stats.js";
import {StockBackbone} from "./StockBackbone.js";

/** What the Stream section measures, and how long. */
export interface StreamBenchOptions {
    models: BenchModels,
    /** From `loadLlamaRuntime()`: node-llama-cpp's llama.cpp and the addon bound to it. */
    runtime: {llama: Llama, addon: Addon},
    threads: number,
    rounds: RoundOptions,
    /** Tokens fed one at a time per repetition of a per-token figure. */
    stepTokens: number,
    /** Tokens in the sequence (prompt + assistant header) before the decode comparison's tokens. */
    decodeContext: number,
    /** Tokens of the whole-response scoring. */
    scoreTokens: number,
    /** Context positions of the flatness figure, ascending. */
    flatPositions: number[],
    /** Runs of the native tool for the head share. */
    nativeRuns: number,
    log: (line: string) => void
}

/** Per-token decode at one position: the Stream API, the engine below it, and the two baselines (ms/token). */
export interface DecodeResults {
    /** Tokens in the sequence before the measured ones. */
    context: number,
    stepTokens: number,
    /** `StreamSession.pushTokens([id])`, one token at a time. */
    stream: Summary,
    /** The addon's evaluate with one token: response head / output row without head / no output. */
    engine: {head: Summary, outputRow: Summary, noOutput: Summary},
    /** Stock backbone, `evaluateWithoutGeneratingNewTokens` one token at a time. */
    floor: Summary,
    /** Stock backbone, greedy generation one token at a time. */
    generator: Summary,
    /** Per-round ratios of the Stream API to each baseline. */
    ratios: {vsFloor: Summary, vsGenerator: Summary},
    /** Per-round differences (ms/token) that split the Stream API's cost: what each layer adds over the one below. */
    costs: {outputRow: Summary, head: Summary, api: Summary, streamBackboneVsStock: Summary}
}

/** Whole-response scoring from the decode context (tokens/s). */
export interface ScoringResults {
    tokens: number,
    /** `pushTokens` of all tokens at once: every position output, the head on each. */
    stream: Summary,
    /** Stock backbone, `evaluateWithoutGeneratingNewTokens` of the same tokens. */
    raw: Summary,
    /** Per-round ratio stream / raw. */
    ratio: Summary
}

/** Per-token cost at one context position (ms/token). */
export interface FlatnessPoint {
    position: number,
    stream: Summary,
    /** The stock backbone as node-llama-cpp runs it by default: flash attention "auto" (on, on a CPU). */
    floor: Summary,
    /** The stock backbone with flash attention off, as the Stream engine runs on a CPU (StreamGuard's default there). */
    floorNoFlash: Summary,
    /** Per-round ratio stream / floor. */
    ratio: Summary
}

export interface FlatnessResults {
    points: FlatnessPoint[],
    /** Median per-token cost at the last position over the first. */
    lastOverFirst: {stream: number, floor: number, floorNoFlash: number}
}

export interface StreamResults {
    decode: DecodeResults,
    scoring: ScoringResults,
    flatness: FlatnessResults,
    /** The head's cost as the native core times it (null when the tool is not built). */
    nativeHead: NativeHeadShare | null,
    contextSize: number
}

/** The Stream engine's default batch size; the baselines use the same. */
const BATCH_SIZE = 512;

/** The first flatness visits and back, so that drifting load falls on every position: 100, 1000, 4000, 1000, 100. */
function visitOrder(positions: readonly number[]): number[] {
    return [...positions, ...positions.slice(0, -1).reverse()];
}

/**
 * Runs the Stream section on one StreamGuard, the stock backbone (plus a second context of it with flash attention off,
 * for the flatness figure) and one engine probe, all with the same threads and batch size.
 * @returns the results of items 1–4
 */
export async function runStreamBench(options: StreamBenchOptions): Promise<StreamResults> {
    const {models, runtime, threads, log} = options;
    const maxPosition = Math.max(...options.flatPositions, options.decodeContext + options.scoreTokens);
    const contextSize = Math.ceil((maxPosition + options.stepTokens + 64) / 256) * 256;

    // one pool: the flatness figure grows one session to the whole context (a per-session share would halve it), and
    // the figures stay comparable with those measured before sessions had streams of their own
    const guard = await StreamGuard.load({...models.stream, threads, contextSize, maxSessions: 2, kvLayout: "shared", batchSize: BATCH_SIZE});
    const gpuLayers = guard.options.gpuLayers;
    const stock = await StockBackbone.load(runtime.llama, models.stock, gpuLayers, {contextSize, threads, batchSize: BATCH_SIZE});
    const tokenize = (text: string, special: boolean) => stock.tokenize(text, special);
    const decodePrompt = sessionPrompt(options.decodeContext, tokenize);
    const probe = await EngineProbe.load(runtime.addon, models.stream, decodePrompt.tokens, {gpuLayers, ...guard._contextOptions});
    try {
        const steps = proseTokens(options.stepTokens, (text) => tokenize(text, false));
        const session = await guard.createSession({messages: decodePrompt.messages});
        await stock.feed(decodePrompt.tokens);
        log(`stream: decode at context ${decodePrompt.tokens.length}, ${steps.length} tokens per repetition`);
        const decode = await measureDecode(session, stock, probe, steps, withProgress(options.rounds, "decode", log));
        log("stream: whole-response scoring");
        const scoring = await measureScoring(session, stock, proseTokens(options.scoreTokens, (text) => tokenize(text, false)),
            withProgress(options.rounds, "scoring", log));
        await session.dispose();
        await probe.dispose();

        log("stream: flatness");
        const floorNoFlash = await StockBackbone.load(runtime.llama, models.stock, gpuLayers, {contextSize, threads, batchSize: BATCH_SIZE, flashAttention: false});
        const flatness = await measureFlatness(guard, {floor: stock, floorNoFlash}, steps, options, tokenize).finally(() => floorNoFlash.dispose());
        log("stream: head share (native tool)");
        const nativeHead = await measureNativeHeadShare(path.join(repoRoot, "build", "qg_stream_run"), models.stream,
            renderSegments(decodePrompt.segments), {threads, contextSize: 1024, steps: options.stepTokens * 2, runs: options.nativeRuns});
        return {decode, scoring, flatness, nativeHead, contextSize};
    } finally {
        await probe.dispose();
        await stock.dispose();
        await guard.dispose();
    }
}

/** The rounds, logging each one done. */
function withProgress(rounds: RoundOptions, what: string, log: (line: string) => void): RoundOptions {
    return {...rounds, onRound: (round) => log(`stream: ${what} round ${round + 1}/${rounds.rounds}`)};
}

/** A one-user-turn conversation whose Stream session prompt (assistant header included) is about `length` tokens. */
function sessionPrompt(length: number, tokenize: (text: string, special: boolean) => Int32Array): {messages: Message[], segments: TokenSegment[], tokens: number[]} {
    const render = (content: string) => {
        const messages: Message[] = [{role: "user", content}];
        const segments = [...streamPromptSegments(messages), ...streamAssistantHeaderSegments(false)];
        return {messages, segments, tokens: tokenizeSegments(segments, tokenize)};
    };
    const overhead = render("").tokens.length;
    return render(proseOfTokens(Math.max(1, length - overhead), (text) => tokenize(text, false)));
}

/** Times one step in milliseconds. */
async function timeStep(work: () => Promise<unknown>): Promise<number> {
    return (await timed(work)).ms;
}

/** A session fed one token per step, truncated back to `keep` response tokens after each repetition. */
function sessionTrial(name: string, session: StreamSession, steps: readonly number[], keep: number): StepTrial {
    return {name, step: (i) => timeStep(() => session.pushTokens([steps[i]])), finish: () => session.truncate(keep)};
}

/** The stock sequence fed one token per step with no output, truncated back to `keep` tokens. */
function floorTrial(name: string, stock: StockBackbone, steps: readonly number[], keep: number): StepTrial {
    return {name, step: (i) => timeStep(() => stock.feed([steps[i]])), finish: () => stock.truncate(keep)};
}

async function measureDecode(session: StreamSession, stock: StockBackbone, probe: EngineProbe, steps: readonly number[],
    rounds: RoundOptions): Promise<DecodeResults> {
    const base = stock.length;
    const probeTrial = (mode: ProbeMode): StepTrial => ({
        name: mode, step: (i) => probe.step(steps[i], mode), finish: async () => probe.reset()
    });
    let generator: AsyncGenerator<unknown, void, void> | undefined;
    const samples = await interleaveSteps([
        sessionTrial("stream", session, steps, 0),
        probeTrial("head"),
        probeTrial("outputRow"),
        probeTrial("noOutput"),
        floorTrial("floor", stock, steps, base),
        {
            name: "generator",
            start: async () => {
                generator = stock.generator([steps[0]]);
            },
            step: () => timeStep(async () => {
                if ((await generator!.next()).done)
                    throw new Error("The stock model ended its greedy generation early: use more steps or another first token");
            }),
            finish: async () => {
                await generator!.return();
                await stock.truncate(base);
            }
        }
    ], rounds, steps.length);
    const minus = (a: number, b: number) => a - b;
    const ratio = (a: number, b: number) => a / b;
    return {
        context: base,
        stepTokens: steps.length,
        stream: summarizeSteps(samples.stream),
        engine: {head: summarizeSteps(samples.head), outputRow: summarizeSteps(samples.outputRow), noOutput: summarizeSteps(samples.noOutput)},
        floor: summarizeSteps(samples.floor),
        generator: summarizeSteps(samples.generator),
        ratios: {vsFloor: pairedSteps(samples.stream, samples.floor, ratio), vsGenerator: pairedSteps(samples.stream, samples.generator, ratio)},
        costs: {
            outputRow: pairedSteps(samples.outputRow, samples.noOutput, minus),
            head: pairedSteps(samples.head, samples.outputRow, minus),
            api: pairedSteps(samples.stream, samples.head, minus),
            streamBackboneVsStock: pairedSteps(samples.noOutput, samples.floor, minus)
        }
    };
}

async function measureScoring(session: StreamSession, stock: StockBackbone, tokens: readonly number[], rounds: RoundOptions): Promise<ScoringResults> {
    const base = stock.length;
    const tokensPerSecond = (ms: number) => tokens.length / (ms / 1000);
    const samples = await interleave([
        {name: "stream", run: async () => {
            const {ms} = await timed(() => session.pushTokens(tokens));
            await session.truncate(0);
            return tokensPerSecond(ms);
        }},
        {name: "raw", run: async () => {
            const {ms} = await timed(() => stock.feed(tokens));
            await stock.truncate(base);
            return tokensPerSecond(ms);
        }}
    ], rounds);
    return {tokens: tokens.length, stream: summarize(samples.stream), raw: summarize(samples.raw), ratio: pairedRatio(samples.stream, samples.raw)};
}

/**
 * Per-token cost at each position: a fresh session with a short prompt is filled up to each position in turn (and
 * truncated back on the way down), the stock sequences alongside it; at every visit they are measured step by step.
 */
async function measureFlatness(guard: StreamGuard, stocks: {floor: StockBackbone, floorNoFlash: StockBackbone}, steps: readonly number[],
    options: StreamBenchOptions, tokenize: (text: string, special: boolean) => Int32Array): Promise<FlatnessResults> {
    const prompt = sessionPrompt(1, tokenize);
    const session = await guard.createSession({messages: prompt.messages});
    const sequences = [stocks.floor, stocks.floorNoFlash];
    try {
        for (const stock of sequences) {
            await stock.truncate(0);
            await stock.feed(prompt.tokens);
        }
        const start = prompt.tokens.length;
        const filler = proseTokens(Math.max(...options.flatPositions) - start, (text) => tokenize(text, false));
        const collected = new Map(options.flatPositions.map((position) => [position, {stream: [] as number[][], floor: [] as number[][], floorNoFlash: [] as number[][]}]));

        for (const position of visitOrder(options.flatPositions)) {
            const current = start + session.tokens.length;
            if (current > position) {
                await session.truncate(position - start);
                for (const stock of sequences)
                    await stock.truncate(position);
            } else if (current < position) {
                const fill = filler.slice(current - start, position - start);
                await session.pushTokens(fill);
                for (const stock of sequences)
                    await stock.feed(fill);
            }
            const samples = await interleaveSteps([
                sessionTrial("stream", session, steps, position - start),
                floorTrial("floor", stocks.floor, steps, position),
                floorTrial("floorNoFlash", stocks.floorNoFlash, steps, position)
            ], {warmup: 1, rounds: options.rounds.rounds}, steps.length);
            const point = collected.get(position)!;
            point.stream.push(...samples.stream);
            point.floor.push(...samples.floor);
            point.floorNoFlash.push(...samples.floorNoFlash);
            options.log(`stream: flatness at ${position}: ${summarizeSteps(samples.stream).median.toFixed(1)} ms/token ` +
                `(stock floor ${summarizeSteps(samples.floor).median.toFixed(1)}, without flash attention ${summarizeSteps(samples.floorNoFlash).median.toFixed(1)})`);
        }

        const points = options.flatPositions.map((position) => {
            const {stream, floor, floorNoFlash} = collected.get(position)!;
            return {position, stream: summarizeSteps(stream), floor: summarizeSteps(floor), floorNoFlash: summarizeSteps(floorNoFlash),
                ratio: pairedSteps(stream, floor, (a, b) => a / b)};
        });
        const first = points[0];
        const last = points[points.length - 1];
        const growth = (pick: (point: FlatnessPoint) => Summary) => pick(last).median / pick(first).median;
        return {points, lastOverFirst: {stream: growth((point) => point.stream), floor: growth((point) => point.floor),
            floorNoFlash: growth((point) => point.floorNoFlash)}};
    } finally {
        await session.dispose();
    }
}
