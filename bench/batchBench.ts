// `npm run bench:batch [-- --quick] [--records N] [--size 0.6b] [--only throughput|memory]`: offline batch moderation through the CLI, as a user
// runs it. Two figures, each from `qwenguard batch` child processes of this one run:
//  1. throughput: records/s for short prompts (one sentence each) on the Gen model of the real size, with
//     --concurrency 1 and 4 on the same input (ratio in the same run);
//  2. flat memory: a synthetic JSONL of N records (default 100,000; prompts and responses mixed) on the tiny Stream
//     model, with the child's RSS sampled from /proc every second: peak, and RSS after 10% and at the end.
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
process.stdout.write(lines.join("\n") + "\n");
const out = path.join(benchCacheDir, `batch-${String(results.size)}${only != null ? `-${only}` : ""}.json`);
await writeFile(out, JSON.stringify(results, null, 2) + "\n");
log(`batch: results in ${path.relative(repoRoot, out)}`);
