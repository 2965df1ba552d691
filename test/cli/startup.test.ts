// The CLI's start: a command imports node-llama-cpp, Fastify and BullMQ (most of two seconds on a small CPU) only when
// it gets to use them, so that a usage error or `--help` answers at once. Checked by the modules each process
// imports (test/helpers/importTrace.ts), never by timing.

import {spawn} from "node:child_process";
import {readFileSync} from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import t from "tap";
import type {Test} from "tap";
import {tempDir} from "../gguf/ggufTestKit.js";
import {cli} from "./cliTestKit.js";

const hooks = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "helpers", "importTrace.js");
const HEAVY = ["node-llama-cpp", "fastify", "bullmq", "ioredis", "prom-client"] as const;

/** Runs the CLI with the import trace on; returns its exit code, its stderr and the heavy packages it imported. */
async function heavyImports(t: Test, args: readonly string[]): Promise<{status: number | null, stderr: string, heavy: string[]}> {
    const trace = path.join(await tempDir(t), "imports.txt");
    const {status, stderr} = await new Promise<{status: number | null, stderr: string}>((resolve, reject) => {
        const child = spawn(process.execPath, ["--import", hooks, cli, ...args], {stdio: ["ignore", "ignore", "pipe"],
            env: {...process.env, QWENGUARD_IMPORT_TRACE: trace, QWENGUARD_MODELS: "/nonexistent/models", HF_HUB_OFFLINE: "1"}});
        let stderr = "";
        child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
        child.on("error", reject);
        child.on("close", (status) => resolve({status, stderr}));
    });
    const urls = readFileSync(trace, "utf8").split("\n");
    return {status, stderr, heavy: HEAVY.filter((name) => urls.some((url) => url.includes(`/node_modules/${name}/`)))};
}

t.test("usage errors and --help import none of the heavy packages", async (t) => {
    const cases: Array<[string[], RegExp]> = [
        [["--help"], /^$/],
        [["check", "--format", "xml"], /--format but received "xml"/],
        [["batch", "in.jsonl", "-o", "out.jsonl", "--shard", "0/2"], /--shard .* but received "0\/2"/],
        [["serve", "-m", "model.gguf", "--port", "x"], /--port but received "x"/],
        [["worker"], /required option '--queue <url>'/],
        [["stream", "--threads", "two"], /--threads but received "two"/],
        [["eval"], /missing required argument 'input'/],
        [["pull", "gen-9b"], /Unknown model "gen-9b"/]
    ];
    for (const [args, stderr] of cases) {
        const run = await heavyImports(t, args);
        t.equal(run.status, args[0] === "--help" ? 0 : 2, `${args.join(" ")}: exit code`);
        t.match(run.stderr, stderr, `${args.join(" ")}: the error meant`);
        t.same(run.heavy, [], `${args.join(" ")}: imports none of ${HEAVY.join(", ")}`);
    }
});

t.test("a command that needs llama.cpp imports node-llama-cpp (the trace sees imports)", async (t) => {
    const {status, heavy} = await heavyImports(t, ["--version"]);
    t.equal(status, 0);
    t.same(heavy, ["node-llama-cpp"], "--version loads the runtime to name the backend, and nothing of the server or queue");
});
