// `qwenguard eval` through a child process, as a user runs it: the usage-error table first, then a run of the planted
// Gen and Stream models side by side (the terminal table, the HTML file, --json), and a resumed rerun.

import {existsSync, readFileSync} from "node:fs";
import path from "node:path";
import t from "tap";
import {plantedModels} from "../server/serverTestKit.js";
import {tempDir} from "../gguf/ggufTestKit.js";
import {writeRecords} from "../eval/evalTestKit.js";
import type {EvalReport} from "../../src/index.js";
import {runCli} from "./cliTestKit.js";

const models = await plantedModels();
const dir = await tempDir(t);
const input = path.join(dir, "labelled.jsonl");
await writeRecords(input);

const qwenguard = (args: readonly string[]) => runCli(args);

// the head named although it lies beside its backbone: --head finds the Stream model among the two
const both = ["-m", models.gen, "-m", models.stream, "--head", path.join(path.dirname(models.stream), "model.head.gguf"), "-t", "1", "--context-size", "2048"];

t.test("usage errors: exit 2 with what was wrong", async (t) => {
    const table: Array<[string[], string]> = [
        [[input, "--target", "both"], 'Expected auto, prompt or response for --target but received "both"'],
        [[input, "--format", "txt"], 'Expected jsonl or csv for --format but received "txt"'],
        [[input, "-m", "a", "-m", "b", "-m", "c"], "Expected at most two models (-m) but received 3"],
        [[input, "--target-precision", "2"], 'Expected a number in (0, 1] for --target-precision but received "2"'],
        [[input, "--policy", "sometimes"], 'Expected strict, loose or a number in (0, 1] for --policy but received "sometimes"'],
        [[input, "--id-column", "key"], "--id-column, --prompt-column and --response-column apply to CSV input"],
        [[input, "-m", models.gen, "--head", "x.head.gguf"], "--head applies to a Stream model, and no -m is a Stream backbone"],
        [[input, "-m", models.stream, "-m", models.stream, "--head", "x.head.gguf"], "--head is ambiguous with two Stream models: keep each head beside its backbone instead"],
        [[path.join(dir, "missing.jsonl")], `Input file ${path.join(dir, "missing.jsonl")} does not exist`],
        [[input, "-m", models.gen, "--strict", "-o", path.join(dir, "strict")], 'Line 16: Expected Safe, Unsafe or Controversial (any case) for "label" but received "maybe"']
    ];
    for (const [args, message] of table) {
        const {status, stderr} = await qwenguard(["eval", ...args]);
        t.equal(status, 2, args.join(" "));
        t.equal(stderr.trim(), `qwenguard: ${message}`);
    }
});

t.test("a run: the terminal table, the HTML report, then --json from the resumed predictions", async (t) => {
    const html = path.join(dir, "report.html");
    const run = await qwenguard(["eval", input, ...both, "--html", html, "-o", path.join(dir, "work")]);
    t.equal(run.status, 0, run.stderr);
    const out = run.stdout;
    t.match(out, "Responses: 14 labelled (Safe 3, Controversial 1, Unsafe 10)");
    t.match(out, /model #2 \(stream\)\s+strict\s+0\.909\s+0\.909\s+0\.909\s+0\.857\s+10\s+1\s+1\s+2/, "Stream strict row: P = R = F1 = 10/11");
    t.match(out, /loose\s+1\.000\s+0\.900\s+0\.947\s+0\.929\s+9\s+0\s+1\s+4/, "Stream loose row: F1 18/19");
    t.match(out, "best F1 0.909 at threshold 0.5 (precision 0.909, recall 0.909): --policy 0.5");
    t.match(out, "timeliness (9 unsafe responses with a span): ahead 1, hit 2, 1-32 1, 33-64 1, 65-128 1, 129-256 1, >256 1, never 1; " +
        "exact hit 22.2%, stopped within 128 tokens 66.7%; 1 spans past the text");
    t.match(out, "refusal: F1 0.667");
    t.match(out, /category confusion \(rows: labelled, columns: predicted\):\n\s+Jailbreak\s+\(Safe\)\n\s+Jailbreak\s+1\s+0\n\s+Violent\s+0\s+1\n/,
        "Stream's prompt categories: Jailbreak found, Violent judged Safe");
    t.match(out, "agreement: 14 records, same level 92.9%");
    t.match(out, 'bad records: 2 (not judged by some model: left out of every model\'s figures)\n  line 16: Expected Safe, Unsafe or Controversial (any case) for "label" but received "maybe"');
    t.match(out, `report: ${html}`);
    t.ok(existsSync(html), "the HTML report is written");
    t.match(readFileSync(html, "utf8"), "<title>qwenguard eval: model #1 vs model #2</title>");

    const again = await qwenguard(["eval", input, ...both, "-o", path.join(dir, "work"), "--json"]);
    t.equal(again.status, 0, again.stderr);
    const report = JSON.parse(again.stdout) as EvalReport;
    t.same(report.models.map((model) => [model.kind, model.records, model.processed]), [["gen", 19, 0], ["stream", 19, 0]], "resumed: nothing judged again");
    t.equal(report.models[1].targets.response!.strict.tp, 10);
});
