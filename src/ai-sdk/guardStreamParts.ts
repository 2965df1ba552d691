import type {LanguageModelV4FinishReason, LanguageModelV4StreamPart, LanguageModelV4Usage, SharedV4ProviderMetadata} from "@ai-sdk/provider";
import {Lookahead, coalesceLimit} from "../integrations/ResponseMonitor.js";
import type {MonitoredText} from "../integrations/ResponseMonitor.js";
import type {JudgeResult} from "../moderation/Judge.js";

/** The finish reason of an answer the guard stopped. */
export const CONTENT_FILTER_FINISH: LanguageModelV4FinishReason = {unified: "content-filter", raw: "qwen3guard"};

/** Usage of a call the guard answered without the model (it was never called). */
export const NO_USAGE: LanguageModelV4Usage = {
    inputTokens: {total: 0, noCache: 0, cacheRead: 0, cacheWrite: 0},
    outputTokens: {total: 0, text: 0, reasoning: 0}
};

/** The verdicts a guarded call carries in its provider metadata, under `qwenguard`. */
export interface GuardMetadata {
    prompt: JudgeResult,
    response?: JudgeResult | null,
    flagged: boolean
}

/** Provider metadata with the guard's verdicts added under `qwenguard`. */
export function withVerdicts(metadata: SharedV4ProviderMetadata | undefined, verdicts: GuardMetadata): SharedV4ProviderMetadata {
    return {...metadata, qwenguard: JSON.parse(JSON.stringify(verdicts)) as SharedV4ProviderMetadata[string]};
}

/** How {@link guardStreamParts} reaches the call it guards. */
export interface GuardedStream {
    /** The answer's monitored text (a prefill already in it). */
    text: MonitoredText,
    prompt: JudgeResult,
    judgeReasoning: boolean,
    /** Stops the upstream call (its abort signal). */
    abort: (reason: Error) => void,
    /** The call's abort signal (the caller's and the guard's): when it fires, the stream errors with its reason. */
    signal?: AbortSignal,
    onFlag: (verdict: JudgeResult) => void
}

/** A part waiting for its text to be judged; `start`/`end`: where a judged delta lies in the monitored text. */
interface HeldPart {
    part: LanguageModelV4StreamPart,
    start?: number,
    end?: number
}

/**
 * The stream of an AI SDK call with its answer judged: every part is passed on in order once the text before it and
 * its own text are judged (text deltas, and reasoning deltas when `judgeReasoning`; tool calls and other parts wait
 * behind unjudged text but are not judged). When the rule fires, the text before the unsafe span goes out (the delta
 * that straddles it cut short), the open text and reasoning blocks are ended, and the stream ends with a finish part
 * whose reason is `content-filter` and whose provider metadata holds the verdict; the upstream is aborted. A consumer
 * that cancels, or aborts the call, aborts the upstream too. When the upstream fails (or the answer outgrows the
 * guard's context), the text received is judged to its end and what is safe goes out, then an error part, and the
 * stream ends.
 */
