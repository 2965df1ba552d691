import {UnrecoverableError, Worker} from "bullmq";
import {judgeItem} from "../batch/moderateMany.js";
import {Judge} from "../moderation/Judge.js";
import type {JudgeOptions} from "../moderation/Judge.js";
import {mapInOrder} from "../moderation/mapInOrder.js";
import {packageVersion} from "../native/runtimeInfo.js";
import {integerOption} from "../options.js";
import type {ChunkJobData, ChunkJobResult} from "./QueueJudge.js";
import {assertReachable, modelKey, parseQueueUrl, queueName} from "./queueConnection.js";

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
 * (each model has its own queue, named by the file's key), `concurrency` records of a chunk at a time, with the
 * same Judge as a local batch. A chunk whose worker dies is taken over by another after BullMQ's stalled-job check.
 * @throws TypeError for a bad queue URL or options; Error when Redis cannot be reached or the model cannot be loaded
 */
export async function startQueueWorker(options: QueueWorkerOptions): Promise<QueueWorker> {
    const target = parseQueueUrl(options.queue);
    const lockDuration = integerOption("lockDuration", options.lockDuration ?? 30_000, 1000, 3_600_000);
    const stalledInterval = integerOption("stalledInterval", options.stalledInterval ?? 30_000, 500, 3_600_000);
    await assertReachable(target);
    const judge = await Judge.open(options);
    const name = queueName(modelKey(options.model));
    const version = packageVersion();
    const worker = new Worker<ChunkJobData, ChunkJobResult>(name, async (job) => {
        const started = performance.now();
        const {data} = job;
        if (minorVersion(data.version) !== minorVersion(version))
            throw new UnrecoverableError(`This worker runs qwenguard ${version} and the run's coordinator ${data.version}: ` +
                "run workers of the coordinator's version (outputs of different versions are not mixed)");
        const results: ChunkJobResult["results"] = [];
        for await (const result of mapInOrder(data.records, judge.inFlight, async (record) =>
            ({line: record.line, ...await judgeItem(judge, () => record.messages, data.settings)})))
            results.push(result);
        options.onChunk?.({runId: data.runId, chunk: data.chunk, records: results.length, ms: performance.now() - started});
        return {results};
    }, {connection: target.connection, concurrency: 1, lockDuration, stalledInterval, maxStalledCount: 3, autorun: false});
    worker.on("failed", (job, error) => {
        if (job != null)
            options.onChunk?.({runId: job.data.runId, chunk: job.data.chunk, records: job.data.records.length, ms: 0, error: error.message});
    });
    worker.on("error", (error) => options.onWarning?.(`queue ${target.display}: ${error.message}`));
    void worker.run();
    await worker.waitUntilReady();
    let closing: Promise<void> | null = null;
    return {
        queue: name,
        close: () => closing ??= (async () => {
            await worker.close();
            await judge.dispose();
        })()
    };
}

/** `0.1.3` → `0.1`: versions that write the same output. */
function minorVersion(version: string): string {
    return version.split(".").slice(0, 2).join(".");
}
