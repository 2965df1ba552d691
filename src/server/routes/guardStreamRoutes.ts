import type {FastifyInstance} from "fastify";
import type {WebSocket} from "ws";
import {validateMessages} from "../../conversation/messages.js";
import type {Message} from "../../conversation/messages.js";
import type {StreamSession} from "../../stream/StreamSession.js";
import {streamPromptResult, streamPromptRule, streamResponseResult} from "../../moderation/judgeResults.js";
import {ApiError, ClientClosedError} from "../ApiError.js";
import {apiErrorOf} from "../errorReply.js";
import type {HeldSession} from "../GuardService.js";
import type {LiveSession, QwenguardState} from "../qwenguardPlugin.js";
import type {ResolvedServerPolicy} from "../serverPolicy.js";
import {assertReady, checked, requestPolicy, responseId} from "./routeKit.js";

/** WebSocket close codes (RFC 6455 §7.4.1). */
const CLOSE = {normal: 1000, goingAway: 1001, policy: 1008, tooBig: 1009, serverError: 1011, tryLater: 1013} as const;

/** Why a session ended, as its `summary` event says. */
type EndReason = "end" | "flag" | "shutdown";

/** A message from the client. */
type ClientMessage =
    | {type: "start", messages: unknown, policy?: unknown, thinking?: unknown, tokens?: unknown}
    | {type: "text", text: unknown}
    | {type: "tokens", ids: unknown}
    | {type: "end"};

/**
 * `GET /v1/guard/stream` (WebSocket): live moderation of one response while it is generated. The client sends
 * `start` (the conversation, ending with the user turn; optional `policy`, `thinking`, `tokens`), then the response as
 * `text` chunks (any chunking) or `tokens` (Qwen3 ids), then `end`. The server answers `queued` when every Stream slot
 * is taken (the session waits in the bounded queue), `prompt` (the prompt verdict) once the session is open,
 * `judged` after each `text`, `tokens` or `end` message (how much of the text is judged and may be shown, whether a
 * `flag` follows, with the token verdicts when `tokens` was asked), `flag` the moment the decision rule fires, and `summary`; then it closes the socket. A bad
 * message gets an `error` event and the socket closes (1008). Sessions of all clients share the model's batched decode.
 */
export async function guardStreamRoutes(app: FastifyInstance): Promise<void> {
    const state = app.qwenguard;
    app.get("/v1/guard/stream", {
        websocket: true,
        preValidation: async (request) => {
            const {origin} = request.headers;
            const allowed = state.options.allowOrigins;
            if (origin != null && !allowed.includes("*") && !allowed.includes(origin))
                throw new ApiError(403, `A page from ${JSON.stringify(origin)} may not open stream sessions here: the server allows ` +
                    (allowed.length === 0 ? "no web origins (see --allow-origin)" : allowed.join(", ")), "invalid_request_error", "origin_not_allowed");
            assertReady(state);
            if (state.service.stream == null)
                throw new ApiError(400, "Live stream moderation needs a Stream model, and this server has none: start it with a Qwen3Guard-Stream model",
                    "invalid_request_error", "no_stream_model");
        }
    }, (socket, request) => {
        const live = new StreamSocket(socket, state, request.log);
        state.sessions.add(live);
        socket.once("close", () => state.sessions.delete(live));
    });
}

/** One WebSocket client and its session. */
class StreamSocket implements LiveSession {
    private held: HeldSession | null = null;
    private opening: AbortController | null = null;
    private work: Promise<void> = Promise.resolve();
    /** Bytes of messages received and not yet handled. */
    private backlog = 0;
    private idle: NodeJS.Timeout | null = null;
    private ended = false;
    private wantTokens = false;
    /** How the response comes: as text or as token ids (one or the other: their offsets do not mix). */
    private input: "text" | "tokens" | null = null;
    private released = 0;
    private readonly id = responseId("guard-stream");

