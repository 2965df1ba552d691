// Language models for the AI SDK tests: a scripted one (exact stream parts, for the edge cases) and a minimal
// LanguageModelV4 adapter over node-llama-cpp (a real generator on a generated tiny model).

import type {LanguageModelV4, LanguageModelV4CallOptions, LanguageModelV4Content, LanguageModelV4StreamPart} from "@ai-sdk/provider";
import {LlamaCompletion} from "node-llama-cpp";
import type {LlamaModel, TokenBias} from "node-llama-cpp";

/** What a test model saw: each call's options, and whether its stream was cancelled or its call aborted. */
export interface ModelLog {
    calls: LanguageModelV4CallOptions[],
    /** Streams the consumer (the middleware) cancelled. */
    cancelled: number,
    /** Calls whose abort signal fired. */
    aborted: number
}

const USAGE = {inputTokens: {total: 5, noCache: 5, cacheRead: 0, cacheWrite: 0}, outputTokens: {total: 7, text: 7, reasoning: 0}};

/** Stream parts of a plain text answer, one text delta per string. */
export function textParts(deltas: readonly string[], finish: "stop" | "length" = "stop"): LanguageModelV4StreamPart[] {
    return [
        {type: "stream-start", warnings: []},
        {type: "response-metadata", id: "scripted-1", modelId: "scripted"},
        {type: "text-start", id: "t1"},
        ...deltas.map((delta): LanguageModelV4StreamPart => ({type: "text-delta", id: "t1", delta})),
        {type: "text-end", id: "t1"},
        {type: "finish", finishReason: {unified: finish, raw: finish}, usage: USAGE, providerMetadata: {scripted: {note: "upstream"}}}
    ];
}

/**
 * A model that answers with scripted parts: `stream` one every `delayMs` (a part that is an Error makes the stream
 * fail there), `generate` as its content. With `holdOpen` the timed stream stays open after its parts until it is
 * cancelled (or 10 s have passed), as a server's does while it is still generating (so a test of the cancel does not
 * race its close).
 */
export function scriptedModel(script: {stream?: ReadonlyArray<LanguageModelV4StreamPart | Error>, generate?: LanguageModelV4Content[], delayMs?: number,
    holdOpen?: boolean}):
    LanguageModelV4 & {log: ModelLog} {
    const log: ModelLog = {calls: [], cancelled: 0, aborted: 0};
    const watch = (options: LanguageModelV4CallOptions) => {
        log.calls.push(options);
        options.abortSignal?.addEventListener("abort", () => log.aborted++, {once: true});
    };
    return {
        specificationVersion: "v4", provider: "scripted", modelId: "scripted", supportedUrls: {}, log,
        async doGenerate(options) {
            watch(options);
            return {content: script.generate ?? [], finishReason: {unified: "stop", raw: "stop"}, usage: USAGE, warnings: [],
                providerMetadata: {scripted: {note: "upstream"}}};
        },
        async doStream(options) {
            watch(options);
            const parts = [...script.stream ?? []];
            const timers: NodeJS.Timeout[] = [];
            // the parts come on the model's own schedule, one every delayMs, whether or not anyone reads them yet (as
            // a server's stream does); without a delay, as fast as they are read
            return {
                stream: new ReadableStream<LanguageModelV4StreamPart>({
                    start(controller) {
                        if (script.delayMs == null)
                            return;
                        parts.forEach((part, index) => timers.push(setTimeout(() => emit(controller, part), (index + 1) * script.delayMs!)));
                        // held open, it still ends after 10 s: a cancel that never comes fails its test instead of hanging it
                        timers.push(setTimeout(() => controller.close(), script.holdOpen === true ? 10_000 : (parts.length + 1) * script.delayMs));
                    },
                    pull(controller) {
                        if (script.delayMs != null)
                            return;
                        const part = parts.shift();
                        if (part == null)
                            controller.close();
                        else
                            emit(controller, part);
                    },
                    cancel() {
                        timers.forEach(clearTimeout);
                        log.cancelled++;
                    }
                }, {highWaterMark: 0})
            };
        }
    };
}

