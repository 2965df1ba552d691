// `npm run bench [-- --size 0.6b|4b] [--quick] [--out FILE] [--only stream,gen,memory]`: qwenguard's speed against raw
// llama.cpp (through node-llama-cpp) on random-weight models of the real Qwen3Guard shapes, measured in one process
// (memory: one child process per model), printed as a table and written as JSON. See issue 8 and README "Performance".

import {execFileSync} from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {parseArgs} from "node:util";
import {getRuntimeInfo, loadLlamaRuntime} from "../src/index.js";
import {benchCacheDir, prepareBenchModels, repoRoot} from "./benchModels.js";
import type {BenchModels, BenchSize} from "./benchModels.js";
import {checkTargets, formatReport} from "./benchReport.js";
import type {BenchFile, BenchMeta, BenchResults} from "./benchReport.js";
import {runGenBench} from "./genBench.js";
import type {RoundOptions} from "./interleave.js";
import {runMemoryBench} from "./memoryBench.js";
import type {MemoryCase} from "./memoryBench.js";
import {runSessionsBench} from "./sessionsBench.js";
import {runStreamBench} from "./streamBench.js";

const USAGE = "Usage: npm run bench -- [--size 0.6b|4b] [--quick] [--out FILE] [--only stream,sessions,gen,memory] [--threads N]\n" +
    "       npm run bench -- --report FILE   (prints the table of a saved run)\n" +
    "  --size     model shapes (default 0.6b); models are generated once into .cache/bench/\n" +
    "  --quick    tiny models and few repetitions: proves the bench runs (about a minute), measures nothing useful\n" +
    "  --out      the JSON file (default .cache/bench/results-<size>.json)\n" +
    "  --only     some sections only\n" +
    "  --threads  CPU threads of every engine (default 2, the issue's setting)";

/** Every section; `--only` picks some. */
const SECTIONS = ["stream", "sessions", "gen", "memory"] as const;
type Section = typeof SECTIONS[number];

/** How much each section does: the full run, or the `--quick` smoke run. */
interface Plan {
    threads: number,
    streamRounds: RoundOptions,
    genRounds: RoundOptions,
    stepTokens: number,
    decodeContext: number,
    scoreTokens: number,
    flatPositions: number[],
    nativeRuns: number,
    genInputTokens: number[],
    throughputItems: number,
    parallel: number[],
    memoryRuns: number,
    sessionRounds: RoundOptions,
    sessionContexts: number[],
    sessionCounts: number[],
    sessionShared: number,
    sessionSteps: number
}

/** The settings: threads=2 (this machine's cores), context ~120, 500-token responses, 100/1000/4000. */
const FULL: Plan = {
    threads: 2,
    streamRounds: {warmup: 1, rounds: 9},
    genRounds: {warmup: 1, rounds: 5},
    stepTokens: 16,
    decodeContext: 120,
    scoreTokens: 500,
    flatPositions: [100, 1000, 4000],
    nativeRuns: 3,
    genInputTokens: [60, 600],
    throughputItems: 16,
    parallel: [1, 4, 8],
    memoryRuns: 3,
    sessionRounds: {warmup: 1, rounds: 4},
    sessionContexts: [100, 800],
    sessionCounts: [1, 8, 16],
    sessionShared: 8,
    sessionSteps: 8
};

/** Every code path once or twice, on the tiny models. */
const QUICK: Plan = {
    ...FULL,
    streamRounds: {warmup: 0, rounds: 2},
    genRounds: {warmup: 0, rounds: 1},
    stepTokens: 4,
    scoreTokens: 64,
    flatPositions: [100, 400, 1000],
    nativeRuns: 1,
    genInputTokens: [60],
    throughputItems: 4,
    memoryRuns: 1,
    sessionRounds: {warmup: 0, rounds: 1},
    sessionContexts: [100],
    sessionCounts: [1, 2, 4],
    sessionShared: 4,
    sessionSteps: 2
};

const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);

/** The memory cases: each library with its defaults and with a context sized to the work, StreamGuard with a q8_0 KV
 * cache too (not on the tiny models: their heads are narrower than a q8_0 block), and plain node-llama-cpp. */
function memoryCases(models: BenchModels, threads: number, workTokens: number, quantizedKv: boolean): MemoryCase[] {
    const stream = {engine: "stream" as const, model: models.stream.model, head: models.stream.head, threads, workTokens};
    const gen = {engine: "gen" as const, model: models.stock, threads, workTokens};
    return [
        {name: "StreamGuard, default options, one session", config: stream},
        {name: "StreamGuard, contextSize 2048", config: {...stream, contextSize: 2048}},
        ...quantizedKv ? [
            {name: "StreamGuard, default options, q8_0 keys and values (flash attention)", config: {...stream, cacheTypeK: "q8_0" as const, cacheTypeV: "q8_0" as const}},
            {name: "StreamGuard, contextSize 2048, q8_0 keys and values (flash attention)",
                config: {...stream, contextSize: 2048, cacheTypeK: "q8_0" as const, cacheTypeV: "q8_0" as const}}
        ] : [],
        {name: "GenGuard, default options", config: gen},
        {name: "GenGuard, contextSize 2048", config: {...gen, contextSize: 2048}},
        {name: "node-llama-cpp, stock model, contextSize 4096 (reference)", config: {engine: "stock", model: models.stock, threads, contextSize: 4096, workTokens}}
    ];
}