    constructor(private readonly socket: WebSocket, private readonly state: QwenguardState,
        private readonly log: {error: (object: object, message: string) => void}) {
        this.touch();
        socket.on("message", (data, isBinary) => {
            const bytes = Array.isArray(data) ? data.reduce((sum, part) => sum + part.length, 0) : (data as Buffer).byteLength;
            this.backlog += bytes;
            const limit = state.maxPendingBytes;
            if (this.backlog > limit) {
                this.fail(new ApiError(400, `The client sent more than ${limit} bytes that are not judged yet: wait for "judged" events before sending more`,
                    "invalid_request_error", "backlog_full"), CLOSE.tooBig);
                return;
            }
            if (this.opening == null || this.held != null)
                this.touch(); // (while the session waits for a slot, the time is the server's, not the client's)
            const text = isBinary ? null : data.toString();
            this.work = this.work.then(async () => {
                try {
                    if (!this.ended)
                        await this.handle(text);
                } catch (error) {
                    this.fail(error);
                } finally {
                    this.backlog -= bytes;
                }
            });
        });
        socket.on("close", () => this.disposeLater());
        socket.on("error", () => this.disposeLater());
    }

    /** The server is closing: the client hears how far its response was judged, then the socket closes (1001). */
    async shutdown(): Promise<void> {
        if (!this.ended) {
            this.ended = true;
            this.opening?.abort(new Error("The server is shutting down"));
            await this.work;
            this.summary("shutdown");
            this.socket.close(CLOSE.goingAway, "server shutting down");
        }
        await this.dispose();
    }

    private async handle(raw: string | null): Promise<void> {
        if (raw == null)
            throw ApiError.invalid("Expected JSON text messages, not binary ones");
        let message: ClientMessage;
        try {
            message = JSON.parse(raw) as ClientMessage;
        } catch {
            throw ApiError.invalid(`Expected a JSON message but received ${JSON.stringify(raw.slice(0, 80))}`);
        }
        if (message == null || typeof message !== "object" || typeof message.type !== "string")
            throw ApiError.invalid('Expected a message {"type": "start" | "text" | "tokens" | "end", …}', "type");
        if (message.type === "start")
            return this.start(message);
        const held = this.held;
        if (held == null)
            throw ApiError.invalid(`Expected a "start" message first but received ${JSON.stringify(message.type)}`, "type");
        const {session} = held;
        if ((message.type === "text" || message.type === "tokens") && this.input !== message.type) {
            if (this.input != null)
                throw ApiError.invalid(`Expected "${this.input}" messages: this session's response came as ${this.input === "text" ? "text" : "token ids"}, ` +
                    "and the two do not mix", "type");
            this.input = message.type;
        }
        if (message.type === "text") {
            if (typeof message.text !== "string")
                throw ApiError.invalid(`Expected a string for "text" but received ${typeof message.text}`, "text");
            await session.pushText(message.text).catch((error: unknown) => this.rethrowUnlessFlagged(error));
        } else if (message.type === "tokens") {
            await session.pushTokens(message.ids as number[]).catch((error: unknown) => this.rethrowUnlessFlagged(error));
        } else if (message.type === "end") {
            await session.finish().catch((error: unknown) => this.rethrowUnlessFlagged(error));
            if (session.flag == null) {
                this.judged(session);
                return this.end("end");
            }
        } else {
            throw ApiError.invalid(`Expected "start", "text", "tokens" or "end" for "type" but received ${JSON.stringify((message as {type: string}).type)}`, "type");
        }
        if (this.ended)
            return; // the client went away, or the server is shutting down, while this chunk was scored
        this.judged(session);
        if (session.flag != null) {
            const report = session.report();
            this.send({type: "flag", flag: report.flag, verdict: streamResponseResult(report)});
            this.end("flag");
        }
    }