/** Enqueues a part, or fails the stream with it when it is an Error (once failed or closed, nothing more). */
function emit(controller: ReadableStreamDefaultController<LanguageModelV4StreamPart>, part: LanguageModelV4StreamPart | Error): void {
    try {
        if (part instanceof Error)
            controller.error(part);
        else
            controller.enqueue(part);
    } catch {
        // the stream already ended (an error part before, or cancelled)
    }
}

/** The text of a prompt for a plain completion model: each message's text on its own line, then "Assistant:". */
function completionPrompt(options: LanguageModelV4CallOptions): string {
    const lines = options.prompt.map((message) => {
        const text = typeof message.content === "string" ? message.content
            : message.content.map((part) => ("text" in part && typeof part.text === "string" ? part.text : "")).join("");
        return `${message.role}: ${text}`;
    });
    return `${lines.join("\n")}\nassistant:`;
}

/**
 * A minimal AI SDK provider model over node-llama-cpp: greedy completion of the prompt's text on `model` (one thread
 * unless told), streamed as text deltas (one per token chunk node-llama-cpp reports), stopped by the call's abort signal.
 */
export function llamaLanguageModel(model: LlamaModel, options: {tokenBias?: TokenBias, contextSize?: number, threads?: number} = {}):
    LanguageModelV4 & {log: ModelLog, settled: () => Promise<unknown>} {
    const log: ModelLog = {calls: [], cancelled: 0, aborted: 0};
    const running = new Set<Promise<unknown>>();
    const complete = (call: LanguageModelV4CallOptions, onText: (text: string) => void) => {
        const work = generate(call, onText);
        running.add(work);
        void work.catch(() => undefined).finally(() => running.delete(work));
        return work;
    };
    const generate = async (call: LanguageModelV4CallOptions, onText: (text: string) => void) => {
        log.calls.push(call);
        call.abortSignal?.addEventListener("abort", () => log.aborted++, {once: true});
        // (threads given: node-llama-cpp's default is many times slower on a small shared machine)
        const context = await model.createContext({contextSize: options.contextSize ?? 512, threads: options.threads ?? 1});
        try {
            const completion = new LlamaCompletion({contextSequence: context.getSequence()});
            const text = await completion.generateCompletion(completionPrompt(call), {
                maxTokens: call.maxOutputTokens ?? 32, temperature: 0, tokenBias: options.tokenBias,
                signal: call.abortSignal, stopOnAbortSignal: true, onTextChunk: onText
            });
            return {text, aborted: call.abortSignal?.aborted === true};
        } finally {
            await context.dispose();
        }
    };
    return {
        specificationVersion: "v4", provider: "node-llama-cpp", modelId: "tiny-gen", supportedUrls: {}, log,
        /** Resolves once no generation is running (one aborted by the guard stops on its own time). */
        settled: () => Promise.allSettled([...running]),
        async doGenerate(call) {
            const {text} = await complete(call, () => undefined);
            return {content: [{type: "text", text}], finishReason: {unified: "stop", raw: "stop"}, usage: USAGE, warnings: []};
        },
        async doStream(call) {
            let cancelled = false;
            return {
                stream: new ReadableStream<LanguageModelV4StreamPart>({
                    start(controller) {
                        controller.enqueue({type: "stream-start", warnings: []});
                        controller.enqueue({type: "text-start", id: "t"});
                        complete(call, (delta) => {
                            if (!cancelled)
                                controller.enqueue({type: "text-delta", id: "t", delta});
                        }).then(({aborted}) => {
                            if (cancelled)
                                return;
                            controller.enqueue({type: "text-end", id: "t"});
                            controller.enqueue({type: "finish", finishReason: {unified: aborted ? "other" : "stop", raw: aborted ? "aborted" : "stop"}, usage: USAGE});
                            controller.close();
                        }, (error: unknown) => {
                            if (!cancelled)
                                controller.error(error);
                        });
                    },
                    cancel() {
                        cancelled = true;
                        log.cancelled++;
                    }
                })
            };
        }
    };
}
