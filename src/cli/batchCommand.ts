import {existsSync} from "node:fs";
import type {Command} from "commander";
import {BatchInputError, batchInputFormats} from "../batch/readRecords.js";
import {BatchOutputError} from "../batch/batchOutput.js";
import {BatchRecordError, moderateFile} from "../batch/moderateFile.js";
import {mergeBatchOutputs} from "../batch/mergeOutputs.js";
import type {BatchInputFormat} from "../batch/readRecords.js";
import type {BatchProgress, BatchSummary} from "../batch/moderateFile.js";
import {UsageError} from "./UsageError.js";
import {integerFlag, parseMode, parsePolicy} from "./flags.js";
import {resolveModelFlag} from "./pullReporter.js";
import {INTERRUPTED, ProgressReporter, abortOnInterrupt, duration} from "./batchProgress.js";

interface BatchCommandOptions {
    output: string,
    model: string,
    head?: string,
    format?: string,
    concurrency: string,
    policy: string,
    mode?: string,
    windows?: boolean,
    shard?: string,
    limit?: string,
    strict?: boolean,
    errors?: string,
    overwrite?: boolean,
    idColumn?: string,
    promptColumn?: string,
    responseColumn?: string,
    threads?: string,
    contextSize?: string,
    json?: boolean,
    queue?: string,
    chunkSize?: string,
    chunksInFlight?: string,
    status?: boolean
}


/** `qwenguard batch` and `qwenguard merge`: offline moderation of whole files, resumable, shardable. */
export function registerBatchCommand(program: Command, setExitCode: (code: number) => void): void {
    program.command("batch")
        .description("moderate a whole file into a JSONL output (one line per record, input order); rerun the same command to resume")
        .argument("[input]", "JSONL ({\"id\"?, \"prompt\", \"response\"?} or {\"id\"?, \"messages\"}), CSV with a header, or text (one prompt per line)")
        .option("-o, --output <file>", "the JSONL output (required); <output>.checkpoint.json beside it makes the run resumable")
        .option("-m, --model <model>", "a model name (gen-0.6b, stream-0.6b, gen-4b:q4_k_m, hf:OWNER/REPO…: pulled into the cache on first use) " +
            "or a file: a Qwen3Guard-Gen GGUF or a Qwen3Guard-Stream backbone GGUF (detected from the file)", "gen-0.6b")
        .option("--head <file>", "Stream: the head GGUF (default: the one the backbone names, beside it)")
        .option("--format <format>", "jsonl, csv or txt (default: from the input's extension: .jsonl/.json/.ndjson, .csv, else txt)")
        .option("-c, --concurrency <n>", "records judged at once, their steps decoded together (default 1)")
        .option("--policy <policy>", "strict (Controversial flags), loose (it does not), or a number: flag when P(Unsafe) + P(Controversial) reaches it", "strict")
        .option("--mode <mode>", "Gen: score (probabilities, the default) or generate (greedy answer, parsed)")
        .option("--windows", "Gen: judge a message over the context in overlapping windows (the worst wins) instead of failing")
        .option("--shard <i/n>", "process only the i-th of n interleaved shards (records i, i+n, …; 1-based); join outputs with qwenguard merge")
        .option("--limit <n>", "process at most n records (of the shard)")
        .option("--strict", "stop at the first bad record instead of reporting it in the output and the errors file")
        .option("--errors <file>", "the errors file (default: <output>.errors.jsonl)")
        .option("--overwrite", "start again, replacing an existing output instead of resuming it")
        .option("--id-column <name>", "CSV: the id column (default: id, when present)")
        .option("--prompt-column <name>", "CSV: the prompt column (default: prompt)")
        .option("--response-column <name>", "CSV: the response column (default: response, when present; an empty cell judges the prompt alone)")
        .option("-t, --threads <n>", "CPU threads")
        .option("--context-size <n>", "Gen: tokens per request, and the KV budget of all requests together; Stream: KV cells shared by the sessions")
        .option("--json", "print the summary as JSON instead of a table")
        .option("--queue <url>", "judge on `qwenguard worker` processes through BullMQ on Redis (redis://HOST:PORT[/DB]) instead of here")
        .option("--chunk-size <n>", "--queue: records per job (default 64)")
        .option("--chunks-in-flight <n>", "--queue: chunks out at once, so at most n workers busy (default: 2 × the workers there at the start, at least 8)")
        .option("--status", "--queue: show the runs on that Redis (of INPUT, and -o OUTPUT, when given) and its workers, from any machine")
        .action(async (input: string | undefined, options: BatchCommandOptions, command: Command) =>
            setExitCode(options.status === true ? await queueStatus(input, statusOptions(options, command)) : await runBatch(input, options)));

    program.command("merge")
        .description("join the outputs of `batch --shard i/n` runs into one output in input order")
        .argument("<shards...>", "the shard outputs")
        .requiredOption("-o, --output <file>", "the merged JSONL output")
        .action(async (shards: string[], options: {output: string}) => {
            const {lines} = await failAsUsage(() => mergeBatchOutputs(shards, options.output));
            process.stderr.write(`qwenguard: merged ${shards.length} shards, ${lines} lines, into ${options.output}\n`);
        });
}

