/**
 * The open sessions of a StreamGuard, at most `capacity` (its maxSessions). A session that cannot open now waits,
 * first come first served, until another is disposed, its signal aborts, or the guard is disposed.
 */
export class SessionSlots {
    private free: number;
    private readonly waiting: Array<{grant: () => void, fail: (error: unknown) => void}> = [];

    constructor(readonly capacity: number) {
        this.free = capacity;
    }

    /** Sessions waiting for a slot. */
    get waitingCount(): number {
        return this.waiting.length;
    }

    /**
     * Waits for a slot.
     * @returns the function that gives it back (once)
     * @throws the signal's reason when it aborts first
     */
    async acquire(signal?: AbortSignal): Promise<() => void> {
        signal?.throwIfAborted();
        if (this.free > 0)
            this.free--;
        else
            await new Promise<void>((grant, fail) => {
                const entry = {
                    grant: () => {
                        signal?.removeEventListener("abort", onAbort);
                        grant();
                    },
                    fail: (error: unknown) => {
                        signal?.removeEventListener("abort", onAbort);
                        fail(error);
                    }
                };
                const onAbort = () => {
                    const index = this.waiting.indexOf(entry);
                    if (index >= 0)
                        this.waiting.splice(index, 1);
                    fail(signal!.reason);
                };
                signal?.addEventListener("abort", onAbort, {once: true});
                this.waiting.push(entry);
            });
        let released = false;
        return () => {
            if (released)
                return;
            released = true;
            const next = this.waiting.shift();
            if (next != null)
                next.grant();
            else
                this.free++;
        };
    }

    /** Fails every waiting session with `error` (the guard is being disposed). */
    failAll(error: Error): void {
        for (const {fail} of this.waiting.splice(0))
            fail(error);
    }
}
