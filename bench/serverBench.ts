// `npm run bench:server [-- --quick] [--size 0.6b] [--only moderations,flood,stream,proxy]`: `qwenguard serve` as a user
// runs it (a child process), each figure a ratio against a baseline of the same run:
//  1. moderations: /v1/moderations throughput and latency (keep-alive fetch clients on loopback) at 1, 8 and 32 clients
//     against the same judgements through GenGuard in this process, on the tiny Gen model (where HTTP weighs most)
//     and the Gen model of the real size; rounds interleaved;
//  2. flood: 10,000 requests from 32 autocannon clients on the tiny Gen model, with the default queue (64) and a queue of
//     8: every answer a 200 or a 429, none lost, and the server's RSS along the way;
//  3. stream: S live WebSocket sessions (1, 4, 8, 16) at ~100- and ~800-token contexts on the Stream model, each
//     pushing one token per step and waiting for its `judged` event, against the same sessions in this process;
//  4. proxy: a streamed answer of llama-server (built from node-llama-cpp's release, the Gen-shape model, a grammar
//     forcing the text) directly and through the guard proxy (Stream model; and Gen + Stream): time to the first
//     content and total time.
// Results: printed, and written to .cache/bench/server-<size>.json.

import {spawn} from "node:child_process";
import type {ChildProcess} from "node:child_process";
import {readFileSync} from "node:fs";
import {mkdir, writeFile} from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import autocannon from "autocannon";
import {createParser} from "eventsource-parser";
import WebSocket from "ws";
import {GenGuard, StreamGuard} from "../src/index.js";
import {startLlamaServer} from "../test/helpers/llamaServer.js";
import {cachedConvertedFixture} from "../test/helpers/plantedGen.js";
import {benchCacheDir, prepareBenchModels, repoRoot} from "./benchModels.js";
import type {BenchSize} from "./benchModels.js";
import {interleave} from "./interleave.js";
import {median} from "./stats.js";

const args = process.argv.slice(2);
const flag = (name: string) => {
    const at = args.indexOf(name);
    return at >= 0 ? args[at + 1] : undefined;
};
const quick = args.includes("--quick");
const size = (quick ? "tiny" : flag("--size") ?? "0.6b") as BenchSize;
const only = new Set((flag("--only") ?? "moderations,flood,stream,proxy").split(","));
const threads = 2;
const cli = path.join(repoRoot, "bin", "qwenguard.js");
const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);

/** How much each section does. */
const plan = quick
    ? {rounds: 1, clients: [1, 8], requests: {tiny: 40, sized: 8}, flood: 200, contexts: [100], sessions: [1, 4], steps: 4, answerTokens: 32, proxyRounds: 1}
    : {rounds: 3, clients: [1, 8, 32], requests: {tiny: 640, sized: 32}, flood: 10_000, contexts: [100, 800], sessions: [1, 4, 8, 16], steps: 16,
        answerTokens: 128, proxyRounds: 5};

/** A `qwenguard serve` child process. */
interface Served {
    url: string,
    child: ChildProcess,
    stop: () => Promise<void>
}

/** Starts `qwenguard serve` on a free port and waits until its models are loaded. */
async function serve(serveArgs: readonly string[]): Promise<Served> {
    const child = spawn(process.execPath, [cli, "serve", "--port", "0", "-t", String(threads), ...serveArgs], {stdio: ["ignore", "inherit", "pipe"]});
    let stderr = "";
    const url = await new Promise<string>((resolve, reject) => {
        child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
            stderr += chunk;
            const listening = /listening on (http:\/\/\S+);/.exec(stderr);
            if (listening != null && stderr.includes("qwenguard: ready: "))
                resolve(listening[1]);
        });
        child.on("exit", (code) => reject(new Error(`qwenguard serve exited with ${code}:\n${stderr}`)));
    });
    return {url, child, stop: () => new Promise((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
    })};
}

/** VmRSS and VmHWM of a process, in MiB. */
function memoryOf(pid: number): {rss: number, peak: number} {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return {rss: Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024, peak: Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024};
}

/** A prompt of the bench, different for every request (so that no request finds its whole prompt in a cache). */
const promptOf = (i: number) => `How do I bake bread at home, step ${i}?`;

/**
 * `amount` POSTs of /v1/moderations from `clients` keep-alive clients, each sending its next request when its last was
 * answered. (Timed by hand: autocannon reports on whole-second ticks, too coarse for runs of a few seconds.)
 * @returns requests per second and every request's latency in ms
 */
