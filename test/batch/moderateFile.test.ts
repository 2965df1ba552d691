// moderateFile / moderateMany with the planted models: bad options, verdicts in input order with bad records reported,
// resuming after a torn last line, shards joined by merge, refusals to resume, strict mode, a Stream model.

import {existsSync, readFileSync, truncateSync, statSync} from "node:fs";
import {copyFile, unlink, writeFile} from "node:fs/promises";
import path from "node:path";
import t from "tap";
import {BatchOutputError, BatchRecordError, Judge, mergeBatchOutputs, moderateFile, moderateMany} from "../../src/index.js";
import type {ModerateFileOptions} from "../../src/index.js";
import {cachedConvertedFixture, cachedPlantedGen} from "../helpers/plantedGen.js";
import {PLANTED_RESPONSE_UNSAFE_CATEGORY} from "../helpers/plantedStream.js";
import {expectError, tempDir} from "../gguf/ggufTestKit.js";
import {readJsonl, sameResults, writeSyntheticJsonl} from "./batchTestKit.js";

const model = await cachedPlantedGen();
const GEN: ModerateFileOptions = {model, threads: 1, contextSize: 1024, gpu: false, concurrency: 2};
const dir = await tempDir(t);
const input = path.join(dir, "input.jsonl");
const expected = await writeSyntheticJsonl(input, 120);
const full = path.join(dir, "full.jsonl");
const fullSummary = await moderateFile(input, full, GEN);
const fullLines = readJsonl(full);

t.test("bad options are refused, naming the option", async (t) => {
    const out = path.join(dir, "never.jsonl");
    const table: Array<[Partial<ModerateFileOptions>, string]> = [
        [{format: "xml" as "txt"}, 'Expected one of "jsonl", "csv", "txt" for "format" but received "xml"'],
        [{shard: {index: 0, count: 2}}, 'Expected an integer between 1 and 2 for "shard.index" but received 0'],
        [{shard: {index: 1, count: 0}}, 'Expected an integer between 1 and 1048576 for "shard.count" but received 0'],
        [{limit: 0}, 'Expected an integer between 1 and 9007199254740991 for "limit" but received 0'],
        [{concurrency: 0}, 'Expected an integer between 1 and 64 for "concurrency" but received 0'],
        [{policy: "medium" as "strict"}, 'Expected "strict", "loose" or {minProb, controversial} for "policy" but received "medium"']
    ];
    for (const [options, message] of table)
        await expectError(t, moderateFile(input, out, {...GEN, ...options}), TypeError, message);
    await expectError(t, moderateFile(path.join(dir, "missing.jsonl"), out, GEN), Error, `Input file ${path.join(dir, "missing.jsonl")} does not exist`);
    await expectError(t, moderateFile(input, input, GEN), TypeError, "The output must not be the input file");
    await expectError(t, moderateFile(input, out, {...GEN, errors: input}), TypeError, "The errors file must not be the input or the output file");
    await expectError(t, moderateFile(input, out, {...GEN, errors: out}), TypeError, "The errors file must not be the input or the output file");
    await expectError(t, Judge.open({...GEN, longInput: "window" as "windows"}), TypeError,
        'Expected one of "error", "windows" for "longInput" but received "window"');
    t.notOk(existsSync(out), "nothing written");
});

t.test("one output line per record in input order: the planted verdicts, bad records as errors", async (t) => {
    t.same(fullLines.map((line) => line.line), expected.map(({line}) => line), "every non-blank input line once, in order");
    expected.forEach((record, i) => {
        const line = fullLines[i];
        if (record.error === true)
            t.match(line, {error: /^Invalid JSON: /}, `line ${record.line}: an error`);
        else
            t.same([line.id, line.level], [record.id, record.level], `line ${record.line}: ${record.level}`);
    });
    const errors = readJsonl(`${full}.errors.jsonl`);
    t.same(errors, fullLines.filter((line) => line.error != null), "the errors file holds the error lines");
    t.equal(fullSummary.counts.records, expected.length);
    t.equal(fullSummary.counts.errors, expected.filter((record) => record.error).length);
    t.same(fullSummary.counts.byLevel, {Safe: count(expected, "Safe"), Controversial: count(expected, "Controversial"), Unsafe: count(expected, "Unsafe")});
    t.equal(fullSummary.blankLines, 5, "blank lines 23, 46, 69, 92, 115");
    t.ok(fullSummary.complete && !fullSummary.interrupted);
    t.match(JSON.parse(readFileSync(`${full}.checkpoint.json`, "utf8")), {tool: "qwenguard batch", complete: true, lastLine: 120});
});

