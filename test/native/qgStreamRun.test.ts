// qg_stream_run, the native core without Node (native/tools/qg_stream_run.cpp): scripts/gpu-check.sh trusts its
// printed probabilities (GPU against CPU) and its timing lines, so its CPU output must be the addon's, to the digits
// it prints.

import {execFile} from "node:child_process";
import {existsSync} from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {promisify} from "node:util";
import t from "tap";
import {CHATML_EXCHANGE, allOutputs, convertedFixture, createStreamContext, loadStreamModel, outputWidths, streamAddon} from "./streamTestKit.js";

const run = promisify(execFile);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const binary = path.join(repoRoot, "build", "qg_stream_run");
t.ok(existsSync(binary), `${binary} is built by npm run build`);

const tiny = await convertedFixture(t, "tiny-stream", "F32", "q8_0");

/** One printed row: position, token id, the response head's risk probabilities, the top label. */
interface Row {position: number, token: number, probs: number[], label: string}

function parseRows(stdout: string): Row[] {
    const rows: Row[] = [];
    for (const line of stdout.split("\n")) {
        const match = /^\s*(\d+)\s+(\d+)\s.*\s(\d\.\d{6}) (\d\.\d{6}) (\d\.\d{6})\s+(\S+)$/.exec(line);
        if (match != null)
            rows.push({position: Number(match[1]), token: Number(match[2]), probs: [match[3], match[4], match[5]].map(Number), label: match[6]});
    }
    return rows;
}

/** The number after `label` on the line starting with `prefix`. */
function figure(stdout: string, prefix: string, label: RegExp): number {
    const line = stdout.split("\n").find((candidate) => candidate.startsWith(prefix));
    const match = line == null ? null : label.exec(line);
    if (match == null)
        throw new Error(`No "${prefix}" line with ${label} in:\n${stdout}`);
    return Number(match[1]);
}

t.test("prints, per position, the response head's probabilities as the addon computes them, and its timing lines", async (t) => {
    const {stdout} = await run(binary, [tiny.modelPath, tiny.headPath, "--threads", "1", "--ctx", "512", "--bench", "3", CHATML_EXCHANGE]);
    const rows = parseRows(stdout);

    const model = await loadStreamModel(t, tiny);
    const tokens = model.tokenize(CHATML_EXCHANGE, true);
    // the tool's context: one sequence, batch and ubatch 512, every output in one call
    const context = await createStreamContext(t, model, {batchSize: 512, ubatchSize: 512, outputBatchSize: 512, maxSequences: 1});
    const [result] = await context.evaluate([{sequence: context.acquireSequence(), tokens, outputs: allOutputs(tokens.length), heads: 3, hidden: false}]);
    const widths = outputWidths(model.info());
    const labels = model.info().responseRiskLabels;

    t.same(rows.map((row) => row.position), [...tokens.keys()], "one row per position");
    t.same(rows.map((row) => row.token), [...tokens], "the same tokens (special tokens parsed)");
    let maxDiff = 0;
    for (const [i, row] of rows.entries()) {
        const expected = Array.from(result.response!.subarray(i * widths.response, i * widths.response + labels.length));
        for (const [j, p] of row.probs.entries())
            maxDiff = Math.max(maxDiff, Math.abs(p - expected[j]));
        t.equal(row.label, labels[expected.indexOf(Math.max(...expected))], `position ${i}: top label`);
    }
    t.ok(maxDiff <= 6e-7, `probabilities within print rounding (max difference ${maxDiff})`);

    t.ok(figure(stdout, "plain:", /no output: ([\d.]+) ms/) > 0, "the no-output baseline is timed");
    t.ok(figure(stdout, "bench:", /: ([\d.]+) ms\/token/) > 0, "scored single tokens are timed");
    t.ok(figure(stdout, "floor:", /no output: ([\d.]+) ms\/token/) > 0, "the floor is timed");
    t.match(stdout, /graphs stopped at the hidden states/);
});

