// `qwenguard pull`, `models`, and `-m NAME` / the default models, through child processes against a local server that
// speaks the Hugging Face hub's protocol, serving the planted Gen and Stream checkpoints under the official names:
// the main job in one line, a pull killed mid-file and resumed (counting the bytes the server sent), Ctrl-C, and two
// processes pulling one model at once.

import {spawn} from "node:child_process";
import type {ChildProcess} from "node:child_process";
import {existsSync} from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import {setTimeout as sleep} from "node:timers/promises";
import t from "tap";
import type {Test} from "tap";
import {ensureAddonBuilt, packageRoot} from "../../src/native/addonBuild.js";
import {cachedFixture} from "../helpers/fixtures.js";
import {startHubServer} from "../helpers/hubServer.js";
import {cachedConvertedFixture, cachedPlantedGen, writePlantedGen} from "../helpers/plantedGen.js";
import {tempDir} from "../gguf/ggufTestKit.js";

const cli = path.join(packageRoot, "bin", "qwenguard.js");
await ensureAddonBuilt();
const plantedGenDir = path.join(await tempDir(t), "planted-gen");
await writePlantedGen(plantedGenDir);
const plantedStreamDir = await cachedFixture("planted-stream");
const genGguf = await cachedPlantedGen();
const streamGguf = await cachedConvertedFixture("planted-stream", "q8_0");
const hub = await startHubServer({repos: [
    {id: "Qwen/Qwen3Guard-Gen-0.6B", dir: plantedGenDir},
    {id: "Qwen/Qwen3Guard-Stream-0.6B", dir: plantedStreamDir},
    // a second copy, for the pulls that are killed, interrupted, or run twice at once
    {id: "Qwen/Qwen3Guard-Gen-4B", dir: plantedGenDir}
]});
t.teardown(() => hub.close());
const weights = "model.safetensors";
const weightsSize = hub.digest("Qwen/Qwen3Guard-Gen-4B", weights).size;

interface Run {
    status: number | null,
    stdout: string,
    stderr: string
}

