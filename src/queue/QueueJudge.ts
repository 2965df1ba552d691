import {Queue, QueueEvents} from "bullmq";
import type {Job} from "bullmq";
import type {InputRecord} from "../batch/readRecords.js";
import type {ItemOutcome} from "../batch/moderateMany.js";
import type {RecordJudge} from "../batch/moderateFile.js";
import type {Message} from "../conversation/messages.js";
import type {JudgeSettings} from "../moderation/Judge.js";
import {packageVersion} from "../native/runtimeInfo.js";
import {assertReachable} from "./queueConnection.js";
import type {QueueTarget} from "./queueConnection.js";

/** Records per job: big enough that a job's Redis round trips are a small share of judging it, small enough to spread. */
export const DEFAULT_CHUNK_SIZE = 64;

/** A job: one chunk of a run's records, with the settings they are judged with. */
export interface ChunkJobData {
    /** The coordinator's qwenguard version: a worker of another major or minor version refuses the job. */
    version: string,
    runId: string,
    chunk: number,
    /** The run's guardKey: a worker whose model has another key refuses the job. */
    modelKey: string,
    settings: JudgeSettings,
    records: Array<{line: number, messages: Message[]}>
}

/** What a worker returns for a chunk: each record's verdict, or why it could not be judged. */
export interface ChunkJobResult {
    results: Array<{line: number} & ItemOutcome>
}

export interface QueueJudgeOptions {
    target: QueueTarget,
    /** The model's queue (see queueName). */
    queue: string,
    /** The model's guardKey. */
    modelKey: string,
    /** Identifies the run: job ids are `<runId>-<chunk>`, so a rerun finds the chunks already judged. */
    runId: string,
    settings: JudgeSettings,
    chunkSize?: number,
    /** The run's shard: chunks are cut from the shard's own records (its k-th record is record k·count + index − 1). */
    shard?: {index: number, count: number},
    /** Chunks submitted and not yet written; default twice the workers on the queue at the start, at least 8. */
    chunksInFlight?: number,
    /** Tries of a chunk before its records become error lines; default 3 (backoff 1 s, 2 s, …). */
    attempts?: number,
    /** How long to wait for Redis at the start; default 10 s. */
    connectTimeoutMs?: number
}

interface PendingChunk {
    records: Array<{line: number, messages: Message[]}>,
    waiters: Map<number, (outcome: ItemOutcome) => void>,
    submitted: boolean
}

/** Where a run's chunks stand, as the coordinator sees them. */
export interface QueueChunkCounts {
    /** Submitted (or collected) and not yet back. */
    pending: number,
    /** Back from a worker (or found judged by an earlier run). */
    done: number,
    /** Failed for good: their records are error lines. */
    failed: number
}

/**
 * The coordinator's side of a batch on a queue: groups the records into chunks by their place in the input (chunk k
 * holds records k·size … k·size + size − 1 of the run's shard, the same on every run), submits each chunk as a BullMQ
 * job with the deterministic id `<runId>-<k>`, and resolves each record once its chunk's job completes. A chunk already judged by
 * an earlier run is collected, not judged again; one that failed before is retried; one that keeps failing gives
 * its records error lines. A job is removed from Redis once the checkpoint covers its records (a rerun resumes
 * after them and never asks for it again), so Redis holds only the chunks in flight, however long the run.
 */
export class QueueJudge implements RecordJudge {
    readonly inFlight: number;
    readonly counts: QueueChunkCounts = {pending: 0, done: 0, failed: 0};
    private readonly chunks = new Map<number, PendingChunk>();
    /** Job ids of the chunks back, by the last input line they hold, until the checkpoint passes it. */
    private readonly finished: Array<{lastLine: number, jobId: string}> = [];
    private readonly removals = new Set<Promise<unknown>>();
    private readonly chunkSize: number;
    private readonly attempts: number;

    private constructor(private readonly queue: Queue, private readonly events: QueueEvents, private readonly options: QueueJudgeOptions) {
        this.chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
        this.attempts = options.attempts ?? 3;
        this.inFlight = this.chunkSize * (options.chunksInFlight ?? 8);
    }

