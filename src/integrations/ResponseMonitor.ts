import {ContextLimitError} from "../conversation/ContextLimitError.js";
import type {JudgeResult} from "../moderation/Judge.js";
import {streamResponseResult} from "../moderation/judgeResults.js";
import type {StreamSession} from "../stream/StreamSession.js";

/** Where the decision rule fired in a monitored response, and the verdict it gave. */
export interface MonitorFlag {
    /** UTF-16 offset in the response text where the unsafe span starts: what is shown of the response ends here. */
    textOffset: number,
    verdict: JudgeResult
}

/**
 * What judges one response while it streams: a Stream session in this process, one on a `qwenguard serve`
 * (see RemoteGuard), or a Gen model that holds the whole text back until it is complete. The integrations
 * (guardChatStream, the AI SDK middleware) release text up to {@link releasableLength} and cut it at a flag.
 */
export interface ResponseMonitor {
    /** UTF-16 length of the prefix of the text pushed so far that is judged and may be shown. */
    readonly releasableLength: number,
    /** Set once the decision rule has fired; null until then. */
    readonly flag: MonitorFlag | null,
    /** Appends response text (any chunking); resolves once what can be judged of it is. */
    pushText(text: string): Promise<unknown>,
    /** Ends the response: the held-back tail is judged. */
    finish(): Promise<unknown>,
    /** The verdict of the response so far; null when there is none yet (nothing judged, or a Gen text not finished). */
    verdict(): JudgeResult | null,
    /** Frees what the monitor holds (its session). Safe to call more than once. */
    close(): Promise<void>
}

/** A StreamSession in this process as a {@link ResponseMonitor}; `close` gives the session back (default: disposes it). */
export function streamSessionMonitor(session: StreamSession, close: () => Promise<void> = () => session.dispose()): ResponseMonitor {
    let closed: Promise<void> | null = null;
    return {
        get releasableLength() {
            return session.releasableLength;
        },
        get flag() {
            const flag = session.flag;
            return flag == null ? null : {textOffset: flag.textOffset, verdict: streamResponseResult(session.report())};
        },
        pushText: (text) => session.pushText(text),
        finish: () => session.finish(),
        verdict: () => session.tokens.length > 0 ? streamResponseResult(session.report()) : null,
        close: () => closed ??= close()
    };
}

/**
 * A response judged by a Gen model, which judges whole texts: nothing is releasable until {@link finish}, which
 * judges the text (an empty one is not judged: there is nothing to show); a flagged response is cut at its start
 * (offset 0).
 */
export function wholeTextMonitor(judge: (text: string) => Promise<JudgeResult>): ResponseMonitor {
    let text = "";
    let finished = false;
    /** Set once the whole text is judged (an empty text needs no judgement). */
    let judged = false;
    let result: JudgeResult | null = null;
    return {
        get releasableLength() {
            return judged && result?.flagged !== true ? text.length : 0;
        },
        get flag() {
            return result?.flagged === true ? {textOffset: 0, verdict: result} : null;
        },
        pushText: async (chunk) => {
            if (finished)
                throw new Error("The response is finished: no more text can be pushed");
            text += chunk;
        },
        finish: async () => {
            if (finished)
                return;
            finished = true;
            if (text.length > 0)
                result = await judge(text);
            judged = true;
        },
        verdict: () => result,
        close: async () => undefined
    };
}

/**
 * A monitored text and how far it has got: its length so far, whether it has finished, and how much may be shown.
 * Text may be added without judging it yet ({@link add}) and judged in one push ({@link flush}): a consumer that falls
 * behind its source judges what piled up in one decode instead of one per delta. A ContextLimitError after the rule
 * fired is not the news (what fitted was judged, and flagged); any other error is.
 */
export class MonitoredText {
    /** UTF-16 length of the text added so far. */
    length = 0;
    finished = false;
    /** Text added and not yet pushed to the monitor. */
    private unpushed = "";
    /** finish() was called (it may have failed: then `finished` stays false). */
    private ending = false;

    constructor(readonly monitor: ResponseMonitor) {}

    /** Adds text to judge at the next {@link flush}; returns where it lies in the monitored text. */
    add(text: string): {start: number, end: number} {
        if (this.ending)
            throw new TypeError("Expected no more text after the answer ended (a finish reason): what comes after it would not be judged");
        const start = this.length;
        this.length += text.length;
        this.unpushed += text;
        return {start, end: this.length};
    }

    /** Judges the text added since the last flush, in one push. */
    async flush(): Promise<void> {
        if (this.unpushed.length === 0)
            return;
        const text = this.unpushed;
        this.unpushed = "";
        await this.scored(() => this.monitor.pushText(text));
    }

    /** Adds text and judges it. */
    async push(text: string): Promise<{start: number, end: number}> {
        const segment = this.add(text);
        await this.flush();
        return segment;
    }

    /**
     * Ends the text (once): what was added is judged, then the held-back tail. Only when that succeeds is all of it
     * releasable; after a failure what may be shown stays what was judged.
     */
    async finish(): Promise<void> {
        if (this.finished || this.ending)
            return;
        this.ending = true;
        await this.flush();
        await this.scored(() => this.monitor.finish());
        this.finished = true;
    }

    /** How much of the text may be shown: all of it once it finished (judged to its end) without a flag. */
    get limit(): number {
        if (this.monitor.flag != null)
            return this.monitor.flag.textOffset;
        return this.finished ? this.length : this.monitor.releasableLength;
    }

    private async scored(work: () => Promise<unknown>): Promise<void> {
        try {
            await work();
        } catch (error) {
            if (!(error instanceof ContextLimitError) || this.monitor.flag == null)
                throw error; // over the limit without a flag in what fitted: the rest cannot be judged
        }
    }
}

const NOT_READY: unique symbol = Symbol("not ready");

/**
 * A source read one item at a time that can also say whether its next item has already arrived: {@link ready} gives
 * it when it has an answer by the end of this turn of the event loop (data already received is handed over by then),
 * else null, and the read stays pending for the next call.
 */
export class Lookahead<T> {
    private pending: Promise<T> | null = null;

    constructor(private readonly read: () => Promise<T>) {}

    /** The next item, waiting for it. */
    next(): Promise<T> {
        const next = this.pending ?? this.read();
        this.pending = null;
        return next;
    }

    /** The next item if it has already arrived, else null. */
    async ready(): Promise<T | null> {
        this.pending ??= this.read();
        const next = await Promise.race([this.pending, new Promise<typeof NOT_READY>((resolve) => setImmediate(resolve, NOT_READY))]);
        if (next === NOT_READY)
            return null;
        this.pending = null;
        return next;
    }
}

/** Most items judged in one push when they piled up: the text still goes out in steps. */
export const MAX_COALESCED = 64;

/**
 * How many piled-up items the `batch`-th push (from 0) may take: 4, 8, 16… up to MAX_COALESCED. A guard that starts
 * behind (the prompt judged while the model ran ahead) shows the first text after a small push, not after a large one.
 */
export function coalesceLimit(batch: number): number {
    return Math.min(MAX_COALESCED, 4 << Math.min(batch, 4));
}
