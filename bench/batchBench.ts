// `npm run bench:batch [-- --quick] [--records N] [--size 0.6b] [--only throughput|memory|eval]`: offline batch moderation through the CLI, as a
// user runs it. Three figures, each from `qwenguard batch` / `qwenguard eval` child processes of this one run:
//  1. throughput: records/s for short prompts (one sentence each) on the Gen model of the real size, with
//     --concurrency 1 and 4 on the same input (ratio in the same run);
//  2. flat memory: a synthetic JSONL of N records (default 100,000; prompts and responses mixed) on the tiny Stream
//     model, with the child's RSS sampled from /proc every second: peak, and RSS after 10% and at the end;
//  3. eval's cost over judging: `qwenguard eval` against `qwenguard batch` on the same labelled records (prompts and
//     responses, half of them with an unsafe span), on the Gen model and on the Stream model of the real size, in
//     interleaved rounds: the records/s of the judging loop and the whole command's wall time (load, metrics, HTML).
// Results: printed, and written to .cache/bench/batch-<size>.json.

import {spawn} from "node:child_process";
import {existsSync, readFileSync, rmSync, statSync} from "node:fs";
import {mkdir, open, writeFile} from "node:fs/promises";
import path from "node:path";
import {cachedConvertedFixture} from "../test/helpers/plantedGen.js";
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
const memoryRecords = Number(flag("--records") ?? (quick ? 2000 : 100_000));
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
async function timedCli(args: readonly string[]): Promise<{stdout: string, wallSeconds: number}> {
    const started = performance.now();
    const child = spawn(process.execPath, [cli, ...args], {stdio: ["ignore", "pipe", "inherit"]});
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
    lines.push(`batch throughput (${String(results.size)} Gen, ${throughputRecords} short prompts, ${threads} threads):`,
        ...throughput.map((run) => `  --concurrency ${run.concurrency}: ${run.recordsPerSecond.toFixed(2)} records/s (${run.seconds.toFixed(1)} s), ` +
            `peak RSS ${Math.round(run.peakRssMiB)} MiB`),
        `  ratio 4 / 1: ${(results.throughputRatio as number).toFixed(2)}×`);
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
process.stdout.write(lines.join("\n") + "\n");
const out = path.join(benchCacheDir, `batch-${String(results.size)}${only != null ? `-${only}` : ""}.json`);
await writeFile(out, JSON.stringify(results, null, 2) + "\n");
log(`batch: results in ${path.relative(repoRoot, out)}`);