    /**
     * Connects to the queue.
     * @throws Error naming the queue URL when Redis cannot be reached in time
     */
    static async open(options: QueueJudgeOptions): Promise<QueueJudge> {
        await assertReachable(options.target, options.connectTimeoutMs);
        const queue = new Queue(options.queue, {connection: options.target.connection});
        const events = new QueueEvents(options.queue, {connection: options.target.connection});
        // BullMQ reconnects on its own (a Redis restart mid-run): its errors meanwhile are not the run's
        queue.on("error", () => {});
        events.on("error", () => {});
        await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
        // enough chunks in flight to keep every worker there now busy, one waiting behind each
        const chunksInFlight = options.chunksInFlight ?? Math.max(8, 2 * (await queue.getWorkers()).length);
        return new QueueJudge(queue, events, {...options, chunksInFlight});
    }

    /** Workers listening on the model's queue now. */
    async workerCount(): Promise<number> {
        return (await this.queue.getWorkers()).length;
    }

    judgeRecord(record: InputRecord, messages: Message[]): Promise<ItemOutcome> {
        // the record's place among the run's records (of its shard), the same on every run
        const place = this.options.shard != null ? Math.floor(record.index / this.options.shard.count) : record.index;
        const index = Math.floor(place / this.chunkSize);
        // records arrive in input order: a record of chunk k means every earlier chunk is whole
        for (const [other, chunk] of this.chunks)
            if (other < index && !chunk.submitted)
                this.submit(other, chunk);
        let chunk = this.chunks.get(index);
        if (chunk == null) {
            chunk = {records: [], waiters: new Map(), submitted: false};
            this.chunks.set(index, chunk);
        }
        const pending = chunk;
        pending.records.push({line: record.line, messages});
        const outcome = new Promise<ItemOutcome>((resolve) => pending.waiters.set(record.line, resolve));
        if (place % this.chunkSize === this.chunkSize - 1)
            this.submit(index, pending);
        return outcome;
    }

    flush(): void {
        for (const [index, chunk] of this.chunks)
            if (!chunk.submitted)
                this.submit(index, chunk);
    }

    checkpointed(lastLine: number): void {
        // chunks finish out of order: any finished chunk wholly at or before the line goes
        for (let i = this.finished.length - 1; i >= 0; i--) {
            const {lastLine: last, jobId} = this.finished[i];
            if (last > lastLine)
                continue;
            this.finished.splice(i, 1);
            // best effort: a job left behind (Redis down now) costs memory, never a verdict
            const removal = this.queue.remove(jobId).catch(() => undefined);
            this.removals.add(removal);
            void removal.finally(() => this.removals.delete(removal));
        }
    }

    async dispose(): Promise<void> {
        this.flush();
        await Promise.allSettled(this.removals);
        await Promise.allSettled([this.queue.close(), this.events.close()]);
    }

    private submit(index: number, chunk: PendingChunk): void {
        chunk.submitted = true;
        this.counts.pending++;
        void this.run(index, chunk).finally(() => {
            this.chunks.delete(index);
            this.counts.pending--;
        });
    }

    private async run(index: number, chunk: PendingChunk): Promise<void> {
        const data: ChunkJobData = {version: packageVersion(), runId: this.options.runId, chunk: index, modelKey: this.options.modelKey,
            settings: this.options.settings, records: chunk.records};
        const jobId = `${this.options.runId}-${index}`;
        let outcomes: Map<number, ItemOutcome>;
        try {
            let job: Job<ChunkJobData, ChunkJobResult> = await this.queue.add("chunk", data, {
                jobId, attempts: this.attempts, backoff: {type: "exponential", delay: 1000},
                removeOnComplete: false, removeOnFail: false
            });
            if (await job.isFailed()) {
                // failed for good in an earlier run: this run tries it again
                await job.retry("failed");
                job = (await this.queue.getJob(job.id!))!;
            }
            const value = await job.waitUntilFinished(this.events) as ChunkJobResult;
            outcomes = new Map(value.results.map(({line, ...outcome}) => [line, outcome]));
            this.counts.done++;
        } catch (error) {
            const job = await this.queue.getJob(jobId).catch(() => undefined);
            const tries = job?.attemptsMade ?? this.attempts;
            const reason = `Chunk ${index} (job ${jobId}) failed after ${tries} ${tries === 1 ? "try" : "tries"}: ${(error as Error).message}`;
            outcomes = new Map(chunk.records.map(({line}) => [line, {error: reason, tokens: 0}]));
            this.counts.failed++;
        }
        this.finished.push({lastLine: chunk.records.at(-1)!.line, jobId});
        for (const [line, resolve] of chunk.waiters)
            resolve(outcomes.get(line) ?? {error: `The worker returned no verdict for line ${line}`, tokens: 0});
    }
}
