import path from "node:path";
import {queueRunStatus} from "../queue/runRegistry.js";
import type {QueueRunReport, QueueWorkerGroup} from "../queue/runRegistry.js";
import {UsageError} from "./UsageError.js";
import {duration} from "./batchProgress.js";

/**
 * `qwenguard batch --queue URL --status [INPUT] [-o OUTPUT] [--json]`: the runs that coordinators registered on that
 * Redis (newest first; of INPUT and OUTPUT when given), and the workers there by model.
 */
export async function showQueueStatus(input: string | undefined, options: {queue?: string, output?: string, json?: boolean}): Promise<number> {
    if (options.queue == null)
        throw new UsageError("--status shows the runs on a queue: pass --queue redis://HOST:PORT[/DB]");
    let status;
    try {
        status = await queueRunStatus(options.queue, {input, output: options.output});
    } catch (error) {
        if (error instanceof TypeError)
            throw new UsageError(error.message);
        throw error;
    }
    if (options.json === true) {
        process.stdout.write(JSON.stringify(status) + "\n");
        return 0;
    }
    const of = [input, options.output].filter((file) => file != null).map((file) => path.resolve(file!)).join(" → ");
    const lines = status.runs.length === 0 ? [`No qwenguard batch runs on ${status.redis}${of.length > 0 ? ` for ${of}` : ""}`]
        : status.runs.flatMap(describeRun);
    lines.push(describeWorkers(status.redis, status.workers));
    process.stdout.write(lines.join("\n") + "\n");
    return 0;
}

function describeRun(run: QueueRunReport): string[] {
    const heard = `heard ${duration(run.heardAgoMs / 1000)} ago`;
    const state = run.stale ? `running? no word from its coordinator for ${duration(run.heardAgoMs / 1000)}: stopped hard? rerun its command to resume`
        : `${run.state}${run.error != null ? `: ${run.error}` : ""}`;
    const progress = run.progress;
    const counts = progress?.counts;
    const fraction = progress?.totalBytes != null && progress.totalBytes > 0 ? `${(100 * Math.min(1, progress.bytesRead / progress.totalBytes)).toFixed(1)}%  ` : "";
    const rows: Array<[string, string]> = [
        ["input", run.input],
        ["output", run.output],
        ["model", `${path.basename(run.model)} (queue ${run.queue}: ${run.workers} worker${run.workers === 1 ? "" : "s"} now)`],
        ["progress", counts == null ? "not started" : `${fraction}${counts.records} records` +
            `${progress!.resumed > 0 ? ` (${progress!.resumed} from earlier runs)` : ""}  ` +
            `Safe ${counts.byLevel.Safe} Controversial ${counts.byLevel.Controversial} Unsafe ${counts.byLevel.Unsafe}  errors ${counts.errors}`],
        ...(progress != null && run.state === "running" && !run.stale
            ? [["speed", `${progress.recordsPerSecond.toFixed(1)} records/s${progress.etaSeconds != null ? `  ETA ${duration(progress.etaSeconds)}` : ""}`] as [string, string]]
            : []),
        ["chunks", `${run.chunks.pending} in flight, ${run.chunks.done} back, ${run.chunks.failed} failed (${run.chunkSize} records each)`],
        ["queue", Object.entries(run.queueJobs).map(([name, count]) => `${name} ${count}`).join(", ") + " (the model's jobs, all runs)"]
    ];
    return [`run ${run.runId}  ${state}  (coordinator ${run.coordinator.host}:${run.coordinator.pid}, started ${run.started}, ${heard})`,
        ...rows.map(([name, value]) => `  ${name.padEnd(8)}  ${value}`)];
}

function describeWorkers(display: string, workers: readonly QueueWorkerGroup[]): string {
    if (workers.length === 0)
        return `No qwenguard workers on ${display} now`;
    return `Workers on ${display} now: ${workers.map((group) => `${group.count} × ${group.model} (${group.queue})`).join(", ")}`;
}
