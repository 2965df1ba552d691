// `qwenguard batch --queue` and `qwenguard worker` on a real redis-server: the bad-URL table, then two worker
// processes and the coordinator, each fault as a test (a worker killed mid-chunk, the coordinator killed, Redis
// restarted), every output compared with a local batch of the same input (every line once, the same verdicts).

import {spawn} from "node:child_process";
import type {ChildProcess} from "node:child_process";
import {existsSync, readFileSync} from "node:fs";
import path from "node:path";
import {setTimeout as sleep} from "node:timers/promises";
import t from "tap";
import {moderateFile, moderateFileOnQueue} from "../../src/index.js";
import {parseQueueUrl} from "../../src/queue/queueConnection.js";
import {cli} from "../cli/cliTestKit.js";
import {readJsonl, sameResults, writeSyntheticJsonl} from "../batch/batchTestKit.js";
import {tempDir} from "../gguf/ggufTestKit.js";
import {plantedModels} from "../server/serverTestKit.js";
import {freePort, startRedis} from "../helpers/redisServer.js";

const {gen} = await plantedModels();
const dir = await tempDir(t);
const input = path.join(dir, "input.jsonl");
await writeSyntheticJsonl(input, 300);
const local = path.join(dir, "local.jsonl");
await moderateFile(input, local, {model: gen, threads: 1, contextSize: 1024});
const expected = readJsonl(local);

t.test("bad queue URLs: what is refused and the exact message", async (t) => {
    const table: Array<[string, string]> = [
        ["localhost:6379", 'Expected redis://HOST:PORT[/DB] (or rediss:// for TLS) for the queue but received the scheme "localhost"'],
        ["http://127.0.0.1:6379", 'Expected redis://HOST:PORT[/DB] (or rediss:// for TLS) for the queue but received the scheme "http"'],
        ["redis://127.0.0.1:6379/x", 'Expected a database number (0–15) after the port but received "x"'],
        ["not a url", 'Expected redis://HOST:PORT[/DB] (or rediss:// for TLS) for the queue but received "not a url"']
    ];
    for (const [url, message] of table)
        t.throws(() => parseQueueUrl(url), {message}, url);
    const port = await freePort();
    await t.rejects(moderateFileOnQueue(input, path.join(dir, "never.jsonl"), {model: gen, queue: `redis://127.0.0.1:${port}`, connectTimeoutMs: 1500}),
        {message: new RegExp(`^Cannot reach Redis at redis://127.0.0.1:${port} for the queue`)}, "nothing listens there");
    t.notOk(existsSync(path.join(dir, "never.jsonl")), "no output is started");
});

/** A `qwenguard worker` child; its log is kept. */
function worker(url: string): {child: ChildProcess, log: () => string, ready: Promise<void>} {
    const child = spawn(process.execPath, [cli, "worker", "--queue", url, "-m", gen, "-t", "1", "--context-size", "1024",
        "--lock-duration", "2000", "--stalled-interval", "1000"], {stdio: ["ignore", "ignore", "pipe"]});
    children.add(child);
    let log = "";
    const ready = new Promise<void>((resolve, reject) => {
        child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
            log += chunk;
            if (log.includes("ready:"))
                resolve();
        });
        child.once("close", (code) => reject(new Error(`the worker exited with ${code} before it was ready:\n${log}`)));
    });
    return {child, log: () => log, ready};
}

/** Every child this file starts: killed when the file's tests end, whatever happened to them. */
const children = new Set<ChildProcess>();
t.teardown(() => children.forEach((child) => child.kill("SIGKILL")));

/** Runs the coordinator; `during` may act on it while it runs. */
function coordinator(url: string, output: string, during?: (child: ChildProcess) => void): Promise<{status: number | null, signal: NodeJS.Signals | null, stderr: string}> {
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [cli, "batch", input, "-o", output, "-m", gen, "--queue", url, "--chunk-size", "16", "--json"],
            {stdio: ["ignore", "pipe", "pipe"]});
        children.add(child);
        let stderr = "";
        child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
        child.on("error", reject);
        child.on("close", (status, signal) => resolve({status, signal, stderr}));
        during?.(child);
    });
}

const lines = (file: string) => existsSync(file) ? readFileSync(file, "utf8").split("\n").length - 1 : 0;
async function untilLines(file: string, count: number): Promise<void> {
    for (let waited = 0; waited < 60_000 && lines(file) < count; waited += 50)
        await sleep(50);
}
const stopped = (child: ChildProcess) => child.exitCode != null || child.signalCode != null ? Promise.resolve()
    : new Promise<void>((resolve) => child.once("close", () => resolve()));

t.test("two workers, one killed -9 mid-run: its chunk is taken over, every record once, the local verdicts", async (t) => {
    const redis = await startRedis(t);
    const workers = [worker(redis.url), worker(redis.url)];
    t.teardown(() => workers.forEach(({child}) => child.kill("SIGKILL")));
    await Promise.all(workers.map((w) => w.ready));
    const output = path.join(dir, "two-workers.jsonl");
    const run = await coordinator(redis.url, output, () => void untilLines(output, 40).then(() => workers[0].child.kill("SIGKILL")));
    t.equal(run.status, 0, run.stderr);
    t.equal(sameResults(readJsonl(output), expected), null, "the output is the local batch's");
    t.match(workers[1].log(), /chunk \d+: \d+ records/, "the surviving worker judged chunks");
    t.equal(workers[0].child.signalCode, "SIGKILL");
});

t.test("the coordinator killed -9: the rerun collects the chunks already judged and repairs the output", async (t) => {
    const redis = await startRedis(t);
    const one = worker(redis.url);
    t.teardown(() => one.child.kill("SIGKILL"));
    await one.ready;
    const output = path.join(dir, "coordinator.jsonl");
    const first = await coordinator(redis.url, output, (child) => void untilLines(output, 60).then(() => child.kill("SIGKILL")));
    t.equal(first.signal, "SIGKILL");
    const judgedBefore = (one.log().match(/chunk \d+: \d+ records/g) ?? []).length;
    const again = await coordinator(redis.url, output);
    t.equal(again.status, 0, again.stderr);
    t.equal(sameResults(readJsonl(output), expected), null, "every record exactly once, the local verdicts");
    const judgedAfter = (one.log().match(/chunk \d+: \d+ records/g) ?? []).length;
    // each chunk judged once (the one cut by the kill may be judged twice: whole, and its rest): what the first run's
    // worker judged ahead of the output was collected, not judged again
    t.ok(judgedAfter <= Math.ceil(300 / 16) + 1, `${judgedAfter} chunks judged in all for ${Math.ceil(300 / 16)} (${judgedBefore} before the kill)`);
});

t.test("Redis restarted mid-run (append-only file on): the run continues after reconnecting", async (t) => {
    const redis = await startRedis(t);
    const one = worker(redis.url);
    t.teardown(() => one.child.kill("SIGKILL"));
    await one.ready;
    const output = path.join(dir, "restart.jsonl");
    const run = await coordinator(redis.url, output, () => void untilLines(output, 40).then(() => redis.restart()));
    t.equal(run.status, 0, run.stderr);
    t.equal(sameResults(readJsonl(output), expected), null, "the output is the local batch's");
    one.child.kill("SIGTERM");
    await stopped(one.child);
    t.match(one.log(), "stopped", "SIGTERM stops the worker cleanly");
    t.equal(one.child.exitCode, 0);
});
