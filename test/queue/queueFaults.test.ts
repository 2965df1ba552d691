// The queue's refusals and failures, in one process on a real redis-server: a chunk that keeps failing, jobs a
// worker must refuse (another version, another model, not a chunk), a run whose model no worker serves, the
// run's status from Redis (library and `batch --status`), and the jobs removed once checkpointed.

import {writeFile} from "node:fs/promises";
import path from "node:path";
import {setTimeout as sleep} from "node:timers/promises";
import {Queue, QueueEvents, Worker} from "bullmq";
import t from "tap";
import {Judge, moderateFile, moderateFileOnQueue, queueRunStatus, startQueueWorker} from "../../src/index.js";
import type {ChunkJobData, ChunkJobResult} from "../../src/queue/QueueJudge.js";
import {guardKey, parseQueueUrl, queueName} from "../../src/queue/queueConnection.js";
import {chunkProcessor} from "../../src/queue/runWorker.js";
import {workerName} from "../../src/queue/runRegistry.js";
import {packageVersion} from "../../src/native/runtimeInfo.js";
import {runCli} from "../cli/cliTestKit.js";
import {readJsonl, sameResults, writeSyntheticJsonl} from "../batch/batchTestKit.js";
import {tempDir} from "../gguf/ggufTestKit.js";
import {plantedModels} from "../server/serverTestKit.js";
import {startRedis} from "../helpers/redisServer.js";

const {gen, stream} = await plantedModels();
const dir = await tempDir(t);
const input = path.join(dir, "input.jsonl");
await writeSyntheticJsonl(input, 40);
const local = path.join(dir, "local.jsonl");
await moderateFile(input, local, {model: gen, threads: 1, contextSize: 1024});
const expected = readJsonl(local);

const redis = await startRedis(t);
const {connection} = parseQueueUrl(redis.url);
const genKey = await guardKey(gen);
const genQueue = new Queue<ChunkJobData, ChunkJobResult>(queueName(genKey), {connection});
const events = new QueueEvents(queueName(genKey), {connection});
t.teardown(() => Promise.all([genQueue.close(), events.close()]));

// a Gen worker in this process, with the worker's own processor, except that chunk 1 of any run always crashes
const judge = await Judge.open({model: gen, threads: 1, contextSize: 1024});
const real = chunkProcessor(judge, {model: gen, key: genKey});
const crashes: number[] = [];
const crashing = new Worker<ChunkJobData, ChunkJobResult>(queueName(genKey), async (job) => {
    if (job.data?.chunk === 1) {
        crashes.push(Date.now());
        throw new Error("the judge crashed on this chunk");
    }
    return real(job);
}, {connection, name: workerName(gen), concurrency: 1});
t.teardown(async () => {
    await crashing.close();
    await judge.dispose();
});
await crashing.waitUntilReady();

t.test("batch --status and --queue: usage errors", async (t) => {
    const table: Array<[string[], RegExp]> = [
        [["batch", "--status"], /--status shows the runs on a queue: pass --queue redis:\/\/HOST:PORT\[\/DB\]/],
        [["batch", input, "-o", path.join(dir, "x.jsonl"), "--queue", redis.url, "-c", "4", "-t", "2"],
            /--concurrency, --threads set how this machine judges, and with --queue the workers judge: pass it to qwenguard worker/],
        [["batch", input, "-o", path.join(dir, "x.jsonl"), "--chunk-size", "8"], /--chunk-size applies to --queue runs/],
        [["batch", input, "-o", path.join(dir, "x.jsonl"), "--chunk-size", "8", "--chunks-in-flight", "2"], /--chunk-size and --chunks-in-flight apply to --queue runs/],
        [["batch", "--status", "--queue", redis.url, "-m", "gen-0.6b", "--shard", "1/2"], /--status shows runs and takes --queue, -o and --json only, not --model, --shard/],
        [["batch", input, "-o", path.join(dir, "x.jsonl"), "--queue", redis.url, "--chunk-size", "0"], /Expected a positive integer for --chunk-size but received "0"/],
        [["batch", input], /Expected -o OUTPUT: the JSONL file the verdicts go to/]
    ];
    for (const [args, message] of table) {
        const run = await runCli(args);
        t.equal(run.status, 2, args.join(" "));
        t.match(run.stderr, message, args.join(" "));
    }
});

