/** Thrown by {@link AdmissionQueue.acquire} when the queue is full: the caller should answer "busy, retry later". */
export class QueueFullError extends Error {
    override name = "QueueFullError";

    constructor(readonly what: string, readonly slots: number, readonly maxWaiting: number) {
        super(`The ${what} is busy: ${slots} running and ${maxWaiting} waiting, the most this server queues; retry later`);
    }
}

/** A slot held by a caller of {@link AdmissionQueue.acquire}; release it exactly once (later calls do nothing). */
export type Release = () => void;

/**
 * A bounded admission queue in front of a model: at most `slots` holders at once, at most `maxWaiting` callers
 * waiting (first come, first served); beyond that, {@link acquire} fails at once with a {@link QueueFullError}
 * rather than growing a backlog. A waiter whose signal aborts leaves the queue.
 */
export class AdmissionQueue {
    private running = 0;
    private readonly waiting: Array<{count: number, grant: (releases: Release[]) => void}> = [];

    /**
     * @param what - what the slots are of, for the error message (e.g. "Gen model")
     * @param slots - holders at once
     * @param maxWaiting - callers that may wait for a slot
     * @param onChange - called after every change, for metrics
     * @param onRefuse - called when a caller is turned away, for metrics
     */
    constructor(readonly what: string, readonly slots: number, readonly maxWaiting: number,
        private readonly onChange: (running: number, waiting: number) => void = () => undefined,
        private readonly onRefuse: () => void = () => undefined) {}

    /** Slots held right now. */
    get active(): number {
        return this.running;
    }

    /** Callers waiting right now. */
    get depth(): number {
        return this.waiting.length;
    }

    /**
     * Waits for a slot.
     * @param signal - aborting it takes the caller out of the queue (the promise rejects with the signal's reason)
     * @returns the function that gives the slot back
     * @throws QueueFullError when `maxWaiting` callers already wait
     */
    async acquire(signal?: AbortSignal): Promise<Release> {
        return (await this.acquireMany(1, signal))[0];
    }

    /**
     * Waits until `count` slots are free and takes them together (a caller that needs several at once, such as an
     * answer of several choices, never holds some while it waits for the rest: that could wait forever).
     * @returns one release function per slot
     * @throws RangeError when `count` is more than the queue has slots; QueueFullError as {@link acquire}
     */
    acquireMany(count: number, signal?: AbortSignal): Promise<Release[]> {
        if (signal?.aborted)
            return Promise.reject(signal.reason);
        if (count > this.slots)
            return Promise.reject(new RangeError(`${count} slots are asked of the ${this.what}, which has ${this.slots}`));
        if (this.running + count <= this.slots && this.waiting.length === 0)
            return Promise.resolve(this.take(count));
        if (this.waiting.length >= this.maxWaiting) {
            this.onRefuse();
            return Promise.reject(new QueueFullError(this.what, this.slots, this.maxWaiting));
        }
        return new Promise<Release[]>((resolve, reject) => {
            const entry = {
                count,
                grant: (releases: Release[]) => {
                    signal?.removeEventListener("abort", onAbort);
                    resolve(releases);
                }
            };
            const onAbort = () => {
                const index = this.waiting.indexOf(entry);
                if (index >= 0) {
                    this.waiting.splice(index, 1);
                    this.onChange(this.running, this.waiting.length);
                    this.grantWaiting(); // a large request that left may unblock smaller ones behind it
                }
                reject(signal!.reason);
            };
            signal?.addEventListener("abort", onAbort, {once: true});
            this.waiting.push(entry);
            this.onChange(this.running, this.waiting.length);
        });
    }

    /** Runs `work` in a slot. */
    async run<T>(work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
        const release = await this.acquire(signal);
        try {
            return await work();
        } finally {
            release();
        }
    }

    private take(count: number): Release[] {
        this.running += count;
        this.onChange(this.running, this.waiting.length);
        return Array.from({length: count}, () => this.releaser());
    }

    /** First come, first served: the head of the queue goes as soon as its slots are free, and nobody overtakes it. */
    private grantWaiting(): void {
        while (this.waiting.length > 0 && this.running + this.waiting[0].count <= this.slots) {
            const next = this.waiting.shift()!;
            next.grant(this.take(next.count));
        }
    }

    private releaser(): Release {
        let released = false;
        return () => {
            if (released)
                return;
            released = true;
            this.running--;
            this.grantWaiting();
            this.onChange(this.running, this.waiting.length);
        };
    }
}
