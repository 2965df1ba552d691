import {Readable} from "node:stream";
import type {FastifyInstance, FastifyReply} from "fastify";
import type {Message} from "../../conversation/messages.js";
import type {JudgeResult} from "../../moderation/Judge.js";
import {streamPromptResult, streamPromptRule} from "../../moderation/judgeResults.js";
import {chatConversation, contentText, splitConversation} from "../../openai/chatMessages.js";
import {CONTENT_FILTER, guardChatStream} from "../../openai/guardChatStream.js";
import {streamSessionMonitor} from "../../integrations/ResponseMonitor.js";
import {ApiError, ClientClosedError} from "../ApiError.js";
import {apiErrorOf} from "../errorReply.js";
import type {GuardService, HeldSession} from "../GuardService.js";
import type {QwenguardState} from "../qwenguardPlugin.js";
import type {ResolvedServerPolicy} from "../serverPolicy.js";
import {postUpstream, readUpstreamChunks, readUpstreamJson} from "../upstream.js";
import {assertReady, checked, clientGone, judgeAll, requestPolicy, responseId} from "./routeKit.js";

/** A chunk as the upstream sent it (parsed JSON): the fields the guard reads, and any others. */
interface UpstreamChunk {
    id?: string,
    created?: number,
    model?: string,
    choices?: Array<{
        index: number,
        delta?: {role?: unknown, content?: unknown, reasoning_content?: unknown, refusal?: unknown, [key: string]: unknown} | null,
        finish_reason?: string | null,
        [key: string]: unknown
    }>,
    [key: string]: unknown
}

/** Most characters and chunks of an answer buffered for a Gen-only guard of a streamed answer (judged whole at its end). */
const MAX_BUFFERED_ANSWER_CHARS = 4 << 20;
const MAX_BUFFERED_ANSWER_CHUNKS = 200_000;

const chatBody = {
    type: "object",
    required: ["messages"],
    properties: {
        messages: {type: "array", minItems: 1},
        stream: {type: "boolean"},
        n: {type: "integer", minimum: 1, maximum: 128},
        qwen3guard: {type: "object", properties: {policy: {}}, additionalProperties: false}
    }
} as const;

interface ChatBody {
    messages: unknown[],
    stream?: boolean,
    n?: number,
    model?: unknown,
    qwen3guard?: {policy?: unknown},
    [key: string]: unknown
}

/** What a request's answer is judged against. */
interface ProxyContext {
    state: QwenguardState,
    conversation: Message[],
    /** The assistant text the answer continues (a prefill), judged as its start. */
    responsePrefix: string,
    policy: ResolvedServerPolicy,
    prompt: JudgeResult,
    /** Aborts the upstream request. */
    upstream: AbortController,
    /** The client went away. */
    signal: AbortSignal
}

/**
 * `POST /v1/chat/completions` in front of the upstream LLM server: the user's prompt is judged first (Gen when loaded,
 * else the Stream model's prompt head); a flagged prompt is answered here with `finish_reason: "content_filter"` and
 * the upstream is never called. Otherwise the request goes upstream as it came (without its `qwen3guard` field).
 * A streamed answer passes through the Stream model chunk by chunk and is cut the moment the decision rule fires
 * (the upstream request is aborted); without a Stream model, Gen judges the whole streamed answer before it is
 * released. An answer that is not streamed is judged whole (Gen when loaded, else Stream).
 */