t.test("a chunk that keeps failing is retried with backoff, then its records are error lines and the run goes on", async (t) => {
    const output = path.join(dir, "failing.jsonl");
    const summary = await moderateFileOnQueue(input, output, {model: gen, queue: redis.url, chunkSize: 16});
    t.equal(summary.complete, true);
    const lines = readJsonl(output);
    const failed = lines.filter((line) => typeof line.error === "string" && line.error.startsWith("Chunk 1 "));
    // chunk 1 holds records 16…31 (by index in the input), less those that are not JSON: they never go to a worker
    const chunkOne = expected.slice(16, 32).filter((line) => line.error == null).map((line) => line.line);
    t.same(failed.map((line) => line.line), chunkOne, `the ${chunkOne.length} judged records of chunk 1`);
    t.match(failed[0].error, /^Chunk 1 \(job [0-9a-f]{16}-1\) failed after 3 tries: the judge crashed on this chunk$/);
    t.equal(crashes.length, 3, "tried 3 times");
    t.ok(crashes[1] - crashes[0] >= 900 && crashes[2] - crashes[1] >= 1900,
        `with exponential backoff: ${crashes[1] - crashes[0]} ms, then ${crashes[2] - crashes[1]} ms`);
    const failedLines = new Set(failed.map((line) => line.line));
    t.equal(sameResults(lines.filter((line) => !failedLines.has(line.line)), expected.filter((line) => !failedLines.has(line.line))), null,
        "every other record as a local batch judges it");
    t.equal(readJsonl(`${output}.errors.jsonl`).filter((line) => failedLines.has(line.line)).length, chunkOne.length, "and in the errors file");

    const counts = await genQueue.getJobCounts("waiting", "active", "delayed", "completed", "failed");
    t.same(counts, {waiting: 0, active: 0, delayed: 0, completed: 0, failed: 0}, "every job was removed from Redis once checkpointed");

    const {runs} = await queueRunStatus(redis.url, {input, output});
    t.equal(runs.length, 1);
    t.match(runs[0], {state: "complete", stale: false, input, output, model: gen, modelKey: genKey, chunkSize: 16,
        chunks: {pending: 0, done: 2, failed: 1}, progress: {processed: expected.length, counts: {records: expected.length}}, workers: 1});
});

t.test("a shard's chunks are cut from its own records: shard 1/2 of 39 records in chunks of 20 is one chunk", async (t) => {
    const output = path.join(dir, "shard.jsonl");
    const summary = await moderateFileOnQueue(input, output, {model: gen, queue: redis.url, chunkSize: 20, shard: {index: 1, count: 2}});
    t.equal(summary.complete, true);
    // (cut by the input's index instead, its records would span chunks 0 and 1, and chunk 1 always crashes here)
    t.equal(sameResults(readJsonl(output), expected.filter((_, index) => index % 2 === 0)), null, "the shard's records, as a local batch judges them");
    t.match((await queueRunStatus(redis.url, {output})).runs, [{state: "complete", chunks: {done: 1, failed: 0}}]);
});

t.test("a rerun never collects an old job that holds only part of its chunk: the records it lacks are judged", async (t) => {
    const output = path.join(dir, "partial.jsonl");
    const first = await moderateFileOnQueue(input, output, {model: gen, queue: redis.url, chunkSize: 16, limit: 10});
    t.equal(first.processed, 10);
    const [{runId}] = (await queueRunStatus(redis.url, {output})).runs;
    // what a run killed before its last checkpoint leaves: chunk 0 under its whole-chunk id, holding lines 1…5 only
    const stale = await genQueue.add("chunk", {version: packageVersion(), runId, chunk: 0, modelKey: genKey, settings: {},
        records: [1, 2, 3, 4, 5].map((line) => ({line, messages: [{role: "user", content: "Hello"}]}))}, {jobId: `${runId}-0`});
    await stale.waitUntilFinished(events);
    const summary = await moderateFileOnQueue(input, output, {model: gen, queue: redis.url, chunkSize: 16});
    t.equal(summary.complete, true);
    const lines = readJsonl(output);
    t.same(lines.filter((line) => /no verdict/.test(String(line.error))), [], "no record left without a verdict");
    const failedLines = new Set(lines.filter((line) => String(line.error).startsWith("Chunk 1 ")).map((line) => line.line));
    t.equal(sameResults(lines.filter((line) => !failedLines.has(line.line)), expected.filter((line) => !failedLines.has(line.line))), null,
        "chunk 0's other records judged, every record once");
});

t.test("a run that stops at a bad record (--strict) or with one chunk in flight ends: nothing held back waits forever", async (t) => {
    await t.rejects(moderateFileOnQueue(input, path.join(dir, "strict.jsonl"), {model: gen, queue: redis.url, chunkSize: 16, strict: true}),
        {name: "BatchRecordError", message: /^Line 17: /}, "the first bad record stops it");
    // chunk 0 is records 0…16, and its last (line 17) is not JSON: the next chunk's first record must still be read
    const summary = await moderateFileOnQueue(input, path.join(dir, "one-in-flight.jsonl"), {model: gen, queue: redis.url, chunkSize: 17, chunksInFlight: 1});
    t.equal(summary.complete, true);
    t.equal(summary.processed, expected.length);
    // a chunk whose last record is not JSON, then more bad records than fit in flight: read on, never stuck
    const bad = path.join(dir, "bad-block.jsonl");
    await writeFile(bad, Array.from({length: 35}, (_, i) => i >= 9 && i < 30 ? `{"prompt": ${i}` : JSON.stringify({prompt: `Hello ${i}`})).join("\n") + "\n");
    const blocked = await moderateFileOnQueue(bad, path.join(dir, "bad-block.out.jsonl"), {model: gen, queue: redis.url, chunkSize: 10, chunksInFlight: 1});
    t.match(blocked, {complete: true, processed: 35, counts: {errors: 21}});
    await t.rejects(moderateFileOnQueue(input, path.join(dir, "never.jsonl"), {model: gen, queue: redis.url, threads: 2} as never),
        {name: "TypeError", message: /^"threads" sets how a machine judges, and on a queue the workers judge: give it to startQueueWorker/});
});

