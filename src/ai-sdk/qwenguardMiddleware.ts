import type {LanguageModelV4CallOptions, LanguageModelV4GenerateResult, LanguageModelV4Middleware, LanguageModelV4StreamPart,
    LanguageModelV4StreamResult} from "@ai-sdk/provider";
import {GenGuard} from "../gen/GenGuard.js";
import {assertGuard, judgeLast, openMonitor} from "../integrations/guardKinds.js";
import type {AnyGuard} from "../integrations/guardKinds.js";
import {MonitoredText} from "../integrations/ResponseMonitor.js";
import type {JudgeResult} from "../moderation/Judge.js";
import {splitConversation} from "../openai/chatMessages.js";
import type {RemoteGuard} from "../remote/RemoteGuard.js";
import {resolveServerPolicy} from "../server/serverPolicy.js";
import type {ServerPolicy} from "../server/serverPolicy.js";
import {StreamGuard} from "../stream/StreamGuard.js";
import {CONTENT_FILTER_FINISH, NO_USAGE, guardStreamParts, withVerdicts} from "./guardStreamParts.js";
import {promptMessages} from "./promptMessages.js";

/** Options of {@link qwenguardMiddleware}. */
export interface QwenguardMiddlewareOptions {
    /** One guard for everything: a StreamGuard, a GenGuard, or a RemoteGuard (a `qwenguard serve`). */
    guard?: AnyGuard,
    /**
     * The Gen model (a GenGuard, a RemoteGuard, or a model name or file such as `"gen-0.6b"`, loaded on first use):
     * judges prompts and whole answers (`generateText`); it streams only with no `stream` guard, holding the answer
     * back until it is complete.
     */
    gen?: GenGuard | RemoteGuard | string,
    /**
     * The Stream model (a StreamGuard, a RemoteGuard, or a model name or file such as `"stream-0.6b"`, loaded on first
     * use): judges streamed answers token by token (`streamText`), and prompts and whole answers when there is no `gen`.
     */
    stream?: StreamGuard | RemoteGuard | string,
    /** `"strict"` (default), `"loose"`, a threshold on P(Unsafe) + P(Controversial), or `{minProb?, controversial?, window?}`. */
    policy?: ServerPolicy,
    /**
     * When a streamed call's prompt is judged: `"before"` (default) the model is called only once the prompt is judged
     * safe, so a flagged prompt never reaches it; `"parallel"` the model starts at the same time (its output held until
     * the verdict; its call aborted when the prompt is flagged): the time to the first token no longer includes the
     * prompt's judgement, at the price of calling the model for prompts that turn out flagged.
     */
    promptCheck?: "before" | "parallel",
    /** Judge reasoning parts too, as part of the answer (default false: they pass through unjudged). */
    judgeReasoning?: boolean,
    /**
     * What a flagged prompt, or a flagged answer of `generateText`, becomes: `"content-filter"` (default) an empty answer
     * whose finish reason is `content-filter`, the verdict in `providerMetadata.qwenguard`; `"throw"` a
     * {@link GuardFlaggedError}. A streamed answer flagged midway always ends with a `content-filter` finish part (what
     * was shown before the unsafe span stays shown).
     */
    onFlagged?: "content-filter" | "throw",
    /** Called when the guard flags a prompt or an answer, before the call returns. */
    onFlag?: (flag: MiddlewareFlag) => void
}

/** What the guard flagged, and its verdict. */
export interface MiddlewareFlag {
    target: "prompt" | "response",
    verdict: JudgeResult
}

/** Thrown (with `onFlagged: "throw"`) when the guard flags a prompt, or the whole answer of `generateText`. */
export class GuardFlaggedError extends Error {
    override name = "GuardFlaggedError";

    constructor(readonly target: "prompt" | "response", readonly verdict: JudgeResult) {
        super(`Qwen3Guard flagged the ${target === "prompt" ? "prompt" : "answer"}: ${verdict.level}` +
            `${verdict.category != null ? ` (${verdict.category})` : ""}`);
    }
}

/** The middleware, and how to free the models it loaded by name. */
export type QwenguardMiddleware = LanguageModelV4Middleware & {
    /** Frees the models the middleware loaded from names (guards given as objects are the caller's to free). */
    close(): Promise<void>
};

/**
 * An AI SDK language-model middleware (`wrapLanguageModel({model, middleware})`) that guards every call with
 * Qwen3Guard: the prompt (the conversation up to the last user message) is judged first, and a flagged one never
 * reaches the model; a streamed answer is judged as it arrives, each text delta passed on once its tokens are judged,
 * and the stream cut with a `content-filter` finish (and the model's call aborted) the moment the rule fires; a
 * generated answer is judged whole before it is returned. The verdicts are in `providerMetadata.qwenguard`
 * (`{prompt, response, flagged}`). Reasoning and tool calls pass through unjudged unless `judgeReasoning` is set.
 * @throws TypeError for bad options (no guard, a guard that is not one, a bad policy)
 * @example
 * import {streamText, wrapLanguageModel} from "ai";
 * import {qwenguardMiddleware} from "qwenguard/ai-sdk";
 * const model = wrapLanguageModel({model: openai("gpt-4o-mini"), middleware: qwenguardMiddleware({stream: "stream-0.6b"})});
 * const result = streamText({model, prompt: "Tell me a story"});
 */
