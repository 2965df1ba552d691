import os from "node:os";
import path from "node:path";
import {Queue} from "bullmq";
import {Redis} from "ioredis";
import type {BatchProgress} from "../batch/moderateFile.js";
import {stringOption} from "../options.js";
import {QUEUE_PREFIX, assertReachable, parseQueueUrl} from "./queueConnection.js";
import type {QueueTarget} from "./queueConnection.js";
import {closeWithin} from "./QueueJudge.js";
import type {QueueChunkCounts} from "./QueueJudge.js";

/** The Redis hash of the runs on a Redis: field = run id, value = its {@link QueueRun} as JSON. */
export const RUNS_KEY = `${QUEUE_PREFIX}:runs`;

/** How often a coordinator writes its run's status (ms). */
const REPORT_INTERVAL_MS = 2000;
/** A running run not heard from for this long has lost its coordinator (ms). */
const STALE_MS = 15_000;
/** Finished runs are forgotten after this long (ms). */
const KEEP_FINISHED_MS = 7 * 24 * 3600_000;

export type QueueRunState = "running" | "complete" | "interrupted" | "failed";

/** What a coordinator says about its run, for `qwenguard batch --queue … --status` on any machine. */
export interface QueueRun {
    runId: string,
    input: string,
    output: string,
    model: string,
    modelKey: string,
    /** The model's queue. */
    queue: string,
    coordinator: {host: string, pid: number},
    state: QueueRunState,
    /** ISO times. */
    started: string,
    updated: string,
    chunkSize: number,
    /** This coordinator's chunks: in flight, back, failed for good. */
    chunks: QueueChunkCounts,
    progress: Pick<BatchProgress, "counts" | "processed" | "resumed" | "bytesRead" | "totalBytes" | "recordsPerSecond" | "etaSeconds"> | null,
    /** Why the run failed. */
    error?: string
}

/** A run as `--status` shows it: with how long ago its coordinator wrote, and its queue's jobs and workers now. */
export interface QueueRunReport extends QueueRun {
    heardAgoMs: number,
    /** Running, but its coordinator has not written for a while: it was stopped hard (rerun its command to resume). */
    stale: boolean,
    /** The model queue's jobs by state (all runs of the model together). */
    queueJobs: Record<string, number>,
    /** Workers on the model's queue now. */
    workers: number
}

/** Workers on a Redis by the model they serve (their queue), from their BullMQ client names. */
export interface QueueWorkerGroup {
    queue: string,
    /** The model file's name, as the workers give it. */
    model: string,
    count: number
}

/** A connection for small commands that never wait for Redis: while it is away they fail at once. */
function statusClient(target: QueueTarget): Redis {
    const client = new Redis(target.url, {lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 5000,
        retryStrategy: (times: number) => Math.min(200 * times, 5000)});
    client.on("error", () => {}); // a failed write is skipped; the next one, after the reconnect, catches up
    return client;
}

/** The worker name a worker gives BullMQ: its model file's name, in characters a Redis client name may hold. */
export function workerName(model: string): string {
    return encodeURIComponent(path.basename(model));
}

/** The qwenguard workers connected to Redis now, grouped by queue (BullMQ names a worker's client `bull:<base64 queue>:w:<name>`). */
async function listWorkers(client: Redis): Promise<QueueWorkerGroup[]> {
    const list = await client.client("LIST") as string;
    const groups = new Map<string, QueueWorkerGroup>();
    for (const match of list.matchAll(/(?:^|\s)name=bull:([A-Za-z0-9+/=]+):w:(\S+)/g)) {
        const queue = Buffer.from(match[1], "base64").toString("utf8");
        if (!queue.startsWith(`${QUEUE_PREFIX}-`))
            continue;
        let model = match[2];
        try {
            model = decodeURIComponent(model);
        } catch {
            // not one of ours: shown as it is
        }
        const key = `${queue}\n${model}`;
        const group = groups.get(key) ?? {queue, model, count: 0};
        group.count++;
        groups.set(key, group);
    }
    return [...groups.values()];
}

/**
 * Writes a coordinator's run status to Redis every 2 s while the run lasts (also while no verdict comes back: that
 * is how `--status` tells a waiting run from a dead one) and when it ends.
 */
export class RunReporter {
    private readonly heartbeat: NodeJS.Timeout;

    private constructor(private readonly client: Redis, private readonly run: QueueRun, private readonly chunks: () => QueueChunkCounts) {
        this.heartbeat = setInterval(() => {
            this.run.chunks = {...this.chunks()};
            void this.write().catch(() => undefined);
        }, REPORT_INTERVAL_MS);
        this.heartbeat.unref();
    }

