import type {Readable} from "node:stream";
import type {Message} from "../conversation/messages.js";
import {conversationOf} from "../moderation/conversationOf.js";
import {readLines} from "./readLines.js";
import type {RawLine} from "./readLines.js";

/** Input formats of `qwenguard batch`. */
export type BatchInputFormat = "jsonl" | "csv" | "txt";
export const batchInputFormats: readonly BatchInputFormat[] = ["jsonl", "csv", "txt"];

/** CSV column names; `prompt` is required in the header, the others are used when present. */
export interface CsvColumns {
    /** Default `"id"`. */
    id?: string,
    /** Default `"prompt"`. */
    prompt?: string,
    /** Default `"response"`; an empty cell means the record is a prompt alone. */
    response?: string
}

/** One input record: a conversation to judge, or why the record cannot be judged. */
export interface InputRecord {
    /** 0-based among the input's records (blank lines are not records): what shards and limits count. */
    index: number,
    /** 1-based line where the record starts. */
    line: number,
    /** JSONL `id`, or the CSV id column; absent when the input gives none. */
    id?: string | number,
    /** The conversation; absent when `error` says why there is none. */
    messages?: Message[],
    error?: string,
    /** The fields named in `carry` that the record has (JSONL: their JSON values; CSV: non-empty cells, as strings). */
    carried?: Record<string, unknown>,
    /** Byte offset of the input just after the record (for progress). */
    end: number
}

/** Fields to read besides the conversation (e.g. the labels of an evaluation). */
export interface CarriedFields {
    /** JSONL keys, or CSV column names. */
    fields: readonly string[],
    /** CSV columns the header must have. */
    required?: readonly string[]
}

export interface ReadRecordsOptions {
    format: BatchInputFormat,
    columns?: CsvColumns,
    /** Longest record in bytes; a longer one becomes an error record. Default 16 MiB. */
    maxRecordBytes?: number,
    /** Called for each blank line (skipped: it holds no record). */
    onBlankLine?: (line: number) => void,
    /** Fields to carry into each record's `carried`. */
    carry?: CarriedFields
}

export const DEFAULT_MAX_RECORD_BYTES = 16 << 20;

/** A problem with the whole input (not one record): unreadable CSV header, missing column. */
export class BatchInputError extends Error {}

const utf8 = new TextDecoder("utf-8", {fatal: true});

/**
 * Reads an input's records as it streams (memory holds one record). Bad records are yielded with an `error` and
 * their line, never dropped; blank lines are skipped (and reported through `onBlankLine`).
 * @throws BatchInputError for a CSV without a usable header
 */
export async function* readRecords(input: string | Readable, options: ReadRecordsOptions): AsyncGenerator<InputRecord> {
    const maxRecordBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
    const lines = readLines(input, maxRecordBytes);
    if (options.format === "csv") {
        yield* csvRecords(lines, options.columns ?? {}, maxRecordBytes, options.onBlankLine, options.carry);
        return;
    }
    let index = 0;
    for await (const raw of lines) {
        const text = lineText(raw, maxRecordBytes);
        if (typeof text === "string" && text.trim().length === 0) {
            options.onBlankLine?.(raw.number);
            continue;
        }
        const base = {index: index++, line: raw.number, end: raw.end};
        if (typeof text !== "string")
            yield {...base, error: text.error};
        else if (options.format === "txt")
            yield {...base, messages: [{role: "user", content: text}]};
        else
            yield {...base, ...jsonRecord(text, options.carry?.fields ?? [])};
    }
}

/** A line's text, or why it has none (too long, not UTF-8). The first line loses a UTF-8 byte order mark. */
function lineText(raw: RawLine, maxRecordBytes: number): string | {error: string} {
    if (raw.bytes == null)
        return {error: `The record is ${raw.size} bytes, over the limit of ${maxRecordBytes} bytes`};
    let bytes = raw.bytes;
    if (raw.number === 1 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf)
        bytes = bytes.subarray(3);
    try {
        return utf8.decode(bytes);
    } catch {
        return {error: `Invalid UTF-8 at byte ${firstInvalidUtf8(bytes)} of the line`};
    }
}

