import {closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync} from "node:fs";
import path from "node:path";
import {resolveGenPolicy} from "../gen/genPolicy.js";
import {Judge} from "../moderation/Judge.js";
import type {JudgeOptions} from "../moderation/Judge.js";
import {mapInOrder} from "../moderation/mapInOrder.js";
import {lockOutput} from "./outputLock.js";
import type {OutputLock} from "./outputLock.js";
import {resolveModel} from "../hub/resolveModel.js";
import {integerOption, oneOfOption, stringOption} from "../options.js";
import {packageVersion} from "../native/runtimeInfo.js";
import {BatchTally} from "./BatchTally.js";
import type {BatchCounts} from "./BatchTally.js";
import {BatchOutputError, scanOutput} from "./batchOutput.js";
import {judgeItem} from "./moderateMany.js";
import {DEFAULT_MAX_RECORD_BYTES, batchInputFormats, readRecords} from "./readRecords.js";
import type {BatchInputFormat, CarriedFields, CsvColumns, InputRecord} from "./readRecords.js";
import type {ItemOutcome} from "./moderateMany.js";
import type {Message} from "../conversation/messages.js";

export interface ModerateFileOptions extends JudgeOptions {
    /** Default: from the input's extension (`.jsonl`/`.json` → jsonl, `.csv` → csv, else txt). */
    format?: BatchInputFormat,
    /** CSV column names. */
    columns?: CsvColumns,
    /** Process only records `index % count === index - 1`, 1-based: `{index: 2, count: 4}` is the second of four shards. */
    shard?: {index: number, count: number},
    /** Process at most this many records (of this shard), counting those an earlier run already wrote. */
    limit?: number,
    /** Stop at the first bad record (not written; fix it and rerun to resume there) instead of reporting it. */
    strict?: boolean,
    /** The errors file; default `<output>.errors.jsonl`. */
    errors?: string,
    /** Start again even if the output exists (it is replaced). */
    overwrite?: boolean,
    /** Longest record in bytes; default 16 MiB. */
    maxRecordBytes?: number,
    /** How often the output is fsynced and the checkpoint file updated, in ms; default 2000. */
    checkpointInterval?: number,
    /** Stop taking records (those started finish and are written, then a checkpoint). */
    signal?: AbortSignal,
    /** Called after each record is written, and at the end. */
    onProgress?: (progress: BatchProgress) => void,
    /** @internal Per-record hooks: more fields read, the conversation chosen, more fields written (what `evaluateFile` adds). */
    annotate?: RecordAnnotator,
    /** @internal Judges the records instead of a local Judge (a queue of workers: see moderateFileOnQueue); freed at the end. */
    recordJudge?: RecordJudge,
    /** @internal How long to wait for another run's lock on the output (ms); default 15 s. */
    lockWaitMs?: number,
    /** @internal The output's lock, already held by the caller (a queue coordinator takes it before it registers). */
    outputLock?: OutputLock
}

/** @internal What judges a run's records: a local {@link Judge}, or workers behind a queue. */
export interface RecordJudge {
    /** Records worth having in flight. */
    readonly inFlight: number,
    /** Judges one record's conversation; a record's own failure is its `error`, anything else rejects. */
    judgeRecord(record: InputRecord, messages: Message[]): Promise<ItemOutcome>,
    /** No more records come (the input ended, the limit was reached, or the run stops): judge what is held back. */
    flush(): void,
    /** A record read that never reaches `judgeRecord` (not JSON, no user message…): it still counts in the input's order. */
    skipped?(record: InputRecord): void,
    /** The run failed and stops: settle every record in flight at once (their outcomes are not written). */
    cancel?(): void,
    /** Every record up to input line `lastLine` is in the output, fsynced: what the judge kept for them may go. */
    checkpointed?(lastLine: number): void,
    dispose(): Promise<void>
}

