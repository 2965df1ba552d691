// A real llama.cpp `llama-server` (tools/server) as an upstream OpenAI-compatible LLM server for tests. Built once from
// the exact llama.cpp release node-llama-cpp ships (its git bundle), compiling only the server and linking
// node-llama-cpp's prebuilt libllama / libggml / libllama-common (test/helpers/llama-server/CMakeLists.txt), into
// `.cache/llama-server/<release>-<commit>/` under the repository root.

import {spawn, spawnSync} from "node:child_process";
import type {ChildProcess} from "node:child_process";
import {closeSync, existsSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync} from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import {fileURLToPath} from "node:url";
import type {Test} from "tap";
import {locateLlamaCppSource} from "../../src/native/addonBuild.js";

/** What the stamp beside a built binary records. */
interface LlamaServerStamp {
    release: string,
    commit: string,
    prebuiltLibDir: string,
    buildSeconds: number
}

let binaryPromise: Promise<string> | undefined;

/**
 * The path of a working llama-server binary of node-llama-cpp's llama.cpp release, built on first use (about 1.5 minutes
 * on two idle cores; cmake, a C++17 compiler and git are needed, ninja is used when installed) and reused afterwards.
 * Safe when several test processes ask at once: one builds under a lock file holding its pid, the others wait (a lock
 * left by a dead process is taken over). The binary finds node-llama-cpp's libraries and CPU backends by itself: no
 * LD_LIBRARY_PATH is needed.
 * @returns the absolute path of `llama-server`
 * @throws when a build step fails, naming the step, with the last lines of the build log
 * @example
 * const binary = await ensureLlamaServer();
 */
export function ensureLlamaServer(): Promise<string> {
    if (binaryPromise === undefined) {
        binaryPromise = buildOnce();
        binaryPromise.catch(() => {
            binaryPromise = undefined;  // a later call may try again
        });
    }
    return binaryPromise;
}

async function buildOnce(): Promise<string> {
    if (process.platform !== "linux")
        throw new Error(`Expected Linux to build llama-server against node-llama-cpp's prebuilt .so files but this is ${process.platform}`);
    const source = locateLlamaCppSource();
    const commit = runSync("git", ["bundle", "list-heads", source.bundlePath], "git bundle list-heads (is git installed?)").split(/\s/)[0];
    const root = repositoryRoot();
    const dir = path.join(root, ".cache", "llama-server", `${source.release}-${commit.slice(0, 7)}`);
    const binary = path.join(dir, "bin", "llama-server");
    const stampPath = path.join(dir, "stamp.json");
    // the binary's rpath and backend links point into node_modules: a moved checkout needs a new build
    const isBuilt = () => existsSync(stampPath) &&
        (JSON.parse(readFileSync(stampPath, "utf8")) as LlamaServerStamp).prebuiltLibDir === source.prebuiltLibDir;
    if (isBuilt())
        return binary;

    mkdirSync(dir, {recursive: true});
    const release = await acquireLock(path.join(dir, "build.lock"));
    try {
        if (isBuilt())
            return binary;  // built by the process we waited for
        rmSync(stampPath, {force: true});
        const started = performance.now();
        await build(dir, path.join(root, "test", "helpers", "llama-server"), source.bundlePath, source.prebuiltLibDir);
        const stamp: LlamaServerStamp = {
            release: source.release,
            commit,
            prebuiltLibDir: source.prebuiltLibDir,
            buildSeconds: Math.round((performance.now() - started) / 100) / 10
        };
        writeFileSync(stampPath, JSON.stringify(stamp, null, 2) + "\n");
        return binary;
    } finally {
        release();
    }
}

/** The nearest directory above this file with a package.json (as fixtures.ts finds it). */
function repositoryRoot(): string {
    let dir = path.dirname(fileURLToPath(import.meta.url));
    while (!existsSync(path.join(dir, "package.json"))) {
        const parent = path.dirname(dir);
        if (parent === dir)
            throw new Error(`Expected a package.json above ${fileURLToPath(import.meta.url)} but found none`);
        dir = parent;
    }
    return dir;
}

