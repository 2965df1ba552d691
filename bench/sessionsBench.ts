// Concurrent Stream sessions (issue 14): S sessions at the same context, each pushing one token per step, as a server
// monitoring S generations does, on the engine below StreamSession (one evaluate of S one-token requests per step,
// which is what StreamEvaluator coalesces concurrent pushes into). The two KV layouts in the same process, interleaved
// step by step: a KV stream per session (the library's default) and one shared pool (the layout before issue 14).
// Every context holds the most sessions throughout, as a server's open sessions hold their cells whether they push or
// not: in the shared pool even one session stepping attends over all of them (masked).

import type {
    Addon, AddonStreamContext, AddonStreamContextOptions, AddonStreamModel, AddonStreamRequest, KvCacheType
} from "../src/native/AddonTypes.js";
import {AddonHead} from "../src/native/AddonTypes.js";
import type {BenchModels} from "./benchModels.js";
import {proseTokens} from "./benchTexts.js";
import {interleaveSteps} from "./interleave.js";
import type {RoundOptions, StepTrial} from "./interleave.js";
import {pairedSteps, summarize, summarizeSteps} from "./stats.js";
import type {Summary} from "./stats.js";

export type KvLayout = "per-sequence" | "shared";
export const KV_LAYOUTS: readonly KvLayout[] = ["per-sequence", "shared"];

/** What the sessions section measures. */
export interface SessionsBenchOptions {
    models: BenchModels,
    addon: Addon,
    threads: number,
    rounds: RoundOptions,
    /** Tokens every session holds before the measured steps, ascending. */
    contexts: number[],
    /** Session counts, ascending; the first is the single-session baseline (1). */
    sessions: number[],
    /** Most sessions the shared pool holds: its prompts decode over the cells of all the others (at 16 × 800 tokens
     * that took over half an hour on 2 cores), so its largest counts may be left out. */
    sharedSessions: number,
    /** Steps (one token for every session) per round. */
    steps: number,
    log: (line: string) => void
}

/** One session count at one context, in one layout. */
export interface SessionsPoint {
    sessions: number,
    /** Sequence ids spread out (every other id), so that llama.cpp splits a step at every gap. */
    spread: boolean,
    /** Per round: the median step's tokens per second, all sessions together. */
    tokensPerSecond: Summary,
    /** Per round, step by step against one session alone (a KV stream of its own, so its attention runs over its own
     * cells only, as in a context of its own): tokens/s of all sessions together / of the one. */
    vsAlone: Summary
}

export interface SessionsContextResults {
    context: number,
    layouts: Record<KvLayout, SessionsPoint[]>,
    /** The batching ceiling: ONE session fed S tokens a step (all scored) in its own stream, tokens/s, and / one
     * session alone: what S tokens in one graph can give on this machine, attention aside. */
    ceiling: Array<{tokens: number, tokensPerSecond: Summary, vsAlone: Summary}>,
    /** Per session count (the non-spread points): tokens/s per sequence / shared, paired step by step. */
    perSequenceVsShared: Array<{sessions: number, ratio: Summary}>,
    /** A stream per session with a q8_0 KV cache ({@link QUANTIZED_CACHES}), one session and the most up to 8:
     * tokens/s, / one session alone in the same cache, and / the same count in the f16 cache without flash attention
     * (the library's CPU default), paired step by step. */
    quantized: Array<{cache: string, sessions: number, tokensPerSecond: Summary, vsAlone: Summary, vsF16: Summary}>
}

/** The quantized KV caches the sessions section compares with f16 (llama.cpp quantizes values only with flash attention). */
export const QUANTIZED_CACHES = [
    {name: "q8_0 keys", cacheTypeK: "q8_0", cacheTypeV: "f16", flashAttention: "off"},
    {name: "q8_0 keys and values, flash attention", cacheTypeK: "q8_0", cacheTypeV: "q8_0", flashAttention: "on"}
] as const satisfies ReadonlyArray<{name: string, cacheTypeK: KvCacheType, cacheTypeV: KvCacheType, flashAttention: "on" | "off"}>;

export interface SessionsResults {
    contexts: SessionsContextResults[],
    /** KV cells of each context (the budget) and each sequence's share. */
    cells: {budget: number, perSequence: number},
    /** Sessions the per-session context holds, and the shared pool. */
    held: {perSequence: number, shared: number}
}

/** The session configurations of one layout: each count with ids 0..S-1, and the largest below the maximum spread out. */
function configurations(sessions: readonly number[]): Array<{sessions: number, spread: boolean}> {
    const max = sessions[sessions.length - 1];
    const spread = sessions.filter((count) => count > 1 && 2 * count <= max).pop();
    return [...sessions.map((count) => ({sessions: count, spread: false})), ...(spread != null ? [{sessions: spread, spread: true}] : [])];
}

