import {existsSync} from "node:fs";
import path from "node:path";
import {setTimeout as sleep} from "node:timers/promises";
import lockfile from "proper-lockfile";

/** A lock not refreshed for this long belongs to a run that died (ms). */
const STALE_MS = 10_000;
/** How long a run waits for another's lock to go away before it refuses (ms): a dead run's goes stale sooner. */
const WAIT_MS = 15_000;

/** An output's lock while a run writes it. */
export interface OutputLock {
    /** Why the lock was lost (another process took it over: this run must stop writing), or null. */
    lost(): Error | null,
    release(): Promise<void>
}

/**
 * Locks an output (`<output>.lock`, refreshed every 2.5 s) so that two runs never write one output at once, on one
 * machine or on several sharing a volume. A lock left by a run that died goes stale within 10 s and is taken over;
 * one that a live run keeps fresh makes this one refuse after 15 s.
 * @param onWaiting - told once when the lock is held and this run waits
 * @param waitMs - how long to wait for it (default 15 s)
 * @throws Error naming the output when another run holds it; the file system's errors
 */
export async function lockOutput(output: string, onWaiting: (message: string) => void, makeError: (message: string) => Error,
    waitMs = WAIT_MS): Promise<OutputLock> {
    const folder = path.dirname(path.resolve(output));
    if (!existsSync(folder))
        throw makeError(`The folder of the output ${output} does not exist: create ${folder} first`);
    let lost: Error | null = null;
    const started = performance.now();
    for (let waiting = false; ; waiting = true) {
        try {
            const release = await lockfile.lock(output, {realpath: false, stale: STALE_MS, update: STALE_MS / 4,
                onCompromised: (error) => void (lost = makeError(`Lost the lock of ${output} (${error.message}): it went unrefreshed ` +
                    "for 10 s (a stalled or suspended process) or another run took it; this run stops writing"))});
            return {lost: () => lost, release: () => release().catch(() => undefined)};
        } catch (error) {
            if ((error as NodeJS.ErrnoException).code !== "ELOCKED")
                throw error;
        }
        if (performance.now() - started > waitMs)
            throw makeError(`Another qwenguard run is writing ${output} (its lock ${output}.lock is kept fresh): ` +
                "two runs on one output would mix their lines; wait for it to end, or stop it");
        if (!waiting)
            onWaiting(`${output} is locked by another run, or by one that just died: waiting up to ${Math.round(waitMs / 1000)} s for it`);
        await sleep(250);
    }
}
