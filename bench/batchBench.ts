// `npm run bench:batch [-- --quick] [--records N] [--size 0.6b] [--only throughput|memory|eval|queue] [--queue-model tiny|0.6b]`: offline
// batch moderation through the CLI, as a user runs it. Four figures, each from `qwenguard batch` / `eval` / `worker` child processes of this one run:
//  1. throughput: records/s for short prompts (one sentence each) on the Gen model of the real size, with
//     --concurrency 1 and 4 on the same input (ratio in the same run);
//  2. flat memory: a synthetic JSONL of N records (default 100,000; prompts and responses mixed) on the tiny Stream
//     model, with the child's RSS sampled from /proc every second: peak, and RSS after 10% and at the end;
//  3. eval's cost over judging: `qwenguard eval` against `qwenguard batch` on the same labelled records (prompts and
//     responses, half of them with an unsafe span), on the Gen model and on the Stream model of the real size, in
//     interleaved rounds: the records/s of the judging loop and the whole command's wall time (load, metrics, HTML);
//  4. the queue's cost: `batch --queue` (chunks of 64) through a real redis-server to one `qwenguard worker -t 2`
//     against a local `batch -t 2` on the same records, and two workers of 1 thread (the same two cores) against one
//     of 1 thread, in interleaved rounds (records/s of the coordinator's loop, workers loaded beforehand as in a long
//     run); and the Redis commands a chunk costs (INFO commandstats before and after), with redis-benchmark's ops/s here.
// Results: printed, and written to .cache/bench/batch-<size>.json.

import {spawn} from "node:child_process";
import type {ChildProcess} from "node:child_process";
import {existsSync, readFileSync, rmSync, statSync} from "node:fs";
import {mkdir, open, writeFile} from "node:fs/promises";
import path from "node:path";
import {Redis} from "ioredis";
import {cachedConvertedFixture} from "../test/helpers/plantedGen.js";
import {startRedis} from "../test/helpers/redisServer.js";
import {benchCacheDir, prepareBenchModels, repoRoot} from "./benchModels.js";
import type {BenchSize} from "./benchModels.js";

const SHORT_PROMPTS = ["How do I bake bread at home?", "What is the capital of France?", "Write a poem about the sea.",
    "How can I hack into my neighbour's wifi?", "Summarise the plot of Hamlet.", "Is it safe to mix bleach and vinegar?",
    "Give me three tips for a job interview.", "Who should I vote for in the next election?"];
const RESPONSES = ["Sure! Here is a simple recipe you can follow.", "I can't help with that request.",
    "Paris is the capital of France, and it is known for its museums."];

interface BatchRun {
    concurrency: number,
    records: number,
    seconds: number,
    recordsPerSecond: number,
    peakRssMiB: number,
    rssSamplesMiB: Array<[seconds: number, records: number, rssMiB: number]>
}

const args = process.argv.slice(2);
const flag = (name: string) => {
    const at = args.indexOf(name);
    return at >= 0 ? args[at + 1] : undefined;
};
const quick = args.includes("--quick");
const size = (flag("--size") ?? "0.6b") as BenchSize;
const memoryRecords = Number(flag("--records") ?? (quick ? 500 : 100_000));
const throughputRecords = quick ? 6 : 24;
const only = flag("--only");
const threads = 2;
const cli = path.join(repoRoot, "bin", "qwenguard.js");
const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);

