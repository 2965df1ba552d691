import {spawn} from "node:child_process";
import type {ChildProcessByStdio} from "node:child_process";
import type {Readable, Writable} from "node:stream";
import path from "node:path";
import {fileURLToPath} from "node:url";

/** How a model file fared when it was loaded in a child process. */
export type ProbeOutcome =
    | {outcome: "loaded"}
    /** qwenguard or llama.cpp refused the file with an error (what the same load in this process would throw). */
    | {outcome: "refused", name: string, message: string}
    /** The child process died (llama.cpp aborted): `message` is llama.cpp's last line on stderr. */
    | {outcome: "crashed", signal: string | null, code: number | null, message: string}
    /** The load did not end within the timeout. */
    | {outcome: "hung"};

/** Options of {@link probeModel}. */
export interface ProbeModelOptions {
    /** The Stream head file, when it is not beside the backbone. */
    head?: string,
    /** Default 120,000 ms. */
    timeoutMs?: number,
    /** Load through llama.cpp directly, without qwenguard's pre-flight check (what the fuzz harness measures it against). */
    raw?: boolean
}

/** The last bytes of a child's stderr kept (llama.cpp's message is its last line). */
const STDERR_TAIL = 16 << 10;

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), "probeModelChild.js");

/**
 * Loads a model file in a child process and judges one short conversation with it there, so that a file llama.cpp
 * would abort on (an assert deep in its loader that no pre-flight check reaches) kills only the child.
 * @param model - a Gen GGUF or a Stream backbone GGUF
 * @returns the outcome; never throws for the file's sake
 * @example
 * const probe = await probeModel("downloaded.gguf");
 * if (probe.outcome === "crashed") throw new Error(`llama.cpp aborts on this file: ${probe.message}`);
 */
export function probeModel(model: string, options: ProbeModelOptions = {}): Promise<ProbeOutcome> {
    const args = [childScript, model, ...(options.head != null ? ["--head", options.head] : []), ...(options.raw === true ? ["--raw"] : [])];
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, args, {stdio: ["ignore", "pipe", "pipe"], env: {...process.env, GGML_NO_BACKTRACE: "1"}});
        let stdout = "";
        let stderr = "";
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => void (stdout += chunk));
        child.stderr.setEncoding("utf8").on("data", (chunk: string) => void (stderr = (stderr + chunk).slice(-STDERR_TAIL)));
        let hung = false;
        const timer = setTimeout(() => {
            hung = true;
            child.kill("SIGKILL");
        }, options.timeoutMs ?? 120_000);
        child.on("error", (error) => {
            clearTimeout(timer);
            reject(error);
        });
        child.on("close", (code, signal) => {
            clearTimeout(timer);
            if (hung)
                return resolve({outcome: "hung"});
            const report = stdout.trim().split("\n").pop();
            let parsed: {ok?: boolean, name?: string, message?: string} | null = null;
            try {
                parsed = report != null && report.length > 0 ? JSON.parse(report) : null;
            } catch {
                parsed = null;
            }
            if (parsed?.ok === true && code === 0)
                return resolve({outcome: "loaded"});
            if (parsed?.ok === false && signal == null)
                return resolve({outcome: "refused", name: parsed.name ?? "Error", message: parsed.message ?? ""});
            resolve({outcome: "crashed", signal, code, message: lastMessage(stderr)});
        });
    });
}

/** llama.cpp's message in a dead child's stderr: its last assertion or error line, else its last line. */
function lastMessage(stderr: string): string {
    const lines = stderr.trim().split("\n").filter((line) => line.trim().length > 0);
    const assertion = [...lines].reverse().find((line) => /GGML_ASSERT|GGML_ABORT|error|terminate|what\(\)/i.test(line));
    return (assertion ?? lines[lines.length - 1] ?? "").trim();
}

/** The line a serving child writes on stderr before each job. */
export const JOB_MARK = "qwenguard-probe: job";

