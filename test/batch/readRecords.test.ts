// Reading batch inputs: the malformed-input table (every bad record becomes an error record with its line, nothing is
// dropped), CSV quoting, then the shapes of good records.

import {Readable} from "node:stream";
import {writeFile} from "node:fs/promises";
import path from "node:path";
import t from "tap";
import {BatchInputError, readRecords} from "../../src/index.js";
import type {InputRecord, ReadRecordsOptions} from "../../src/index.js";
import {readLines} from "../../src/batch/readLines.js";
import {parseCsvRecord} from "../../src/batch/readRecords.js";
import {tempDir} from "../gguf/ggufTestKit.js";

async function read(input: string | Buffer, options: ReadRecordsOptions): Promise<{records: InputRecord[], blank: number[]}> {
    const blank: number[] = [];
    const records: InputRecord[] = [];
    for await (const record of readRecords(Readable.from([Buffer.from(input)]), {...options, onBlankLine: (line) => blank.push(line)}))
        records.push(record);
    return {records, blank};
}

/** Each record as `line: error` or `line: id? role:content | role:content`. */
const describe = (records: InputRecord[]) => records.map((record) => `${record.line}: ${record.error ?? ((record.id != null ? `#${record.id} ` : "") +
    record.messages!.map(({role, content}) => `${role}:${content}`).join(" | "))}`);

t.test("JSONL: every bad record is an error with its line, blank lines are skipped and counted", async (t) => {
    const input = Buffer.concat([
        Buffer.from([
            '{"prompt": "fine"}',
            "",
            "{bad json",
            '{"prompt": 3}',
            '{"prompt": "a", "response": null}',
            '{"messages": [{"role": "tool", "content": "x"}]}',
            '{"messages": [{"role": "assistant", "content": "x"}]}',
            '{"id": {"a": 1}, "prompt": "x"}',
            '"just a string"',
            "   ",
            '{"id": 7, "text": "no prompt"}',
            '[{"role": "user", "content": "array form"}]',
            '{"prompt": "p", "messages": [{"role": "user", "content": "m"}]}',
            '{"response": "an answer to nothing"}'
        ].join("\n") + "\n"),
        Buffer.from('{"prompt": "caf'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\r\n'),
        Buffer.from(`{"prompt": "${"x".repeat(300)}"}\n`),
        Buffer.from('{"id": "last", "prompt": "no newline at the end"}')
    ]);
    const {records, blank} = await read(input, {format: "jsonl", maxRecordBytes: 200});
    t.same(describe(records), [
        "1: user:fine",
        "3: Invalid JSON: Expected property name or '}' in JSON at position 1",
        '4: Expected a string for "prompt" but received number 3',
        '5: Expected a string for "response" but received null',
        '6: Expected "system", "user" or "assistant" for "messages[0].role" but received "tool"',
        "7: The conversation has no user message",
        '8: Expected a string or a number for "id" but received object',
        '9: Expected {"prompt": string, "response"?: string}, {"messages": [...]}, {"message": [...]} or [messages] but received a string',
        '11: Expected {"prompt": string, "response"?: string}, {"messages": [...]}, {"message": [...]} or [messages] but received an object with keys ["id","text"]',
        "12: user:array form",
        '13: Expected either "messages" or "prompt"/"response" but received both ("messages" and "prompt")',
        '14: Expected "prompt" with "response" (the prompt it answers) but received "response" alone',
        "15: Invalid UTF-8 at byte 15 of the line",
        "16: The record is 314 bytes, over the limit of 200 bytes",
        "17: #last user:no newline at the end"
    ]);
    t.same(blank, [2, 10]);
    t.same(records.map(({index}) => index), records.map((_, i) => i), "indexes count records, not blank lines");
    t.equal(records[records.length - 1].end, input.length, "the last record ends at the end of the input");
});

t.test("text: one prompt per line, CRLF and a byte order mark removed, invalid UTF-8 reported", async (t) => {
    const input = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("first\r\n\nsecond, with \"quotes\"\n"), Buffer.from([0xff, 0x0a]), Buffer.from("third")]);
    const {records, blank} = await read(input, {format: "txt"});
    t.same(describe(records), ["1: user:first", '3: user:second, with "quotes"', "4: Invalid UTF-8 at byte 0 of the line", "5: user:third"]);
    t.same(blank, [2]);
});

t.test("CSV: quoting, multi-line fields, and every malformed record reported at its first line", async (t) => {
    const input = [
        "id,prompt,response",
        "1,plain,",
        '2,"with, comma","and ""quotes"""',
        '3,"two',
        'lines",reply',
        "",
        '4,bad"quote,x',
        "5,too,many,fields",
        '6,"closed"trailing,x',
        "7,short",
        '8,"never closed,x',
        "9,after,it"
    ].join("\r\n");
    const {records, blank} = await read(input, {format: "csv"});
    t.same(describe(records), [
        "2: #1 user:plain",
        '3: #2 user:with, comma | assistant:and "quotes"',
        "4: #3 user:two\nlines | assistant:reply",
        '7: A quote inside the unquoted field 2 (quote the whole field and double the quote: "a ""b"" c")',
        "8: Expected 3 fields (the header's) but the record has 4",
        '9: Expected a comma after the quoted field 2 but found "t"',
        "10: Expected 3 fields (the header's) but the record has 2",
        "11: A quoted field is never closed before the end of the input"
    ], "an unclosed quote swallows the rest of the input into one bad record: reported, not dropped");
    t.same(blank, [6]);
    t.same(records.map(({id}) => id), ["1", "2", "3", undefined, "5", undefined, "7", undefined], "a bad record keeps its id when it can be read");
});

t.test("CSV: columns by name, chosen columns must exist; a bad header stops the run", async (t) => {
    const input = "text,answer,key\nhello,,k1\nq,a,k2\n";
    const {records} = await read(input, {format: "csv", columns: {prompt: "text", response: "answer", id: "key"}});
    t.same(describe(records), ["2: #k1 user:hello", "3: #k2 user:q | assistant:a"], "an empty response cell judges the prompt alone");
    await t.rejects(read(input, {format: "csv"}), new BatchInputError(
        'The CSV header has no column "prompt" (it has "text", "answer", "key"): choose one with --prompt-column'));
    await t.rejects(read("prompt\nx\n", {format: "csv", columns: {response: "reply"}}), new BatchInputError(
        'The CSV header has no column "reply" (it has "prompt"): choose one with --response-column'));
    await t.rejects(read('"prompt\nx\n', {format: "csv"}), new BatchInputError("The CSV header (line 1) has a quote that is never closed"));
    t.same(parseCsvRecord('a,"",'), ["a", "", ""]);
});

t.test("lines stream from a file without holding it: an oversized line is dropped but counted", async (t) => {
    const file = path.join(await tempDir(t), "big.txt");
    await writeFile(file, `short\n${"y".repeat(1 << 20)}\nafter\n`);
    const lines = [];
    for await (const line of readLines(file, 1024))
        lines.push({number: line.number, text: line.bytes?.toString() ?? null, size: line.size, terminated: line.terminated});
    t.same(lines, [{number: 1, text: "short", size: 5, terminated: true}, {number: 2, text: null, size: 1 << 20, terminated: true},
        {number: 3, text: "after", size: 5, terminated: true}]);
});

t.test("carried fields: JSON values and CSV cells beside the conversation, the official layout's message", async (t) => {
    const carry = {fields: ["label", "unsafe_start_index", "message"], required: ["label"]};
    const jsonl = await read([
        '{"prompt": "p", "label": "Unsafe", "unsafe_start_index": 3, "other": 1}',
        '{"message": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "label": "Safe"}',
        '{"prompt": 5, "label": "Safe"}'
    ].join("\n"), {format: "jsonl", carry});
    t.same(jsonl.records.map((record) => record.carried), [{label: "Unsafe", unsafe_start_index: 3},
        {message: [{role: "user", content: "u"}, {role: "assistant", content: "a"}], label: "Safe"}, {label: "Safe"}], "a bad record keeps its fields");
    t.same(describe(jsonl.records), ["1: user:p", "2: user:u | assistant:a", '3: Expected a string for "prompt" but received number 5']);
    const csv = await read("prompt,label,unsafe_start_index\np,Unsafe,3\nq,Safe,\n", {format: "csv", carry});
    t.same(csv.records.map((record) => record.carried), [{label: "Unsafe", unsafe_start_index: "3"}, {label: "Safe"}], "an empty cell is absent");
    await t.rejects(read("prompt,response\np,r\n", {format: "csv", carry}), new BatchInputError('The CSV header has no column "label" (it has "prompt", "response")'));
});