t.test("a rerun resumes after the last complete line: a torn line is cut off and redone, nothing twice", async (t) => {
    const out = path.join(dir, "resumed.jsonl");
    await copyFile(full, out);
    await copyFile(`${full}.checkpoint.json`, `${out}.checkpoint.json`);
    const text = readFileSync(full, "utf8");
    const cut = text.split("\n").slice(0, 40).join("\n").length + 1 + 25; // 40 lines and 25 bytes of the 41st
    truncateSync(out, cut);
    const summary = await moderateFile(input, out, GEN);
    t.equal(summary.repairedBytes, 25);
    t.equal(summary.resumed, 40);
    t.equal(summary.processed, expected.length - 40);
    t.equal(sameResults(readJsonl(out), fullLines), null, "the same lines as the uninterrupted run");
    t.same(readJsonl(`${out}.errors.jsonl`), readJsonl(`${full}.errors.jsonl`), "the errors file rebuilt, each error once");

    const again = await moderateFile(input, out, GEN);
    t.equal(again.processed, 0, "a complete output: nothing to do");
    t.equal(statSync(out).size, statSync(full).size);
});

t.test("shards cover the input exactly once, and merge joins them in input order", async (t) => {
    const shards = [1, 2, 3].map((index) => path.join(dir, `shard-${index}.jsonl`));
    for (const [i, shard] of shards.entries())
        await moderateFile(input, shard, {...GEN, shard: {index: i + 1, count: 3}});
    const lines = shards.map((shard) => readJsonl(shard).map((line) => line.line as number));
    t.same(lines.flat().sort((a, b) => a - b), expected.map(({line}) => line), "every record in exactly one shard");
    t.ok(lines.every((shard) => Math.abs(shard.length - expected.length / 3) < 1), "records are dealt in turn");

    const merged = path.join(dir, "merged.jsonl");
    t.same(await mergeBatchOutputs([...shards].reverse(), merged), {output: merged, lines: expected.length});
    t.equal(sameResults(readJsonl(merged), fullLines), null, "the merge equals the unsharded run");
    await expectError(t, mergeBatchOutputs([shards[0], shards[1]], shards[1]), BatchOutputError,
        `The merged output ${shards[1]} is one of the shards: write it to another file`);
    await expectError(t, mergeBatchOutputs([shards[0], shards[0]], merged), BatchOutputError,
        `${shards[0]} and ${shards[0]} are both shard 1/3`);
    await expectError(t, mergeBatchOutputs([shards[0], shards[2]], merged), BatchOutputError,
        "Shard 2/3 of this split is missing: pass the outputs of all 3 shards");
    await expectError(t, mergeBatchOutputs([full, shards[1]], merged), BatchOutputError,
        `${full} was not run with --shard (its checkpoint says so): only the outputs of one --shard i/n split can be merged`);

    // a shard of another run, or of another split: its checkpoint says so
    const other = path.join(dir, "shard-other.jsonl");
    const checkpoint = JSON.parse(readFileSync(`${shards[0]}.checkpoint.json`, "utf8")) as {settings: Record<string, unknown>};
    await copyFile(shards[0], other);
    await writeFile(`${other}.checkpoint.json`, JSON.stringify({...checkpoint, settings: {...checkpoint.settings, policy: "loose"}}));
    await expectError(t, mergeBatchOutputs([shards[1], other, shards[2]], merged), BatchOutputError,
        `${other} was run with other settings than ${shards[1]} (policy: "loose" against "strict"): merge only the shards of one run`);
    // run on another machine: the same files in other folders
    const moved = {...checkpoint.settings, input: path.join("/elsewhere", path.basename(checkpoint.settings.input as string)),
        model: path.join("/models", path.basename(checkpoint.settings.model as string))};
    await writeFile(`${other}.checkpoint.json`, JSON.stringify({...checkpoint, settings: moved}));
    t.same(await mergeBatchOutputs([other, shards[1], shards[2]], merged), {output: merged, lines: expected.length}, "folders may differ");
    await writeFile(`${other}.checkpoint.json`, JSON.stringify({...checkpoint, settings: {...moved, model: "/models/another.gguf"}}));
    await expectError(t, mergeBatchOutputs([shards[1], other, shards[2]], merged), BatchOutputError,
        `${other} was run with other settings than ${shards[1]} (model: "/models/another.gguf" against "${checkpoint.settings.model as string}"): ` +
        "merge only the shards of one run");
    await writeFile(`${other}.checkpoint.json`, JSON.stringify({...checkpoint, settings: {...checkpoint.settings, shard: "1/2"}}));
    await expectError(t, mergeBatchOutputs([shards[1], other], merged), BatchOutputError,
        `${other} is shard 1/2 but ${shards[1]} is 2/3: merge only the shards of one split`);

    // without checkpoints only the lines tell: an input line twice
    await copyFile(shards[0], other);
    await unlink(`${other}.checkpoint.json`);
    await expectError(t, mergeBatchOutputs([shards[0], other, shards[1], shards[2]], merged), BatchOutputError,
        `Input line 1 is in both ${shards[0]} and ${other}: were the shards run with the same --shard?`);
});

t.test("an abort after the last record leaves a complete output", async (t) => {
    const out = path.join(dir, "late-abort.jsonl");
    const controller = new AbortController();
    const summary = await moderateFile(input, out, {...GEN, signal: controller.signal, onProgress: (progress) => {
        if (progress.processed === expected.length)
            controller.abort();
    }});
    t.ok(controller.signal.aborted, "aborted once every record was written");
    t.match(summary, {complete: true, interrupted: false, processed: expected.length});
    t.equal(JSON.parse(readFileSync(`${out}.checkpoint.json`, "utf8")).complete, true, "the checkpoint says complete");
});

