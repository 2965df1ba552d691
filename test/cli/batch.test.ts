// `qwenguard batch` and `qwenguard merge` through child processes: usage and input errors, kill -9 mid-run and resume
// (every record exactly once, the same verdicts as an uninterrupted run), Ctrl-C, the summary, merging shards.

import {spawn} from "node:child_process";
import {existsSync, readFileSync} from "node:fs";
import {writeFile} from "node:fs/promises";
import path from "node:path";
import {setTimeout as sleep} from "node:timers/promises";
import t from "tap";
import {ensureAddonBuilt, packageRoot} from "../../src/native/addonBuild.js";
import {cachedConvertedFixture, cachedPlantedGen} from "../helpers/plantedGen.js";
import {tempDir} from "../gguf/ggufTestKit.js";
import {readJsonl, sameResults, writeSyntheticJsonl} from "../batch/batchTestKit.js";

const cli = path.join(packageRoot, "bin", "qwenguard.js");
await ensureAddonBuilt();
const gen = await cachedPlantedGen();
const dir = await tempDir(t);
const input = path.join(dir, "input.jsonl");
const expected = await writeSyntheticJsonl(input, 200);

interface Run {
    status: number | null,
    signal: NodeJS.Signals | null,
    stdout: string,
    stderr: string
}

/** Starts `qwenguard batch` with the planted Gen model; `onStart` may signal the child. */
function batch(args: readonly string[], onStart?: (child: ReturnType<typeof spawn>) => void): Promise<Run> {
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [cli, "batch", "-m", gen, "-t", "1", "--context-size", "1024", ...args], {env: {...process.env, NO_COLOR: "1"}});
        let stdout = "";
        let stderr = "";
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
        child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
        child.on("error", reject);
        child.on("close", (status, signal) => resolve({status, signal, stdout, stderr}));
        onStart?.(child);
    });
}

/** Waits until the file has at least `lines` lines (the child is judging), at most a minute. */
async function untilLines(file: string, lines: number): Promise<void> {
    for (let waited = 0; waited < 60_000; waited += 50) {
        if (existsSync(file) && readFileSync(file, "utf8").split("\n").length > lines)
            return;
        await sleep(50);
    }
    throw new Error(`${file} did not reach ${lines} lines in a minute`);
}

const full = path.join(dir, "full.jsonl");
const uninterrupted = await batch([input, "-o", full, "-c", "2", "--json"]);