/** The local judge as a RecordJudge. */
function localRecordJudge(judge: Judge): RecordJudge {
    return {
        inFlight: judge.inFlight,
        judgeRecord: (_record, messages) => judgeItem(judge, () => messages),
        flush: () => {},
        dispose: () => judge.dispose()
    };
}

/** Hooks that extend each record of a run (see `evaluateFile`). */
export interface RecordAnnotator {
    /** Input fields to read into `record.carried`. */
    carry: CarriedFields,
    /** What else must match for a run to resume (JSON). */
    settings: unknown,
    /** Before judging: the conversation to judge, or why the record is bad (written as its error line). */
    prepare(record: InputRecord): {messages: Message[]} | {error: string},
    /** Fields appended to a judged record's output line. */
    fields(record: InputRecord, outcome: ItemOutcome, judge: Judge): Record<string, unknown>
}

/** Where a run stands. `counts` cover the whole output, earlier runs included; rates cover this run. */
export interface BatchProgress {
    counts: BatchCounts,
    /** Records written by this run. */
    processed: number,
    /** Records an earlier run had written (resumed after them). */
    resumed: number,
    /** Input bytes read, and the input's size (null for a stream). */
    bytesRead: number,
    totalBytes: number | null,
    elapsedMs: number,
    recordsPerSecond: number,
    tokensPerSecond: number,
    /** Estimated seconds left, from the input bytes still to read; null when unknown. */
    etaSeconds: number | null
}

export interface BatchSummary extends BatchProgress {
    output: string,
    errorsFile: string,
    /** Blank input lines skipped (they hold no record). */
    blankLines: number,
    /** Bytes of a torn last output line that resuming cut off and redid. */
    repairedBytes: number,
    /** True when the run stopped early (signal); rerun the same command to continue. */
    interrupted: boolean,
    /** True when every record (of the shard, up to the limit) is in the output. */
    complete: boolean
}

/** The bad record that stopped a `strict` run. */
export class BatchRecordError extends Error {
    constructor(readonly line: number, readonly reason: string) {
        super(`Line ${line}: ${reason}`);
        this.name = "BatchRecordError";
    }
}

/** What a checkpoint must match for a run to resume an output. */
export interface RunSettings {
    input: string,
    model: string,
    head: string | null,
    format: BatchInputFormat,
    columns: CsvColumns | null,
    policy: unknown,
    mode: string,
    longInput: string,
    shard: string | null,
    /** The annotator's settings; absent for a plain batch. */
    annotate?: unknown
}

/** `<output>.checkpoint.json`. */
export interface Checkpoint {
    tool: "qwenguard batch",
    version: string,
    settings: RunSettings,
    complete: boolean,
    lastLine: number,
    counts: BatchCounts,
    updated: string
}

/**
 * Moderates a whole file into a JSONL output, one line per input record in input order:
 * `{"line": 12, "id": …, "level": …, …}` or, for a bad record, `{"line": 12, "error": "…"}` (also written to the
 * errors file). Memory stays flat (the input streams, `concurrency` records in flight).
 *
 * Crash-safe and resumable: lines are written whole, and every `checkpointInterval` the output and errors files are
 * fsynced and `<output>.checkpoint.json` is replaced atomically. Rerunning with the same input, model and settings
 * continues after the last complete output line (a torn last line is cut off and redone), so every record ends up
 * in the output exactly once; the errors file is rebuilt from the output.
 * @throws TypeError for bad options; BatchOutputError when the output exists but cannot be resumed (other settings,
 *   not a batch output); BatchInputError for an unusable CSV header; BatchRecordError for a bad record when `strict`
 * @example
 * const summary = await moderateFile("chats.jsonl", "verdicts.jsonl", {model: "Qwen3Guard-Gen-0.6B-Q8_0.gguf", concurrency: 4});
 * console.log(summary.counts.byLevel, summary.recordsPerSecond);
 */