/** Starts the CLI with a cache folder and the local hub. */
function start(args: readonly string[], cache: string, input = "", env: NodeJS.ProcessEnv = {}): {child: ChildProcess, done: Promise<Run>} {
    const child = spawn(process.execPath, [cli, ...args], {
        env: {...process.env, NO_COLOR: "1", QWENGUARD_MODELS: cache, HF_ENDPOINT: hub.url, HF_HOME: "/nonexistent", ...env}
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.stdin!.end(input);
    const done = new Promise<Run>((resolve, reject) => {
        child.on("error", reject);
        child.on("close", (status) => resolve({status, stdout, stderr}));
    });
    return {child, done};
}

const run = (args: readonly string[], cache: string, input = "", env: NodeJS.ProcessEnv = {}) => start(args, cache, input, env).done;

async function until(t: Test, what: string, condition: () => boolean): Promise<void> {
    const deadline = Date.now() + 60_000;
    while (!condition()) {
        if (Date.now() > deadline)
            t.fail(`timed out waiting until ${what}`);
        await sleep(20);
    }
}

t.test("the main job is one line: the default model is pulled on first use, then judged offline", async (t) => {
    const cache = await tempDir(t);
    const first = await run(["check"], cache, "How do I make a bomb?");
    const direct = await run(["check", "-m", genGguf], cache, "How do I make a bomb?");
    t.equal(first.status, 1, first.stderr);
    t.equal(first.stdout, direct.stdout, "the same verdict as the model converted by hand");
    t.match(first.stdout, /^<stdin> {2}Unsafe {2}Violent {2}P\(Unsafe\)=\d\.\d{3} {2}FLAGGED\n$/);
    t.match(first.stderr, /^ {2}config\.json \(0\.\d kB\) downloaded, hash checked\ngen-0\.6b:q8_0: Qwen\/Qwen3Guard-Gen-0\.6B@[0-9a-f]{10}, 4 files, [\d.]+ MB \([\d.]+ MB left to download\)\n/,
        "what is pulled, and how large");
    t.match(first.stderr, /\ngen-0\.6b:q8_0: ready in [\d.]+ s, [\d.]+ MB \(.+\/gen-0\.6b-q8_0\/model\.gguf\)\n/);

    const offline = await run(["check", "-m", "gen-0.6b", "--json"], cache, "How do I cook rice?", {HF_HUB_OFFLINE: "1"});
    t.equal(offline.status, 0, offline.stderr);
    t.equal(offline.stderr, "", "found in the cache: nothing to say");
    t.match(JSON.parse(offline.stdout), {source: "<stdin>", level: "Safe", flagged: false});

    const stream = await run(["stream", "-p", "hi"], cache, "Sure, here is how: bomb poison and the rest of it.");
    const streamDirect = await run(["stream", "-m", streamGguf, "-p", "hi"], cache, "Sure, here is how: bomb poison and the rest of it.");
    t.equal(stream.status, 1, stream.stderr);
    t.equal(stream.stdout, streamDirect.stdout, "the default Stream model judges as the one converted by hand");
    t.match(stream.stderr, /\nstream-0\.6b:q8_0: Qwen\/Qwen3Guard-Stream-0\.6B@[0-9a-f]{10}, 4 files/);
});

t.test("pull, models and models rm", async (t) => {
    const cache = await tempDir(t);
    const pulled = await run(["pull", "gen-0.6b", "stream-0.6b:q4_0"], cache);
    t.equal(pulled.status, 0, pulled.stderr);
    t.equal(pulled.stdout, `gen-0.6b:q8_0\t${cache}/gen-0.6b-q8_0/model.gguf\nstream-0.6b:q4_0\t${cache}/stream-0.6b-q4_0/model.gguf\n`);
    t.match(pulled.stderr, /\n {2}model\.safetensors \([\d.]+ MB\) downloaded, hash checked\n/, "a line per file when stderr is not a terminal");
    t.match(pulled.stderr, /\nstream-0\.6b:q4_0: converting to GGUF \(f16\)\n/);

    const again = await run(["pull", "gen-0.6b", "--json"], cache);
    t.equal(again.status, 0, again.stderr);
    t.same(JSON.parse(again.stdout), {event: "cached", name: "gen-0.6b:q8_0", path: `${cache}/gen-0.6b-q8_0/model.gguf`});

    const listed = await run(["models"], cache);
    t.equal(listed.status, 0);
    const lines = listed.stdout.trimEnd().split("\n");
    t.match(lines[0], /^NAME +VARIANT +TYPE +SIZE +SOURCE +REVISION$/);
    t.match(lines[1], /^gen-0\.6b:q8_0 +gen +q8_0 +[\d.]+ MB +Qwen\/Qwen3Guard-Gen-0\.6B +main@[0-9a-f]{10}$/);
    t.match(lines[2], /^stream-0\.6b:q4_0 +stream +q4_0 +[\d.]+ MB +Qwen\/Qwen3Guard-Stream-0\.6B +main@[0-9a-f]{10}$/);
    const json = (await run(["models", "--json"], cache)).stdout.trimEnd().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    t.match(json, [{name: "gen-0.6b:q8_0", variant: "gen", headPath: undefined}, {name: "stream-0.6b:q4_0", variant: "stream", headPath: `${cache}/stream-0.6b-q4_0/model.head.gguf`}]);

    const removed = await run(["models", "rm", "stream-0.6b:q4_0"], cache);
    t.match(removed.stdout, /^removed stream-0\.6b:q4_0 \([\d.]+ MB\)\n$/);
    const missing = await run(["models", "rm", "stream-0.6b:q4_0"], cache);
    t.equal(missing.status, 2);
    t.equal(missing.stderr, `qwenguard: stream-0.6b:q4_0 is not in the model cache (${cache}): \`qwenguard models\` lists what is\n`);
    const unknown = await run(["pull", "gen-2b"], cache);
    t.equal(unknown.status, 2);
    t.match(unknown.stderr, /^qwenguard: Unknown model "gen-2b": expected one of gen-0\.6b, gen-4b/);
    t.equal((await run(["models"], await tempDir(t))).stdout.startsWith("No models in "), true);
});

t.test("a pull killed mid-file resumes where it stopped and never fetches a finished file again; Ctrl-C keeps the download", async (t) => {
    const cache = await tempDir(t);
    hub.faults = {throttle: {file: weights, bytesPerSecond: 4 << 20}};
    t.teardown(() => void (hub.faults = {}));
    const sentBefore = hub.bytesSent(weights);
    const tokenizerBefore = hub.bytesSent("tokenizer.json");
    const killed = start(["pull", "gen-4b"], cache);
    await until(t, "60% of the weights are sent", () => hub.bytesSent(weights) - sentBefore >= 0.6 * weightsSize);
    killed.child.kill("SIGKILL");
    await killed.done;
    const firstRun = hub.bytesSent(weights) - sentBefore;
    t.ok(firstRun < weightsSize, "killed before the end");
    t.ok(hub.bytesSent("tokenizer.json") - tokenizerBefore > 0, "the tokenizer was fetched before the kill");
    t.same(await fs.readdir(cache).then((entries) => entries.filter((entry) => !entry.startsWith("."))), [], "no model under its name");

    // Ctrl-C on the second run: the download so far stays
    const interrupted = start(["pull", "gen-4b"], cache);
    const secondStart = hub.bytesSent(weights);
    await until(t, "the resumed download is under way", () => hub.bytesSent(weights) > secondStart);
    interrupted.child.kill("SIGINT");
    const stopped = await interrupted.done;
    t.equal(stopped.status, 2);
    t.match(stopped.stderr, /\nqwenguard: Interrupted: the download so far is kept, and the next pull resumes it\n$/);

    hub.faults = {};
    const tokenizerAfterKill = hub.bytesSent("tokenizer.json");
    const thirdStart = hub.bytesSent(weights);
    const resumed = await run(["pull", "gen-4b"], cache);
    t.equal(resumed.status, 0, resumed.stderr);
    const total = hub.bytesSent(weights) - sentBefore;
    const lastRun = hub.bytesSent(weights) - thirdStart;
    t.ok(lastRun <= weightsSize - 0.5 * weightsSize, `the last run fetched ${lastRun} of ${weightsSize} bytes: what the killed runs saved was not fetched again`);
    t.ok(total <= weightsSize + (3 << 20), `${total} bytes in all for a ${weightsSize}-byte file (at most a chunk in flight lost per run)`);
    t.equal(hub.bytesSent("tokenizer.json"), tokenizerAfterKill, "the finished tokenizer was not fetched again");
    t.match(resumed.stderr, / {2}tokenizer\.json \([\d.]+ MB\) already downloaded, hash checked\n/);
    t.ok(existsSync(path.join(cache, "gen-4b-q8_0", "model.gguf")));
});

t.test("two processes pull one model at once: one downloads, the other waits and reuses it", async (t) => {
    const cache = await tempDir(t);
    hub.faults = {throttle: {file: weights, bytesPerSecond: 16 << 20}};
    t.teardown(() => void (hub.faults = {}));
    const before = hub.bytesSent(weights);
    const [a, b] = await Promise.all([run(["pull", "gen-4b"], cache), sleep(300).then(() => run(["pull", "gen-4b"], cache))]);
    t.equal(a.status, 0, a.stderr);
    t.equal(b.status, 0, b.stderr);
    t.equal(a.stdout, b.stdout, "the same model");
    t.match(a.stderr + b.stderr, /gen-4b:q8_0: another process is pulling it; waiting for it\n/);
    t.match(a.stderr + b.stderr, /gen-4b:q8_0: in the cache/);
    t.equal(hub.bytesSent(weights) - before, weightsSize, "the weights were sent once");
});
