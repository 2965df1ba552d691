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
    /** Identifies the run: job ids are `<runId>-<chunk>`, so a rerun finds the chunks already judged. */
    runId: string,
    settings: JudgeSettings,
    chunkSize?: number,
    /** Chunks submitted and not yet written; default 8. */
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

/**
 * The coordinator's side of a batch on a queue: groups the records into chunks by their index in the input (chunk k
 * holds records k·size … k·size + size − 1, the same on every run), submits each chunk as a BullMQ job with the
 * deterministic id `<runId>-<k>`, and resolves each record once its chunk's job completes. A chunk already judged by
 * an earlier run is collected, not judged again; one that failed before is retried; one that keeps failing gives
 * its records error lines.
 */
export class QueueJudge implements RecordJudge {
    readonly inFlight: number;
    private readonly chunks = new Map<number, PendingChunk>();
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
        return new QueueJudge(queue, events, options);
    }

    /** Workers listening on the model's queue now. */
    async workerCount(): Promise<number> {
        return (await this.queue.getWorkers()).length;
    }

    judgeRecord(record: InputRecord, messages: Message[]): Promise<ItemOutcome> {
        const index = Math.floor(record.index / this.chunkSize);
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
        if (record.index % this.chunkSize === this.chunkSize - 1)
            this.submit(index, pending);
        return outcome;
    }

    flush(): void {
        for (const [index, chunk] of this.chunks)
            if (!chunk.submitted)
                this.submit(index, chunk);
    }

    async dispose(): Promise<void> {
        this.flush();
        await Promise.allSettled([this.queue.close(), this.events.close()]);
    }

    private submit(index: number, chunk: PendingChunk): void {
        chunk.submitted = true;
        void this.run(index, chunk).finally(() => this.chunks.delete(index));
    }

    private async run(index: number, chunk: PendingChunk): Promise<void> {
        const data: ChunkJobData = {version: packageVersion(), runId: this.options.runId, chunk: index, settings: this.options.settings, records: chunk.records};
        let outcomes: Map<number, ItemOutcome>;
        try {
            let job: Job<ChunkJobData, ChunkJobResult> = await this.queue.add("chunk", data, {
                jobId: `${this.options.runId}-${index}`, attempts: this.attempts, backoff: {type: "exponential", delay: 1000},
                removeOnComplete: false, removeOnFail: false
            });
            if (await job.isFailed()) {
                // failed for good in an earlier run: this run tries it again
                await job.retry("failed");
                job = (await this.queue.getJob(job.id!))!;
            }
            const value = await job.waitUntilFinished(this.events) as ChunkJobResult;
            outcomes = new Map(value.results.map(({line, ...outcome}) => [line, outcome]));
        } catch (error) {
            const reason = `Chunk ${index} (job ${this.options.runId}-${index}) failed after ${this.attempts} tries: ${(error as Error).message}`;
            outcomes = new Map(chunk.records.map(({line}) => [line, {error: reason, tokens: 0}]));
        }
        for (const [line, resolve] of chunk.waiters)
            resolve(outcomes.get(line) ?? {error: `The worker returned no verdict for line ${line}`, tokens: 0});
    }
}