/** `batch --status`: the queue's modules (BullMQ, ioredis) are imported by the runs that use them, not at the CLI's start. */
async function queueStatus(input: string | undefined, options: BatchCommandOptions): Promise<number> {
    const {showQueueStatus} = await import("./queueStatus.js");
    return showQueueStatus(input, options);
}

async function runBatch(input: string | undefined, options: BatchCommandOptions): Promise<number> {
    if (input == null)
        throw new UsageError("Expected the input file to moderate: qwenguard batch INPUT -o OUTPUT");
    if (options.output == null)
        throw new UsageError("Expected -o OUTPUT: the JSONL file the verdicts go to");
    if (options.queue != null) {
        const local = [["--concurrency", options.concurrency], ["--threads", options.threads], ["--context-size", options.contextSize]]
            .filter(([, value]) => value != null).map(([flag]) => flag);
        if (local.length > 0)
            throw new UsageError(`${local.join(", ")} set${local.length === 1 ? "s" : ""} how this machine judges, and with --queue the workers judge: ` +
                "pass it to qwenguard worker");
    } else if (options.chunkSize != null || options.chunksInFlight != null)
        throw new UsageError(`${[options.chunkSize != null ? "--chunk-size" : null, options.chunksInFlight != null ? "--chunks-in-flight" : null]
            .filter((flag) => flag != null).join(" and ")} appl${options.chunkSize != null && options.chunksInFlight != null ? "y" : "ies"} to --queue runs`);
    const output = options.output;
    if (options.format != null && !(batchInputFormats as readonly string[]).includes(options.format))
        throw new UsageError(`Expected jsonl, csv or txt for --format but received ${JSON.stringify(options.format)}`);
    if (input === "-")
        throw new UsageError("batch reads a file, not stdin: a rerun re-reads the input to resume after the last record written");
    const shard = parseShard(options.shard);
    const columns = {id: options.idColumn, prompt: options.promptColumn, response: options.responseColumn};
    const given = Object.entries(columns).filter(([, value]) => value != null);
    if (given.length > 0 && options.format !== "csv" && !input.toLowerCase().endsWith(".csv"))
        throw new UsageError("--id-column, --prompt-column and --response-column apply to CSV input");

    // every number checked before a model is pulled for the run
    const numbers = {limit: integerFlag("--limit", options.limit), chunkSize: integerFlag("--chunk-size", options.chunkSize),
        chunksInFlight: integerFlag("--chunks-in-flight", options.chunksInFlight), concurrency: integerFlag("--concurrency", options.concurrency),
        threads: integerFlag("--threads", options.threads), contextSize: integerFlag("--context-size", options.contextSize)};
    if (!existsSync(input)) // before a default model is pulled for it
        throw new UsageError(`Input file ${input} does not exist`);
    // a named model missing from the cache is pulled first (Ctrl-C there keeps the download for the next run)
    const model = await resolveModelFlag(options.model);

    const controller = new AbortController();
    const removeHandlers = abortOnInterrupt(controller);
    const progress = new ProgressReporter();
    try {
        const common = {
            model, head: options.head, format: options.format as BatchInputFormat | undefined,
            columns: Object.fromEntries(given), policy: parsePolicy(options.policy), mode: parseMode(options.mode),
            ...(options.windows === true ? {longInput: "windows" as const} : {}),
            shard, limit: numbers.limit,
            strict: options.strict === true, errors: options.errors, overwrite: options.overwrite === true,
            signal: controller.signal, onProgress: (state: BatchProgress) => progress.update(state),
            onWarning: (message: string) => void process.stderr.write(`qwenguard: warning: ${message}\n`)
        };
        // as for --status, the queue's modules are imported only by a run on the queue
        const summary = await failAsUsage(async () => options.queue != null
            ? (await import("../queue/moderateFileOnQueue.js")).moderateFileOnQueue(input, output,
                {...common, queue: options.queue, chunkSize: numbers.chunkSize, chunksInFlight: numbers.chunksInFlight})
            : moderateFile(input, output, {...common, concurrency: numbers.concurrency, threads: numbers.threads, contextSize: numbers.contextSize}));
        progress.finish();
        process.stdout.write(options.json ? JSON.stringify(summary) + "\n" : summaryTable(summary));
        return summary.interrupted ? INTERRUPTED : 0;
    } finally {
        progress.finish();
        removeHandlers();
    }
}