t.test("--sessions: S sessions stepping together against one alone, then the single-session bench as before", async (t) => {
    const args = [tiny.modelPath, tiny.headPath, "--threads", "1", "--ctx", "256", "--quiet", "--bench", "3", CHATML_EXCHANGE];
    const {stdout} = await run(binary, [...args.slice(0, -1), "--sessions", "3", CHATML_EXCHANGE]);
    const line = stdout.split("\n").find((candidate) => candidate.startsWith("sessions:"));
    t.match(line, /^sessions: 3 at once, one token each a step after a context of \d+: /, "the sessions line names the count");
    t.ok(figure(stdout, "sessions:", /: ([\d.]+) tokens\/s \(/) > 0, "all sessions' tokens/s");
    t.ok(figure(stdout, "sessions:", /one alone ([\d.]+) tokens\/s/) > 0, "one session alone");
    t.ok(figure(stdout, "sessions:", /together \/ alone ([\d.]+)/) > 0, "their ratio");
    // three streams of 256 cells score the text as one stream does, and the single-token bench runs on after the sessions
    const single = await run(binary, args);
    const query = (text: string) => text.split("\n").find((candidate) => candidate.startsWith("query head at the last token:"));
    t.equal(query(stdout), query(single.stdout), "the same query head at the last token");
    t.ok(figure(stdout, "bench:", /: ([\d.]+) ms\/token/) > 0, "the single-token bench still runs");
});

t.test("Gen score mode: the candidates' logits after a shared prefix, as the addon computes them, and its timing lines", async (t) => {
    const gen = await convertedFixture(t, "tiny-gen", "F32", "q8_0");
    const candidates = [9, 220, 15339, 151645];
    const {stdout} = await run(binary, [gen.modelPath, "--gen", "--candidates", candidates.join(","), "--parallel", "2", "--threads", "1",
        "--ctx", "512", "--bench", "2", CHATML_EXCHANGE]);
    const line = stdout.split("\n").find((candidate) => candidate.startsWith("candidates after"));
    t.ok(line != null, "a candidates line");
    const printed = [...line!.matchAll(/ (\d+) '[^']*' (-?\d+\.\d{6}) (\d\.\d{6})/g)].map((match) => ({token: Number(match[1]), logit: Number(match[2]), p: Number(match[3])}));
    t.same(printed.map(({token}) => token), candidates, "one entry per candidate, in order");
    t.ok(Math.abs(printed.reduce((sum, {p}) => sum + p, 0) - 1) < 1e-5, "their softmax sums to 1");

    const addon = await streamAddon();
    const model = await addon.StreamModel.load({modelPath: gen.modelPath, headPath: "", gpuLayers: 0, useMmap: true, gen: true});
    t.teardown(() => model.dispose());
    const context = await createStreamContext(t, model, {batchSize: 512, ubatchSize: 512, outputBatchSize: 512, maxSequences: 3,
        flashAttention: "auto", candidates: Int32Array.from(candidates)});
    const tokens = model.tokenize(CHATML_EXCHANGE, true);
    const half = Math.floor(tokens.length / 2);
    const [prefix, request] = [context.acquireSequence(), context.acquireSequence()];
    await context.evaluate([{sequence: prefix, tokens: tokens.subarray(0, half), outputs: new Int32Array(0), heads: 0}]);
    context.copySequence(prefix, request);
    const rest = tokens.subarray(half);
    const [result] = await context.evaluate([{sequence: request, tokens: rest, outputs: Int32Array.of(rest.length - 1), heads: 0, logits: true}]);
    const maxDiff = Math.max(...printed.map(({logit}, i) => Math.abs(logit - result.logits![i])));
    t.ok(maxDiff <= 6e-7, `logits within print rounding (max difference ${maxDiff})`);
    t.ok(figure(stdout, "gen:", /([\d.]+) ms a request/) > 0, "requests are timed");
    t.ok(figure(stdout, "gen plain:", /no output: ([\d.]+) ms/) > 0, "the no-output rounds are timed");
});

t.test("refuses bad arguments with a message and exit code 2", async (t) => {
    for (const [args, message] of [
        [[tiny.modelPath], /usage:/],
        [[tiny.modelPath, tiny.headPath, "--flash-attn", "sometimes", "text"], /--flash-attn expects auto, on or off/],
        [[tiny.modelPath, tiny.headPath, "--cache-type-k", "q4_0", "text"], /--cache-type-k expects f16 or q8_0/],
        [[tiny.modelPath, tiny.headPath, "--cache-type-v"], /--cache-type-v expects f16 or q8_0/],
        [[tiny.modelPath, tiny.headPath, "--bench", "-1", "text"], /--bench expects a non-negative integer/],
        [[tiny.modelPath, "--gen", "text"], /--gen needs --candidates/],
        [[tiny.modelPath, tiny.headPath, "--sessions", "2", "text"], /--sessions 2 times sessions of a Stream model: it needs a head file \(not --gen\) and --bench N/],
        [[tiny.modelPath, tiny.headPath, "--sessions", "0", "--bench", "1", "text"], /--sessions expects at least 1 but received 0/],
        [[tiny.modelPath, tiny.headPath, "--sessions", "16", "--ctx", "200000000", "--bench", "1", "text"], /--ctx 200000000 × --sessions 16 cells do not fit in 32 bits/],
        [[tiny.modelPath, "--gen", "--candidates", "1,x", "text"], /--candidates expects token ids separated by commas/]
    ] as const) {
        const failure = await run(binary, [...args]).then(() => null, (error: {code: number, stderr: string}) => error);
        t.equal(failure?.code, 2, `${args.slice(2).join(" ")}: exit code 2`);
        t.match(failure?.stderr, message);
    }
    // what the core refuses is an error of the run (exit 1), before llama.cpp could take the context
    const narrow = await run(binary, [tiny.modelPath, tiny.headPath, "--cache-type-k", "q8_0", "text"]).then(() => null,
        (error: {code: number, stderr: string}) => error);
    t.equal(narrow?.code, 1, "q8_0 keys on heads 16 values wide: exit code 1");
    t.match(narrow?.stderr, /error: Expected attention heads a multiple of 32 values wide for a q8_0 KV cache of keys/);
});