function jsonRecord(text: string, carry: readonly string[]): {id?: string | number, messages?: Message[], error?: string, carried?: Record<string, unknown>} {
    let value: unknown;
    try {
        value = JSON.parse(text);
    } catch (error) {
        return {error: `Invalid JSON: ${(error as Error).message}`};
    }
    const carried = carry.length > 0 && value != null && typeof value === "object" && !Array.isArray(value)
        ? Object.fromEntries(carry.filter((key) => key in value).map((key) => [key, (value as Record<string, unknown>)[key]]))
        : null;
    const withCarried = <T extends object>(record: T) => carried != null ? {...record, carried} : record;
    let id: string | number | undefined;
    if (value != null && typeof value === "object" && !Array.isArray(value) && "id" in value) {
        const given = (value as {id: unknown}).id;
        if (!(typeof given === "string" || (typeof given === "number" && Number.isFinite(given))))
            return {error: `Expected a string or a number for "id" but received ${given === null ? "null" : typeof given}`};
        id = given;
    }
    try {
        return withCarried({...(id != null ? {id} : {}), messages: conversationOf(value)});
    } catch (error) {
        return withCarried({...(id != null ? {id} : {}), error: (error as Error).message});
    }
}

async function* csvRecords(lines: AsyncGenerator<RawLine>, columns: CsvColumns, maxRecordBytes: number,
    onBlankLine: ((line: number) => void) | undefined, carry: CarriedFields | undefined): AsyncGenerator<InputRecord> {
    let header: CsvHeader | null = null;
    let index = 0;
    let pending: CsvPending | null = null;
    let end = 0;
    for await (const raw of lines) {
        end = raw.end;
        const text = lineText(raw, maxRecordBytes);
        if (pending == null && typeof text === "string" && text.trim().length === 0) {
            onBlankLine?.(raw.number);
            continue;
        }
        // a record runs over several lines while a quoted field is open (read on the bytes: `"` and `,` never occur
        // inside a multi-byte UTF-8 sequence, so this holds for lines that are not valid UTF-8 too); it keeps the
        // first problem it meets
        const record: CsvPending = pending ?? {line: raw.number, text: "", bytes: 0, inQuotes: false, error: null};
        record.bytes += raw.size + 1;
        record.inQuotes = endsInQuotedField(raw.bytes, record.inQuotes);
        if (record.error == null) {
            if (typeof text !== "string")
                record.error = text.error;
            else if (record.bytes > maxRecordBytes)
                record.error = `The record is over the limit of ${maxRecordBytes} bytes`;
            else
                record.text = pending != null ? `${record.text}\n${text}` : text;
        }
        if (record.error != null)
            record.text = "";
        pending = record.inQuotes ? record : null;
        if (pending != null)
            continue;

        if (header == null) {
            if (record.error != null)
                throw new BatchInputError(`The CSV header (line ${record.line}) cannot be read: ${record.error}`);
            header = csvHeader(record.text, record.line, columns, carry);
            continue;
        }
        const base = {index: index++, line: record.line, end: raw.end};
        if (record.error != null) {
            yield {...base, error: record.error};
            continue;
        }
        const fields = parseCsvRecord(record.text);
        if (typeof fields === "string") {
            yield {...base, error: fields};
            continue;
        }
        const id = header.id >= 0 ? fields[header.id] : undefined;
        if (fields.length !== header.names.length) {
            yield {...base, ...(id != null ? {id} : {}),
                error: `Expected ${header.names.length} fields (the header's) but the record has ${fields.length}`};
            continue;
        }
        const prompt = fields[header.prompt];
        const response = header.response >= 0 && fields[header.response] !== "" ? fields[header.response] : undefined;
        const carried = header.carried.length > 0
            ? {carried: Object.fromEntries(header.carried.filter(([, at]) => fields[at] !== "").map(([name, at]) => [name, fields[at]]))} : {};
        yield {...base, ...(id != null ? {id} : {}), ...carried,
            messages: response == null ? [{role: "user", content: prompt}] : [{role: "user", content: prompt}, {role: "assistant", content: response}]};
    }
    if (pending != null) {
        const base = {index: index++, line: pending.line, end};
        if (header == null)
            throw new BatchInputError(`The CSV header (line ${pending.line}) has a quote that is never closed`);
        yield {...base, error: pending.error ?? "A quoted field is never closed before the end of the input"};
    }
}

/** A CSV header's column names and where the columns read are (-1: absent). */
interface CsvHeader {
    names: string[],
    id: number,
    prompt: number,
    response: number,
    /** The carried columns present: name and position. */
    carried: Array<[string, number]>
}