/** One context per layout with the most sessions, each sequence holding the same prompt of `context` tokens. */
async function prepareContext(model: AddonStreamModel, layout: KvLayout, prompt: Int32Array, maxSessions: number, budget: number, threads: number,
    cache: Pick<AddonStreamContextOptions, "cacheTypeK" | "cacheTypeV" | "flashAttention"> = {cacheTypeK: "f16", cacheTypeV: "f16", flashAttention: "off"}):
    Promise<{context: AddonStreamContext, sequences: number[]}> {
    const context = await model.createContext({contextSize: budget, maxSequences: maxSessions, batchSize: 512, ubatchSize: 128,
        outputBatchSize: 64, threads, stopAfterHidden: true, kvLayout: layout, ...cache});
    const sequences = Array.from({length: maxSessions}, () => context.acquireSequence());
    if (layout === "per-sequence") {
        // decoded once, then copied into the other streams (a buffer copy: each stream holds cells of its own)
        await context.evaluate([{sequence: sequences[0], tokens: prompt, outputs: Int32Array.of(), heads: 0}]);
        for (const sequence of sequences.slice(1))
            context.copySequence(sequences[0], sequence);
    } else {
        // in one pool a copy would SHARE the source's cells, and the sessions' attention would run over one prompt's
        // cells instead of all of theirs: each is decoded into cells of its own, as live sessions are
        for (let i = 0; i < sequences.length; i += 4)
            await context.evaluate(sequences.slice(i, i + 4).map((sequence) => ({sequence, tokens: prompt, outputs: Int32Array.of(), heads: 0})));
    }
    return {context, sequences};
}

/** A trial whose step is one evaluate of a request per sequence (timed), and whose repetition ends by truncating
 * them back to the prompt. */
function evaluateTrial(name: string, context: AddonStreamContext, sequences: readonly number[], promptLength: number,
    request: (index: number, sequence: number) => AddonStreamRequest): StepTrial {
    return {
        name,
        async step(index: number): Promise<number> {
            const requests = sequences.map((sequence) => request(index, sequence));
            const start = performance.now();
            await context.evaluate(requests);
            return performance.now() - start;
        },
        async finish(): Promise<void> {
            for (const sequence of sequences)
                context.truncateSequence(sequence, promptLength);
        }
    };
}

/**
 * Measures S sessions stepping together at each context, in both KV layouts.
 * @returns per context and layout, tokens/s of all sessions together and the ratio to one session
 */