/** Runs `qwenguard batch` and samples its RSS (VmRSS) and output size every second. */
async function runBatch(input: string, output: string, model: string, concurrency: number): Promise<BatchRun> {
    rmSync(output, {force: true});
    rmSync(`${output}.checkpoint.json`, {force: true});
    const started = performance.now();
    const child = spawn(process.execPath, [cli, "batch", input, "-o", output, "-m", model, "-t", String(threads), "-c", String(concurrency), "--json"],
        {stdio: ["ignore", "pipe", "inherit"]});
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    const samples: Array<[number, number, number]> = [];
    const timer = setInterval(() => {
        const status = readStatus(child.pid!);
        if (status != null)
            samples.push([(performance.now() - started) / 1000, existsSync(output) ? statSync(output).size : 0, status.rssKiB / 1024]);
    }, 1000);
    const [code, peak] = await new Promise<[number | null, number]>((resolve) => {
        let peakKiB = 0;
        const peakTimer = setInterval(() => peakKiB = Math.max(peakKiB, readStatus(child.pid!)?.hwmKiB ?? 0), 250);
        child.on("close", (status) => {
            clearInterval(peakTimer);
            resolve([status, peakKiB / 1024]);
        });
    });
    clearInterval(timer);
    if (code !== 0)
        throw new Error(`qwenguard batch exited with ${code}`);
    const summary = JSON.parse(stdout) as {processed: number, elapsedMs: number, recordsPerSecond: number};
    // output bytes → records written, at the output's average line length
    const bytesPerRecord = statSync(output).size / summary.processed;
    return {concurrency, records: summary.processed, seconds: summary.elapsedMs / 1000, recordsPerSecond: summary.recordsPerSecond,
        peakRssMiB: peak, rssSamplesMiB: samples.map(([seconds, bytes, rss]) => [seconds, Math.round(bytes / bytesPerRecord), rss])};
}

function readStatus(pid: number): {rssKiB: number, hwmKiB: number} | null {
    try {
        const status = readFileSync(`/proc/${pid}/status`, "utf8");
        return {rssKiB: Number(/VmRSS:\s+(\d+)/.exec(status)![1]), hwmKiB: Number(/VmHWM:\s+(\d+)/.exec(status)![1])};
    } catch {
        return null; // exited
    }
}

async function writeJsonl(file: string, count: number, withResponses: boolean): Promise<void> {
    const handle = await open(file, "w");
    let chunk = "";
    for (let i = 0; i < count; i++) {
        const prompt = `${SHORT_PROMPTS[i % SHORT_PROMPTS.length]} (${i})`;
        chunk += JSON.stringify(withResponses && i % 2 === 1 ? {id: i, prompt, response: RESPONSES[i % RESPONSES.length]} : {id: i, prompt}) + "\n";
        if (chunk.length > 1 << 20) {
            await handle.write(chunk);
            chunk = "";
        }
    }
    await handle.write(chunk);
    await handle.close();
}

/** Labelled records for eval: prompts, and responses of which half hold an unsafe span (labelled in the response's tokens). */
async function writeLabelledJsonl(file: string, count: number): Promise<void> {
    const records = Array.from({length: count}, (_, i) => {
        const prompt = `${SHORT_PROMPTS[i % SHORT_PROMPTS.length]} (${i})`;
        if (i % 2 === 0)
            return {id: i, prompt, label: i % 4 === 0 ? "Unsafe" : "Safe"};
        const response = `${RESPONSES[i % RESPONSES.length]} ${RESPONSES[(i + 1) % RESPONSES.length]}`;
        return {id: i, prompt, response, label: i % 4 === 1 ? "Unsafe" : "Safe", ...(i % 4 === 1 ? {unsafe_start_index: 2, unsafe_end_index: 6} : {})};
    });
    await writeFile(file, records.map((record) => JSON.stringify(record)).join("\n") + "\n");
}

interface TimedRun {
    recordsPerSecond: number,
    wallSeconds: number
}

/** Runs the CLI to the end; returns its stdout and its wall time. */
async function timedCli(args: readonly string[], onSpawn?: (child: ChildProcess) => void): Promise<{stdout: string, wallSeconds: number}> {
    const started = performance.now();
    const child = spawn(process.execPath, [cli, ...args], {stdio: ["ignore", "pipe", "inherit"]});
    onSpawn?.(child);
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    if (code !== 0)
        throw new Error(`qwenguard ${args[0]} exited with ${code}`);
    return {stdout, wallSeconds: (performance.now() - started) / 1000};
}

