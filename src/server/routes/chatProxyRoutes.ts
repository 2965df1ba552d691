import {Readable} from "node:stream";
import type {FastifyInstance, FastifyReply} from "fastify";
import type {Message} from "../../conversation/messages.js";
import type {JudgeResult} from "../../moderation/Judge.js";
import {streamPromptResult, streamPromptRule} from "../../moderation/judgeResults.js";
import {chatConversation, contentText, upToLastUser} from "../../openai/chatMessages.js";
import {CONTENT_FILTER, guardChatStream} from "../../openai/guardChatStream.js";
import type {ChatChunkLike, ChoiceSession} from "../../openai/guardChatStream.js";
import {ApiError} from "../ApiError.js";
import {apiErrorOf} from "../errorReply.js";
import type {GuardService, HeldSession} from "../GuardService.js";
import type {QwenguardState} from "../qwenguardPlugin.js";
import type {ResolvedServerPolicy} from "../serverPolicy.js";
import {postUpstream, readUpstreamChunks} from "../upstream.js";
import {assertReady, checked, clientGone, requestPolicy, responseId} from "./routeKit.js";

/** Most characters of answer text buffered for a Gen-only guard of a streamed answer (judged whole at its end). */
const MAX_BUFFERED_ANSWER_CHARS = 4 << 20;

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
        const conversation = checked("messages", () => upToLastUser(chatConversation(body.messages)));
        const signal = clientGone(reply);
        const upstream = new AbortController();
        signal.addEventListener("abort", () => upstream.abort(signal.reason), {once: true});
        const streaming = body.stream === true;

        const {prompt, held} = await judgePrompt(state.service, conversation, policy, streaming, state.options.mode, signal);
        // a session opened for the answer is the stream's to close; until then (and if it never starts) the reply's
        reply.raw.once("close", () => void held?.close());
        try {
            if (prompt.flagged) {
                await held?.close();
                return refusePrompt(reply, body, streaming, prompt);
            }
            const forwarded: Record<string, unknown> = {...body};
            delete forwarded.qwen3guard; // the guard's own options stay here
            const response = await postUpstream(state.options, "/chat/completions", forwarded, request.headers.authorization, upstream.signal);
            const context: ProxyContext = {state, conversation, policy, prompt, upstream, signal};
            if (!streaming)
                return await judgedCompletion(context, response);
            const chunks = readUpstreamChunks(response, state.options, upstream.signal);
            const events = held != null ? liveGuard(context, chunks, held) : bufferedGuard(context, chunks);
            return sendEvents(reply, events);
        } catch (error) {
            await held?.close();
            throw error;
        }
    });
}

/**
 * The prompt verdict, and for a live-guarded stream the session its answer will be scored in (opened at the same
 * time: the Stream model reads the prompt once for both).
 */