export function guardStreamParts(upstream: ReadableStream<LanguageModelV4StreamPart>, guarded: GuardedStream): ReadableStream<LanguageModelV4StreamPart> {
    const reader = upstream.getReader();
    const {text} = guarded;
    const held: HeldPart[] = [];
    /** Text and reasoning blocks whose start was passed on and whose end was not. */
    const open = new Map<string, "text-end" | "reasoning-end">();
    let usage: LanguageModelV4Usage | null = null;
    let done = false;

    /** Ends the guarding: the upstream is aborted and cancelled (unless it completed: `reason` null), the session freed. */
    const stop = async (reason: Error | null) => {
        if (done)
            return;
        done = true;
        guarded.signal?.removeEventListener("abort", onAbort);
        if (reason != null) {
            guarded.abort(reason);
            await reader.cancel(reason).catch(() => undefined);
        }
        await text.monitor.close();
    };
    const pass = (controller: ReadableStreamDefaultController<LanguageModelV4StreamPart>, part: LanguageModelV4StreamPart) => {
        if (part.type === "text-start" || part.type === "reasoning-start")
            open.set(part.id, part.type === "text-start" ? "text-end" : "reasoning-end");
        else if (part.type === "text-end" || part.type === "reasoning-end")
            open.delete(part.id);
        if (part.type === "finish")
            part = {...part, providerMetadata: withVerdicts(part.providerMetadata, {prompt: guarded.prompt, response: text.monitor.verdict(), flagged: false})};
        controller.enqueue(part);
    };
    const release = (controller: ReadableStreamDefaultController<LanguageModelV4StreamPart>) => {
        const limit = text.limit;
        while (held.length > 0 && (held[0].end == null || held[0].end <= limit))
            pass(controller, held.shift()!.part);
    };
    const cut = async (controller: ReadableStreamDefaultController<LanguageModelV4StreamPart>) => {
        const flag = text.monitor.flag!;
        await stop(new Error("Qwen3Guard flagged the answer"));
        guarded.onFlag(flag.verdict);
        for (const {part, start, end} of held.splice(0)) {
            if (end == null || end <= flag.textOffset) {
                if (part.type !== "finish")
                    pass(controller, part);
                continue;
            }
            if (part.type === "text-delta" || part.type === "reasoning-delta")
                if (flag.textOffset > start!)
                    pass(controller, {...part, delta: part.delta.slice(0, flag.textOffset - start!)});
            break; // nothing after the unsafe span goes out
        }
        for (const [id, type] of open)
            controller.enqueue({type, id});
        controller.enqueue({type: "finish", finishReason: CONTENT_FILTER_FINISH, usage: usage ?? NO_USAGE,
            providerMetadata: withVerdicts(undefined, {prompt: guarded.prompt, response: flag.verdict, flagged: true})});
        controller.close();
    };

    let output!: ReadableStreamDefaultController<LanguageModelV4StreamPart>;
    const source = new Lookahead(() => reader.read());
    let batches = 0;
    /** Holds a part; a judged delta's text is added to the monitored text (judged at the batch's end). */
    const take = (part: LanguageModelV4StreamPart) => {
        if ((part.type === "text-delta" || (guarded.judgeReasoning && part.type === "reasoning-delta")) && part.delta.length > 0)
            held.push({part, ...text.add(part.delta)});
        else {
            if (part.type === "finish")
                usage = part.usage;
            held.push({part});
        }
    };
    const onAbort = () => {
        if (done)
            return;
        const reason = guarded.signal!.reason instanceof Error ? guarded.signal!.reason as Error : new Error("The call was aborted");
        void stop(reason).catch(() => undefined).finally(() => output.error(reason));
    };
    guarded.signal?.addEventListener("abort", onAbort, {once: true});
    return new ReadableStream<LanguageModelV4StreamPart>({
        start(controller) {
            output = controller;
        },
        async pull(controller) {
            try {
                for (;;) {
                    // what has piled up meanwhile is judged together (one decode), up to coalesceLimit parts
                    let next = await source.next();
                    let ended = false;
                    const limit = coalesceLimit(batches++);
                    for (let taken = 0; ; taken++) {
                        if (done)
                            return;
                        if (next.done) {
                            ended = true;
                            break;
                        }
                        take(next.value);
                        if (taken + 1 >= limit || next.value.type === "finish")
                            break;
                        const soon = await source.ready();
                        if (soon == null)
                            break;
                        next = soon;
                    }
                    if (ended || held.at(-1)?.part.type === "finish")
                        await text.finish();
                    else
                        await text.flush();
                    if (done)
                        return;
                    if (text.monitor.flag != null)
                        return await cut(controller);
                    if (ended) {
                        release(controller);
                        await stop(null);
                        controller.close();
                        return;
                    }
                    const before = held.length;
                    release(controller);
                    if (held.length < before)
                        return; // something went out: wait for the consumer to ask again
                }
            } catch (error) {
                if (done)
                    throw error;
                // the upstream failed, or the answer outgrew the guard's context: the text received is judged to its
                // end, what is safe goes out, then the error as an error part (a stream that errors drops its queue)
                await text.finish().catch(() => undefined);
                if (text.monitor.flag != null)
                    return await cut(controller);
                release(controller);
                await stop(error instanceof Error ? error : new Error(String(error)));
                controller.enqueue({type: "error", error});
                controller.close();
            }
        },
        async cancel(reason) {
            await stop(reason instanceof Error ? reason : new Error("The consumer cancelled the stream"));
        }
    }, {highWaterMark: 0});
}