export async function moderateFile(input: string, output: string, options: ModerateFileOptions): Promise<BatchSummary> {
    if (options == null || typeof options !== "object")
        throw new TypeError("Expected an options object {model, …}");
    if (typeof input !== "string" || input.length === 0 || typeof output !== "string" || output.length === 0)
        throw new TypeError("Expected the input and output file paths");
    const format = oneOfOption("format", options.format ?? formatOf(input), batchInputFormats);
    const shard = options.shard == null ? null : checkShard(options.shard);
    const limit = options.limit == null ? Infinity : integerOption("limit", options.limit, 1, Number.MAX_SAFE_INTEGER);
    const interval = integerOption("checkpointInterval", options.checkpointInterval ?? 2000, 1, 3_600_000);
    const maxRecordBytes = integerOption("maxRecordBytes", options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES, 64, 1 << 30);
    resolveGenPolicy(options.policy);
    if (!existsSync(input))
        throw new Error(`Input file ${input} does not exist`);
    if (path.resolve(input) === path.resolve(output))
        throw new TypeError("The output must not be the input file");
    const errorsFile = options.errors ?? `${output}.errors.jsonl`;
    if ([input, output].some((file) => path.resolve(file) === path.resolve(errorsFile)))
        throw new TypeError("The errors file must not be the input or the output file");
    const checkpointFile = `${output}.checkpoint.json`;
    const annotate = options.annotate;
    const model = path.resolve((await resolveModel(stringOption("model", options.model))).path); // a name: from the cache, pulled when missing
    const settings: RunSettings = {
        input: path.resolve(input), model, head: options.head != null ? path.resolve(options.head) : null,
        format, columns: format === "csv" ? {id: "id", prompt: "prompt", response: "response", ...options.columns} : null,
        policy: options.policy ?? "strict", mode: options.mode ?? "score", longInput: options.longInput ?? "error", shard: shard != null ? `${shard.index}/${shard.count}` : null,
        ...(annotate != null ? {annotate: annotate.settings} : {})
    };

    // one run per output at a time, on this machine or any that shares its volume
    const lock = options.outputLock ?? await lockOutput(output, (message) => (options.onWarning ?? ((text: string) => process.emitWarning(text)))(message),
        (message) => new BatchOutputError(message), options.lockWaitMs);
    try {
        // resume: the output so far (torn last line cut off) and its counts; the errors file is rebuilt from it
        let resumeAfter = 0;
        let tally = new BatchTally();
        let repairedBytes = 0;
        // an empty output without a checkpoint holds nothing to keep (the checkpoint is written before the output is created)
        const resuming = existsSync(output) && options.overwrite !== true && !(statSync(output).size === 0 && !existsSync(checkpointFile));
        if (resuming) {
            const checkpoint = readCheckpoint(checkpointFile, output);
            const mismatched = (Object.keys(settings) as Array<keyof RunSettings>)
                .filter((key) => JSON.stringify(settings[key]) !== JSON.stringify(checkpoint.settings[key]));
            if (mismatched.length > 0)
                throw new BatchOutputError(`${output} was written with other settings (${mismatched.map((key) =>
                    `${key}: ${JSON.stringify(checkpoint.settings[key])} then, ${JSON.stringify(settings[key])} now`).join("; ")}): ` +
                    "rerun with the same settings to resume, or pass --overwrite to start again");
        }
        const totalBytes = statSync(input).size;
        if (options.recordJudge != null && annotate != null)
            throw new TypeError("An evaluation runs on a local judge, not on a queue");
        const localJudge = options.recordJudge == null ? await Judge.open({...options, model}) : null;
        const judge = options.recordJudge ?? localRecordJudge(localJudge!);
        let errs = -1;
        let out = -1;
        const write = (fd: number, text: string) => writeAll(fd, text);
        let resumed = 0;
        try {
            errs = openSync(errorsFile, "w");
            if (resuming) {
                const scanned = await scanOutput(output, (text, line) => {
                    if (line.error != null)
                        write(errs, text + "\n");
                });
                resumeAfter = scanned.lastLine;
                tally = scanned.tally;
                repairedBytes = scanned.truncatedBytes;
            } else {
                // the checkpoint first: an output never exists without one saying which run it belongs to
                writeCheckpoint(checkpointFile, {tool: "qwenguard batch", version: packageVersion(), settings, complete: false, lastLine: 0,
                    counts: tally.snapshot(), updated: new Date().toISOString()});
            }
            resumed = tally.records;
            out = openSync(output, resumeAfter > 0 ? "a" : "w");
        } catch (error) {
            for (const fd of [errs, out])
                if (fd >= 0)
                    closeSync(fd);
            await judge.dispose();
            throw error;
        }
        const start = performance.now();
        let bytesRead = 0;
        let skippedBytes = 0;
        let processed = 0;
        let blankLines = 0;
        let lastLine = resumeAfter;
        let lastCheckpoint = start;
        let complete = false;

        const progress = (): BatchProgress => {
            const elapsedMs = performance.now() - start;
            const seconds = elapsedMs / 1000;
            const rate = processed / Math.max(seconds, 1e-9);
            const bytesPerSecond = (bytesRead - skippedBytes) / Math.max(seconds, 1e-9);
            return {counts: tally.snapshot(), processed, resumed, bytesRead, totalBytes, elapsedMs,
                recordsPerSecond: processed > 0 ? rate : 0, tokensPerSecond: processed > 0 ? tally.tokens / Math.max(seconds, 1e-9) : 0,
                etaSeconds: bytesRead > skippedBytes && processed > 0 ? Math.max(0, (totalBytes - bytesRead) / bytesPerSecond) : null};
        };
        const checkpoint = () => {
            fsyncSync(out);
            fsyncSync(errs);
            if (lock.lost() != null)
                return; // the output is another run's now: its checkpoint is not this run's to write
            writeCheckpoint(checkpointFile, {tool: "qwenguard batch", version: packageVersion(), settings, complete, lastLine,
                counts: tally.snapshot(), updated: new Date().toISOString()});
            lastCheckpoint = performance.now();
            judge.checkpointed?.(lastLine);
        };

        try {
            checkpoint(); // the checkpoint exists before the first new line does

            let selected = 0;
            let limitReached = false;
            let inputDone = false;
            let yielded = 0;
            async function* todo(): AsyncGenerator<InputRecord> {
                for await (const record of readRecords(input, {format, columns: options.columns, maxRecordBytes, onBlankLine: () => blankLines++,
                    ...(annotate != null ? {carry: annotate.carry} : {})})) {
                    if (shard != null && record.index % shard.count !== shard.index - 1)
                        continue;
                    if (selected >= limit) {
                        limitReached = true;
                        judge.flush();
                        return;
                    }
                    selected++;
                    if (record.line <= resumeAfter) {
                        skippedBytes = record.end;
                    } else {
                        yielded++;
                        yield record;
                    }
                }
                inputDone = true;
                judge.flush();
            }
            type Judged = ItemOutcome & {record: InputRecord, extra?: Record<string, unknown> | null};
            const records = mapInOrder(todo(), judge.inFlight, async (record): Promise<Judged> => {
                if (record.error != null) {
                    judge.skipped?.(record);
                    return {record, error: record.error, tokens: 0};
                }
                const prepared = annotate != null ? annotate.prepare(record) : {messages: record.messages!};
                if ("error" in prepared) {
                    judge.skipped?.(record);
                    return {record, error: prepared.error, tokens: 0};
                }
                const outcome = await judge.judgeRecord(record, prepared.messages);
                return {record, ...outcome, extra: annotate != null && outcome.result != null ? annotate.fields(record, outcome, localJudge!) : null};
            }, options.signal, () => {
                // a run that fails: nothing held back waits for ever
                if (judge.cancel != null)
                    judge.cancel();
                else
                    judge.flush();
            });
            options.signal?.addEventListener("abort", () => judge.flush(), {once: true}); // records held back are judged and written

            for await (const {record, result, error, tokens: used, extra} of records) {
                const lostLock = lock.lost();
                if (lostLock != null)
                    throw lostLock;
                if (error != null && options.strict === true)
                    throw new BatchRecordError(record.line, error);
                const head = {line: record.line, ...(record.id != null ? {id: record.id} : {})};
                const text = JSON.stringify(error != null ? {...head, error} : {...head, ...result, ...extra});
                write(out, text + "\n");
                if (error != null)
                    write(errs, text + "\n");
                tally.add(error != null ? {error} : result!, used);
                processed++;
                lastLine = record.line;
                bytesRead = record.end;
                if (performance.now() - lastCheckpoint >= interval)
                    checkpoint();
                options.onProgress?.(progress());
            }
            // complete when every record read was written, even if an abort came after the last one
            complete = (inputDone || limitReached) && processed === yielded;
            if (complete)
                bytesRead = totalBytes;
        } finally {
            try {
                checkpoint();
            } finally {
                closeSync(out);
                closeSync(errs);
                await judge.dispose();
            }
        }
        const summary: BatchSummary = {...progress(), output, errorsFile, blankLines, repairedBytes, interrupted: !complete, complete};
        options.onProgress?.(summary);
        return summary;
    } finally {
        if (options.outputLock == null)
            await lock.release();
    }
}