async function moderationLoad(url: string, clients: number, amount: number, start: number): Promise<{perSecond: number, latencies: number[], failed: number}> {
    let next = 0;
    let failed = 0;
    const latencies: number[] = [];
    const begin = performance.now();
    await Promise.all(Array.from({length: clients}, async () => {
        while (next < amount) {
            const body = JSON.stringify({input: promptOf(start + next++)});
            const sent = performance.now();
            const response = await fetch(`${url}/v1/moderations`, {method: "POST", headers: {"content-type": "application/json"}, body});
            await response.arrayBuffer();
            latencies.push(performance.now() - sent);
            if (!response.ok)
                failed++;
        }
    }));
    return {perSecond: amount / ((performance.now() - begin) / 1000), latencies, failed};
}

/** The p-th percentile (0–100) of samples, nearest rank. */
function percentile(samples: readonly number[], p: number): number {
    const sorted = [...samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))];
}

interface ModerationCase {
    model: string,
    clients: number,
    requests: number,
    server: {requestsPerSecond: number, p50Ms: number, p99Ms: number, non2xx: number},
    library: {requestsPerSecond: number},
    ratio: number
}

async function moderationSection(model: string, label: string, requests: number): Promise<ModerationCase[]> {
    const server = await serve(["-m", model, "--max-queue", "1000"]);
    const gen = await GenGuard.load({model, threads, gpu: false, onWarning: () => undefined});
    const cases: ModerationCase[] = [];
    try {
        for (const clients of plan.clients) {
            const amount = Math.max(requests, clients);
            const latencies: number[] = [];
            let failed = 0;
            let counter = 0;
            const samples = await interleave([
                {name: "server", run: async () => {
                    const load = await moderationLoad(server.url, clients, amount, counter);
                    counter += amount;
                    latencies.push(...load.latencies);
                    failed += load.failed;
                    return load.perSecond;
                }},
                {name: "library", run: async () => {
                    let next = 0;
                    const base = counter;
                    counter += amount;
                    const start = performance.now();
                    await Promise.all(Array.from({length: clients}, async () => {
                        while (next < amount)
                            await gen.moderate([{role: "user", content: promptOf(base + next++)}]);
                    }));
                    return amount / ((performance.now() - start) / 1000);
                }}
            ], {warmup: quick ? 0 : 1, rounds: plan.rounds});
            const row: ModerationCase = {
                model: label, clients, requests: amount,
                server: {requestsPerSecond: median(samples.server), p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), non2xx: failed},
                library: {requestsPerSecond: median(samples.library)},
                ratio: median(samples.server.map((value, i) => value / samples.library[i]))
            };
            log(`moderations ${label}, ${clients} clients: server ${row.server.requestsPerSecond.toFixed(1)} req/s (p50 ${row.server.p50Ms.toFixed(1)} ms, ` +
                `p99 ${row.server.p99Ms.toFixed(1)} ms, ${failed} failed), library ${row.library.requestsPerSecond.toFixed(1)} req/s: ${row.ratio.toFixed(3)}×`);
            cases.push(row);
        }
    } finally {
        await gen.dispose();
        await server.stop();
    }
    return cases;
}

async function floodSection(model: string, maxQueue: number) {
    const server = await serve(["-m", model, "--max-queue", String(maxQueue)]);
    const rss: Array<[requests: number, rssMiB: number]> = [[0, memoryOf(server.child.pid!).rss]];
    let done = 0;
    let next = 0;
    const instance = autocannon({
        url: `${server.url}/v1/moderations`, connections: 32, amount: plan.flood, timeout: 60,
        requests: [{method: "POST", headers: {"content-type": "application/json"},
            setupRequest: (request) => ({...request, body: JSON.stringify({input: promptOf(next++)})})}]
    }) as unknown as autocannon.Instance & Promise<autocannon.Result>; // autocannon's tracker is both (its types say one)
    instance.on("response", () => {
        done++;
        if (done % Math.round(plan.flood / 10) === 0)
            rss.push([done, memoryOf(server.child.pid!).rss]);
    });
    const result = await instance;
    const memory = memoryOf(server.child.pid!);
    await server.stop();
    const statuses = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, stats]) => [code, stats.count ?? 0]));
    const answered = Object.values(statuses).reduce((sum, count) => sum + count, 0);
    log(`flood (--max-queue ${maxQueue}): ${plan.flood} requests, answered ${answered} (${JSON.stringify(statuses)}), errors ${result.errors}, timeouts ${result.timeouts}; ` +
        `RSS ${rss.map(([requests, value]) => `${requests}: ${Math.round(value)}`).join(", ")} MiB, peak ${Math.round(memory.peak)} MiB`);
    return {maxQueue, requests: plan.flood, answered, statuses, errors: result.errors, timeouts: result.timeouts, rssMiB: rss, peakRssMiB: memory.peak,
        requestsPerSecond: result.requests.average};
}

/** A prompt whose rendering is about `tokens` tokens long. */
const promptOfLength = (tokens: number) => "The quick brown fox jumps over the lazy dog. ".repeat(Math.max(1, Math.round((tokens - 12) / 10)));

