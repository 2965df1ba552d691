import {truncateSync} from "node:fs";
import {BatchTally} from "./BatchTally.js";
import {readLines} from "./readLines.js";

/** A batch output that cannot be resumed or merged as it is. */
export class BatchOutputError extends Error {}

/** What an existing output holds: its last input line, its counts, and whether a torn last line was cut off. */
export interface ScannedOutput {
    /** The input line of the last complete output line; 0 when there is none. */
    lastLine: number,
    /** The `id` of that line, when it has one. */
    lastId: string | number | undefined,
    tally: BatchTally,
    /** Bytes of a torn last line that were cut off (0 when the file ended with a complete line). */
    truncatedBytes: number
}

/** One line of a batch output, as far as resuming and merging need to know. */
export interface OutputLine {
    line: number,
    id?: string | number,
    error?: string,
    level?: string,
    category?: string | null,
    flagged?: boolean
}

/**
 * Reads an output written by `moderateFile` and cuts off a torn last line (one without its newline, or that is not
 * complete JSON: the process died while writing it), so that appending continues on a line boundary.
 * @param onLine - called with each complete line's text and parsed value (e.g. to rebuild the errors file)
 * @throws BatchOutputError when a line before the last is not an output line, or input lines do not increase
 */
export async function scanOutput(file: string, onLine?: (text: string, line: OutputLine) => void): Promise<ScannedOutput> {
    const tally = new BatchTally();
    let lastLine = 0;
    let lastId: string | number | undefined;
    let goodEnd = 0;
    let torn: {number: number, problem: string} | null = null;
    let end = 0;
    for await (const raw of readLines(file, Number.MAX_SAFE_INTEGER)) {
        end = raw.end;
        if (torn != null)
            throw new BatchOutputError(`Line ${torn.number} of ${file} ${torn.problem}; only the last line can be torn: ` +
                "this is not an output of qwenguard batch, or it was edited (move it away, or pass --overwrite to start again)");
        const text = raw.bytes!.toString("utf8");
        const parsed = parseOutputLine(text);
        if (typeof parsed === "string" || !raw.terminated) {
            torn = {number: raw.number, problem: typeof parsed === "string" ? parsed : "has no newline"};
            continue;
        }
        if (parsed.line <= lastLine)
            throw new BatchOutputError(`Line ${raw.number} of ${file} is for input line ${parsed.line}, after input line ${lastLine}: ` +
                "outputs list input lines in increasing order (was it edited or concatenated? use qwenguard merge to join shards)");
        lastLine = parsed.line;
        lastId = parsed.id;
        tally.add(parsed);
        onLine?.(text, parsed);
        goodEnd = raw.end;
    }
    let truncatedBytes = 0;
    if (torn != null) {
        truncatedBytes = end - goodEnd;
        truncateSync(file, goodEnd);
    }
    return {lastLine, lastId, tally, truncatedBytes};
}

/** Parses one output line; a string says what is wrong with it. */
export function parseOutputLine(text: string): OutputLine | string {
    let value: unknown;
    try {
        value = JSON.parse(text);
    } catch {
        return "is not complete JSON";
    }
    if (value == null || typeof value !== "object" || Array.isArray(value))
        return "is not a JSON object";
    const line = (value as {line?: unknown}).line;
    if (typeof line !== "number" || !Number.isSafeInteger(line) || line < 1)
        return "has no input line number (\"line\")";
    return value as OutputLine;
}
