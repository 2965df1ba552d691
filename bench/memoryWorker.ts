// A child process of the memory and start-up figure (memoryBench.ts): loads ONE model the way a user would, reports
// when the first verdict is in (ms since this process started), runs a short workload, then reports its peak RSS.
// Usage: node dist/bench/memoryWorker.js '<MemoryWorkerConfig as JSON>'; one JSON event per stdout line.

import {readFileSync} from "node:fs";
import type {Token} from "node-llama-cpp";
import {GenGuard, StreamGuard, loadLlamaRuntime} from "../src/index.js";
import type {KvCacheType} from "../src/index.js";
import {proseAtLeast} from "./benchTexts.js";

/** What a worker loads and runs. */
export interface MemoryWorkerConfig {
    /** `stream`: StreamGuard; `gen`: GenGuard; `stock`: plain node-llama-cpp (model + one-sequence context). */
    engine: "stream" | "gen" | "stock",
    model: string,
    /** The Stream head file (stream only). */
    head?: string,
    threads: number,
    /** KV cells (per sequence for gen); the library's default when absent. */
    contextSize?: number,
    /** The Stream KV cache's element types (stream only; default f16). A q8_0 V turns flash attention on, which
     * llama.cpp needs for it. */
    cacheTypeK?: KvCacheType,
    cacheTypeV?: KvCacheType,
    /** Tokens of the workload after the first verdict. */
    workTokens: number
}

/** The first line: the first verdict is in. */
export interface FirstVerdictEvent {
    event: "first",
    /** Milliseconds since this process started (performance.now()). */
    uptimeMs: number
}

/** The last line. */
export interface DoneEvent {
    event: "done",
    /** Peak RSS of this process, in KiB (see {@link peakRssKiB}). */
    maxRssKiB: number,
    /** KV cells allocated by the engine's context(s). */
    kvCells: number,
    /** Tokens of the workload as scored or evaluated. */
    workTokens: number
}

const PROMPT = "How do I bake bread at home?";

/** Loads, judges the first prompt, runs the workload; returns the KV cells and the workload's tokens. */
async function run(config: MemoryWorkerConfig, reportFirst: () => void): Promise<{kvCells: number, workTokens: number}> {
    const contextSize = config.contextSize != null ? {contextSize: config.contextSize} : {};
    const work = proseAtLeast(config.workTokens);
    if (config.engine === "stream") {
        const cache = {cacheTypeK: config.cacheTypeK ?? "f16", cacheTypeV: config.cacheTypeV ?? "f16"};
        const guard = await StreamGuard.load({model: config.model, head: config.head, threads: config.threads, maxSessions: 1, ...contextSize,
            ...cache, ...(cache.cacheTypeV === "f16" ? {} : {flashAttention: true})});
        const session = await guard.createSession({messages: [{role: "user", content: PROMPT}]});
        reportFirst();
        await session.pushText(work);
        await session.finish();
        return {kvCells: guard.options.contextSize, workTokens: session.tokens.length};
    }
    if (config.engine === "gen") {
        const gen = await GenGuard.load({model: config.model, threads: config.threads, ...contextSize, onWarning: () => undefined});
        await gen.moderatePrompt(PROMPT);
        reportFirst();
        const verdict = await gen.moderatePrompt(work);
        return {kvCells: gen.options.contextSize * 2 * gen.options.parallel, workTokens: verdict.usage.promptTokens};
    }
    const {llama} = await loadLlamaRuntime();
    const model = await llama.loadModel({modelPath: config.model, gpuLayers: llama.gpu === false ? 0 : "auto"});
    const context = await model.createContext({threads: {ideal: config.threads, min: config.threads}, sequences: 1, ...contextSize});
    const sequence = context.getSequence();
    for await (const token of sequence.evaluate(model.tokenize(PROMPT) as Token[], {temperature: 0})) {
        void token;
        break;
    }
    reportFirst();
    const tokens = model.tokenize(work);
    await sequence.evaluateWithoutGeneratingNewTokens(tokens);
    return {kvCells: context.contextSize, workTokens: tokens.length};
}

/**
 * This process's own peak RSS in KiB: Linux's `VmHWM`. Not `process.resourceUsage().maxRSS`: on Linux, getrusage's
 * ru_maxrss survives execve, so a child spawned by the (large) bench process would report at least the bench's RSS
 * at the time of the fork. VmHWM belongs to the address space, which execve replaces. Elsewhere: maxRSS.
 */
function peakRssKiB(): number {
    try {
        const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"));
        if (match != null)
            return Number(match[1]);
    } catch {
        // not Linux
    }
    return process.resourceUsage().maxRSS;
}

const config = JSON.parse(process.argv[2]) as MemoryWorkerConfig;
const emit = (event: FirstVerdictEvent | DoneEvent) => process.stdout.write(JSON.stringify(event) + "\n");
const {kvCells, workTokens} = await run(config, () => emit({event: "first", uptimeMs: performance.now()}));
emit({event: "done", maxRssKiB: peakRssKiB(), kvCells, workTokens});
process.exit(0);