/** Random weights judge at random: a threshold no token reaches keeps every session open to the end of its steps. */
const NEVER_FIRES = {minProb: 1};

/** One live session over a WebSocket, driven step by step. */
class SocketSession {
    private waiting: ((event: {type: string}) => void) | null = null;
    private constructor(private readonly socket: WebSocket) {
        socket.on("message", (data) => this.waiting?.(JSON.parse(data.toString()) as {type: string}));
    }

    static async open(url: string, content: string): Promise<SocketSession> {
        const socket = new WebSocket(`${url.replace(/^http/, "ws")}/v1/guard/stream`);
        await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
        const session = new SocketSession(socket);
        await session.request({type: "start", messages: [{role: "user", content}], policy: NEVER_FIRES}, "prompt");
        return session;
    }

    /** Sends a message and waits for the event of a type; an error, or the session's end before it, fails the bench. */
    request(message: object, type: string): Promise<void> {
        return new Promise((resolve, reject) => {
            const closed = () => reject(new Error(`the session closed while the bench waited for "${type}"`));
            this.socket.once("close", closed);
            this.waiting = (event) => {
                if (event.type === type || event.type === "error" || event.type === "summary") {
                    this.waiting = null;
                    this.socket.off("close", closed);
                    if (event.type === type)
                        resolve();
                    else
                        reject(new Error(`expected a "${type}" event but got ${JSON.stringify(event).slice(0, 300)}`));
                }
            };
            this.socket.send(JSON.stringify(message));
        });
    }

    async close(): Promise<void> {
        await this.request({type: "end"}, "summary");
        this.socket.close();
    }
}

async function streamSection(model: string) {
    const cells = plan.sessions[plan.sessions.length - 1] * (plan.contexts[plan.contexts.length - 1] + plan.steps * 3 + 64);
    const serveArgs = ["-m", model, "--max-sessions", String(plan.sessions[plan.sessions.length - 1]), "--context-size", String(cells)];
    const server = await serve(serveArgs);
    const guard = await StreamGuard.load({model, threads, gpu: false, maxSessions: plan.sessions[plan.sessions.length - 1], contextSize: cells});
    const rows = [];
    try {
        for (const context of plan.contexts) {
            const content = promptOfLength(context);
            for (const sessions of plan.sessions) {
                let stepToken = 1000;
                const samples = await interleave([
                    {name: "server", run: async () => {
                        const open = await Promise.all(Array.from({length: sessions}, () => SocketSession.open(server.url, content)));
                        const start = performance.now();
                        for (let step = 0; step < plan.steps; step++) {
                            const id = stepToken++;
                            await Promise.all(open.map((session) => session.request({type: "tokens", ids: [id]}, "judged")));
                        }
                        const ms = performance.now() - start;
                        await Promise.all(open.map((session) => session.close()));
                        return ms;
                    }},
                    {name: "library", run: async () => {
                        const open = await Promise.all(Array.from({length: sessions}, () => guard.createSession({messages: [{role: "user", content}], policy: NEVER_FIRES})));
                        const start = performance.now();
                        for (let step = 0; step < plan.steps; step++) {
                            const id = stepToken++;
                            await Promise.all(open.map((session) => session.pushTokens([id])));
                        }
                        const ms = performance.now() - start;
                        await Promise.all(open.map((session) => session.dispose()));
                        return ms;
                    }}
                ], {warmup: 0, rounds: plan.rounds});
                const tokensPerSecond = (ms: number) => sessions * plan.steps / (ms / 1000);
                const row = {
                    context, sessions, steps: plan.steps,
                    server: {stepMs: median(samples.server) / plan.steps, tokensPerSecond: tokensPerSecond(median(samples.server))},
                    library: {stepMs: median(samples.library) / plan.steps, tokensPerSecond: tokensPerSecond(median(samples.library))},
                    overhead: median(samples.server.map((value, i) => value / samples.library[i])) - 1
                };
                log(`stream ~${context} tokens, ${sessions} sessions: server ${row.server.stepMs.toFixed(1)} ms/step ${row.server.tokensPerSecond.toFixed(1)} tokens/s, ` +
                    `library ${row.library.stepMs.toFixed(1)} ms/step ${row.library.tokensPerSecond.toFixed(1)} tokens/s: server +${(100 * row.overhead).toFixed(1)} %`);
                rows.push(row);
            }
        }
    } finally {
        await guard.dispose();
        await server.stop();
    }
    return rows;
}