function csvHeader(text: string, line: number, columns: CsvColumns, carry: CarriedFields | undefined): CsvHeader {
    const names = parseCsvRecord(text);
    if (typeof names === "string")
        throw new BatchInputError(`The CSV header (line ${line}) cannot be read: ${names}`);
    const find = (flag: string, name: string, required: boolean): number => {
        const at = names.indexOf(name);
        if (at < 0 && required)
            throw new BatchInputError(`The CSV header has no column ${JSON.stringify(name)} (it has ${names.map((n) => JSON.stringify(n)).join(", ")}): ` +
                `choose one with ${flag}`);
        return at;
    };
    const required = new Set(carry?.required ?? []);
    for (const name of required)
        if (!names.includes(name))
            throw new BatchInputError(`The CSV header has no column ${JSON.stringify(name)} (it has ${names.map((n) => JSON.stringify(n)).join(", ")})`);
    return {
        names,
        prompt: find("--prompt-column", columns.prompt ?? "prompt", true),
        response: find("--response-column", columns.response ?? "response", columns.response != null),
        id: find("--id-column", columns.id ?? "id", columns.id != null),
        carried: (carry?.fields ?? []).map((name): [string, number] => [name, names.indexOf(name)]).filter(([, at]) => at >= 0)
    };
}

/**
 * Splits one CSV record (RFC 4180: `,` separated, `"` quoted with `""` for a quote, newlines inside quotes).
 * @returns the fields, or what is wrong
 */
export function parseCsvRecord(text: string): string[] | string {
    const fields: string[] = [];
    let i = 0;
    for (;;) {
        if (text[i] === "\"") {
            let value = "";
            i++;
            for (;;) {
                const quote = text.indexOf("\"", i);
                if (quote < 0)
                    return "A quoted field is never closed";
                value += text.slice(i, quote);
                if (text[quote + 1] === "\"") {
                    value += "\"";
                    i = quote + 2;
                    continue;
                }
                i = quote + 1;
                break;
            }
            if (i < text.length && text[i] !== ",")
                return `Expected a comma after the quoted field ${fields.length + 1} but found ${JSON.stringify(text[i])}`;
            fields.push(value);
        } else {
            const comma = text.indexOf(",", i);
            const value = text.slice(i, comma < 0 ? text.length : comma);
            if (value.includes("\""))
                return `A quote inside the unquoted field ${fields.length + 1} (quote the whole field and double the quote: "a ""b"" c")`;
            fields.push(value);
            i = comma < 0 ? text.length : comma;
        }
        if (i >= text.length)
            return fields;
        i++; // the comma
        if (i === text.length) {
            fields.push("");
            return fields;
        }
    }
}

/** A CSV record being read: its first line, its text so far, and whether a quoted field is open at its end. */
interface CsvPending {
    line: number,
    text: string,
    bytes: number,
    inQuotes: boolean,
    error: string | null
}

/**
 * Whether a CSV line ends inside a quoted field (the record goes on), given whether it began inside one. Only a
 * quote at the start of a field opens one; a stray quote elsewhere is an error found later, not a continuation.
 * An oversized line (bytes dropped) is taken to leave the state as it was (inside a long quoted field, it is most
 * likely more of that field).
 */
function endsInQuotedField(bytes: Buffer | null, inQuotes: boolean): boolean {
    if (bytes == null)
        return inQuotes; // dropped: most likely more of the long quoted field it is in
    let quoted = inQuotes;
    let fieldStart = !inQuotes;
    for (let i = 0; i < bytes.length; i++) {
        const byte = bytes[i];
        if (quoted) {
            if (byte === 0x22) {
                if (bytes[i + 1] === 0x22)
                    i++; // an escaped quote
                else
                    quoted = false;
            }
        } else if (byte === 0x2c) {
            fieldStart = true;
            continue;
        } else if (byte === 0x22 && fieldStart) {
            quoted = true;
        }
        fieldStart = false;
    }
    return quoted;
}

/** The offset of the first byte that does not start a valid UTF-8 sequence. */
export function firstInvalidUtf8(bytes: Buffer): number {
    const valid = longestValidUtf8Prefix(bytes);
    if (validUtf8(bytes.subarray(0, valid), false))
        return valid;
    // the prefix ends inside a sequence that the next byte breaks: the sequence's lead byte is the first bad one
    let lead = valid - 1;
    while (lead > 0 && (bytes[lead] & 0xc0) === 0x80)
        lead--;
    return lead;
}

function longestValidUtf8Prefix(bytes: Buffer): number {
    let low = 0;
    let high = bytes.length;
    // the longest valid prefix, by bisection on the fatal decoder (a cut inside a sequence is invalid too)
    while (low < high) {
        const mid = Math.ceil((low + high) / 2);
        if (validUtf8(bytes.subarray(0, mid), true))
            low = mid;
        else
            high = mid - 1;
    }
    return low;
}

/** With `prefix`, bytes that end inside a multi-byte sequence are valid (decoded in streaming mode). */
function validUtf8(bytes: Buffer, prefix: boolean): boolean {
    try {
        new TextDecoder("utf-8", {fatal: true}).decode(bytes, {stream: prefix});
        return true;
    } catch {
        return false;
    }
}
