import {resolveModel} from "../hub/resolveModel.js";
import type {PullEvent} from "../hub/pullModel.js";

/** How often a terminal's progress line is redrawn. */
const REDRAW_MS = 100;

/**
 * What a pull prints: on a terminal a progress line redrawn in place, otherwise a line per step and file; with
 * `json`, each event as one JSON line.
 * @param stream - where to write (stderr when a pull happens on the way to another command)
 * @param json - write the events as JSON lines
 */
export function pullReporter(stream: NodeJS.WriteStream, json = false): (event: PullEvent) => void {
    const tty = stream.isTTY === true && !json;
    let lastDraw = 0;
    let drawn = false;
    const line = (text: string) => {
        stream.write(`${drawn ? "\r\x1b[2K" : ""}${text}\n`);
        drawn = false;
    };
    return (event) => {
        if (json) {
            stream.write(JSON.stringify(event) + "\n");
            return;
        }
        switch (event.event) {
            case "cached":
                return line(`${event.name}: in the cache (${event.path})`);
            case "waiting":
                return line(`${event.name}: another process is pulling it; waiting for it`);
            case "resolved":
                return line(`${event.name}: ${event.source}${event.commit !== undefined ? `@${event.commit.slice(0, 10)}` : ""}, ` +
                    `${event.files} file${event.files === 1 ? "" : "s"}, ${bytes(event.totalBytes)}` +
                    (event.downloadBytes < event.totalBytes ? ` (${bytes(event.downloadBytes)} left to download)` : ""));
            case "progress": {
                if (!tty || performance.now() - lastDraw < REDRAW_MS)
                    return;
                lastDraw = performance.now();
                const fraction = event.totalBytes > 0 ? Math.min(1, event.downloadedBytes / event.totalBytes) : 0;
                const width = 24;
                const bar = "█".repeat(Math.round(fraction * width)).padEnd(width, "░");
                stream.write(`\r\x1b[2K${bar} ${(fraction * 100).toFixed(0).padStart(3)}%  ${bytes(event.downloadedBytes)} / ${bytes(event.totalBytes)}  ` +
                    `${bytes(event.bytesPerSecond)}/s`);
                drawn = true;
                return;
            }
            case "file":
                return line(`  ${event.file} (${bytes(event.size)}) ${event.reused ? "already downloaded" : "downloaded"}, hash checked`);
            case "convert":
                return line(`${event.name}: converting to GGUF (${event.type === "q8_0" || event.type === "f16" || event.type === "bf16" ? event.type : "f16"})`);
            case "quantize":
                if (tty && performance.now() - lastDraw >= REDRAW_MS) {
                    lastDraw = performance.now();
                    stream.write(`\r\x1b[2Kquantizing to ${event.type}… ${bytes(event.bytesWritten)} written`);
                    drawn = true;
                }
                return;
            case "probe":
                return line(`${event.name}: loading it once in a child process (a file from outside the official repositories)`);
            case "done":
                return line(`${event.name}: ready in ${event.seconds.toFixed(1)} s, ${bytes(event.bytes)} (${event.path})`);
        }
    };
}

/**
 * A `-m` value as a file to load: a path as it is, a model name from the cache, pulled first (reported on stderr)
 * when missing.
 * @param value - the `-m` value
 */
export async function resolveModelFlag(value: string): Promise<string> {
    return (await resolveModel(value, {onProgress: pullReporter(process.stderr)})).path;
}

function bytes(count: number): string {
    return count >= 1e9 ? `${(count / 1e9).toFixed(2)} GB` : count >= 1e6 ? `${(count / 1e6).toFixed(1)} MB` : `${(count / 1e3).toFixed(1)} kB`;
}