    private async start(message: Extract<ClientMessage, {type: "start"}>): Promise<void> {
        if (this.held != null || this.opening != null)
            throw ApiError.invalid('Expected one "start" message per connection', "type");
        const messages: Message[] = checked("messages", () => validateMessages(message.messages));
        if (messages.length === 0 || messages[messages.length - 1].role !== "user")
            throw ApiError.invalid('Expected "messages" to end with a user message (the turn the response answers)', "messages");
        const policy: ResolvedServerPolicy = requestPolicy(this.state, message.policy);
        for (const key of ["thinking", "tokens"] as const)
            if (message[key] != null && typeof message[key] !== "boolean")
                throw ApiError.invalid(`Expected a boolean for "${key}" but received ${typeof message[key]}`, key);
        this.wantTokens = message.tokens === true;
        const model = this.state.service.stream!;
        if (model.queue.active >= model.queue.slots)
            this.send({type: "queued", waiting: model.queue.depth + 1});
        this.opening = new AbortController();
        if (this.idle != null)
            clearTimeout(this.idle); // waiting for a slot is the server's time, not the client's
        const held = await this.state.service.openSession(messages, policy, message.thinking === true, "websocket", this.opening.signal);
        this.touch();
        if (this.ended) {
            await held.close();
            return;
        }
        this.held = held;
        const {session} = held;
        this.send({type: "prompt", session: this.id, model: model.id, verdict: streamPromptResult(session.promptVerdict, streamPromptRule(policy.gen)),
            tokens: session.tokenCount});
    }

    /** Reports how much of the text is judged, and the verdicts scored since the last report when asked. */
    private judged(session: StreamSession): void {
        const verdicts = session.tokens.slice(this.released);
        this.released = session.tokens.length;
        this.send({type: "judged", length: session.releasableLength, tokens: session.tokens.length, flagged: session.flag != null,
            ...(this.wantTokens ? {verdicts} : {})});
    }

    private end(reason: EndReason): void {
        this.ended = true;
        this.summary(reason);
        this.socket.close(CLOSE.normal, reason);
        this.disposeLater();
    }

    private summary(reason: EndReason): void {
        if (this.held == null)
            return;
        const {session} = this.held;
        this.send({type: "summary", reason, response: session.tokens.length > 0 ? streamResponseResult(session.report()) : null,
            tokens: session.tokens.length, length: session.releasableLength});
    }

    /** A scoring error after a flag is not the news: the flag is (a chunk over the limit still scored what fitted). */
    private rethrowUnlessFlagged(error: unknown): void {
        if (this.held?.session.flag == null)
            throw error;
    }

    private fail(error: unknown, code?: number): void {
        if (this.ended)
            return;
        this.ended = true;
        const {apiError, serverFault} = apiErrorOf(error);
        if (serverFault)
            this.log.error({err: error}, "stream session failed");
        this.send({type: "error", error: apiError.body().error});
        const close = code ?? (apiError.statusCode === 429 ? CLOSE.tryLater : serverFault ? CLOSE.serverError : CLOSE.policy);
        this.socket.close(close, apiError.body().error.code ?? "error");
        this.disposeLater();
    }

    private send(event: object): void {
        if (this.socket.readyState === this.socket.OPEN)
            this.socket.send(JSON.stringify(event));
    }

    private touch(): void {
        if (this.idle != null)
            clearTimeout(this.idle);
        const ms = this.state.options.streamIdleTimeout;
        this.idle = setTimeout(() => this.fail(new ApiError(408, `No message for ${ms} ms: the session is closed`, "invalid_request_error", "idle_timeout"),
            CLOSE.policy), ms);
        this.idle.unref();
    }

    /** Frees the session in the background; a failure there is logged, never left unhandled. */
    private disposeLater(): void {
        this.dispose().catch((error: unknown) => this.log.error({err: error}, "freeing a stream session failed"));
    }

    private async dispose(): Promise<void> {
        this.ended = true;
        if (this.idle != null)
            clearTimeout(this.idle);
        this.opening?.abort(new ClientClosedError());
        const held = this.held;
        this.held = null;
        await this.work.catch(() => undefined);
        await held?.close();
        this.state.sessions.delete(this);
    }
}