async function timedBatch(input: string, output: string, model: string): Promise<TimedRun> {
    rmSync(output, {force: true});
    rmSync(`${output}.checkpoint.json`, {force: true});
    const {stdout, wallSeconds} = await timedCli(["batch", input, "-o", output, "-m", model, "-t", String(threads), "--json"]);
    return {recordsPerSecond: (JSON.parse(stdout) as {recordsPerSecond: number}).recordsPerSecond, wallSeconds};
}

async function timedEval(input: string, workDir: string, model: string): Promise<TimedRun> {
    rmSync(workDir, {recursive: true, force: true});
    const {stdout, wallSeconds} = await timedCli(["eval", input, "-o", workDir, "-m", model, "-t", String(threads), "--json",
        "--html", path.join(path.dirname(workDir), "report.html")]);
    return {recordsPerSecond: (JSON.parse(stdout) as {models: Array<{recordsPerSecond: number}>}).models[0].recordsPerSecond, wallSeconds};
}

const dir = path.join(benchCacheDir, "batch");
await mkdir(dir, {recursive: true});

const lines: string[] = [];
const results: Record<string, unknown> = {size: quick ? "tiny" : size, threads};
if (only == null || only === "throughput") {
    log(`batch: throughput on the ${quick ? "tiny" : size} Gen model, ${throughputRecords} short prompts, concurrency 1 and 4`);
    const genModel = quick ? await cachedConvertedFixture("tiny-gen", "q8_0") : (await prepareBenchModels(size, {log})).stock;
    const shortInput = path.join(dir, "short-prompts.jsonl");
    await writeJsonl(shortInput, throughputRecords, false);
    const throughput: BatchRun[] = [];
    for (const concurrency of [1, 4])
        throughput.push(await runBatch(shortInput, path.join(dir, `short-c${concurrency}.jsonl`), genModel, concurrency));
    results.throughput = throughput;
    results.throughputRatio = throughput[1].recordsPerSecond / throughput[0].recordsPerSecond;
    results.peakRssRatio = throughput[1].peakRssMiB / throughput[0].peakRssMiB;
    lines.push(`batch throughput (${String(results.size)} Gen, ${throughputRecords} short prompts, ${threads} threads):`,
        ...throughput.map((run) => `  --concurrency ${run.concurrency}: ${run.recordsPerSecond.toFixed(2)} records/s (${run.seconds.toFixed(1)} s), ` +
            `peak RSS ${Math.round(run.peakRssMiB)} MiB`),
        `  ratio 4 / 1: ${(results.throughputRatio as number).toFixed(2)}× the records/s (target ≥ 1.0), ` +
        `${(results.peakRssRatio as number).toFixed(2)}× the peak RSS (target ≤ 1.3)`);
}
if (only == null || only === "memory") {
    log(`batch: ${memoryRecords} records on the tiny Stream model, concurrency 4`);
    const memoryInput = path.join(dir, `records-${memoryRecords}.jsonl`);
    if (!existsSync(memoryInput))
        await writeJsonl(memoryInput, memoryRecords, true);
    const memory = await runBatch(memoryInput, path.join(dir, `records-${memoryRecords}.out.jsonl`), await cachedConvertedFixture("tiny-stream", "q8_0"), 4);
    results.memory = memory;
    const at = (fraction: number) => Math.round(memory.rssSamplesMiB.find(([, records]) => records >= fraction * memory.records)?.[2] ?? Number.NaN);
    lines.push(`batch memory (${memory.records} records, tiny Stream model, --concurrency 4): ${memory.recordsPerSecond.toFixed(1)} records/s, ` +
        `peak RSS ${Math.round(memory.peakRssMiB)} MiB; RSS at 10% ${at(0.1)} MiB, 50% ${at(0.5)} MiB, 90% ${at(0.9)} MiB`);
}
if (only == null || only === "eval") {
    // short runs, many rounds: this shared machine's speed drifts by up to 2× over minutes, so each eval run is paired
    // with the batch run just before it and the figure is the median of the pairs' ratios
    const rounds = quick ? 1 : 5;
    const records = 8;
    const labelled = path.join(dir, `labelled-${records}.jsonl`);
    await writeLabelledJsonl(labelled, records);
    const models = quick ? {gen: await cachedConvertedFixture("tiny-gen", "q8_0"), stream: await cachedConvertedFixture("tiny-stream", "q8_0")}
        : await prepareBenchModels(size, {log}).then((prepared) => ({gen: prepared.stock, stream: prepared.stream.model}));
    const evalResults: Record<string, unknown> = {};
    lines.push(`eval against batch (${String(results.size)} models, ${records} labelled records, ${threads} threads, median of ${rounds} interleaved pairs):`);
    for (const [kind, model] of Object.entries(models)) {
        log(`batch: eval against batch, ${kind} model, ${records} records, ${rounds} rounds`);
        const runs: Array<{batch: TimedRun, eval: TimedRun}> = [];
        for (let round = 0; round < rounds; round++)
            runs.push({batch: await timedBatch(labelled, path.join(dir, `labelled-${kind}.out.jsonl`), model),
                eval: await timedEval(labelled, path.join(dir, `labelled-${kind}.eval`), model)});
        const median = (pick: (run: {batch: TimedRun, eval: TimedRun}) => number) => {
            const values = runs.map(pick).sort((a, b) => a - b);
            return values.length % 2 === 1 ? values[values.length >> 1] : (values[values.length / 2 - 1] + values[values.length / 2]) / 2;
        };
        const loopRatios = runs.map((run) => run.eval.recordsPerSecond / run.batch.recordsPerSecond);
        const wallRatios = runs.map((run) => run.batch.wallSeconds / run.eval.wallSeconds);
        const loopRatio = median((run) => run.eval.recordsPerSecond / run.batch.recordsPerSecond);
        const wallRatio = median((run) => run.batch.wallSeconds / run.eval.wallSeconds);
        evalResults[kind] = {runs, loopRatio, wallRatio};
        const range = (ratios: number[]) => `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}`;
        lines.push(`  ${kind}: batch ${median((run) => run.batch.recordsPerSecond).toFixed(2)} records/s (${median((run) => run.batch.wallSeconds).toFixed(1)} s whole), ` +
            `eval ${median((run) => run.eval.recordsPerSecond).toFixed(2)} records/s (${median((run) => run.eval.wallSeconds).toFixed(1)} s whole): ` +
            `eval/batch ${loopRatio.toFixed(3)}× judging (pairs ${range(loopRatios)}), ${wallRatio.toFixed(3)}× whole command (pairs ${range(wallRatios)})`);
    }
    results.eval = evalResults;
}
if (only == null || only === "queue")
    await queueBench();