export async function runSessionsBench({models, addon, threads, rounds, contexts, sessions, sharedSessions, steps, log}: SessionsBenchOptions): Promise<SessionsResults> {
    const maxSessions = sessions[sessions.length - 1];
    // room for a round's steps (a repetition's tokens are truncated away after it): the ceiling's sequence takes all
    // its counts' tokens each step
    const ceilingCounts = sessions.filter((count) => count > 1);
    const perSequence = contexts[contexts.length - 1] + steps * ceilingCounts.reduce((sum, count) => sum + count, 0) + 64;
    // one sequence more in the per-session context: the ceiling's own
    const budget = perSequence * (maxSessions + 1);
    const sharedHeld = Math.min(sharedSessions, maxSessions);
    // the per-session context: the sessions and the ceiling's sequence
    const held = (layout: KvLayout) => layout === "shared" ? sharedHeld : maxSessions + 1;
    const model = await addon.StreamModel.load({modelPath: models.stream.model, headPath: models.stream.head, gpuLayers: 0, useMmap: true});
    const results: SessionsContextResults[] = [];
    try {
        const feed = Int32Array.from(proseTokens(steps, (text) => model.tokenize(text, false)));
        for (const contextTokens of contexts) {
            const prompt = Int32Array.from(proseTokens(contextTokens, (text) => model.tokenize(text, false)));
            log(`sessions: ${maxSessions} sequences of ${contextTokens} tokens per session, ${sharedHeld} in the shared pool (budget ${budget} cells)`);
            const prepared = await Promise.all(KV_LAYOUTS.map((layout) => prepareContext(model, layout, prompt, held(layout), budget, threads)));
            try {
                // the q8_0 caches: a stream per session, as many as the largest count up to 8 (a model whose heads are
                // narrower than a q8_0 block, the quick run's tiny one, is refused and left out)
                const quantizedCounts = [1, Math.max(...sessions.filter((count) => count <= 8))].filter((count, i, all) => all.indexOf(count) === i);
                const quantizedHeld = quantizedCounts[quantizedCounts.length - 1];
                const caches: Array<{name: string, context: AddonStreamContext, sequences: number[]}> = [];
                for (const {name, ...cache} of QUANTIZED_CACHES) {
                    try {
                        const ready = await prepareContext(model, "per-sequence", prompt, quantizedHeld, perSequence * quantizedHeld, threads, cache);
                        prepared.push(ready);
                        caches.push({name, ...ready});
                    } catch (error) {
                        log(`sessions: ${name} left out: ${(error as Error).message}`);
                    }
                }
                const trials: StepTrial[] = [];
                const keys: Array<{layout: KvLayout, sessions: number, spread: boolean, name: string}> = [];
                KV_LAYOUTS.forEach((layout, l) => {
                    const {context, sequences} = prepared[l];
                    for (const {sessions: count, spread} of configurations(sessions.filter((count) => count <= Math.min(held(layout), maxSessions)))) {
                        const chosen = spread ? sequences.filter((_, i) => i % 2 === 0).slice(0, count) : sequences.slice(0, count);
                        const name = `${layout} ${count}${spread ? " spread" : ""}`;
                        keys.push({layout, sessions: count, spread, name});
                        trials.push(evaluateTrial(name, context, chosen, prompt.length,
                            (index, sequence) => ({sequence, tokens: feed.subarray(index, index + 1), outputs: Int32Array.of(0), heads: AddonHead.response})));
                    }
                });
                // the ceiling on the per-sequence context's extra sequence (no session trial uses it)
                const {context: perSequenceContext, sequences: perSequenceIds} = prepared[KV_LAYOUTS.indexOf("per-sequence")];
                const ceilingSequence = perSequenceIds[maxSessions];
                for (const count of ceilingCounts)
                    trials.push(evaluateTrial(`ceiling ${count}`, perSequenceContext, [ceilingSequence], prompt.length, (index, sequence) => ({sequence,
                        tokens: Int32Array.from({length: count}, (_, k) => feed[(index + k) % feed.length]),
                        outputs: Int32Array.from({length: count}, (_, k) => k), heads: AddonHead.response})));
                for (const cache of caches)
                    for (const count of quantizedCounts)
                        trials.push(evaluateTrial(`${cache.name} ${count}`, cache.context, cache.sequences.slice(0, count), prompt.length,
                            (index, sequence) => ({sequence, tokens: feed.subarray(index, index + 1), outputs: Int32Array.of(0), heads: AddonHead.response})));
                const samples = await interleaveSteps(trials, {...rounds, onRound: (round) => log(`sessions: context ${contextTokens}, round ${round + 1}/${rounds.rounds}`)}, steps);
                const alone = samples["per-sequence 1"];
                // tokens/s of `tokens` a step, and against one session alone step by step
                const rates = (name: string, tokens: number) => ({
                    tokensPerSecond: summarize(summarizeSteps(samples[name]).samples.map((ms) => tokens * 1000 / ms)),
                    vsAlone: pairedSteps(samples[name], alone, (ms, aloneMs) => tokens * aloneMs / ms)
                });
                const layouts = Object.fromEntries(KV_LAYOUTS.map((layout) => [layout,
                    keys.filter((key) => key.layout === layout).map(({sessions: count, spread, name}): SessionsPoint => ({
                        sessions: count, spread, ...rates(name, count)}))])) as Record<KvLayout, SessionsPoint[]>;
                const perSequenceVsShared = sessions.filter((count) => count <= held("shared")).map((count) => ({sessions: count,
                    ratio: pairedSteps(samples[`per-sequence ${count}`], samples[`shared ${count}`], (a, b) => b / a)}));
                const ceiling = ceilingCounts.map((count) => ({tokens: count, ...rates(`ceiling ${count}`, count)}));
                const quantized = caches.flatMap(({name}) => quantizedCounts.map((count) => ({cache: name, sessions: count,
                    tokensPerSecond: summarize(summarizeSteps(samples[`${name} ${count}`]).samples.map((ms) => count * 1000 / ms)),
                    vsAlone: pairedSteps(samples[`${name} ${count}`], samples[`${name} 1`], (ms, aloneMs) => count * aloneMs / ms),
                    vsF16: pairedSteps(samples[`${name} ${count}`], samples[`per-sequence ${count}`], (ms, f16Ms) => f16Ms / ms)})));
                results.push({context: contextTokens, layouts, ceiling, perSequenceVsShared, quantized});
            } finally {
                for (const {context} of prepared)
                    await context.dispose();
            }
        }
    } finally {
        await model.dispose();
    }
    return {contexts: results, cells: {budget, perSequence}, held: {perSequence: maxSessions, shared: sharedHeld}};
}
