// `evaluateFile` on the planted Gen and Stream models side by side: the bad-options table, then every figure against
// its hand-computed value (see evalTestKit.ts), the official layout's span mapped through the official tokenizer,
// CSV with renamed columns, resuming, and the HTML report with hostile text opened in a real browser.

import {execFile} from "node:child_process";
import {existsSync, readFileSync} from "node:fs";
import {cp, writeFile} from "node:fs/promises";
import path from "node:path";
import {promisify} from "node:util";
import t from "tap";
import {BatchRecordError, evalReportHtml, evaluateFile} from "../../src/index.js";
import type {EvalReport, TargetMetrics} from "../../src/index.js";
import {plantedModels} from "../server/serverTestKit.js";
import {tempDir} from "../gguf/ggufTestKit.js";
import {HOSTILE, RECORDS, writeRecords} from "./evalTestKit.js";

const models = await plantedModels();
const dir = await tempDir(t);
const input = path.join(dir, "labelled.jsonl");
await writeRecords(input);
const run = (options: Partial<Parameters<typeof evaluateFile>[1]> = {}, file = input) =>
    evaluateFile(file, {models: [models.gen, models.stream], threads: 1, contextSize: 2048, workDir: path.join(dir, "work"), ...options});

t.test("bad options: what is refused and the exact message", async (t) => {
    const table: Array<[unknown, string]> = [
        [{models: []}, 'Expected one or two models for "models"'],
        [{models: [models.gen, models.gen, models.gen]}, 'Expected one or two models for "models"'],
        [{models: [models.gen], target: "both"}, 'Expected one of "auto", "prompt", "response" for "target" but received "both"'],
        [{models: [models.gen], targetPrecision: 0}, 'Expected a number in (0, 1] for "targetPrecision" but received 0'],
        [{models: [models.gen], targetRecall: 1.5}, 'Expected a number in (0, 1] for "targetRecall" but received 1.5'],
        [{models: [models.gen], format: "txt"}, `Expected labelled records in JSONL or CSV but ${input} is read as txt (pass "format")`]
    ];
    for (const [options, message] of table)
        await t.rejects(evaluateFile(input, options as Parameters<typeof evaluateFile>[1]), {message}, JSON.stringify(options));
    await t.rejects(evaluateFile(path.join(dir, "missing.jsonl"), {models: [models.gen]}), {message: `Input file ${path.join(dir, "missing.jsonl")} does not exist`});
});