export async function chatProxyRoutes(app: FastifyInstance): Promise<void> {
    const state = app.qwenguard;
    app.post("/v1/chat/completions", {schema: {body: chatBody}}, async (request, reply) => {
        assertReady(state);
        const body = request.body as ChatBody;
        const policy = requestPolicy(state, body.qwen3guard?.policy, "qwen3guard.policy");
        const {conversation, responsePrefix} = checked("messages", () => splitConversation(chatConversation(body.messages)));
        const streaming = body.stream === true;
        const choices = body.n ?? 1;
        const live = streaming && state.service.stream != null;
        if (live && choices > state.service.stream!.queue.slots)
            throw ApiError.invalid(`Expected "n" to be at most ${state.service.stream!.queue.slots}, the sessions the Stream model judges at once ` +
                `(--max-sessions), but received ${choices}`, "n");
        const signal = clientGone(reply);
        const upstream = new AbortController();
        signal.addEventListener("abort", () => upstream.abort(signal.reason), {once: true});

        const {prompt, held} = await judgePrompt(state.service, conversation, policy, live ? choices : 0, state.options.mode, signal);
        // sessions opened for the answer are the stream's to close; until then (and if it never starts) the reply's
        const closeHeld = () => Promise.allSettled(held.map(({close}) => close()));
        reply.raw.once("close", () => void closeHeld());
        try {
            if (prompt.flagged) {
                await closeHeld();
                return refusePrompt(reply, body, streaming, prompt);
            }
            const forwarded: Record<string, unknown> = {...body};
            delete forwarded.qwen3guard; // the guard's own options stay here
            const response = await postUpstream(state.options, "/chat/completions", forwarded, request.headers.authorization, upstream.signal);
            const context: ProxyContext = {state, conversation, responsePrefix, policy, prompt, upstream, signal};
            if (!streaming)
                return await judgedCompletion(context, response);
            const chunks = readUpstreamChunks(response, state.options, upstream.signal);
            const events = live ? liveGuard(context, chunks, held) : bufferedGuard(context, chunks);
            return sendEvents(reply, events, state, upstream);
        } catch (error) {
            await closeHeld();
            throw error;
        }
    });
}

/**
 * The prompt verdict, and for a live-guarded stream the sessions of its `sessions` choices (opened at the same time,
 * their slots taken together: the Stream model reads the prompt in each).
 */
async function judgePrompt(service: GuardService, conversation: Message[], policy: ResolvedServerPolicy, sessions: number,
    mode: "score" | "generate", signal: AbortSignal): Promise<{prompt: JudgeResult, held: HeldSession[]}> {
    const [gen, opened] = await Promise.allSettled([
        service.gen != null ? service.judge(service.gen, conversation, policy, mode, "last", false, signal) : null,
        sessions > 0 ? service.openSessions(conversation, policy, false, "proxy", sessions, signal) : []
    ]);
    if (gen.status === "rejected" || opened.status === "rejected") {
        if (opened.status === "fulfilled")
            await Promise.allSettled(opened.value.map(({close}) => close()));
        throw gen.status === "rejected" ? gen.reason : (opened as PromiseRejectedResult).reason;
    }
    const held = opened.value;
    if (gen.value != null)
        return {prompt: gen.value.prompt!, held};
    if (held.length > 0)
        return {prompt: streamPromptResult(held[0].session.promptVerdict, streamPromptRule(policy.gen)), held};
    return {prompt: (await service.judge(service.stream!, conversation, policy, mode, "last", false, signal)).prompt!, held};
}

/** The answer to a flagged prompt: no upstream call, an empty assistant turn ending with `content_filter`. */
function refusePrompt(reply: FastifyReply, body: ChatBody, streaming: boolean, prompt: JudgeResult) {
    const id = responseId("chatcmpl-qwenguard");
    const created = Math.floor(Date.now() / 1000);
    const model = typeof body.model === "string" ? body.model : "qwenguard";
    const indexes = Array.from({length: body.n ?? 1}, (_, index) => index);
    if (!streaming)
        return {
            id, object: "chat.completion", created, model,
            choices: indexes.map((index) => ({index, message: {role: "assistant", content: "", refusal: null}, logprobs: null, finish_reason: CONTENT_FILTER})),
            usage: {prompt_tokens: 0, completion_tokens: 0, total_tokens: 0},
            qwen3guard: {prompt}
        };
    const chunk = (choices: object[], extra: object = {}) => ({id, object: "chat.completion.chunk", created, model, choices, ...extra});
    return sendEvents(reply, (async function* () {
        yield chunk(indexes.map((index) => ({index, delta: {role: "assistant", content: ""}, logprobs: null, finish_reason: null})));
        yield chunk(indexes.map((index) => ({index, delta: {}, logprobs: null, finish_reason: CONTENT_FILTER})), {qwen3guard: {prompt}});
    })());
}