// Clone the bundle, configure, compile, check that the binary starts; then drop the sources and objects.
async function build(dir: string, projectDir: string, bundlePath: string, prebuiltLibDir: string): Promise<void> {
    const sourceDir = path.join(dir, "src");
    const buildDir = path.join(dir, "build");
    const binDir = path.join(dir, "bin");
    const logPath = path.join(dir, "build.log");
    for (const leftover of [sourceDir, buildDir, binDir])
        rmSync(leftover, {recursive: true, force: true});
    writeFileSync(logPath, "");

    const ninja = spawnSync("ninja", ["--version"]).status === 0;
    const steps: Array<[string, string, string[]]> = [
        ["clone the llama.cpp bundle", "git", ["-c", "advice.detachedHead=false", "clone", "--quiet", bundlePath, sourceDir]],
        ["configure", "cmake", [
            "-S", projectDir, "-B", buildDir, "-G", ninja ? "Ninja" : "Unix Makefiles",
            "-DCMAKE_BUILD_TYPE=Release",
            `-DLLAMA_SOURCE_DIR=${sourceDir}`,
            `-DLLAMA_PREBUILT_LIB_DIR=${prebuiltLibDir}`,
            `-DCMAKE_RUNTIME_OUTPUT_DIRECTORY=${binDir}`
        ]],
        ["compile", "cmake", ["--build", buildDir, "--target", "llama-server", "--parallel", String(os.availableParallelism())]],
        ["run llama-server --version", path.join(binDir, "llama-server"), ["--version"]]
    ];
    for (const [step, command, args] of steps)
        await runLogged(step, command, args, logPath);
    rmSync(sourceDir, {recursive: true, force: true});
    rmSync(buildDir, {recursive: true, force: true});
}

function runLogged(step: string, command: string, args: string[], logPath: string): Promise<void> {
    writeFileSync(logPath, `\n$ ${command} ${args.join(" ")}\n`, {flag: "a"});
    const log = openSync(logPath, "a");
    return new Promise<void>((resolve, reject) => {
        const child = spawn(command, args, {stdio: ["ignore", log, log]});
        child.once("error", (error) => reject(buildError(step, error.message, logPath)));
        child.once("exit", (code, signal) => code === 0 ? resolve() :
            reject(buildError(step, signal == null ? `exit code ${code}` : `signal ${signal}`, logPath)));
    }).finally(() => closeSync(log));
}

function buildError(step: string, what: string, logPath: string): Error {
    const tail = readFileSync(logPath, "utf8").trimEnd().split("\n").slice(-40).join("\n");
    return new Error(`Building llama-server failed at "${step}" (${what}); the last lines of ${logPath}:\n${tail}`);
}

function runSync(command: string, args: string[], what: string): string {
    const result = spawnSync(command, args, {encoding: "utf8"});
    if (result.error != null || result.status !== 0)
        throw new Error(`Could not run ${what}: ${result.error?.message ?? result.stderr}`);
    return result.stdout;
}

/** A build that does not end within this time is given up by the processes waiting for it. */
const lockWaitMs = 30 * 60 * 1000;

// An exclusive lock file holding the builder's pid. A lock whose process is dead is moved aside (a rename, which only
// one waiter wins), checked to be the dead one, and removed; then the waiters race for a new lock.
async function acquireLock(lockPath: string): Promise<() => void> {
    const deadline = Date.now() + lockWaitMs;
    for (;;) {
        try {
            const fd = openSync(lockPath, "wx");
            writeFileSync(fd, `${process.pid}\n`);
            closeSync(fd);
            return () => rmSync(lockPath, {force: true});
        } catch (error) {
            if ((error as NodeJS.ErrnoException).code !== "EEXIST")
                throw error;
        }
        const holder = readPid(lockPath);
        if (holder != null && !isAlive(holder))
            takeOverStaleLock(lockPath, holder);
        else if (Date.now() > deadline)
            throw new Error(`Expected the llama-server build of process ${holder} (${lockPath}) to end within ${lockWaitMs / 60000} minutes but it did not`);
        else
            await new Promise((resolve) => setTimeout(resolve, 500));
    }
}

