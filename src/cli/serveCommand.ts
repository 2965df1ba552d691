import type {Command} from "commander";
import {existsSync} from "node:fs";
import {isModelName} from "../hub/modelNames.js";
import type {KvCacheType} from "../native/AddonTypes.js";
import type {CreateServerOptions} from "../server/createServer.js";
import {UsageError} from "./UsageError.js";
import {integerFlag, parseMode, parsePolicy} from "./flags.js";
import {resolveModelFlag} from "./pullReporter.js";

interface ServeCommandOptions {
    model: string[],
    upstream?: string,
    upstreamKey?: string,
    upstreamTimeout: string,
    host: string,
    port: string,
    apiKey?: string,
    allowOrigin: string[],
    maxQueue: string,
    maxBody: string,
    policy: string,
    mode?: string,
    threads?: string,
    contextSize?: string,
    parallel?: string,
    maxSessions?: string,
    isolateLoad?: boolean,
    maxSessionTokens?: string,
    cacheTypeK: string,
    cacheTypeV: string,
    idleTimeout: string,
    grace: string,
    logLevel: string
}

/** Exit code when the server cannot start (a model that does not load, a port in use). */
const START_FAILED = 2;

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

/** `qwenguard serve`: the guard as an HTTP service. */
export function registerServeCommand(program: Command, setExitCode: (code: number) => void): void {
    program.command("serve")
        .description("serve the guard over HTTP: OpenAI-compatible /v1/moderations, /v1/guard, live stream moderation over WebSocket, and a guard proxy in front of an LLM server")
        .option("-m, --model <model>", "a model name (gen-0.6b, stream-0.6b, …: pulled into the cache on first use) or a file: " +
            "a Qwen3Guard-Gen GGUF or a Qwen3Guard-Stream backbone GGUF (repeat for one of each)", collect, [])
        .option("--upstream <url>", "an OpenAI-compatible LLM server to guard, e.g. http://127.0.0.1:8081/v1: enables POST /v1/chat/completions")
        .option("--upstream-key <key>", "the upstream's API key (default: the client's Authorization header passes through, unless --api-key is set)")
        .option("--upstream-timeout <seconds>", "how long the upstream may take to answer, and then between two streamed chunks", "60")
        .option("--host <host>", "the address to listen on (anything but loopback exposes the guard to the network)", "127.0.0.1")
        .option("--port <port>", "the port (0: any free one)", "8080")
        .option("--allow-origin <origin>", "a web origin (https://host[:port], or *) whose pages may open live stream WebSockets (repeat for more)", collect, [])
        .option("--api-key <key>", "require Authorization: Bearer <key> on every route but /health (default: $QWENGUARD_API_KEY)")
        .option("--max-queue <n>", "judgements that may wait for a busy model, per model; beyond that 429 with Retry-After", "64")
        .option("--max-body <size>", "the largest request body and WebSocket message (bytes, or with k / m); larger is a 413", "1m")
        .option("--policy <policy>", "default policy: strict, loose, or a number (flag when P(Unsafe) + P(Controversial) reaches it)", "strict")
        .option("--mode <mode>", "Gen: score (probabilities, the default) or generate (greedy answer, parsed)")
        .option("-t, --threads <n>", "CPU threads of each model")
        .option("--context-size <n>", "Gen: tokens per request; Stream: KV cells of all its sessions, each holding its share (/ --max-sessions)")
        .option("--parallel <n>", "Gen: requests judged at once per target, in parallel sequences (default 1)")
        .option("--isolate-load", "load each model in a child process first, for files you do not trust (a llama.cpp abort then fails the start, cleanly)")
        .option("--max-sessions <n>", "Stream: sessions at once, live and one-shot (default 8); more wait in the queue")
        .option("--max-session-tokens <n>", "Stream: most tokens one session holds (default and at most: its share, --context-size / --max-sessions)")
        .option("--cache-type-k <type>", "Stream: the KV cache's key type, f16 or q8_0 (less memory a session; see the README's \"KV cache types\")", "f16")
        .option("--cache-type-v <type>", "Stream: the KV cache's value type, f16 or q8_0 (turns flash attention on, which llama.cpp needs for it)", "f16")
        .option("--idle-timeout <seconds>", "close a live stream session whose client sends nothing for this long", "300")
        .option("--grace <seconds>", "on SIGTERM / SIGINT, how long to let the work in flight finish before stopping anyway", "10")
        .option("--log-level <level>", "request log on stderr (pino JSON): silent, error, warn, info, debug", "warn")
        .action(async (options: ServeCommandOptions) => setExitCode(await runServe(options)));
}

function collect(value: string, previous: string[]): string[] {
    return [...previous, value];
}