/**
 * An answer that was not streamed, judged whole (its reasoning, then its content, after any prefill): a flagged choice
 * keeps only the text before the unsafe span (Stream) or none (Gen), and no tool calls.
 */
async function judgedCompletion({state, conversation, responsePrefix, policy, prompt, signal}: ProxyContext, response: Response): Promise<Record<string, unknown>> {
    const completion = await readUpstreamJson(response, state.options, signal) as {choices?: Array<{message?: Record<string, unknown>, finish_reason?: string | null}>};
    if (completion == null || typeof completion !== "object")
        throw new ApiError(502, "The upstream's answer is not a chat completion object", "upstream_error", "upstream_malformed");
    const {service} = state;
    const model = service.gen ?? service.stream!;
    const choices = Array.isArray(completion.choices) ? completion.choices : [];
    const responses = await judgeAll(choices, model, async (choice) => {
        const message = choice?.message;
        if (message == null)
            return null;
        const fields = (["reasoning_content", "content", "refusal"] as const).map((field) => [field, contentText(message[field], `choices[].message.${field}`) ?? ""] as const);
        const text = responsePrefix + fields.map(([, value]) => value).join("");
        if (text.length === 0)
            return null;
        const {response: verdict} = await service.judge(model, [...conversation, {role: "assistant", content: text}], policy, state.options.mode,
            "last", false, signal);
        if (verdict?.flagged === true) {
            // keep each field's text before the unsafe span (nothing, with Gen)
            let offset = responsePrefix.length;
            const stop = verdict.stoppedAt?.offset ?? 0;
            const cut: Record<string, unknown> = {...message};
            for (const [field, value] of fields) {
                if (message[field] != null)
                    cut[field] = value.slice(0, Math.max(0, stop - offset));
                offset += value.length;
            }
            delete cut.tool_calls; // a cut answer does not act
            delete cut.function_call;
            choice.message = cut;
            choice.finish_reason = CONTENT_FILTER;
        }
        return verdict;
    });
    return {...completion, qwen3guard: {prompt, responses}};
}

/** A streamed answer through the Stream model: chunks released as they are judged, the stream cut at a flag. */
async function* liveGuard({responsePrefix, prompt, upstream}: ProxyContext, chunks: AsyncIterable<UpstreamChunk>, held: HeldSession[]): AsyncGenerator<object> {
    const guarded = guardChatStream(chunks, {
        responsePrefix,
        openSession: async (index) => {
            const session = held[index];
            if (session == null)
                throw new ApiError(502, `The upstream sent choice ${index} of an answer of ${held.length} choice${held.length === 1 ? "" : "s"} (n)`,
                    "upstream_error", "upstream_malformed");
            return streamSessionMonitor(session.session, session.close);
        },
        abort: () => upstream.abort(new Error("The guard stopped the answer"))
    });
    for await (const chunk of guarded) {
        const verdict = chunk.qwen3guard as Record<string, unknown> | undefined;
        yield verdict != null ? {...chunk, qwen3guard: {prompt, ...verdict}} : chunk;
    }
}

/**
 * A streamed answer with only a Gen model: held until it is complete (Gen judges whole texts), then released, or —
 * when flagged — replaced by its role chunk and a `content_filter` ending.
 */
