import {createHash} from "node:crypto";
import path from "node:path";
import {moderateFile} from "../batch/moderateFile.js";
import type {BatchSummary, ModerateFileOptions} from "../batch/moderateFile.js";
import {resolveModel} from "../hub/resolveModel.js";
import {integerOption, stringOption} from "../options.js";
import {BatchOutputError} from "../batch/batchOutput.js";
import {lockOutput} from "../batch/outputLock.js";
import {QueueJudge} from "./QueueJudge.js";
import {guardKey, parseQueueUrl, queueName} from "./queueConnection.js";
import {RunReporter} from "./runRegistry.js";

export interface QueueBatchOptions extends Omit<ModerateFileOptions, "concurrency" | "threads" | "contextSize" | "gpu"> {
    /** `redis://HOST:PORT[/DB]`. */
    queue: string,
    /** Records per job; default 64. */
    chunkSize?: number,
    /**
     * Chunks submitted and not yet written: at most this many workers are busy with the run. Default: twice the
     * workers on the queue when the run starts, at least 8 (raise it when more workers join later).
     */
    chunksInFlight?: number,
    /** Tries of a chunk before its records become error lines; default 3. */
    attempts?: number,
    /** How long to wait for Redis at the start; default 10 s. */
    connectTimeoutMs?: number
}

/**
 * `moderateFile` with the judging done by `qwenguard worker` processes on any machines: the records go to the
 * model's BullMQ queue in chunks and the verdicts are written as they come back, in input order, with the same
 * output, errors file, checkpoint and resume as a local batch. Rerunning the same command after a crash collects the
 * chunks already judged instead of judging them again.
 * @throws TypeError for bad options or a bad queue URL; Error when Redis cannot be reached; the errors of moderateFile
 * @example
 * await moderateFileOnQueue("chats.jsonl", "verdicts.jsonl", {model: "gen-0.6b", queue: "redis://10.0.0.5:6379"});
 */
export async function moderateFileOnQueue(input: string, output: string, options: QueueBatchOptions): Promise<BatchSummary> {
    if (options == null || typeof options !== "object")
        throw new TypeError("Expected an options object {model, queue, …}");
    const target = parseQueueUrl(stringOption("queue", options.queue));
    const chunkSize = integerOption("chunkSize", options.chunkSize ?? 64, 1, 10_000);
    if (options.chunksInFlight != null && chunkSize * options.chunksInFlight > 1_000_000)
        throw new TypeError(`Expected at most 1,000,000 records in flight (chunkSize × chunksInFlight) but received ${chunkSize} × ${options.chunksInFlight}`);
    const chunksInFlight = options.chunksInFlight != null ? integerOption("chunksInFlight", options.chunksInFlight, 1, 10_000) : undefined;
    const attempts = integerOption("attempts", options.attempts ?? 3, 1, 100);
    if (options.annotate != null)
        throw new TypeError("An evaluation runs on a local judge, not on a queue");
    const local = (["concurrency", "threads", "contextSize", "gpu"] as const).filter((name) => (options as unknown as Record<string, unknown>)[name] != null);
    if (local.length > 0)
        throw new TypeError(`${local.map((name) => `"${name}"`).join(", ")} set${local.length === 1 ? "s" : ""} how a machine judges, ` +
            "and on a queue the workers judge: give it to startQueueWorker (qwenguard worker)");
    const model = path.resolve((await resolveModel(stringOption("model", options.model))).path);
    const key = await guardKey(model, options.head);
    const queue = queueName(key);
    const settings = {policy: options.policy, mode: options.mode, longInput: options.longInput};
    // what makes two runs the same run: the job ids derive from it, so a rerun finds its chunks
    const runId = createHash("sha256").update(JSON.stringify({
        input: path.resolve(input), output: path.resolve(output), key, settings, format: options.format ?? null,
        columns: options.columns ?? null, shard: options.shard ?? null, chunkSize
    })).digest("hex").slice(0, 16);
    const warn = options.onWarning ?? ((message: string) => process.emitWarning(message));
    // the output's lock before anything is registered: a second coordinator of the run must not touch its status
    const lock = await lockOutput(output, warn, (message) => new BatchOutputError(message), options.lockWaitMs);
    try {
        const recordJudge = await QueueJudge.open({target, queue, modelKey: key, runId, settings, chunkSize, shard: options.shard, chunksInFlight,
            attempts, connectTimeoutMs: options.connectTimeoutMs, onWarning: warn});
        let reporter: RunReporter | null = null;
        try {
            reporter = await RunReporter.open(target, {runId, input: path.resolve(input), output: path.resolve(output), model, modelKey: key, queue,
                chunkSize}, () => recordJudge.counts);
            if (await recordJudge.workerCount() === 0) {
                const others = await reporter.otherWorkers();
                warn(`No worker serves ${path.basename(model)} on ${target.display} yet (queue ${queue}): the chunks wait until one starts ` +
                    `(qwenguard worker --queue ${target.display} -m ${path.basename(model)})` + (others.length === 0 ? "" :
                    `. Workers there serve other models or versions, whose verdicts are never mixed into this run: ${
                        others.map((group) => `${group.model} (${group.count} on ${group.queue})`).join(", ")}`));
            }
            const running = reporter;
            const summary = await moderateFile(input, output, {...options, model, recordJudge, outputLock: lock, onProgress: (progress) => {
                options.onProgress?.(progress);
                running.progress(progress);
            }});
            await reporter.end(summary.complete ? "complete" : "interrupted", summary);
            return summary;
        } catch (error) {
            await reporter?.end("failed", null, (error as Error).message);
            throw error;
        } finally {
            await recordJudge.dispose(); // also when moderateFile refused the run before it began
        }
    } finally {
        await lock.release();
    }
}