    /** Registers the run as running (and forgets runs finished over a week ago). */
    static async open(target: QueueTarget, run: Omit<QueueRun, "coordinator" | "state" | "started" | "updated" | "progress" | "chunks">,
        chunks: () => QueueChunkCounts): Promise<RunReporter> {
        const client = statusClient(target);
        try {
            await client.connect();
            // forgotten: entries that are not JSON, and finished runs over a week old (another version's entries stay)
            const old = Object.entries(await client.hgetall(RUNS_KEY)).filter(([, json]) => {
                let other: Partial<QueueRun> | null;
                try {
                    other = JSON.parse(json) as Partial<QueueRun> | null;
                } catch {
                    return true;
                }
                return other != null && typeof other.updated === "string" && other.state !== "running" &&
                    Date.now() - Date.parse(other.updated) > KEEP_FINISHED_MS;
            });
            if (old.length > 0)
                await client.hdel(RUNS_KEY, ...old.map(([runId]) => runId));
            const now = new Date().toISOString();
            const entry: QueueRun = {...run, coordinator: {host: os.hostname(), pid: process.pid}, state: "running", started: now, updated: now,
                chunks: {...chunks()}, progress: null};
            await client.hset(RUNS_KEY, run.runId, JSON.stringify(entry));
            return new RunReporter(client, entry, chunks);
        } catch (error) {
            client.disconnect();
            throw new Error(`Cannot register the run on Redis at ${target.display}: ${(error as Error).message}`);
        }
    }

    /** The workers on other models' queues (for the coordinator's warning when none serves its own). */
    async otherWorkers(): Promise<QueueWorkerGroup[]> {
        return (await listWorkers(this.client)).filter((group) => group.queue !== this.run.queue);
    }

    /** The run's latest progress, written with the next heartbeat. */
    progress(progress: BatchProgress): void {
        const {counts, processed, resumed, bytesRead, totalBytes, recordsPerSecond, etaSeconds} = progress;
        this.run.progress = {counts, processed, resumed, bytesRead, totalBytes, recordsPerSecond, etaSeconds};
    }

    /** The last word: how the run ended. Never waits long for a Redis that is away. */
    async end(state: Exclude<QueueRunState, "running">, progress: BatchProgress | null, error?: string): Promise<void> {
        clearInterval(this.heartbeat);
        this.run.state = state;
        this.run.chunks = {...this.chunks()};
        if (progress != null)
            this.progress(progress);
        if (error != null)
            this.run.error = error;
        await Promise.race([this.write().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 3000).unref())]);
        this.client.disconnect();
    }

    private async write(): Promise<void> {
        this.run.updated = new Date().toISOString();
        await this.client.hset(RUNS_KEY, this.run.runId, JSON.stringify(this.run));
    }
}

/** A run entry as a coordinator of this version writes it, or null (another version's, or not one). */
function parseRun(json: string): QueueRun | null {
    try {
        const run = JSON.parse(json) as Partial<QueueRun> | null;
        const valid = run != null && typeof run === "object" && typeof run.runId === "string" && typeof run.updated === "string" &&
            typeof run.state === "string" && typeof run.input === "string" && typeof run.output === "string" && typeof run.queue === "string" &&
            run.chunks != null && typeof run.chunks === "object" && run.coordinator != null && typeof run.coordinator === "object";
        return valid ? run as QueueRun : null;
    } catch {
        return null;
    }
}

/**
 * The batch runs on a queue's Redis, newest first (those of one input, and output, when given), with their queue's
 * jobs and workers now, and every qwenguard worker on that Redis by model.
 * @param queue - `redis://HOST:PORT[/DB]`, as given to `moderateFileOnQueue`
 * @throws TypeError for a bad URL; Error when Redis cannot be reached
 * @example
 * const {runs} = await queueRunStatus("redis://10.0.0.5:6379", {input: "chats.jsonl"});
 * console.log(runs[0]?.state, runs[0]?.progress?.counts.records);
 */
export async function queueRunStatus(queue: string, filter: {input?: string, output?: string} = {}):
    Promise<{redis: string, runs: QueueRunReport[], workers: QueueWorkerGroup[]}> {
    const target = parseQueueUrl(stringOption("queue", queue));
    await assertReachable(target);
    const client = statusClient(target);
    try {
        await client.connect();
        const workers = await listWorkers(client);
        const runs = Object.values(await client.hgetall(RUNS_KEY)).map(parseRun).filter((run): run is QueueRun => run != null)
            .filter((run) => (filter.input == null || run.input === path.resolve(filter.input)) &&
                (filter.output == null || run.output === path.resolve(filter.output)))
            .sort((a, b) => Date.parse(b.updated) - Date.parse(a.updated));
        const jobs = new Map<string, Record<string, number>>();
        for (const name of new Set(runs.map((run) => run.queue))) {
            const queue = new Queue(name, {connection: target.connection});
            queue.on("error", () => {});
            try {
                // BullMQ's connection would wait for a Redis that went away meanwhile: the status does not
                const counts = await Promise.race([queue.getJobCounts("waiting", "active", "delayed", "completed", "failed"),
                    new Promise<null>((resolve) => setTimeout(() => resolve(null), 10_000).unref())]);
                if (counts == null)
                    throw new Error(`Redis at ${target.display} stopped answering`);
                jobs.set(name, counts);
            } finally {
                await closeWithin([queue], 3000);
            }
        }
        const now = Date.now();
        return {
            redis: target.display,
            workers,
            runs: runs.map((run) => {
                const heardAgoMs = Math.max(0, now - Date.parse(run.updated));
                return {...run, heardAgoMs, stale: run.state === "running" && heardAgoMs > STALE_MS, queueJobs: jobs.get(run.queue) ?? {},
                    workers: workers.filter((group) => group.queue === run.queue).reduce((sum, group) => sum + group.count, 0)};
            })
        };
    } finally {
        client.disconnect();
    }
}