/** `--status` takes --queue, -o and --json: any other flag given with it would do nothing, and is refused. */
function statusOptions(options: BatchCommandOptions, command: Command): BatchCommandOptions {
    const kept = new Set(["queue", "output", "json", "status"]);
    const given = command.options.filter((option) => !kept.has(option.attributeName()) && command.getOptionValueSource(option.attributeName()) === "cli");
    if (given.length > 0)
        throw new UsageError(`--status shows runs and takes --queue, -o and --json only, not ${given.map((option) => option.long ?? option.flags).join(", ")}`);
    return options;
}

/** Errors about the input or the output (not the program) exit like usage errors, with their message. */
export async function failAsUsage<T>(action: () => Promise<T>): Promise<T> {
    try {
        return await action();
    } catch (error) {
        if (error instanceof BatchInputError || error instanceof BatchOutputError || error instanceof BatchRecordError || error instanceof TypeError)
            throw new UsageError(error.message);
        throw error;
    }
}

function parseShard(shard: string | undefined): {index: number, count: number} | undefined {
    if (shard == null)
        return undefined;
    const match = /^(\d+)\/(\d+)$/.exec(shard);
    const [index, count] = match == null ? [0, 0] : [Number(match[1]), Number(match[2])];
    if (match == null || count < 1 || index < 1 || index > count)
        throw new UsageError(`Expected i/n with 1 ≤ i ≤ n for --shard (e.g. 1/4) but received ${JSON.stringify(shard)}`);
    return {index, count};
}

function summaryTable(summary: BatchSummary): string {
    const {counts} = summary;
    const judged = counts.records - counts.errors;
    const rows: Array<[string, string]> = [
        ["records", `${counts.records}${summary.resumed > 0 ? ` (${summary.resumed} from earlier runs)` : ""}`],
        ...(["Safe", "Controversial", "Unsafe"] as const).map((level): [string, string] => [`  ${level}`, share(counts.byLevel[level], judged)]),
        ...Object.entries(counts.byCategory).sort(([, a], [, b]) => b - a).map(([category, n]): [string, string] => [`    ${category}`, share(n, judged)]),
        ["flagged", share(counts.flagged, judged)],
        ["errors", `${counts.errors}${counts.errors > 0 ? ` (see ${summary.errorsFile})` : ""}`],
        ...(summary.blankLines > 0 ? [["blank lines skipped", String(summary.blankLines)] as [string, string]] : []),
        ...(summary.repairedBytes > 0 ? [["torn last line redone", `${summary.repairedBytes} bytes`] as [string, string]] : []),
        ["time", `${duration(summary.elapsedMs / 1000)} for ${summary.processed} records this run`],
        ["throughput", `${summary.recordsPerSecond.toFixed(2)} records/s, ${Math.round(summary.tokensPerSecond)} tokens/s`],
        ["output", `${summary.output}${summary.interrupted ? " (interrupted: rerun the same command to resume)" : ""}`]
    ];
    const width = Math.max(...rows.map(([name]) => name.length));
    return rows.map(([name, value]) => `${name.padEnd(width)}  ${value}\n`).join("");
}

function share(n: number, of: number): string {
    return `${n}${of > 0 ? ` (${(100 * n / of).toFixed(1)}%)` : ""}`;
}