export function qwenguardMiddleware(options: QwenguardMiddlewareOptions): QwenguardMiddleware {
    if (options == null || typeof options !== "object")
        throw new TypeError("Expected an options object {guard} or {gen?, stream?} for qwenguardMiddleware");
    if (options.guard == null && options.gen == null && options.stream == null)
        throw new TypeError('Expected a guard in the options of qwenguardMiddleware: "guard", "gen" or "stream"');
    if (options.guard != null && (options.gen != null || options.stream != null))
        throw new TypeError('Expected either "guard" or "gen" / "stream" in the options of qwenguardMiddleware, not both');
    const policy = options.policy ?? "strict";
    resolveServerPolicy(policy); // a bad policy is refused here, not on the first call
    const onFlagged = options.onFlagged ?? "content-filter";
    if (onFlagged !== "content-filter" && onFlagged !== "throw")
        throw new TypeError(`Expected "content-filter" or "throw" for "onFlagged" but received ${JSON.stringify(onFlagged)}`);
    const judgeReasoning = options.judgeReasoning === true;
    const promptCheck = options.promptCheck ?? "before";
    if (promptCheck !== "before" && promptCheck !== "parallel")
        throw new TypeError(`Expected "before" or "parallel" for "promptCheck" but received ${JSON.stringify(promptCheck)}`);
    const loaded: Array<Promise<AnyGuard>> = [];
    const gen = options.gen != null ? lazyGuard(options.gen, "gen", loaded) : null;
    const stream = options.stream != null ? lazyGuard(options.stream, "stream", loaded) : null;
    const single = options.guard != null ? checkedGuard(options.guard, "guard") : null;
    const guards = {
        prompt: (gen ?? single ?? stream)!,
        answer: (gen ?? single ?? stream)!,
        streamed: (stream ?? single ?? gen)!
    };
    /** The abort controller of each call, keyed by its transformed params. */
    const controllers = new WeakMap<LanguageModelV4CallOptions, AbortController>();

    const flag = (target: "prompt" | "response", verdict: JudgeResult) => {
        options.onFlag?.({target, verdict});
        if (onFlagged === "throw")
            throw new GuardFlaggedError(target, verdict);
    };
    const conversationOf = (params: LanguageModelV4CallOptions) => splitConversation(promptMessages(params.prompt, judgeReasoning));

    return {
        specificationVersion: "v4",
        async transformParams({params}) {
            const controller = new AbortController();
            const abortSignal = params.abortSignal != null ? AbortSignal.any([params.abortSignal, controller.signal]) : controller.signal;
            const transformed = {...params, abortSignal};
            controllers.set(transformed, controller);
            return transformed;
        },
        async wrapGenerate({doGenerate, params}): Promise<LanguageModelV4GenerateResult> {
            const {conversation, responsePrefix} = conversationOf(params);
            const prompt = await judgeLast(await guards.prompt(), conversation, policy);
            if (prompt.flagged) {
                flag("prompt", prompt);
                return {content: [], finishReason: CONTENT_FILTER_FINISH, usage: NO_USAGE, warnings: [],
                    providerMetadata: withVerdicts(undefined, {prompt, flagged: true})};
            }
            const result = await doGenerate();
            const answer = responsePrefix + result.content
                .map((part) => part.type === "text" || (judgeReasoning && part.type === "reasoning") ? part.text : "").join("");
            const response = answer.length > 0 ? await judgeLast(await guards.answer(), [...conversation, {role: "assistant", content: answer}], policy) : null;
            if (response?.flagged === true) {
                flag("response", response);
                return {...result, content: [], finishReason: CONTENT_FILTER_FINISH,
                    providerMetadata: withVerdicts(result.providerMetadata, {prompt, response, flagged: true})};
            }
            return {...result, providerMetadata: withVerdicts(result.providerMetadata, {prompt, response, flagged: false})};
        },
        async wrapStream({doStream, params}): Promise<LanguageModelV4StreamResult> {
            const {conversation, responsePrefix} = conversationOf(params);
            const controller = controllers.get(params);
            const [streamed, promptGuard] = await Promise.all([guards.streamed(), guards.prompt()]);
            // "parallel": the model starts meanwhile (its output is held until the prompt is judged, its call aborted if flagged)
            const early = promptCheck === "parallel" ? settle(doStream()) : null;
            // the prompt verdict comes with a Stream session; a Gen prompt guard judges it meanwhile
            const [opening, judging] = await Promise.allSettled([
                openMonitor(streamed, conversation, policy),
                promptGuard !== streamed || streamed instanceof GenGuard ? judgeLast(promptGuard, conversation, policy) : Promise.resolve(null)
            ]);
            const abandon = async (reason: Error) => {
                controller?.abort(reason);
                const started = await early;
                if (started?.status === "fulfilled")
                    await started.value.stream.cancel(reason).catch(() => undefined);
            };
            if (opening.status === "rejected" || judging.status === "rejected") {
                if (opening.status === "fulfilled")
                    await opening.value.monitor.close();
                const error = opening.status === "rejected" ? opening.reason : (judging as PromiseRejectedResult).reason;
                await abandon(error instanceof Error ? error : new Error(String(error)));
                throw error;
            }
            const {monitor} = opening.value;
            const prompt = judging.value ?? opening.value.prompt!;
            if (prompt.flagged) {
                await monitor.close();
                await abandon(new Error("Qwen3Guard flagged the prompt"));
                flag("prompt", prompt);
                return {stream: partsOf([{type: "stream-start", warnings: []},
                    {type: "finish", finishReason: CONTENT_FILTER_FINISH, usage: NO_USAGE, providerMetadata: withVerdicts(undefined, {prompt, flagged: true})}])};
            }
            const text = new MonitoredText(monitor);
            let result: LanguageModelV4StreamResult;
            try {
                if (responsePrefix.length > 0) {
                    await text.push(responsePrefix);
                    if (monitor.flag != null) {
                        // the prefill the model would continue is itself flagged: the model is not called (or is stopped)
                        const response = monitor.flag.verdict;
                        await monitor.close();
                        await abandon(new Error("Qwen3Guard flagged the answer's prefill"));
                        flag("response", response);
                        return {stream: partsOf([{type: "stream-start", warnings: []}, {type: "finish", finishReason: CONTENT_FILTER_FINISH,
                            usage: NO_USAGE, providerMetadata: withVerdicts(undefined, {prompt, response, flagged: true})}])};
                    }
                }
                if (early == null)
                    result = await doStream();
                else {
                    const started = await early;
                    if (started.status === "rejected")
                        throw started.reason;
                    result = started.value;
                }
            } catch (error) {
                await monitor.close();
                await abandon(error instanceof Error ? error : new Error(String(error)));
                throw error;
            }
            return {...result, stream: guardStreamParts(result.stream, {
                text, prompt, judgeReasoning, signal: params.abortSignal,
                abort: (reason) => controller?.abort(reason),
                onFlag: (verdict) => options.onFlag?.({target: "response", verdict})
            })};
        },
        async close() {
            const guards = await Promise.allSettled(loaded.splice(0));
            await Promise.all(guards.map((outcome) => outcome.status === "fulfilled" ? (outcome.value as GenGuard | StreamGuard).dispose() : undefined));
        }
    };
}