function takeOverStaleLock(lockPath: string, deadPid: number): void {
    const aside = `${lockPath}.stale-${process.pid}`;
    try {
        renameSync(lockPath, aside);
    } catch {
        return;  // another waiter moved it first
    }
    if (readPid(aside) !== deadPid) {
        // a live lock, taken between our read and our rename: put it back unless a newer one is already there
        try {
            linkSync(aside, lockPath);
        } catch {
            // a newer lock is in place
        }
    }
    unlinkSync(aside);
}

function readPid(file: string): number | undefined {
    try {
        const pid = Number.parseInt(readFileSync(file, "utf8"), 10);
        return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
        return undefined;  // gone, or not written yet
    }
}

function isAlive(pid: number): boolean {
    try {
        process.kill(pid, 0);
        return true;
    } catch (error) {
        return (error as NodeJS.ErrnoException).code === "EPERM";
    }
}

/** How to start llama-server. */
export interface LlamaServerOptions {
    /** The GGUF model. */
    model: string,
    /** Further llama-server arguments, e.g. `["--metrics", "-c", "2048"]` (see `llama-server --help`). */
    args?: string[],
    /** When given, the server is stopped when this test ends, passed or failed. */
    t?: Test
}

/** A llama-server process started by a test. */
export interface RunningLlamaServer {
    /** `http://127.0.0.1:PORT` */
    url: string,
    port: number,
    pid: number,
    /** Its stdout and stderr so far. */
    log(): string,
    /** Stops it (SIGTERM, then SIGKILL after a few seconds); resolves once it has exited. Safe to call twice. */
    stop(): Promise<void>
}

/** How long to wait for `GET /health` to answer 200. */
const healthTimeoutMs = 60_000;
/** How long SIGTERM has before SIGKILL. */
const stopGraceMs = 3_000;
/** Attempts when the free port found was taken by someone else before llama-server bound it. */
const bindAttempts = 3;

/** Servers not stopped yet: killed if this process exits with them still running. */
const running = new Set<ChildProcess>();
process.on("exit", () => {
    for (const child of running)
        child.kill("SIGKILL");
});

/**
 * Starts llama-server on 127.0.0.1 with the model, one thread and a free port, and waits until `GET /health` answers 200.
 * The server is stopped by `stop()`, by the end of the test `t` when given, and by the end of this process (even a
 * killed one: a watchdog shell kills it within a second).
 * LLAMA_ARG_* variables of the caller's environment (llama-server reads them as arguments) are not passed on.
 * @param options - the model, further arguments, the test
 * @returns the running server
 * @throws when llama-server exits before it is ready, or is not ready within a minute, with its log
 * @example
 * const server = await startLlamaServer({model, args: ["--metrics"], t});
 * const reply = await fetch(`${server.url}/v1/chat/completions`, {method: "POST", ...});
 */
export async function startLlamaServer(options: LlamaServerOptions): Promise<RunningLlamaServer> {
    const binary = await ensureLlamaServer();
    for (let attempt = 1; ; attempt++) {
        const server = launch(binary, await freePort(), options);
        options.t?.teardown(() => server.stop());
        try {
            await waitUntilHealthy(server);
            return server;
        } catch (error) {
            await server.stop();
            if (attempt === bindAttempts || !server.log().includes("couldn't bind HTTP server socket"))
                throw error;
        }
    }
}

// A port that was free a moment ago: bound with port 0, read, released.
function freePort(): Promise<number> {
    return new Promise((resolve, reject) => {
        const probe = net.createServer();
        probe.once("error", reject);
        probe.listen({host: "127.0.0.1", port: 0}, () => {
            const {port} = probe.address() as net.AddressInfo;
            probe.close(() => resolve(port));
        });
    });
}

interface LaunchedServer extends RunningLlamaServer {
    /** Settles when the process has exited. */
    exited: Promise<void>,
    hasExited(): boolean
}