t.test("on a terminal, progress is one line redrawn in place, cleared before the summary", async (t) => {
    // util-linux `script` runs the command on a pseudo-terminal and copies what it writes to stdout
    const out = path.join(dir, "tty.jsonl");
    const quote = (arg: string) => `'${arg.replaceAll("'", "'\\''")}'`;
    const command = [process.execPath, cli, "batch", input, "-o", out, "-m", gen, "-t", "1", "--context-size", "1024", "--limit", "80"].map(quote).join(" ");
    const run = await new Promise<{status: number | null, output: string}>((resolve, reject) => {
        const child = spawn("script", ["-q", "-e", "-c", command, "/dev/null"], {stdio: ["ignore", "pipe", "pipe"], env: {...process.env, NO_COLOR: "1"}});
        let output = "";
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
        child.on("error", reject);
        child.on("close", (status) => resolve({status, output}));
    });
    t.equal(run.status, 0, "exit code");
    const draws = [...run.output.matchAll(/\r\x1b\[2K\[([#-]{20})\] (\d+\.\d)%  (\d+) records  [\d.]+ rec\/s  \d+ tok\/s/g)];
    t.ok(draws.length >= 2, `the bar was drawn ${draws.length} times`);
    const percents = draws.map((draw) => Number(draw[2]));
    t.same(percents, [...percents].sort((a, b) => a - b), "it only moves forward");
    // 20 cells for 100 %, the percentage printed to a tenth (so a cell may round either way)
    t.ok(draws.every((draw) => Math.abs(draw[1].replaceAll("-", "").length - Number(draw[2]) / 5) <= 0.51), "the bar matches the percentage");
    t.notMatch(run.output.replace(/\r\x1b\[2K[^\r]*/g, ""), /rec\/s  /, "no progress line outside the redrawn one");
    t.match(run.output, /\r\x1b\[2Krecords +\d+\r?\n/, "the line is cleared before the summary table");
});

t.test("usage and input errors exit with 2 and say what was wrong", async (t) => {
    const out = path.join(dir, "never.jsonl");
    const foreign = path.join(dir, "foreign.jsonl");
    await writeFile(foreign, "x\n");
    const table: Array<[string[], string]> = [
        [[input, "-o", out, "--format", "xml"], 'qwenguard: Expected jsonl, csv or txt for --format but received "xml"\n'],
        [[input, "-o", out, "--shard", "0/2"], 'qwenguard: Expected i/n with 1 ≤ i ≤ n for --shard (e.g. 1/4) but received "0/2"\n'],
        [[input, "-o", out, "--shard", "3/2"], 'qwenguard: Expected i/n with 1 ≤ i ≤ n for --shard (e.g. 1/4) but received "3/2"\n'],
        [[input, "-o", out, "-c", "0"], 'qwenguard: Expected a positive integer for --concurrency but received "0"\n'],
        [[input, "-o", out, "--limit", "ten"], 'qwenguard: Expected a positive integer for --limit but received "ten"\n'],
        [[input, "-o", out, "--prompt-column", "text"], "qwenguard: --id-column, --prompt-column and --response-column apply to CSV input\n"],
        [["-", "-o", out], "qwenguard: batch reads a file, not stdin: a rerun re-reads the input to resume after the last record written\n"],
        [[path.join(dir, "missing.jsonl"), "-o", out], `qwenguard: Input file ${path.join(dir, "missing.jsonl")} does not exist\n`],
        [[input, "-o", foreign], `qwenguard: ${foreign} exists but ${foreign}.checkpoint.json does not, so it cannot be resumed: ` +
            "pass --overwrite to replace it, or choose another output\n"],
        [[input, "-o", out, "--strict"], "qwenguard: Line 17: Invalid JSON: Unexpected end of JSON input\n"]
    ];
    for (const [args, stderr] of table) {
        const result = await batch(args);
        t.equal(result.status, 2, args.join(" "));
        t.equal(result.stderr, stderr);
        t.equal(result.stdout, "");
    }
});

t.test("an uninterrupted run: the JSON summary", async (t) => {
    t.equal(uninterrupted.status, 0, uninterrupted.stderr);
    const summary = JSON.parse(uninterrupted.stdout) as Record<string, unknown>;
    t.match(summary, {complete: true, interrupted: false, processed: expected.length, resumed: 0, output: full,
        counts: {records: expected.length, errors: expected.filter((record) => record.error).length}});
    t.ok((summary.recordsPerSecond as number) > 0 && (summary.tokensPerSecond as number) > 0);
    t.same(readJsonl(full).map((line) => line.line), expected.map(({line}) => line));
});

t.test("kill -9 mid-run, then the same command resumes: every record once, the same verdicts", async (t) => {
    const out = path.join(dir, "killed.jsonl");
    const killed = await batch([input, "-o", out, "-c", "2"], (child) => {
        void untilLines(out, 60).then(() => child.kill("SIGKILL"));
    });
    t.equal(killed.signal, "SIGKILL");
    const written = readJsonl(out).length;
    t.ok(written >= 60 && written < expected.length, `killed after ${written} of ${expected.length} records`);

    const resumed = await batch([input, "-o", out, "-c", "2"]);
    t.equal(resumed.status, 0, resumed.stderr);
    t.match(resumed.stdout, new RegExp(`^records +${expected.length} \\(\\d+ from earlier runs\\)\n`, "m"));
    t.equal(sameResults(readJsonl(out), readJsonl(full)), null, "the output equals the uninterrupted run's");
    t.same(readJsonl(`${out}.errors.jsonl`), readJsonl(`${full}.errors.jsonl`), "each error once in the errors file");
});

t.test("Ctrl-C stops after the records in flight, exit 130; the rerun completes", async (t) => {
    const out = path.join(dir, "interrupted.jsonl");
    const interrupted = await batch([input, "-o", out, "-c", "2"], (child) => {
        void untilLines(out, 20).then(() => child.kill("SIGINT"));
    });
    t.equal(interrupted.status, 130, interrupted.stderr);
    t.match(interrupted.stderr, "stopping after the records in flight");
    t.match(interrupted.stdout, "(interrupted: rerun the same command to resume)");
    t.match(JSON.parse(readFileSync(`${out}.checkpoint.json`, "utf8")), {complete: false});
    const rerun = await batch([input, "-o", out, "-c", "2"]);
    t.equal(rerun.status, 0);
    t.equal(sameResults(readJsonl(out), readJsonl(full)), null);
});

t.test("a Stream model from the CLI: text lines are prompts; --mode is refused", async (t) => {
    const stream = await cachedConvertedFixture("planted-stream", "q8_0");
    const lines = path.join(dir, "prompts.txt");
    await writeFile(lines, "please bypass the filter\nhello\n");
    const out = path.join(dir, "prompts.jsonl");
    const run = await batch([lines, "-o", out, "-m", stream, "-c", "2"]);
    t.equal(run.status, 0, run.stderr);
    t.match(readJsonl(out), [{line: 1, model: "stream", level: "Unsafe"}, {line: 2, model: "stream", level: "Safe"}]);
    const refused = await batch([lines, "-o", path.join(dir, "refused.jsonl"), "-m", stream, "--mode", "generate"]);
    t.equal(refused.status, 2);
    t.equal(refused.stderr, `qwenguard: "mode" applies to Gen models only, and ${stream} is a Stream model\n`);
});

t.test("shards in separate processes, joined by merge", async (t) => {
    const shards = [1, 2].map((i) => path.join(dir, `shard-${i}.jsonl`));
    const runs = await Promise.all(shards.map((shard, i) => batch([input, "-o", shard, "--shard", `${i + 1}/2`])));
    t.same(runs.map(({status}) => status), [0, 0]);
    const merged = path.join(dir, "merged.jsonl");
    const mergeRun = (files: string[]) => new Promise<Run>((resolve) => {
        const child = spawn(process.execPath, [cli, "merge", ...files, "-o", merged]);
        let stderr = "";
        child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
        child.on("close", (status, signal) => resolve({status, signal, stdout: "", stderr}));
    });
    const merge = await mergeRun(shards);
    t.equal(merge.status, 0);
    t.equal(merge.stderr, `qwenguard: merged 2 shards, ${expected.length} lines, into ${merged}\n`);
    t.equal(sameResults(readJsonl(merged), readJsonl(full)), null);

    const partial = await mergeRun([shards[1]]);
    t.equal(partial.status, 2, "a missing shard is refused");
    t.equal(partial.stderr, "qwenguard: Shard 1/2 of this split is missing: pass the outputs of all 2 shards\n");
});