/** A guard given as an object, or a model name loaded on first use (once, however many calls wait for it). */
function lazyGuard(value: unknown, variant: "gen" | "stream", loaded: Array<Promise<AnyGuard>>): () => Promise<AnyGuard> {
    if (typeof value !== "string") {
        if (variant === "gen" ? value instanceof StreamGuard : value instanceof GenGuard)
            throw new TypeError(`Expected a ${variant === "gen" ? "GenGuard" : "StreamGuard"} or a RemoteGuard for "${variant}" but received a ` +
                (variant === "gen" ? "StreamGuard" : "GenGuard"));
        return checkedGuard(value, variant);
    }
    if (value.length === 0)
        throw new TypeError(`Expected a model name or file for "${variant}" but received an empty string`);
    let loading: Promise<AnyGuard> | null = null;
    return () => {
        if (loading == null) {
            loading = variant === "gen" ? GenGuard.load({model: value}) : StreamGuard.load({model: value});
            loading.catch(() => (loading = null)); // a failed load is tried again by the next call
            loaded.push(loading);
        }
        return loading;
    };
}

function checkedGuard(value: unknown, name: string): () => Promise<AnyGuard> {
    assertGuard(value, name);
    return async () => value;
}

/** A promise's outcome, without an unhandled rejection meanwhile. */
function settle<T>(promise: PromiseLike<T>): Promise<PromiseSettledResult<T>> {
    return Promise.allSettled([promise]).then(([outcome]) => outcome);
}

function partsOf(parts: LanguageModelV4StreamPart[]): ReadableStream<LanguageModelV4StreamPart> {
    return new ReadableStream({
        start(controller) {
            parts.forEach((part) => controller.enqueue(part));
            controller.close();
        }
    });
}
