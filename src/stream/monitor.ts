import type {StreamGuard, StreamSessionOptions} from "./StreamGuard.js";
import type {StreamSession} from "./StreamSession.js";
import type {ResponseReport} from "./types.js";
import {ContextLimitError} from "../conversation/ContextLimitError.js";
import {UnsafeContentError} from "./UnsafeContentError.js";

/** What a monitored source may yield: text chunks, or token ids of the Qwen3 vocabulary. */
export type MonitorChunk = string | number | readonly number[];

export interface MonitorOptions extends StreamSessionOptions {
    /** Stops monitoring (the generator throws the signal's reason). */
    signal?: AbortSignal
}

/**
 * Passes a response through while it is generated, yielding text only once it is judged: the text of tokens
 * that count as unsafe is held back until the run either breaks (then it is released) or fires the rule (then the
 * generator throws {@link UnsafeContentError} and nothing of the unsafe span is yielded). Returns the report.
 */
export async function* monitorStream(guard: StreamGuard, source: AsyncIterable<MonitorChunk> | Iterable<MonitorChunk>,
    options: MonitorOptions): AsyncGenerator<string, ResponseReport> {
    const {signal, ...sessionOptions} = options;
    signal?.throwIfAborted();
    const session = await guard.createSession(sessionOptions);
    const judged = new JudgedText(session);
    const release = (all: boolean) => judged.take(all);
    const check = (): void => {
        const flag = session.flag;
        if (flag != null)
            throw new UnsafeContentError(flag, session.report());
    };
    // a chunk or the end that overflows the session still scored what fitted: a flag there is the verdict that counts
    const scored = async (push: () => Promise<unknown>) => {
        try {
            await push();
        } catch (error) {
            if (error instanceof ContextLimitError)
                check();
            throw error;
        }
        check();
    };
    try {
        for await (const chunk of source) {
            signal?.throwIfAborted();
            await scored(() => pushChunk(session, chunk));
            const text = release(false);
            if (text.length > 0)
                yield text;
        }
        await scored(() => session.finish());
        const rest = release(true);
        if (rest.length > 0)
            yield rest;
        return session.report();
    } finally {
        await session.dispose();
    }
}

/**
 * Hands out a session's response text once it is judged: tokens in a run that counts as unsafe (but has not fired
 * the rule) are held back, since the run may still fire.
 */
export class JudgedText {
    private released = 0;

    constructor(private readonly session: StreamSession) {}

    /**
     * The text judged safe since the last call. Never text from the start of a run that fired the rule.
     * `all` also takes a held-back run (the end of a response that never fired).
     */
    take(all = false): string {
        const tokens = this.session.tokens;
        const flag = this.session.flag;
        const end = flag != null ? flag.startIndex : all ? tokens.length : tokens.length - this.session.pendingUnsafeTokens;
        const text = tokens.slice(this.released, end).map((token) => token.text).join("");
        this.released = Math.max(this.released, end);
        return text;
    }
}

/** Pushes one chunk of a monitored source into its session. */
export function pushChunk(session: StreamSession, chunk: MonitorChunk) {
    if (typeof chunk === "string")
        return session.pushText(chunk);
    return session.pushTokens(typeof chunk === "number" ? [chunk] : chunk);
}