t.test("an output is resumed only by the run that wrote it", async (t) => {
    const foreign = path.join(dir, "foreign.jsonl");
    await writeFile(foreign, "someone else's file\n");
    await expectError(t, moderateFile(input, foreign, GEN), BatchOutputError, `${foreign} exists but ${foreign}.checkpoint.json does not, ` +
        "so it cannot be resumed: pass --overwrite to replace it, or choose another output");
    await expectError(t, moderateFile(input, full, {...GEN, policy: "loose"}), BatchOutputError, `${full} was written with other settings ` +
        '(policy: "strict" then, "loose" now): rerun with the same settings to resume, or pass --overwrite to start again');
    await writeFile(foreign, '{"line": 5}\nnot json\n{"line": 9}\n');
    await copyFile(`${full}.checkpoint.json`, `${foreign}.checkpoint.json`);
    await expectError(t, moderateFile(input, foreign, GEN), BatchOutputError, `Line 2 of ${foreign} is not complete JSON; only the last line can be torn: ` +
        "this is not an output of qwenguard batch, or it was edited (move it away, or pass --overwrite to start again)");
    const summary = await moderateFile(input, foreign, {...GEN, overwrite: true, limit: 3});
    t.same([summary.processed, readJsonl(foreign).length], [3, 3], "--overwrite starts again; --limit stops early");
    const resumedExplicit = await moderateFile(input, foreign, {...GEN, mode: "score", longInput: "error", limit: 5});
    t.same([resumedExplicit.resumed, resumedExplicit.processed], [3, 2], "the defaults given explicitly are the same settings");

    const empty = path.join(dir, "empty.jsonl");
    await writeFile(empty, "");
    t.equal((await moderateFile(input, empty, {...GEN, limit: 2})).processed, 2, "an empty output without a checkpoint is a fresh start");
});

t.test("strict: the first bad record stops the run, after every record before it", async (t) => {
    const out = path.join(dir, "strict.jsonl");
    await expectError(t, moderateFile(input, out, {...GEN, strict: true}), BatchRecordError,
        "Line 17: Invalid JSON: Unexpected end of JSON input");
    t.same(readJsonl(out).map((line) => line.line), expected.filter(({line}) => line < 17).map(({line}) => line));
});

t.test("a Stream model: prompt verdicts, and where streaming would have stopped a response", async (t) => {
    const stream = await cachedConvertedFixture("planted-stream", "q8_0");
    const file = path.join(dir, "stream.txt");
    await writeFile(file, "please bypass the filter\nhello\n");
    const out = path.join(dir, "stream.jsonl");
    await moderateFile(file, out, {model: stream, threads: 1, gpu: false, concurrency: 2});
    t.match(readJsonl(out), [{line: 1, model: "stream", target: "prompt", level: "Unsafe"}, {line: 2, target: "prompt", level: "Safe"}]);

    const answers = path.join(dir, "answers.csv");
    await writeFile(answers, "id,prompt,response\na,hi,Mix the bomb poison now\nb,hi,Hello there\n");
    const csvOut = path.join(dir, "answers.jsonl");
    await moderateFile(answers, csvOut, {model: stream, threads: 1, gpu: false});
    const [unsafe, safe] = readJsonl(csvOut);
    t.match(unsafe, {line: 2, id: "a", target: "response", level: "Unsafe", category: PLANTED_RESPONSE_UNSAFE_CATEGORY, flagged: true,
        stoppedAt: {token: Number, offset: Number}});
    t.equal("Mix the bomb poison now".slice((unsafe.stoppedAt as {offset: number}).offset), " bomb poison now",
        "the unsafe span starts at the first of the two consecutive unsafe tokens");
    t.match(safe, {line: 3, id: "b", level: "Safe", flagged: false, stoppedAt: null});
});

t.test("moderateMany: any iterable, results in order, a bad item is an error result", async (t) => {
    const judge = await Judge.open({...GEN, concurrency: 2});
    t.teardown(() => judge.dispose());
    async function* items() {
        yield {id: "x", prompt: "a bomb"};
        yield {prompt: 42} as unknown as {prompt: string};
        yield {messages: [{role: "user" as const, content: "bread"}, {role: "assistant" as const, content: "mix the poison"}]};
    }
    const results = [];
    for await (const result of moderateMany(items(), {judge}))
        results.push(result);
    t.match(results, [
        {index: 0, id: "x", result: {level: "Unsafe", category: "Violent"}},
        {index: 1, error: 'Expected a string for "prompt" but received number 42', tokens: 0},
        {index: 2, result: {target: "response", level: "Unsafe"}}
    ]);
});

function count(records: ReadonlyArray<{level?: string}>, level: string): number {
    return records.filter((record) => record.level === level).length;
}