t.test("a worker refuses, at once and saying why, jobs of another version, of another model, or that are not chunks", async (t) => {
    const base: ChunkJobData = {version: packageVersion(), runId: "feedfacefeedface", chunk: 7, modelKey: genKey, settings: {},
        records: [{line: 1, messages: [{role: "user", content: "Hello"}]}]};
    const cases: Array<[string, unknown, RegExp]> = [
        ["another version", {...base, version: "9.9.0"},
            new RegExp(`^This worker runs qwenguard ${packageVersion().replace(/\./g, "\\.")} and the run's coordinator 9\\.9\\.0: run workers of the coordinator's version`)],
        ["another model", {...base, modelKey: "0123456789abcdef"},
            new RegExp(`^This worker serves ${path.basename(gen).replace(/\./g, "\\.")} \\(model key ${genKey}\\) and the run feedfacefeedface was started for model key 0123456789abcdef`)],
        ["not a chunk", {...base, records: "all of them"}, /^Job not-a-chunk is not a chunk of a qwenguard batch run \("records" is not a list of \{line, messages\}\)/]
    ];
    for (const [name, data, message] of cases) {
        const job = await genQueue.add("chunk", data as ChunkJobData, {jobId: name === "not a chunk" ? "not-a-chunk" : `refused-${name.replace(/ /g, "-")}`,
            attempts: 3, backoff: {type: "exponential", delay: 1000}});
        await t.rejects(job.waitUntilFinished(events), {message}, name);
        t.equal((await genQueue.getJob(job.id!))?.attemptsMade, 1, `${name}: not retried`);
    }
    // the same worker still judges a good chunk
    const good = await genQueue.add("chunk", base, {jobId: "good"});
    t.match(await good.waitUntilFinished(events), {results: [{line: 1, result: {level: "Safe"}}]});
});

t.test("a run whose model no worker serves: the warning names the models that are served; a worker of its model then runs it", async (t) => {
    const output = path.join(dir, "stream.jsonl");
    const warnings: string[] = [];
    const run = moderateFileOnQueue(input, output, {model: stream, queue: redis.url, chunkSize: 16, onWarning: (message) => warnings.push(message)});
    for (let waited = 0; waited < 20_000 && warnings.length === 0; waited += 50)
        await sleep(50);
    t.match(warnings, [new RegExp(`^No worker serves ${path.basename(stream).replace(/\./g, "\\.")} on redis://127\\.0\\.0\\.1:${redis.port} yet ` +
        `\\(queue qwenguard-batch-\\d+\\.\\d+-[0-9a-f]{16}\\): the chunks wait until one starts .*Workers there serve other models or versions, whose verdicts are never mixed ` +
        `into this run: ${path.basename(gen).replace(/\./g, "\\.")} \\(1 on ${queueName(genKey)}\\)$`)]);
    const waiting = (await queueRunStatus(redis.url, {output})).runs;
    t.match(waiting, [{state: "running", workers: 0}], "--status shows it running with no worker");

    const cli = await runCli(["batch", "--queue", redis.url, "--status", input, "-o", output]);
    t.equal(cli.status, 0, cli.stderr);
    t.match(cli.stdout, new RegExp(`^run [0-9a-f]{16}  running  \\(coordinator .+:\\d+, started .+, heard \\d+s ago\\)\n` +
        `  input     ${input.replace(/[.]/g, "\\.")}\n  output    ${output.replace(/[.]/g, "\\.")}\n` +
        `  model     ${path.basename(stream).replace(/\./g, "\\.")} \\(queue qwenguard-batch-\\d+\\.\\d+-[0-9a-f]{16}: 0 workers now\\)\n`));
    t.match(cli.stdout, new RegExp(`\nWorkers on redis://127\\.0\\.0\\.1:${redis.port} now: 1 × ${path.basename(gen).replace(/\./g, "\\.")} \\(${queueName(genKey)}\\)\n$`));

    const streamWorker = await startQueueWorker({queue: redis.url, model: stream, threads: 1, contextSize: 1024});
    t.teardown(() => streamWorker.close());
    const summary = await run;
    t.equal(summary.complete, true);
    t.equal(readJsonl(output).length, expected.length, "every record once");
    t.match((await queueRunStatus(redis.url, {output})).runs, [{state: "complete", workers: 1, progress: {counts: {records: expected.length}}}]);
});
