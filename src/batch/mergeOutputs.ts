import {closeSync, existsSync, openSync, readFileSync, writeSync} from "node:fs";
import path from "node:path";
import {BatchOutputError, parseOutputLine} from "./batchOutput.js";
import {readLines} from "./readLines.js";

/** What a merge wrote. */
export interface MergeSummary {
    output: string,
    /** Lines written (the shards' lines together). */
    lines: number
}

/**
 * Joins the outputs of `--shard i/n` runs into one output in input order (a k-way merge on the input line; memory
 * holds one line per shard). Refuses shards whose checkpoint says they are not complete, a torn or foreign line,
 * and an input line present in two shards.
 * @throws BatchOutputError naming the file and line
 * @example
 * await mergeBatchOutputs(["out.1.jsonl", "out.2.jsonl"], "out.jsonl");
 */
export async function mergeBatchOutputs(shards: readonly string[], output: string): Promise<MergeSummary> {
    if (!Array.isArray(shards) || shards.length === 0)
        throw new TypeError("Expected one or more shard outputs to merge");
    for (const shard of shards) {
        if (!existsSync(shard))
            throw new BatchOutputError(`Shard output ${shard} does not exist`);
        if (path.resolve(shard) === path.resolve(output))
            throw new BatchOutputError(`The merged output ${output} is one of the shards: write it to another file`);
        const checkpoint = `${shard}.checkpoint.json`;
        if (!existsSync(checkpoint))
            continue;
        let complete: unknown;
        try {
            complete = (JSON.parse(readFileSync(checkpoint, "utf8")) as {complete?: unknown}).complete;
        } catch (error) {
            throw new BatchOutputError(`${checkpoint} is not a batch checkpoint (${(error as Error).message})`);
        }
        if (complete !== true)
            throw new BatchOutputError(`${shard} is not complete (its checkpoint says so): rerun its batch command first`);
    }
    const readers = shards.map((file) => ({file, lines: readLines(file, Number.MAX_SAFE_INTEGER), current: null as {line: number, text: string} | null,
        last: 0}));
    const advance = async (reader: typeof readers[number]) => {
        const next = await reader.lines.next();
        if (next.done === true) {
            reader.current = null;
            return;
        }
        const text = next.value.bytes!.toString("utf8");
        const parsed = parseOutputLine(text);
        if (typeof parsed === "string" || !next.value.terminated)
            throw new BatchOutputError(`Line ${next.value.number} of ${reader.file} ${typeof parsed === "string" ? parsed : "has no newline (torn)"}`);
        if (parsed.line <= reader.last)
            throw new BatchOutputError(`Line ${next.value.number} of ${reader.file} is for input line ${parsed.line}, after input line ${reader.last}`);
        reader.last = parsed.line;
        reader.current = {line: parsed.line, text};
    };
    const closeAll = () => Promise.all(readers.map((reader) => reader.lines.return(undefined)));
    try {
        for (const reader of readers)
            await advance(reader);
    } catch (error) {
        await closeAll();
        throw error;
    }

    const fd = openSync(output, "w");
    let lines = 0;
    let previous: {line: number, file: string} | null = null;
    try {
        for (;;) {
            let best: typeof readers[number] | null = null;
            for (const reader of readers)
                if (reader.current != null && (best == null || reader.current.line < best.current!.line))
                    best = reader;
            if (best == null)
                break;
            const {line, text} = best.current!;
            if (previous != null && previous.line === line)
                throw new BatchOutputError(`Input line ${line} is in both ${previous.file} and ${best.file}: were the shards run with the same --shard?`);
            writeSync(fd, text + "\n");
            lines++;
            previous = {line, file: best.file};
            await advance(best);
        }
    } finally {
        closeSync(fd);
        await closeAll();
    }
    return {output, lines};
}