/** Commit and whether the working tree differs from it (results belong to a source state). */
function gitState(): string {
    try {
        const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], {cwd: repoRoot, encoding: "utf8"}).trim();
        const dirty = execFileSync("git", ["status", "--porcelain"], {cwd: repoRoot, encoding: "utf8"}).trim().length > 0;
        return dirty ? `${commit} + uncommitted changes` : commit;
    } catch {
        return "unknown";
    }
}

async function main(): Promise<void> {
    const {values} = parseArgs({
        options: {
            size: {type: "string", default: "0.6b"},
            quick: {type: "boolean", default: false},
            out: {type: "string"},
            only: {type: "string", default: SECTIONS.join(",")},
            threads: {type: "string", default: String(FULL.threads)},
            report: {type: "string"},
            help: {type: "boolean", default: false}
        }
    });
    const only = values.only.split(",").map((section) => section.trim());
    const threads = Number(values.threads);
    if (values.help || !["0.6b", "4b"].includes(values.size) || only.some((section) => !(SECTIONS as readonly string[]).includes(section)) ||
        !Number.isInteger(threads) || threads < 1 || threads > 1024) {
        console.error(USAGE);
        process.exit(values.help ? 0 : 2);
    }
    if (values.report != null) {
        console.log(formatReport(JSON.parse(await fs.readFile(values.report, "utf8")) as BenchFile));
        return;
    }
    const sections = new Set(only as Section[]);
    const size: BenchSize = values.quick ? "tiny" : values.size as BenchSize;
    const plan = {...(values.quick ? QUICK : FULL), threads};
    const outFile = path.resolve(values.out ?? path.join(benchCacheDir, `results-${size}.json`));

    const started = new Date();
    const loadBefore = os.loadavg();
    const models = await prepareBenchModels(size, {log});
    const runtime = await loadLlamaRuntime();
    const info = await getRuntimeInfo();
    log(`bench: ${size} q8_0, ${plan.threads} threads, ${info.backend}; load average ${loadBefore.map((load) => load.toFixed(1)).join(" ")}`);

    const results: BenchResults = {};
    const cpu = os.cpus()[0]?.model ?? "unknown CPU";
    const meta = (): BenchMeta => ({
        started: started.toISOString(), finished: new Date().toISOString(),
        command: `npm run bench${process.argv.length > 2 ? " -- " + process.argv.slice(2).join(" ") : ""}`,
        size, quick: values.quick, plan, source: gitState(),
        machine: {cpu, cores: os.cpus().length, memoryBytes: os.totalmem(), platform: `${os.platform()} ${os.release()}`, node: process.version,
            loadAverageBefore: loadBefore, loadAverageAfter: os.loadavg()},
        runtime: {version: info.version, backend: info.backend, llamaCpp: info.llamaCpp},
        models
    });
    /** Writes the JSON: after every section, so that a long run that fails late keeps what it measured. */
    const save = async (file: BenchFile) => {
        await fs.mkdir(path.dirname(outFile), {recursive: true});
        await fs.writeFile(outFile, JSON.stringify(file, null, 2) + "\n");
    };
    // memory first: its child processes load the compiled sources afresh, so the sooner they run the less a concurrent
    // rebuild of dist/ can disturb them; and the bench process is still small then
    if (sections.has("memory")) {
        results.memory = await runMemoryBench(memoryCases(models, plan.threads, plan.scoreTokens, size !== "tiny"), plan.memoryRuns, log);
        await save({meta: meta(), results, targets: []});
    }
    if (sections.has("stream")) {
        results.stream = await runStreamBench({models, runtime, threads: plan.threads, rounds: plan.streamRounds, stepTokens: plan.stepTokens,
            decodeContext: plan.decodeContext, scoreTokens: plan.scoreTokens, flatPositions: plan.flatPositions, nativeRuns: plan.nativeRuns, log});
        await save({meta: meta(), results, targets: []});
    }
    if (sections.has("sessions")) {
        results.sessions = await runSessionsBench({models, addon: runtime.addon, threads: plan.threads, rounds: plan.sessionRounds,
            contexts: plan.sessionContexts, sessions: plan.sessionCounts, sharedSessions: plan.sessionShared, steps: plan.sessionSteps, log});
        await save({meta: meta(), results, targets: []});
    }
    if (sections.has("gen"))
        results.gen = await runGenBench({model: models.stock, llama: runtime.llama, threads: plan.threads, rounds: plan.genRounds,
            inputTokens: plan.genInputTokens, throughputItems: plan.throughputItems, parallel: plan.parallel, log});

    // tiny models say nothing about the targets
    const file: BenchFile = {meta: meta(), results, targets: values.quick ? [] : checkTargets(results)};
    console.log(formatReport(file));
    await save(file);
    log(`bench: wrote ${path.relative(process.cwd(), outFile)}`);
}

await main();