/** Time to the first content delta and to the end of a streamed chat completion, in ms. */
async function streamedAnswer(url: string, body: object): Promise<{firstMs: number, totalMs: number, characters: number}> {
    const start = performance.now();
    const response = await fetch(`${url}/v1/chat/completions`, {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
    if (!response.ok)
        throw new Error(`${url} answered ${response.status}: ${await response.text()}`);
    let firstMs = NaN;
    let text = "";
    const parser = createParser({onEvent: (event) => {
        if (event.data === "[DONE]")
            return;
        const content = (JSON.parse(event.data) as {choices: Array<{delta?: {content?: string}}>}).choices[0]?.delta?.content ?? "";
        if (content.length > 0 && Number.isNaN(firstMs))
            firstMs = performance.now() - start;
        text += content;
    }});
    const decoder = new TextDecoder();
    for await (const bytes of response.body!)
        parser.feed(decoder.decode(bytes as Uint8Array, {stream: true}));
    return {firstMs, totalMs: performance.now() - start, characters: text.length};
}

async function proxySection(upstreamModel: string, streamModel: string, genModel: string) {
    const llama = await startLlamaServer({model: upstreamModel, args: ["--threads", String(threads), "--ctx-size", "4096", "--parallel", "1"]});
    const streamOnly = await serve(["-m", streamModel, "--upstream", `${llama.url}/v1`, "--context-size", "4096"]);
    const both = await serve(["-m", genModel, "-m", streamModel, "--upstream", `${llama.url}/v1`, "--context-size", "4096"]);
    // random weights judge at random: a threshold no token reaches lets every answer through whole
    const body = {model: "upstream", messages: [{role: "user", content: "Tell me about bread."}], stream: true, max_tokens: plan.answerTokens,
        temperature: 0, grammar: 'root ::= ("bread is good and ")+', qwen3guard: {policy: {minProb: 1}}};
    const direct = {...body, qwen3guard: undefined};
    try {
        const runs: Record<string, Array<{firstMs: number, totalMs: number, characters: number}>> = {direct: [], stream: [], both: []};
        await interleave([
            {name: "direct", run: async () => (runs.direct.push(await streamedAnswer(llama.url, direct)), 0)},
            {name: "stream", run: async () => (runs.stream.push(await streamedAnswer(streamOnly.url, body)), 0)},
            {name: "both", run: async () => (runs.both.push(await streamedAnswer(both.url, body)), 0)}
        ], {warmup: 1, rounds: plan.proxyRounds});
        const figure = (name: string) => ({firstMs: median(runs[name].map((run) => run.firstMs)), totalMs: median(runs[name].map((run) => run.totalMs)),
            characters: runs[name][0].characters});
        const result = {answerTokens: plan.answerTokens, direct: figure("direct"), proxyStream: figure("stream"), proxyGenAndStream: figure("both")};
        log(`proxy (${plan.answerTokens}-token answer): direct first ${result.direct.firstMs.toFixed(0)} ms, total ${result.direct.totalMs.toFixed(0)} ms; ` +
            `through the proxy (Stream) ${result.proxyStream.firstMs.toFixed(0)} / ${result.proxyStream.totalMs.toFixed(0)} ms; ` +
            `(Gen prompt + Stream) ${result.proxyGenAndStream.firstMs.toFixed(0)} / ${result.proxyGenAndStream.totalMs.toFixed(0)} ms`);
        return result;
    } finally {
        await streamOnly.stop();
        await both.stop();
        await llama.stop();
    }
}

const results: Record<string, unknown> = {size, threads, quick, cpu: os.cpus()[0]?.model, loadAverageBefore: os.loadavg(), started: new Date().toISOString()};
const tinyGen = await cachedConvertedFixture("tiny-gen", "q8_0");
const sized = quick ? {stock: tinyGen, stream: {model: await cachedConvertedFixture("tiny-stream", "q8_0")}} : await prepareBenchModels(size, {log});
if (only.has("moderations"))
    results.moderations = [...await moderationSection(tinyGen, "tiny", plan.requests.tiny),
        ...(quick ? [] : await moderationSection(sized.stock, size, plan.requests.sized))];
if (only.has("flood")) // the default queue (64) holds all 32 clients; a queue of 8 turns some away
    results.flood = [await floodSection(tinyGen, 64), await floodSection(tinyGen, 8)];
if (only.has("stream"))
    results.stream = await streamSection(sized.stream.model);
if (only.has("proxy"))
    results.proxy = await proxySection(sized.stock, sized.stream.model, sized.stock);
results.loadAverageAfter = os.loadavg();
const out = path.join(benchCacheDir, `server-${size}${flag("--only") != null ? `-${[...only].join("-")}` : ""}.json`);
await mkdir(benchCacheDir, {recursive: true});
await writeFile(out, JSON.stringify(results, null, 2) + "\n");
process.stdout.write(JSON.stringify(results, null, 2) + "\n");
log(`server bench: results in ${path.relative(repoRoot, out)}`);