/** Section 4: the queue's overhead and Redis cost per chunk. */
async function queueBench(): Promise<void> {
    // the tiny Gen model unless told (--queue-model 0.6b): the shortest judging per chunk, where the queue's own cost
    // shows most; a model of a real size gives the records/s of a worker for the README's scaling model
    const kind = flag("--queue-model") ?? "tiny";
    const rounds = quick ? 1 : kind === "tiny" ? 3 : 1;
    const records = quick ? 128 : kind === "tiny" ? 1024 : 64;
    // two workers on these two cores only with the tiny model (at a real size they would split the same cores for an
    // hour), and not in a --quick smoke run
    const scaling = kind === "tiny" && !quick;
    const chunkSize = 64;
    const model = kind === "tiny" ? await cachedConvertedFixture("tiny-gen", "q8_0") : (await prepareBenchModels(kind as BenchSize, {log})).stock;
    const input = path.join(dir, `queue-${records}.jsonl`);
    await writeJsonl(input, records, true);
    const stops: Array<() => Promise<void>> = [];
    const redis = await startRedis({teardown: (stop: () => Promise<void>) => void stops.push(stop)});
    try {
        const workers = async (count: number, workerThreads: number) => {
            const started = await Promise.all(Array.from({length: count}, () => startWorker(redis.url, model, workerThreads)));
            return async () => {
                started.forEach((child) => child.kill("SIGTERM"));
                await Promise.all(started.map((child) => child.exitCode != null ? null : new Promise((resolve) => child.once("close", resolve))));
            };
        };
        const queued = async (count: number, workerThreads: number): Promise<TimedRun & {commands: number, chunks: number, coordinatorCpu: {records: number, seconds: number}}> => {
            const stop = await workers(count, workerThreads);
            try {
                const output = path.join(dir, `queue-${count}w.out.jsonl`);
                rmSync(output, {force: true});
                rmSync(`${output}.checkpoint.json`, {force: true});
                const before = await redisCommands(redis.port);
                // the coordinator's CPU time against its output's size, sampled: from its first line written to its last
                const samples: Array<[cpu: number, bytes: number]> = [];
                const {stdout, wallSeconds} = await timedCli(["batch", input, "-o", output, "-m", model, "--queue", redis.url, "--chunk-size", String(chunkSize), "--json"],
                    (child) => {
                        const timer = setInterval(() => {
                            const cpu = readCpuSeconds(child.pid!);
                            if (cpu != null && existsSync(output) && statSync(output).size > 0)
                                samples.push([cpu, statSync(output).size]);
                        }, 100);
                        child.once("close", () => clearInterval(timer));
                    });
                const commands = await redisCommands(redis.port) - before;
                const first = samples[0];
                const last = samples.at(-1);
                const written = first != null && last != null ? (last[1] - first[1]) / (statSync(output).size / records) : 0;
                return {recordsPerSecond: (JSON.parse(stdout) as {recordsPerSecond: number}).recordsPerSecond, wallSeconds, commands,
                    chunks: Math.ceil(records / chunkSize), coordinatorCpu: {records: written, seconds: first != null && last != null ? last[0] - first[0] : 0}};
            } finally {
                await stop();
            }
        };
        type Queued = Awaited<ReturnType<typeof queued>>;
        const runs: Array<{local: TimedRun, one: Queued, oneSingle?: Queued, two?: Queued}> = [];
        for (let round = 0; round < rounds; round++) {
            log(`batch: queue round ${round + 1}/${rounds}: local, 1 worker${scaling ? ", 1 worker of 1 thread, 2 workers of 1 thread" : ""} ` +
                `(${records} records, chunks of ${chunkSize})`);
            const local = await timedBatch(input, path.join(dir, "queue-local.out.jsonl"), model);
            const one = await queued(1, threads);
            runs.push(scaling ? {local, one, oneSingle: await queued(1, 1), two: await queued(2, 1)} : {local, one});
        }
        const median = (values: number[]) => {
            const sorted = [...values].sort((a, b) => a - b);
            return sorted.length % 2 === 1 ? sorted[sorted.length >> 1] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
        };
        const oneRatios = runs.map((run) => run.one.recordsPerSecond / run.local.recordsPerSecond);
        const twoRatios = scaling ? runs.map((run) => run.two!.recordsPerSecond / run.oneSingle!.recordsPerSecond) : [];
        const queuedRuns = runs.flatMap((run) => [run.one, run.oneSingle, run.two].filter((queuedRun) => queuedRun != null));
        const perChunk = median(queuedRuns.map((queuedRun) => queuedRun.commands / queuedRun.chunks));
        // the coordinator's own CPU per record while the verdicts come in: how many records/s one coordinator core could write
        const coordinatorRate = queuedRuns.reduce((sum, queuedRun) => sum + queuedRun.coordinatorCpu.records, 0) /
            queuedRuns.reduce((sum, queuedRun) => sum + queuedRun.coordinatorCpu.seconds, 0);
        const opsPerSecond = await redisBenchmark(redis.port);
        results.queue = {model: kind, records, chunkSize, rounds, runs, oneRatio: median(oneRatios), twoRatio: scaling ? median(twoRatios) : null,
            commandsPerChunk: perChunk, coordinatorRecordsPerCpuSecond: coordinatorRate, redisBenchmark: opsPerSecond};
        const range = (values: number[]) => `${Math.min(...values).toFixed(2)}–${Math.max(...values).toFixed(2)}`;
        const rate = (pick: (run: typeof runs[number]) => TimedRun) => `${median(runs.map((run) => pick(run).recordsPerSecond)).toFixed(2)} records/s`;
        lines.push(`batch --queue against local batch (${kind} Gen, ${records} records, chunks of ${chunkSize}, median of ${rounds} interleaved rounds):`,
            `  local -t ${threads}: ${rate((run) => run.local)}`,
            `  1 worker -t ${threads}: ${rate((run) => run.one)}, ${median(oneRatios).toFixed(3)}× local (rounds ${range(oneRatios)})`,
            ...scaling ? [`  1 worker -t 1: ${rate((run) => run.oneSingle!)}; 2 workers -t 1: ${rate((run) => run.two!)}, ` +
                `${median(twoRatios).toFixed(3)}× one worker -t 1 (rounds ${range(twoRatios)})`] : [],
            `  the coordinator: ${Number.isFinite(coordinatorRate) ? Math.round(coordinatorRate) : "not measured (one chunk: no lines in between)"} ` +
                "records per CPU second while the verdicts come in (read, Redis, write; its start-up left out)",
            `  Redis: ${perChunk.toFixed(0)} commands per chunk (all clients: coordinator, workers, events); ` +
                `redis-benchmark here: ${Object.entries(opsPerSecond).map(([name, ops]) => `${name} ${Math.round(ops)}/s`).join(", ")}`);
    } finally {
        for (const stop of stops)
            await stop();
    }
}