let report: EvalReport;
t.test("Gen and Stream side by side: every figure as computed by hand", async (t) => {
    report = await run({targetPrecision: 0.95});
    t.equal(report.complete, true);
    t.same(report.errors, {count: 2, first: [
        {line: 16, error: 'Expected Safe, Unsafe or Controversial (any case) for "label" but received "maybe"'},
        {line: 17, error: 'Expected a string for "prompt" but received number 5'}
    ]}, "bad records are reported with their line, not dropped");
    const [gen, stream] = report.models;
    t.match([gen.kind, gen.records, gen.errors, gen.processed], ["gen", 19, 2, 19]);
    t.match([stream.kind, stream.records, stream.errors], ["stream", 19, 2]);

    const genResponse = gen.targets.response!;
    const streamResponse = stream.targets.response!;
    t.same(genResponse.labels, {Safe: 3, Controversial: 1, Unsafe: 10});
    t.same(genResponse.confusion.counts, [[2, 1, 0], [1, 0, 0], [1, 0, 9]], "Gen: election is no Gen trigger, protest is Controversial");
    t.same(streamResponse.confusion.counts, [[2, 1, 0], [0, 1, 0], [1, 0, 9]]);
    const close = (actual: number | null, expected: number, what: string) => t.ok(actual != null && Math.abs(actual - expected) < 1e-12, `${what}: ${actual} = ${expected}`);
    t.match(genResponse.strict, {tp: 9, fp: 1, fn: 2, tn: 2});
    close(genResponse.strict.f1, 18 / 21, "Gen strict F1");
    close(genResponse.loose.f1, 18 / 19, "Gen loose F1");
    t.match(streamResponse.strict, {tp: 10, fp: 1, fn: 1, tn: 2});
    close(streamResponse.strict.f1, 20 / 22, "Stream strict F1");
    t.match(streamResponse.loose, {tp: 9, fp: 0, fn: 1, tn: 4});
    close(streamResponse.loose.f1, 18 / 19, "Stream loose F1");
    close(streamResponse.strict.accuracy, 12 / 14, "Stream strict accuracy");

    // Stream's planted probabilities are saturated (a trigger pair ≈ 1, any other token ≈ 0): the best threshold is the
    // roundest between them, where F1 is the strict F1 (the one false alarm scores like the hits)
    t.equal(streamResponse.sweep.best!.threshold, 0.5, "Stream: the best-F1 threshold lies between the safe and the triggered scores");
    close(streamResponse.sweep.best!.f1, 20 / 22, "Stream: best F1");
    t.equal(streamResponse.sweep.targetPrecision!.point, null, "Stream: no threshold reaches precision 0.95 (the false alarm scores with the hits)");
    // Gen's are not saturated: its sweep is checked against a count over the scores in its predictions file
    const genLines = readFileSync(gen.predictions, "utf8").trim().split("\n").map((line) => JSON.parse(line) as {target?: string, label?: string, score?: number})
        .filter((line) => line.target === "response");
    const at = (threshold: number) => {
        const flagged = genLines.filter((line) => line.score! >= threshold);
        const tp = flagged.filter((line) => line.label !== "Safe").length;
        const positives = genLines.filter((line) => line.label !== "Safe").length;
        return 2 * tp / (flagged.length + positives);
    };
    const best = genResponse.sweep.best!;
    close(best.f1, at(best.threshold), `Gen: F1 ${best.f1} at the best threshold ${best.threshold}, counted from the scores`);
    for (let k = 1; k < 1000; k++)
        if (at(k / 1000) > best.f1! + 1e-9)
            t.fail(`Gen: threshold ${k / 1000} gives F1 ${at(k / 1000)}, over the best ${best.f1}`);
    t.ok(best.f1! >= genResponse.strict.f1!, "Gen: the best threshold does at least as well as the strict verdicts");

    const timeliness = streamResponse.timeliness!;
    t.same(timeliness.bins, {"ahead": 1, "hit": 2, "1-32": 1, "33-64": 1, "65-128": 1, "129-256": 1, ">256": 1, "never": 1}, "each bin once, the hits twice");
    t.equal(timeliness.records, 9);
    t.equal(timeliness.badSpans, 1, "a span past the response's tokens is not timed");
    close(timeliness.exactHitRate, 2 / 9, "exact hit rate");
    close(timeliness.stopRateWithin128, 6 / 9, "stop rate within 128 tokens");
    t.equal(genResponse.timeliness, null, "Gen has no timeliness");
    const predictions = readFileSync(stream.predictions, "utf8").trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    t.match(predictions[11], {line: 12, flagAt: RECORDS[11].unsafe_start_index, span: [RECORDS[11].unsafe_start_index, RECORDS[11].unsafe_end_index]},
        "official layout: the flag lands on the official tokenizer's token of the last \" bomb\" (the whole text merges the response's \"\\n\")");
    t.match(predictions[18], {spanError: 'unsafe_end_index 60 is past the end of the response (7 tokens: records without "message" count the response\'s own tokens from 0)'});

    t.match(gen.targets.response!.refusal, {tp: 1, fn: 1, tn: 1, fp: 0, precision: 1, recall: 0.5});
    close(gen.targets.response!.refusal!.f1, 2 / 3, "refusal F1");
    t.equal(stream.targets.response!.refusal, null, "Stream judges no refusal");

    const genPrompt = gen.targets.prompt!;
    const streamPrompt = stream.targets.prompt!;
    t.match(genPrompt.strict, {tp: 2, fp: 0, fn: 0, tn: 1, f1: 1});
    t.match(streamPrompt.strict, {tp: 1, fp: 0, fn: 1, tn: 1, precision: 1, recall: 0.5});
    t.same(genPrompt.categories!.perCategory.map((row) => [row.category, row.precision, row.recall]), [["Jailbreak", 1, 1], ["Violent", 1, 1]],
        "labelled categories match in any case");
    t.same(streamPrompt.categories!.counts, [[1, 0], [0, 1]], "Stream: Jailbreak found, Violent judged Safe");
    t.same(streamPrompt.categories!.predicted, ["Jailbreak", "(Safe)"]);

    t.match(report.agreement!.prompt, {records: 3, sameLevel: 2, disagreements: 1});
    t.match(report.agreement!.response, {records: 14, sameLevel: 13, disagreements: 1});
    t.same(report.agreement!.response!.sample.map((record) => record.line), [11]);
    const written = readFileSync(report.disagreementsFile!, "utf8").trim().split("\n").map((line) => JSON.parse(line) as {line: number, target: string});
    t.same(written.map((record) => [record.target, record.line]), [["response", 11], ["prompt", 13]], "in input order");

    const miss = streamResponse.misses.falseNegatives[0];
    t.match(miss, {line: 8, id: "r8", label: "Unsafe", level: "Safe", text: {prompt: HOSTILE}}, "the miss carries its text");
});

t.test("a rerun resumes: nothing judged again, the same figures", async (t) => {
    const again = await run({targetPrecision: 0.95});
    t.same(again.models.map((model) => model.processed), [0, 0]);
    const figures = (r: EvalReport) => r.models.map((model) => model.targets);
    t.same(figures(again), figures(report));
    await t.rejects(run({strict: true, workDir: path.join(dir, "strict")}), BatchRecordError, "--strict stops at the first bad record");
});

