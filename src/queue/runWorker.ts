import path from "node:path";
import {UnrecoverableError, Worker} from "bullmq";
import type {Job} from "bullmq";
import {judgeItem} from "../batch/moderateMany.js";
import {resolveModel} from "../hub/resolveModel.js";
import {Judge} from "../moderation/Judge.js";
import type {JudgeOptions} from "../moderation/Judge.js";
import {mapInOrder} from "../moderation/mapInOrder.js";
import {packageVersion} from "../native/runtimeInfo.js";
import {integerOption, stringOption} from "../options.js";
import type {ChunkJobData, ChunkJobResult} from "./QueueJudge.js";
import {assertReachable, guardKey, minorVersion, parseQueueUrl, queueName} from "./queueConnection.js";
import {workerName} from "./runRegistry.js";

export interface QueueWorkerOptions extends Pick<JudgeOptions, "model" | "head" | "concurrency" | "threads" | "contextSize" | "gpu" | "onWarning"> {
    /** `redis://HOST:PORT[/DB]`. */
    queue: string,
    /** How long a chunk stays locked without the worker renewing it (ms); default 30,000 (BullMQ's). */
    lockDuration?: number,
    /** How often workers look for chunks whose worker died (ms); default 30,000. */
    stalledInterval?: number,
    /** Called for each chunk judged or failed. */
    onChunk?: (event: {runId: string, chunk: number, records: number, ms: number, error?: string}) => void
}

/** A running worker: `close()` lets the chunk in hand finish (its result is stored), then frees the model. */
export interface QueueWorker {
    /** The model's queue this worker takes chunks from. */
    queue: string,
    close(): Promise<void>
}

/**
 * Starts a batch worker: loads the model once and judges the chunks of every run whose model is the same file
 * (each model has its own queue, named by its guardKey; the worker names itself after the file in BullMQ, so
 * coordinators and `--status` can say which models are served), `concurrency` records of a chunk at a time, with the
 * same Judge as a local batch. A chunk whose worker dies is taken over by another after BullMQ's stalled-job check.
 * @throws TypeError for a bad queue URL or options; Error when Redis cannot be reached or the model cannot be loaded
 */
export async function startQueueWorker(options: QueueWorkerOptions): Promise<QueueWorker> {
    if (options == null || typeof options !== "object")
        throw new TypeError("Expected an options object {queue, model, …}");
    const target = parseQueueUrl(options.queue);
    const lockDuration = integerOption("lockDuration", options.lockDuration ?? 30_000, 1000, 3_600_000);
    const stalledInterval = integerOption("stalledInterval", options.stalledInterval ?? 30_000, 500, 3_600_000);
    await assertReachable(target);
    const model = path.resolve((await resolveModel(stringOption("model", options.model))).path);
    const judge = await Judge.open({...options, model});
    let worker: Worker<ChunkJobData, ChunkJobResult>;
    try {
        const key = await guardKey(model, options.head);
        const processor = chunkProcessor(judge, {model, key}, options.onChunk);
        worker = new Worker<ChunkJobData, ChunkJobResult>(queueName(key), processor, {connection: target.connection, name: workerName(model),
            concurrency: 1, lockDuration, stalledInterval, maxStalledCount: 3, autorun: false});
    } catch (error) {
        await judge.dispose();
        throw error;
    }
    worker.on("failed", (job, error) => {
        if (job != null)
            options.onChunk?.({runId: String(job.data?.runId), chunk: Number(job.data?.chunk), records: Array.isArray(job.data?.records) ? job.data.records.length : 0,
                ms: 0, error: error.message});
    });
    worker.on("error", (error) => options.onWarning?.(`queue ${target.display}: ${error.message}`));
    try {
        await worker.waitUntilReady();
    } catch (error) {
        await Promise.allSettled([worker.close(), judge.dispose()]);
        throw error;
    }
    void worker.run().catch((error: Error) => options.onWarning?.(`queue ${target.display}: the worker stopped: ${error.message}`));
    let closing: Promise<void> | null = null;
    return {
        queue: worker.name,
        close: () => closing ??= (async () => {
            await worker.close();
            await judge.dispose();
        })()
    };
}

/**
 * What a worker does with a job: checks that it is a chunk of a run of this version and this model (a job that is
 * not is refused for good, with why: retrying cannot help), then judges its records `judge.inFlight` at a time with
 * the run's settings. A record's own failure is its error line; any other failure fails the job, which BullMQ retries.
 * @internal exported for the queue's tests
 */
export function chunkProcessor(judge: Judge, served: {model: string, key: string}, onChunk?: QueueWorkerOptions["onChunk"]):
    (job: Job<ChunkJobData, ChunkJobResult>) => Promise<ChunkJobResult> {
    const version = packageVersion();
    return async (job) => {
        const started = performance.now();
        // the version first: another version's job may well have another shape
        const coordinator = (job.data as Partial<ChunkJobData> | null)?.version;
        if (typeof coordinator === "string" && minorVersion(coordinator) !== minorVersion(version))
            throw new UnrecoverableError(`This worker runs qwenguard ${version} and the run's coordinator ${coordinator}: ` +
                "run workers of the coordinator's version (outputs of different versions are not mixed)");
        const data = checkChunkJob(job.data, job.id);
        if (data.modelKey !== served.key)
            throw new UnrecoverableError(`This worker serves ${path.basename(served.model)} (model key ${served.key}) and the run ${data.runId} ` +
                `was started for model key ${data.modelKey}: its chunks are for workers of that model`);
        const results: ChunkJobResult["results"] = [];
        for await (const result of mapInOrder(data.records, judge.inFlight, async (record) =>
            ({line: record.line, ...await judgeItem(judge, () => record.messages, data.settings)})))
            results.push(result);
        onChunk?.({runId: data.runId, chunk: data.chunk, records: results.length, ms: performance.now() - started});
        return {results};
    };
}

/** A job's data as a coordinator writes it, or an UnrecoverableError saying what is not. */
function checkChunkJob(data: unknown, id: string | undefined): ChunkJobData {
    const chunk = data as Partial<ChunkJobData> | null;
    const problem = chunk == null || typeof chunk !== "object" ? "it is not an object"
        : typeof chunk.version !== "string" ? "no \"version\""
            : typeof chunk.runId !== "string" || !Number.isInteger(chunk.chunk) ? "no \"runId\" and \"chunk\""
                : typeof chunk.modelKey !== "string" ? "no \"modelKey\""
                    : chunk.settings == null || typeof chunk.settings !== "object" ? "no \"settings\""
                        : !Array.isArray(chunk.records) || chunk.records.some((record) => record == null || !Number.isInteger(record.line) || !Array.isArray(record.messages))
                            ? "\"records\" is not a list of {line, messages}" : null;
    if (problem != null)
        throw new UnrecoverableError(`Job ${id ?? "?"} is not a chunk of a qwenguard batch run (${problem}): ` +
            "is another program using a qwenguard-batch queue?");
    return chunk as ChunkJobData;
}