/** Writes all of `text` (writeSync may write less, e.g. on a full disk: the rest is retried, or the error thrown). */
function writeAll(fd: number, text: string): void {
    const bytes = Buffer.from(text);
    for (let written = 0; written < bytes.length;)
        written += writeSync(fd, bytes, written, bytes.length - written);
}

/** `.jsonl`/`.json`/`.ndjson` → jsonl, `.csv` → csv, anything else → txt. */
export function formatOf(input: string): BatchInputFormat {
    const extension = path.extname(input).toLowerCase();
    return extension === ".csv" ? "csv" : [".jsonl", ".json", ".ndjson"].includes(extension) ? "jsonl" : "txt";
}

function checkShard(shard: {index: number, count: number}): {index: number, count: number} {
    if (shard == null || typeof shard !== "object")
        throw new TypeError("Expected {index, count} for \"shard\"");
    const count = integerOption("shard.count", shard.count, 1, 1 << 20);
    return {index: integerOption("shard.index", shard.index, 1, count), count};
}

function readCheckpoint(file: string, output: string): Checkpoint {
    if (!existsSync(file))
        throw new BatchOutputError(`${output} exists but ${file} does not, so it cannot be resumed: ` +
            "pass --overwrite to replace it, or choose another output");
    let checkpoint: Partial<Checkpoint>;
    try {
        checkpoint = JSON.parse(readFileSync(file, "utf8")) as Partial<Checkpoint>;
    } catch (error) {
        throw new BatchOutputError(`${file} is not a batch checkpoint (${(error as Error).message}): pass --overwrite to start again`);
    }
    if (checkpoint.tool !== "qwenguard batch" || checkpoint.settings == null)
        throw new BatchOutputError(`${file} is not a qwenguard batch checkpoint: pass --overwrite to start again`);
    return checkpoint as Checkpoint;
}

/** Replaces the checkpoint atomically: a temporary file, fsynced, renamed over it. */
function writeCheckpoint(file: string, checkpoint: Checkpoint): void {
    const temporary = `${file}.tmp`;
    const fd = openSync(temporary, "w");
    try {
        writeSync(fd, JSON.stringify(checkpoint, null, 2) + "\n");
        fsyncSync(fd);
    } finally {
        closeSync(fd);
    }
    try {
        renameSync(temporary, file);
    } catch (error) {
        unlinkSync(temporary);
        throw error;
    }
}
