import type {Command} from "commander";
import {integerFlag} from "./flags.js";
import {resolveModelFlag} from "./pullReporter.js";

interface WorkerCommandOptions {
    queue: string,
    model: string,
    head?: string,
    concurrency: string,
    threads?: string,
    contextSize?: string,
    lockDuration?: string,
    stalledInterval?: string
}

/** `qwenguard worker`: judges the chunks of `batch --queue` runs for one model, until SIGTERM or Ctrl-C. */
export function registerWorkerCommand(program: Command): void {
    program.command("worker")
        .description("judge the chunks of `qwenguard batch --queue` runs that use this model, until SIGTERM or Ctrl-C")
        .requiredOption("--queue <url>", "the BullMQ queue's Redis: redis://HOST:PORT[/DB]")
        .option("-m, --model <model>", "a model name or GGUF file; the worker serves runs of this exact file", "gen-0.6b")
        .option("--head <file>", "Stream: the head GGUF (default: the one the backbone names, beside it)")
        .option("-c, --concurrency <n>", "records of a chunk judged at once", "1")
        .option("-t, --threads <n>", "CPU threads")
        .option("--context-size <n>", "Gen: tokens per request; Stream: KV cells shared by the sessions")
        .option("--lock-duration <ms>", "how long a chunk stays locked to this worker without a renewal (default 30000)")
        .option("--stalled-interval <ms>", "how often chunks of dead workers are looked for (default 30000)")
        .action(async (options: WorkerCommandOptions) => {
            const log = (line: string) => void process.stderr.write(`qwenguard worker: ${line}\n`);
            const model = await resolveModelFlag(options.model);
            // BullMQ is imported by this command only, not at the CLI's start
            const {startQueueWorker} = await import("../queue/runWorker.js");
            const worker = await startQueueWorker({
                queue: options.queue, model, head: options.head, concurrency: integerFlag("--concurrency", options.concurrency),
                threads: integerFlag("--threads", options.threads), contextSize: integerFlag("--context-size", options.contextSize),
                lockDuration: integerFlag("--lock-duration", options.lockDuration), stalledInterval: integerFlag("--stalled-interval", options.stalledInterval),
                onWarning: (message) => log(`warning: ${message}`),
                onChunk: (event) => log(event.error != null ? `run ${event.runId} chunk ${event.chunk} failed: ${event.error}`
                    : `run ${event.runId} chunk ${event.chunk}: ${event.records} records in ${(event.ms / 1000).toFixed(1)} s`)
            });
            log(`ready: ${model} on queue ${worker.queue}`);
            await new Promise<void>((resolve) => {
                let stopping = false;
                const stop = () => {
                    if (stopping)
                        process.exit(130);
                    stopping = true;
                    log("stopping after the chunk in hand (again to quit now: the chunk goes to another worker)");
                    void worker.close().then(resolve);
                };
                process.on("SIGINT", stop);
                process.on("SIGTERM", stop);
            });
            log("stopped");
        });
}