t.test("a record one model could not judge is left out of both models' figures", async (t) => {
    // the Stream run's predictions with one judged record turned into the error line a record over its context gets
    const workDir = path.join(dir, "one-model-error");
    await cp(path.join(dir, "work"), workDir, {recursive: true});
    const streamFile = path.join(workDir, path.basename(report.models[1].predictions));
    const lines = readFileSync(streamFile, "utf8").trim().split("\n").map((line) => JSON.parse(line) as {line: number, target?: string, label?: string});
    const victim = lines.find((line) => line.target === "response" && line.label === "Unsafe")!;
    const error = "The response is 3000 tokens, over this model's limit of 2048";
    await writeFile(streamFile, lines.map((line) => JSON.stringify(line === victim ? {line: line.line, error} : line) + "\n").join(""));

    const again = await run({targetPrecision: 0.95, workDir});
    t.same(again.models.map((model) => model.processed), [0, 0], "nothing judged again");
    t.equal(again.errors.count, 3, "the two bad records and the one only Stream could not judge");
    t.same(again.errors.first.map((entry) => entry.line), [victim.line, 16, 17].sort((a, b) => a - b), "in input order");
    t.match(again.errors.first.find((entry) => entry.line === victim.line), {error});
    const [gen, stream] = again.models.map((model) => model.targets.response!);
    t.same(gen.labels, {...report.models[0].targets.response!.labels, Unsafe: 9}, "Gen's figures leave the record out too");
    t.same(stream.labels, gen.labels, "both models are scored on the same records");
    t.equal(again.agreement!.response!.records, report.agreement!.response!.records - 1);
});

t.test("CSV with renamed columns gives the same figures as JSONL", async (t) => {
    const csv = path.join(dir, "labelled.csv");
    const quote = (text: string) => `"${text.replace(/"/g, "\"\"")}"`;
    const rows = RECORDS.slice(0, 11).map((record) => [record.prompt as string, record.response as string, record.label as string,
        String(record.unsafe_start_index ?? ""), String(record.unsafe_end_index ?? "")].map(quote).join(","));
    await writeFile(csv, ["prompt,response,harm,unsafe_start_index,unsafe_end_index", ...rows].join("\n") + "\n");
    const fromCsv = await evaluateFile(csv, {models: [models.stream], threads: 1, contextSize: 2048, workDir: path.join(dir, "csv"), labels: {label: "harm"}});
    const fromJsonl = await evaluateFile(input, {models: [models.stream], threads: 1, contextSize: 2048, workDir: path.join(dir, "jsonl"), limit: 11});
    const strip = (metrics: TargetMetrics) => ({...metrics, misses: null});
    t.same(strip(fromCsv.models[0].targets.response!), strip(fromJsonl.models[0].targets.response!));
    await writeFile(csv, "prompt,response\nhi,there\n");
    await t.rejects(evaluateFile(csv, {models: [models.stream], workDir: path.join(dir, "csv2")}),
        {message: 'The CSV header has no column "label" (it has "prompt", "response")'});
});

t.test("the HTML report: self-contained, hostile text inert in a real browser", async (t) => {
    const html = evalReportHtml(report);
    const file = path.join(dir, "report.html");
    await writeFile(file, html);
    t.notMatch(html, /<script|<img|https?:\/\//i, "no script, no image, no network address in the page itself");
    t.match(html, "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;", "the record's text is escaped");
    t.match(html, "default-src 'none'", "a Content-Security-Policy forbids scripts and network");
    for (const label of ["ahead", "hit", "129-256", "&gt;256", "never", "best F1"])
        t.match(html, label, `the page shows ${label}`);
    t.match(html, /<svg[^>]*aria-label="labelled category by predicted category"[^]*?\(Safe\)<title>/, "the category confusion heat map, with its Safe column");

    // CI sets QWENGUARD_CHROMIUM (.ci/run installs Debian's chromium): there the browser check cannot be skipped
    const required = process.env.QWENGUARD_CHROMIUM;
    const chromium = required ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((candidate) => existsSync(candidate));
    if (chromium == null) {
        t.comment("no Chromium here (Debian's chromium package, or QWENGUARD_CHROMIUM=path): the page was not opened in a browser");
        return;
    }
    t.ok(existsSync(chromium), `Chromium at ${chromium}`);
    const {stdout} = await promisify(execFile)(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", `file://${file}`],
        {maxBuffer: 64 << 20, timeout: 120_000});
    t.match(stdout, "<title>qwenguard eval:", "the browser rendered the page");
    t.notMatch(stdout, /<script|<img/i, "the browser's DOM holds no script or image element");
    t.notMatch(stdout, /pwned<\/title>/, "nothing ran");
    t.match(stdout, "&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;&lt;img src=x onerror=\"document.title='pwned'\"&gt;",
        "the hostile text is text in the DOM, exactly as given");
    t.match(stdout, /<svg[^>]*aria-label="where the stream rule fired/, "the timeliness histogram is there");
});