async function judgePrompt(service: GuardService, conversation: Message[], policy: ResolvedServerPolicy, streaming: boolean,
    mode: "score" | "generate", signal: AbortSignal): Promise<{prompt: JudgeResult, held: HeldSession | null}> {
    const [gen, session] = await Promise.allSettled([
        service.gen != null ? service.judge(service.gen, conversation, policy, mode, "last", false, signal) : null,
        streaming && service.stream != null ? service.openSession(conversation, policy, false, "proxy", signal) : null
    ]);
    if (gen.status === "rejected" || session.status === "rejected") {
        if (session.status === "fulfilled")
            await session.value?.close();
        throw gen.status === "rejected" ? gen.reason : (session as PromiseRejectedResult).reason;
    }
    const held = session.value;
    if (gen.value != null)
        return {prompt: gen.value.prompt!, held};
    if (held != null)
        return {prompt: streamPromptResult(held.session.promptVerdict, streamPromptRule(policy.gen)), held};
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

/** An answer that was not streamed, judged whole: a flagged choice keeps only the text before the unsafe span (Stream) or none (Gen). */
async function judgedCompletion({state, conversation, policy, prompt, signal}: ProxyContext, response: Response): Promise<Record<string, unknown>> {
    let completion: {choices?: Array<{index?: number, message?: Record<string, unknown>, finish_reason?: string | null}>, [key: string]: unknown};
    try {
        completion = await response.json() as typeof completion;
    } catch (error) {
        throw new ApiError(502, `The upstream's answer is not JSON: ${(error as Error).message}`, "upstream_error", "upstream_malformed");
    }
    const {service} = state;
    const model = service.gen ?? service.stream!;
    const choices = Array.isArray(completion?.choices) ? completion.choices : [];
    const responses = await Promise.all(choices.map(async (choice) => {
        const text = choice?.message != null ? contentText(choice.message.content, "choices[].message.content") : null;
        if (text == null || text.length === 0)
            return null;
        const {response: verdict} = await service.judge(model, [...conversation, {role: "assistant", content: text}], policy, state.options.mode,
            "last", false, signal);
        if (verdict?.flagged === true) {
            const keep = verdict.stoppedAt?.offset ?? 0;
            choice.message = {...choice.message, content: text.slice(0, keep)};
            delete choice.message.tool_calls; // a cut answer does not act
            choice.finish_reason = CONTENT_FILTER;
        }
        return verdict;
    }));
    return {...completion, qwen3guard: {prompt, responses}};
}

/** A streamed answer through the Stream model: chunks released as they are judged, the stream cut at a flag. */
async function* liveGuard({state, conversation, policy, prompt, upstream, signal}: ProxyContext, chunks: AsyncIterable<ChatChunkLike>,
    first: HeldSession): AsyncGenerator<object> {
    const choice = (held: HeldSession): ChoiceSession => ({session: held.session, close: held.close});
    const guarded = guardChatStream(chunks, {
        openSession: async (index) => index === 0 ? choice(first) : choice(await state.service.openSession(conversation, policy, false, "proxy", signal)),
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
async function* bufferedGuard({state, conversation, policy, prompt, upstream, signal}: ProxyContext, chunks: AsyncIterable<ChatChunkLike>): AsyncGenerator<object> {
    const held: ChatChunkLike[] = [];
    const texts = new Map<number, string>();
    let total = 0;
    for await (const chunk of chunks) {
        held.push(chunk);
        for (const choice of chunk.choices ?? []) {
            const content = choice.delta?.content;
            if (typeof content !== "string")
                continue;
            texts.set(choice.index, (texts.get(choice.index) ?? "") + content);
            total += content.length;
            if (total > MAX_BUFFERED_ANSWER_CHARS) {
                upstream.abort(new Error("The answer is too long to buffer"));
                throw new ApiError(502, `The answer is over ${MAX_BUFFERED_ANSWER_CHARS} characters, the most a Gen-only guard buffers: serve a Stream model to guard long streamed answers`,
                    "upstream_error", "answer_too_long");
            }
        }
    }
    const gen = state.service.gen!;
    const verdicts = new Map<number, JudgeResult>();
    for (const [index, text] of texts) {
        const {response} = await state.service.judge(gen, [...conversation, {role: "assistant", content: text}], policy, state.options.mode, "last", false, signal);
        if (response != null)
            verdicts.set(index, response);
    }
    const flagged = [...verdicts].find(([, verdict]) => verdict.flagged);
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

/** Sends events as server-sent events, then `[DONE]`; a failure mid-way becomes a last `{error}` event, as OpenAI sends them. */
function sendEvents(reply: FastifyReply, events: AsyncIterable<object>) {
    const lines = async function* () {
        try {
            for await (const event of events)
                yield `data: ${JSON.stringify(event)}\n\n`;
            yield "data: [DONE]\n\n";
        } catch (error) {
            const {apiError, serverFault} = apiErrorOf(error);
            if (serverFault)
                reply.log.error({err: error}, "proxied stream failed");
            yield `data: ${JSON.stringify(apiError.body())}\n\n`;
        }
    };
    return reply.code(200).headers({"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no"})
        .send(Readable.from(lines()));
}
