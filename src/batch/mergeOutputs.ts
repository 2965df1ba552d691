import {closeSync, existsSync, openSync, readFileSync, writeSync} from "node:fs";
import path from "node:path";
import {BatchOutputError, parseOutputLine} from "./batchOutput.js";
import type {Checkpoint, RunSettings} from "./moderateFile.js";
import {readLines} from "./readLines.js";

/** What a merge wrote. */
export interface MergeSummary {
    output: string,
    /** Lines written (the shards' lines together). */
    lines: number
}

/**
 * Joins the outputs of `--shard i/n` runs into one output in input order (a k-way merge on the input line; memory
 * holds one line per shard). From the shards' checkpoints it refuses a shard that is not complete, shards run with
 * other settings (input, model, policy, …) or split another way, the same shard twice, and — when every shard has its
 * checkpoint — a missing shard; from the lines, a torn or foreign line and an input line present in two shards.
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
    }
    checkShardSet(shards);
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

/** The run settings that are file paths. */
const PATH_SETTINGS: ReadonlySet<keyof RunSettings> = new Set(["input", "model", "head"]);

/**
 * Checks, from the shards' checkpoints (`<shard>.checkpoint.json`; a shard without one is taken as it is), that each is
 * complete, that all were run with the same settings but the shard (input and model files by name: the folders may
 * differ between machines), one way of splitting (`n`), no shard twice, and — when every shard has a checkpoint —
 * shards 1 to n all present.
 */
function checkShardSet(shards: readonly string[]): void {
    const runs: {file: string, settings: RunSettings, index: number, count: number}[] = [];
    for (const shard of shards) {
        const file = `${shard}.checkpoint.json`;
        if (!existsSync(file))
            continue;
        let checkpoint: Partial<Checkpoint>;
        try {
            checkpoint = JSON.parse(readFileSync(file, "utf8")) as Partial<Checkpoint>;
        } catch (error) {
            throw new BatchOutputError(`${file} is not a batch checkpoint (${(error as Error).message})`);
        }
        if (checkpoint.tool !== "qwenguard batch" || checkpoint.settings == null || typeof checkpoint.settings !== "object")
            throw new BatchOutputError(`${file} is not a qwenguard batch checkpoint`);
        if (checkpoint.complete !== true)
            throw new BatchOutputError(`${shard} is not complete (its checkpoint says so): rerun its batch command first`);
        const match = /^(\d+)\/(\d+)$/.exec(String(checkpoint.settings.shard));
        if (match == null)
            throw new BatchOutputError(`${shard} was not run with --shard (its checkpoint says so): only the outputs of one --shard i/n split can be merged`);
        runs.push({file: shard, settings: checkpoint.settings, index: Number(match[1]), count: Number(match[2])});
    }
    // Shards may run on several machines, where the same input and model sit in other folders: paths compare by name.
    const comparable = (settings: RunSettings, key: keyof RunSettings) =>
        JSON.stringify(PATH_SETTINGS.has(key) && typeof settings[key] === "string" ? path.basename(settings[key] as string) : settings[key]);
    const first = runs[0];
    for (const run of runs.slice(1)) {
        const differing = (Object.keys(first.settings) as Array<keyof RunSettings>)
            .filter((key) => key !== "shard" && comparable(first.settings, key) !== comparable(run.settings, key));
        if (differing.length > 0)
            throw new BatchOutputError(`${run.file} was run with other settings than ${first.file} (${differing.map((key) =>
                `${key}: ${JSON.stringify(run.settings[key])} against ${JSON.stringify(first.settings[key])}`).join("; ")}): ` +
                "merge only the shards of one run");
        if (run.count !== first.count)
            throw new BatchOutputError(`${run.file} is shard ${run.index}/${run.count} but ${first.file} is ${first.index}/${first.count}: ` +
                "merge only the shards of one split");
        const twin = runs.find((other) => other !== run && other.index === run.index);
        if (twin != null)
            throw new BatchOutputError(`${twin.file} and ${run.file} are both shard ${run.index}/${run.count}`);
    }
    if (first != null && runs.length === shards.length && runs.length !== first.count) {
        const present = new Set(runs.map((run) => run.index));
        const missing = Array.from({length: first.count}, (_, i) => i + 1).filter((index) => !present.has(index));
        throw new BatchOutputError(`Shard${missing.length > 1 ? "s" : ""} ${missing.map((index) => `${index}/${first.count}`).join(", ")} ` +
            `of this split ${missing.length > 1 ? "are" : "is"} missing: pass the outputs of all ${first.count} shards`);
    }
}