/**
 * Probes many files one after another in one child process (restarted after a file kills it), as {@link probeModel}
 * does each in its own: what a fuzz run of thousands of files needs, without starting node and llama.cpp each time.
 * One probe at a time per prober.
 */
export class ModelProber {
    private child: ChildProcessByStdio<Writable, Readable, Readable> | undefined;
    private stdout = "";
    private stderr = "";
    private waiting: ((line: string | null) => void) | undefined;

    async probe(model: string, options: ProbeModelOptions = {}): Promise<ProbeOutcome> {
        const child = this.child ?? this.start();
        this.stderr = "";
        const answer = new Promise<string | null>((resolve) => (this.waiting = resolve));
        child.stdin.write(JSON.stringify({model, head: options.head, raw: options.raw}) + "\n");
        let timer: NodeJS.Timeout | undefined;
        const line = await Promise.race([answer, new Promise<"hung">((resolve) => (timer = setTimeout(() => resolve("hung"), options.timeoutMs ?? 120_000)))]);
        clearTimeout(timer);
        this.waiting = undefined;
        if (line === "hung") {
            child.kill("SIGKILL");
            await new Promise((resolve) => child.once("close", resolve));
            return {outcome: "hung"};
        }
        if (line === null) {
            const {exitCode: code, signalCode: signal} = child;
            const mark = this.stderr.lastIndexOf(JOB_MARK);
            return {outcome: "crashed", signal, code, message: lastMessage(mark < 0 ? this.stderr : this.stderr.slice(mark + JOB_MARK.length))};
        }
        const parsed = JSON.parse(line) as {ok: boolean, name?: string, message?: string};
        return parsed.ok ? {outcome: "loaded"} : {outcome: "refused", name: parsed.name ?? "Error", message: parsed.message ?? ""};
    }

    /** Ends the child process. */
    async close(): Promise<void> {
        const child = this.child;
        if (child == null)
            return;
        child.stdin.end();
        await new Promise((resolve) => child.once("close", resolve));
    }

    private start(): ChildProcessByStdio<Writable, Readable, Readable> {
        const child = spawn(process.execPath, [childScript, "--serve"], {stdio: ["pipe", "pipe", "pipe"], env: {...process.env, GGML_NO_BACKTRACE: "1"}});
        this.child = child;
        this.stdout = "";
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
            this.stdout += chunk;
            let end;
            while ((end = this.stdout.indexOf("\n")) >= 0) {
                const line = this.stdout.slice(0, end);
                this.stdout = this.stdout.slice(end + 1);
                this.waiting?.(line);
            }
        });
        child.stderr.setEncoding("utf8").on("data", (chunk: string) => void (this.stderr = (this.stderr + chunk).slice(-STDERR_TAIL)));
        child.stdin.on("error", () => undefined); // a child that died mid-write: its close answers the probe
        child.on("close", () => {
            if (this.child === child)
                this.child = undefined;
            this.waiting?.(null);
        });
        return child;
    }
}

/** Thrown when a model file made llama.cpp abort (or hang) in a probe: the file must not be loaded in this process. */
export class UnloadableModelError extends Error {
    override name = "UnloadableModelError";
}

/**
 * Probes a file and throws if llama.cpp would abort on it (or hang). An error the load would report cleanly is left for
 * the load in this process to throw.
 * @throws UnloadableModelError naming llama.cpp's message
 */
export async function assertLoadsSafely(model: string, options: ProbeModelOptions = {}): Promise<void> {
    const probe = await probeModel(model, options);
    if (probe.outcome === "crashed")
        throw new UnloadableModelError(`llama.cpp aborts the process when it loads ${model} (${probe.signal ?? `exit code ${probe.code}`}): ` +
            `${probe.message || "no message"}; the file is corrupt or hostile`);
    if (probe.outcome === "hung")
        throw new UnloadableModelError(`Loading ${model} did not finish within ${options.timeoutMs ?? 120_000} ms in a test process: the file is corrupt or hostile`);
}
