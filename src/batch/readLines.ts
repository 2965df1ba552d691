import {createReadStream} from "node:fs";
import type {Readable} from "node:stream";

/** One physical line of an input: its bytes without the line ending, or null when it was longer than the limit. */
export interface RawLine {
    /** 1-based line number. */
    number: number,
    /** The line's bytes (no `\n`, no trailing `\r`); null when the line was over `maxLineBytes` (its bytes were dropped). */
    bytes: Buffer | null,
    /** The line's length in bytes (also when dropped). */
    size: number,
    /** Byte offset just after this line's `\n` (or the end of the input). */
    end: number,
    /** False for a last line that the input ends without a `\n`. */
    terminated: boolean
}

/**
 * Splits an input into lines as it streams: memory holds one line (at most `maxLineBytes`), never the whole input.
 * A line over the limit is still counted and reported (with `bytes: null`) so that no record is silently lost.
 * @param input - a file path, or a readable byte stream (stdin)
 */
export async function* readLines(input: string | Readable, maxLineBytes: number): AsyncGenerator<RawLine> {
    const stream = typeof input === "string" ? createReadStream(input, {highWaterMark: 1 << 16}) : input;
    let parts: Buffer[] = [];
    let partsSize = 0;
    let oversized = false;
    let lineSize = 0;
    let number = 0;
    let offset = 0;
    const take = (end: number, terminated: boolean): RawLine => {
        number++;
        let bytes: Buffer | null = oversized ? null : Buffer.concat(parts, partsSize);
        if (bytes != null && bytes.length > 0 && bytes[bytes.length - 1] === 0x0d)
            bytes = bytes.subarray(0, bytes.length - 1);
        const line = {number, bytes, size: bytes?.length ?? lineSize, end, terminated};
        parts = [];
        partsSize = 0;
        lineSize = 0;
        oversized = false;
        return line;
    };
    for await (const chunk of stream as AsyncIterable<Buffer | string>) {
        const buffer = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
        let start = 0;
        while (start < buffer.length) {
            const newline = buffer.indexOf(0x0a, start);
            const stop = newline < 0 ? buffer.length : newline;
            lineSize += stop - start;
            if (!oversized && lineSize > maxLineBytes) {
                oversized = true;
                parts = [];
                partsSize = 0;
            }
            if (!oversized && stop > start) {
                parts.push(buffer.subarray(start, stop));
                partsSize += stop - start;
            }
            if (newline < 0)
                break;
            yield take(offset + newline + 1, true);
            start = newline + 1;
        }
        offset += buffer.length;
    }
    if (lineSize > 0 || partsSize > 0)
        yield take(offset, false);
}