async function* bufferedGuard({state, conversation, responsePrefix, policy, prompt, upstream, signal}: ProxyContext,
    chunks: AsyncIterable<UpstreamChunk>): AsyncGenerator<object> {
    const held: UpstreamChunk[] = [];
    const texts = new Map<number, string>();
    let characters = 0;
    for await (const chunk of chunks) {
        held.push(chunk);
        for (const choice of chunk.choices ?? [])
            for (const field of ["reasoning_content", "content", "refusal"] as const) {
                const text = contentText(choice.delta?.[field], `choices[${choice.index}].delta.${field}`) ?? "";
                texts.set(choice.index, (texts.get(choice.index) ?? "") + text);
                characters += text.length;
            }
        if (characters > MAX_BUFFERED_ANSWER_CHARS || held.length > MAX_BUFFERED_ANSWER_CHUNKS) {
            upstream.abort(new Error("The answer is too long to buffer"));
            throw new ApiError(502, `The answer is over ${MAX_BUFFERED_ANSWER_CHARS} characters or ${MAX_BUFFERED_ANSWER_CHUNKS} chunks, the most a Gen-only ` +
                "guard buffers: serve a Stream model to guard long streamed answers", "upstream_error", "answer_too_long");
        }
    }
    const gen = state.service.gen!;
    const answers = [...texts].filter(([, text]) => (responsePrefix + text).length > 0);
    const verdicts = await judgeAll(answers, gen, async ([index, text]) => [index, (await state.service.judge(gen,
        [...conversation, {role: "assistant", content: responsePrefix + text}], policy, state.options.mode, "last", false, signal)).response] as const);
    const flagged = verdicts.find(([, verdict]) => verdict?.flagged === true);
    if (flagged == null) {
        yield* held;
        return;
    }
    const last = held[held.length - 1];
    for (const chunk of held) {
        const roles = (chunk.choices ?? []).filter((choice) => choice.delta?.role != null)
            .map((choice) => ({...choice, delta: {role: choice.delta!.role}, finish_reason: null}));
        if (roles.length > 0)
            yield {...chunk, choices: roles};
    }
    yield {
        id: last?.id, object: "chat.completion.chunk", created: last?.created, model: last?.model,
        choices: [...texts.keys()].map((index) => ({index, delta: {}, logprobs: null, finish_reason: CONTENT_FILTER})),
        qwen3guard: {prompt, choice: flagged[0], response: flagged[1]}
    };
}

/**
 * Sends events as server-sent events, then `[DONE]`; a failure mid-way becomes a last `{error}` event, as OpenAI sends
 * them. The stream is a live session of the server: at shutdown it has the grace period to end, then the upstream is
 * aborted (a last error event). A client that stops reading for `upstreamTimeout` is cut off, so that it does not
 * hold its Stream sessions and the upstream's slot.
 */
function sendEvents(reply: FastifyReply, events: AsyncIterable<object>, state?: QwenguardState, upstream?: AbortController) {
    const iterator = events[Symbol.asyncIterator]();
    let finished = false;
    const lines = async function* () {
        try {
            for (;;) {
                const {done, value} = await iterator.next();
                if (done === true)
                    break;
                yield `data: ${JSON.stringify(value)}\n\n`;
            }
            yield "data: [DONE]\n\n";
        } catch (error) {
            const {apiError, serverFault} = apiErrorOf(error);
            if (serverFault)
                reply.log.error({err: error}, "proxied stream failed");
            yield `data: ${JSON.stringify(apiError.body())}\n\n`;
        } finally {
            finished = true;
            await iterator.return?.();
        }
    };
    const body = Readable.from(lines());
    if (state != null) {
        const stallMs = state.options.upstreamTimeout;
        // the response backed up (the client's socket takes nothing more) for the whole timeout: the client is gone
        let backedUpSince: number | null = null;
        const watchdog = setInterval(() => {
            if (!reply.raw.writableNeedDrain)
                backedUpSince = null;
            else if (backedUpSince == null)
                backedUpSince = Date.now();
            else if (Date.now() - backedUpSince >= stallMs)
                body.destroy(new ClientClosedError(`The client read nothing for ${stallMs} ms`));
        }, Math.min(1000, stallMs)).unref();
        const live = {
            shutdown: async () => {
                const deadline = Date.now() + state.options.shutdownGrace;
                while (!finished && Date.now() < deadline)
                    await new Promise((resolve) => setTimeout(resolve, 20));
                upstream?.abort(new ApiError(503, "The server is shutting down", "unavailable_error", "shutting_down"));
            }
        };
        state.sessions.add(live);
        reply.raw.once("close", () => {
            state.sessions.delete(live);
            clearInterval(watchdog);
        });
    }
    return reply.code(200).headers({"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no"})
        .send(body);
}