function launch(binary: string, port: number, {model, args = []}: LlamaServerOptions): LaunchedServer {
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("LLAMA_ARG_")));
    const child = spawn(binary, ["--host", "127.0.0.1", "--port", String(port), "--threads", "1", "--model", model, ...args],
        {stdio: ["ignore", "pipe", "pipe"], env});
    running.add(child);
    const output: string[] = [];
    let exitedAlready = false;
    const watchdog = child.pid == null ? undefined : startWatchdog(child.pid);
    const exited = new Promise<void>((resolve) => {
        const onEnd = (line: string) => {
            exitedAlready = true;
            running.delete(child);
            watchdog?.kill("SIGKILL");
            output.push(`\n[llama-server ${line}]\n`);
            resolve();
        };
        // "close", not "exit": it comes once stdout and stderr are drained too, so the log is whole (a server that
        // failed at once had its message lost to the race)
        child.once("close", (code, signal) => onEnd(`exited: ${signal == null ? `code ${code}` : `signal ${signal}`}`));
        child.once("error", (error) => onEnd(`could not start: ${error.message}`));
    });
    for (const stream of [child.stdout, child.stderr]) {
        stream.setEncoding("utf8");
        stream.on("data", (text: string) => output.push(text));
        (stream as net.Socket).unref();  // a server left running must not keep the test process alive...
    }
    child.unref();  // ...the exit handler above kills it

    let stopping: Promise<void> | undefined;
    const stop = (): Promise<void> => {
        stopping ??= (async () => {
            if (exitedAlready)
                return;
            child.ref();  // this process waits for the exit
            child.kill("SIGTERM");
            const escalate = setTimeout(() => child.kill("SIGKILL"), stopGraceMs);
            await exited;
            clearTimeout(escalate);
        })();
        return stopping;
    };
    return {
        url: `http://127.0.0.1:${port}`,
        port,
        pid: child.pid ?? -1,
        log: () => output.join(""),
        stop,
        exited,
        hasExited: () => exitedAlready
    };
}

// Kills the server within a second of this process's death, however it dies (the exit handler does not run on a
// signal); killed itself when the server exits.
function startWatchdog(serverPid: number): ChildProcess {
    const script = `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; kill -KILL ${serverPid} 2>/dev/null`;
    const watchdog = spawn("/bin/sh", ["-c", script], {stdio: "ignore", detached: true});
    watchdog.unref();
    return watchdog;
}

async function waitUntilHealthy(server: LaunchedServer): Promise<void> {
    const deadline = Date.now() + healthTimeoutMs;
    while (!server.hasExited()) {
        try {
            const reply = await fetch(`${server.url}/health`, {signal: AbortSignal.timeout(2000)});
            await reply.arrayBuffer();
            if (reply.status === 200)
                return;
        } catch {
            // not listening yet
        }
        if (Date.now() > deadline)
            throw new Error(`Expected llama-server to answer GET /health with 200 within ${healthTimeoutMs / 1000} s but it did not; its log:\n${server.log()}`);
        await Promise.race([server.exited, new Promise((resolve) => setTimeout(resolve, 100))]);
    }
    await server.exited;  // the whole log
    throw new Error(`Expected llama-server to start but it exited; its log:\n${server.log()}`);
}

/**
 * llama-server's Prometheus counters and gauges (started with `--metrics`), by name.
 * @example
 * (await llamaServerMetrics(server.url))["llamacpp:requests_processing"]; // 0 when idle
 */
export async function llamaServerMetrics(url: string): Promise<Record<string, number>> {
    const text = await (await fetch(`${url}/metrics`)).text();
    const values: Record<string, number> = {};
    for (const line of text.split("\n")) {
        const match = /^(llamacpp:\w+) (\S+)$/.exec(line);
        if (match != null)
            values[match[1]] = Number(match[2]);
    }
    return values;
}

/**
 * Waits until llama-server is processing no request (a closed connection is noticed at its next token), at most
 * `timeoutMs`.
 * @returns its metrics then
 */
export async function llamaServerIdle(url: string, timeoutMs = 15_000): Promise<Record<string, number>> {
    let values = await llamaServerMetrics(url);
    for (const deadline = Date.now() + timeoutMs; values["llamacpp:requests_processing"] !== 0 && Date.now() < deadline;) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        values = await llamaServerMetrics(url);
    }
    return values;
}
