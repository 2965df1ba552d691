import type {BatchProgress} from "../batch/moderateFile.js";

/** Exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it. */
export const INTERRUPTED = 130;

/**
 * Ctrl-C or SIGTERM aborts `controller` (the records in flight finish and are written); a second one exits at once
 * (every line written so far is whole: the next run resumes after it).
 * @returns the function that removes the handlers
 */
export function abortOnInterrupt(controller: AbortController): () => void {
    let interrupts = 0;
    const onInterrupt = () => {
        interrupts++;
        if (interrupts > 1)
            process.exit(INTERRUPTED);
        process.stderr.write("\nqwenguard: stopping after the records in flight (Ctrl-C again to quit now); rerun the same command to resume\n");
        controller.abort();
    };
    process.on("SIGINT", onInterrupt);
    process.on("SIGTERM", onInterrupt);
    return () => {
        process.off("SIGINT", onInterrupt);
        process.off("SIGTERM", onInterrupt);
    };
}

/** On a terminal: one line redrawn in place. Otherwise: a status line every 30 s, so logs stay readable. */
export class ProgressReporter {
    private readonly tty = process.stderr.isTTY === true;
    private lastDraw = 0;
    private drawn = false;

    /** @param prefix - put before each line (e.g. which model of several is running) */
    constructor(private readonly prefix = "") {}

    update(state: BatchProgress): void {
        const now = performance.now();
        if (now - this.lastDraw < (this.tty ? 200 : 30_000))
            return;
        this.lastDraw = now;
        const line = this.prefix + describeProgress(state, this.tty);
        process.stderr.write(this.tty ? `\r\x1b[2K${line}` : `qwenguard: ${line}\n`);
        this.drawn = this.tty;
    }

    finish(): void {
        if (this.drawn)
            process.stderr.write("\r\x1b[2K");
        this.drawn = false;
    }
}

function describeProgress(state: BatchProgress, bar: boolean): string {
    const fraction = state.totalBytes != null && state.totalBytes > 0 ? Math.min(1, state.bytesRead / state.totalBytes) : null;
    const {byLevel, errors, records} = state.counts;
    const parts = [
        fraction != null ? `${bar ? `[${"#".repeat(Math.round(fraction * 20)).padEnd(20, "-")}] ` : ""}${(fraction * 100).toFixed(1)}%` : null,
        `${records} records`,
        `${state.recordsPerSecond.toFixed(1)} rec/s`,
        `${Math.round(state.tokensPerSecond)} tok/s`,
        state.etaSeconds != null ? `ETA ${duration(state.etaSeconds)}` : null,
        `Safe ${byLevel.Safe} Controversial ${byLevel.Controversial} Unsafe ${byLevel.Unsafe}`,
        `errors ${errors}`
    ];
    return parts.filter((part) => part != null).join("  ");
}

export function duration(seconds: number): string {
    const s = Math.round(seconds);
    return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`
        : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}