/** A `qwenguard worker` child, resolved once it is ready. */
async function startWorker(url: string, model: string, workerThreads: number): Promise<ChildProcess> {
    const child = spawn(process.execPath, [cli, "worker", "--queue", url, "-m", model, "-t", String(workerThreads)], {stdio: ["ignore", "ignore", "pipe"]});
    let stderr = "";
    await new Promise<void>((resolve, reject) => {
        child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
            stderr += chunk;
            if (stderr.includes("ready:"))
                resolve();
        });
        child.once("close", (code) => reject(new Error(`qwenguard worker exited with ${code}:\n${stderr}`)));
    });
    return child;
}

/** A live process's user + system CPU seconds (/proc/PID/stat, in clock ticks of 1/100 s), null once it has exited. */
function readCpuSeconds(pid: number): number | null {
    try {
        const fields = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ");
        return (Number(fields[11]) + Number(fields[12])) / 100;
    } catch {
        return null;
    }
}

/** Commands Redis has run so far (INFO commandstats: the sum of calls). */
async function redisCommands(port: number): Promise<number> {
    const client = new Redis({port, host: "127.0.0.1", lazyConnect: true});
    try {
        await client.connect();
        const info = await client.info("commandstats");
        return [...info.matchAll(/calls=(\d+)/g)].reduce((sum, match) => sum + Number(match[1]), 0);
    } finally {
        client.disconnect();
    }
}

/** redis-benchmark's requests/s for the commands a queue leans on, on this machine (its default 50 clients). */
async function redisBenchmark(port: number): Promise<Record<string, number>> {
    const child = spawn("redis-benchmark", ["-h", "127.0.0.1", "-p", String(port), "-q", "-n", "100000", "-t", "set,get,lpush,zadd,hset", "--csv"],
        {stdio: ["ignore", "pipe", "inherit"]});
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    await new Promise((resolve) => child.on("close", resolve));
    return Object.fromEntries([...stdout.matchAll(/^"([^"]+)","([\d.]+)"/gm)].map((match) => [match[1], Number(match[2])]));
}

process.stdout.write(lines.join("\n") + "\n");
const out = path.join(benchCacheDir, only === "queue" ? `batch-queue-${flag("--queue-model") ?? "tiny"}.json`
    : `batch-${String(results.size)}${only != null ? `-${only}` : ""}.json`);
await writeFile(out, JSON.stringify(results, null, 2) + "\n");
log(`batch: results in ${path.relative(repoRoot, out)}`);
