import {setTimeout as sleep} from "node:timers/promises";
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
    connectTimeoutMs?: number,
    /** Told when Redis fails meanwhile (at most every 30 s), or does not answer at the end. */
    onWarning?: (message: string) => void
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
    private disposed: Promise<void> | null = null;
    private cancelled = false;
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
        // BullMQ reconnects on its own (a Redis restart mid-run): what goes wrong meanwhile is said, at most every 30 s
        let lastWarning = -Infinity;
        const warn = (error: Error) => {
            if (performance.now() - lastWarning < 30_000)
                return;
            lastWarning = performance.now();
            options.onWarning?.(`queue ${options.target.display}: ${error.message} (BullMQ keeps trying)`);
        };
        queue.on("error", warn);
        events.on("error", warn);
        try {
            const timeoutMs = options.connectTimeoutMs ?? 10_000;
            const ready = Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
            if (await Promise.race([ready.then(() => true), sleep(timeoutMs, undefined, {ref: false}).then(() => false)]) === false)
                throw new Error(`Redis at ${options.target.display} stopped answering while the queue was being opened`);
            // enough chunks in flight to keep every worker there now busy, one waiting behind each
            const chunksInFlight = options.chunksInFlight ?? Math.max(8, 2 * (await queue.getWorkers()).length);
            return new QueueJudge(queue, events, {...options, chunksInFlight});
        } catch (error) {
            await closeWithin([queue, events], 5000);
            throw error;
        }
    }

    /** Workers listening on the model's queue now. */
    async workerCount(): Promise<number> {
        return (await this.queue.getWorkers()).length;
    }

    judgeRecord(record: InputRecord, messages: Message[]): Promise<ItemOutcome> {
        const {place, index} = this.placeOf(record);
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

    skipped(record: InputRecord): void {
        // a record that is not judged still marks where its chunk ends: the chunk goes out without it
        const {place, index} = this.placeOf(record);
        const chunk = this.chunks.get(index);
        if (chunk != null && !chunk.submitted && place % this.chunkSize === this.chunkSize - 1)
            this.submit(index, chunk);
    }

    cancel(): void {
        this.cancelled = true;
        for (const chunk of this.chunks.values()) {
            for (const resolve of chunk.waiters.values())
                resolve({error: "The run stopped before this chunk came back", tokens: 0});
            chunk.submitted = true;
        }
    }

    flush(): void {
        // (a chunk cut short by the run's end, its limit or a stop: its job id says where it ends, see run)
        for (const [index, chunk] of this.chunks)
            if (!chunk.submitted)
                this.submit(index, chunk, true);
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

    dispose(): Promise<void> {
        return this.disposed ??= this.close();
    }

    /** Where a record lies in the run (of its shard, the same on every run) and its chunk; every earlier chunk is whole. */
    private placeOf(record: InputRecord): {place: number, index: number} {
        const place = this.options.shard != null ? Math.floor(record.index / this.options.shard.count) : record.index;
        const index = Math.floor(place / this.chunkSize);
        // records arrive in input order: a record of chunk k means every earlier chunk is whole
        for (const [other, chunk] of this.chunks)
            if (other < index && !chunk.submitted)
                this.submit(other, chunk);
        return {place, index};
    }

    private async close(): Promise<void> {
        if (!this.cancelled)
            this.flush();
        // BullMQ's connection waits for a Redis that is away: a run that is over does not (what is left costs memory)
        const removed = Promise.allSettled(this.removals);
        if (await Promise.race([removed.then(() => true), sleep(5000, undefined, {ref: false}).then(() => false)]) === false)
            this.options.onWarning?.(`Redis at ${this.options.target.display} did not answer: ${this.removals.size} judged chunks stay there`);
        await closeWithin([this.queue, this.events], 5000);
    }

    private submit(index: number, chunk: PendingChunk, partial = false): void {
        chunk.submitted = true;
        this.counts.pending++;
        void this.run(index, chunk, partial).finally(() => {
            this.chunks.delete(index);
            this.counts.pending--;
        });
    }

    private async run(index: number, chunk: PendingChunk, partial: boolean): Promise<void> {
        const data: ChunkJobData = {version: packageVersion(), runId: this.options.runId, chunk: index, modelKey: this.options.modelKey,
            settings: this.options.settings, records: chunk.records};
        // a whole chunk is `<runId>-<k>`; one cut short also names its last line, so that a rerun that reads the chunk
        // further never collects the short one for it
        const lastLine = chunk.records.at(-1)!.line;
        let jobId = `${this.options.runId}-${index}${partial ? `-${lastLine}` : ""}`;
        let outcomes: Map<number, ItemOutcome>;
        let added = false;
        try {
            const add = (id: string) => this.queue.add("chunk", data, {jobId: id, attempts: this.attempts, backoff: {type: "exponential", delay: 1000},
                removeOnComplete: false, removeOnFail: false}) as Promise<Job<ChunkJobData, ChunkJobResult>>;
            let job = await add(jobId);
            added = true;
            // a job of an earlier run under this id holds the records it held then (BullMQ keeps the stored job and
            // returns ours): it must hold this run's too
            const stored = await this.queue.getJob(jobId);
            const storedRecords = (stored?.data as Partial<ChunkJobData> | undefined)?.records;
            const held = new Set((Array.isArray(storedRecords) ? storedRecords : []).map((record) => record.line));
            if (chunk.records.some((record) => !held.has(record.line))) {
                jobId = `${jobId}-${Date.now().toString(36)}`;
                job = await add(jobId);
            }
            if (await job.isFailed()) {
                // failed for good in an earlier run: this run tries it again
                await job.retry("failed");
                job = (await this.queue.getJob(job.id!))!;
            }
            const value = await job.waitUntilFinished(this.events) as ChunkJobResult;
            outcomes = new Map(value.results.map(({line, ...outcome}) => [line, outcome]));
            this.counts.done++;
        } catch (error) {
            const job = added ? await Promise.race([this.queue.getJob(jobId).catch(() => undefined),
                sleep(5000, undefined, {ref: false}).then(() => undefined)]) : undefined;
            const tries = job?.attemptsMade ?? this.attempts;
            const reason = added ? `Chunk ${index} (job ${jobId}) failed after ${tries} ${tries === 1 ? "try" : "tries"}: ${(error as Error).message}`
                : `Chunk ${index} could not be sent to the queue: ${(error as Error).message}`;
            outcomes = new Map(chunk.records.map(({line}) => [line, {error: reason, tokens: 0}]));
            this.counts.failed++;
        }
        if (added)
            this.finished.push({lastLine, jobId});
        for (const [line, resolve] of chunk.waiters)
            resolve(outcomes.get(line) ?? {error: `The worker returned no verdict for line ${line}`, tokens: 0});
    }
}

/** Closes BullMQ objects, waiting at most `ms` for a Redis that is away (then their connections are dropped). */
export async function closeWithin(closables: ReadonlyArray<Queue | QueueEvents>, ms: number): Promise<void> {
    const closed = Promise.allSettled(closables.map((closable) => closable.close()));
    if (await Promise.race([closed.then(() => true), sleep(ms, undefined, {ref: false}).then(() => false)]) === false)
        // not awaited: a connection that is reconnecting never says it ended
        for (const closable of closables)
            void closable.disconnect().catch(() => undefined);
}