async function runServe(options: ServeCommandOptions): Promise<number> {
    if (options.model.length === 0)
        throw new UsageError("Expected a model to serve: -m, --model <model> (a Gen and/or a Stream model: a name such as gen-0.6b, or a file)");
    const port = Number(options.port);
    if (!/^\d+$/.test(options.port) || port > 65535)
        throw new UsageError(`Expected a port number between 0 and 65535 for --port but received ${JSON.stringify(options.port)}`);
    if (!["silent", "error", "warn", "info", "debug"].includes(options.logLevel))
        throw new UsageError(`Expected silent, error, warn, info or debug for --log-level but received ${JSON.stringify(options.logLevel)}`);
    const apiKey = options.apiKey ?? (process.env.QWENGUARD_API_KEY || undefined);
    const seconds = (flag: string, value: string) => 1000 * integerFlag(flag, value)!;
    // names are pulled here, with progress on stderr, before the server listens; files load in the background
    const models: string[] = [];
    for (const model of options.model)
        models.push(isModelName(model) && !existsSync(model) ? await resolveModelFlag(model) : model);
    const serverOptions: CreateServerOptions = {
        models, upstream: options.upstream, upstreamKey: options.upstreamKey,
        upstreamTimeout: seconds("--upstream-timeout", options.upstreamTimeout), apiKey,
        maxQueue: nonNegative("--max-queue", options.maxQueue), maxBody: byteSize("--max-body", options.maxBody),
        policy: policyOf(options.policy), mode: parseMode(options.mode),
        threads: integerFlag("--threads", options.threads), contextSize: integerFlag("--context-size", options.contextSize),
        parallel: integerFlag("--parallel", options.parallel), maxSessions: integerFlag("--max-sessions", options.maxSessions),
        maxSessionTokens: integerFlag("--max-session-tokens", options.maxSessionTokens), isolate: options.isolateLoad === true,
        cacheTypeK: options.cacheTypeK as KvCacheType, cacheTypeV: options.cacheTypeV as KvCacheType,
        streamIdleTimeout: seconds("--idle-timeout", options.idleTimeout), allowOrigins: options.allowOrigin, shutdownGrace: 1000 * nonNegative("--grace", options.grace),
        logger: {level: options.logLevel, stream: process.stderr}
    };
    // Fastify and the routes are imported here rather than at the CLI's start, which every command pays
    const {createServer} = await import("../server/createServer.js");
    let server;
    try {
        server = await createServer(serverOptions);
    } catch (error) {
        throw new UsageError(flagNames((error as Error).message));
    }
    const say = (line: string) => void process.stderr.write(`qwenguard: ${line}\n`);
    if (!LOOPBACK.has(options.host))
        say(`warning: listening on ${options.host}, reachable from the network${apiKey == null ? ", with no --api-key" : ""}`);

    let stopping: Promise<void> | null = null;
    const stop = (signal: string) => {
        if (stopping != null) {
            say(`${signal} again: stopping now`);
            process.exit(130);
        }
        say(`${signal}: finishing the work in flight (at most ${options.grace} s), then stopping`);
        const deadline = setTimeout(() => {
            say(`the grace period is over: stopping with work unfinished`);
            process.exit(1);
        }, 1000 * Number(options.grace) + 5000).unref();
        stopping = server.close().then(() => clearTimeout(deadline));
    };
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGTERM", () => stop("SIGTERM"));

    try {
        const address = await server.listen({host: options.host, port});
        say(`listening on ${address.replace("[::1]", "localhost")}; loading ${options.model.join(", ")}`);
    } catch (error) {
        say(`cannot listen on ${options.host}:${options.port}: ${(error as Error).message}`);
        await server.close();
        return START_FAILED;
    }
    const {service} = server.qwenguard;
    try {
        await service.loaded;
        say(`ready: ${service.models.map(({id, variant}) => `${id} (${variant})`).join(", ")}` +
            (options.upstream != null ? `; guarding ${server.qwenguard.options.upstream!.href} at /v1/chat/completions` : ""));
    } catch (error) {
        say(`the models could not be loaded: ${(error as Error).message}`);
        await server.close();
        return START_FAILED;
    }
    await new Promise<void>((resolve) => server.server.once("close", () => resolve()));
    await stopping;
    say("stopped");
    return 0;
}

/** A policy flag, as the other commands take it. */
function policyOf(policy: string) {
    const parsed = parsePolicy(policy);
    return typeof parsed === "object" && "minProb" in parsed ? parsed.minProb : parsed;
}

function nonNegative(flag: string, value: string): number {
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)))
        throw new UsageError(`Expected a non-negative integer for ${flag} but received ${JSON.stringify(value)}`);
    return Number(value);
}

/** `1048576`, `512k`, `1m` (binary units). */
function byteSize(flag: string, value: string): number {
    const match = /^(\d+)([km]?)b?$/i.exec(value);
    if (match == null)
        throw new UsageError(`Expected a size in bytes (e.g. 1048576, 512k or 1m) for ${flag} but received ${JSON.stringify(value)}`);
    return Number(match[1]) * {"": 1, k: 1024, m: 1 << 20}[match[2].toLowerCase() as "" | "k" | "m"];
}

/** Library option names in an error message, as the CLI's flags. */
function flagNames(message: string): string {
    const flags: Record<string, string> = {
        maxBody: "--max-body", maxQueue: "--max-queue", upstream: "--upstream", upstreamKey: "--upstream-key", apiKey: "--api-key",
        upstreamTimeout: "--upstream-timeout", streamIdleTimeout: "--idle-timeout", shutdownGrace: "--grace", allowOrigins: "--allow-origin",
        maxSessionTokens: "--max-session-tokens", cacheTypeK: "--cache-type-k", cacheTypeV: "--cache-type-v"
    };
    return message.replace(/"(\w+)"/g, (whole, name: string) => flags[name] ?? whole);
}
