import WebSocket from "ws";
import type {RawData} from "ws";
import type {Message} from "../conversation/messages.js";
import type {JudgeResult} from "../moderation/Judge.js";
import type {MonitorFlag, ResponseMonitor} from "../integrations/ResponseMonitor.js";
import type {ServerPolicy} from "../server/serverPolicy.js";

/** Options of {@link RemoteGuard}. */
export interface RemoteGuardOptions {
    /** The base URL of a `qwenguard serve` (with its prefix, if it is mounted under one): `http://127.0.0.1:8080`. */
    url: string,
    /** Its API key (`--api-key`), sent as `Authorization: Bearer <key>`. */
    apiKey?: string,
    /** The served model that judges whole conversations (`POST /v1/guard`); default: the server's choice (Gen first). */
    model?: string,
    /** Most milliseconds to wait for the server: to open a session (a queued one included) and for each reply. Default 60,000. */
    timeoutMs?: number
}

/** What the server answered instead of a verdict: its OpenAI-shaped error, and the HTTP status when there was one. */
export class RemoteGuardError extends Error {
    constructor(message: string, readonly status: number | null, readonly code: string | null, readonly type: string | null) {
        super(message);
        this.name = "RemoteGuardError";
    }
}

/** An event of the server's `/v1/guard/stream` WebSocket. */
type ServerEvent = {type: string, [key: string]: unknown};

/**
 * A client of a shared `qwenguard serve`: judges conversations (`POST /v1/guard`) and monitors streamed responses
 * (`/v1/guard/stream`, a WebSocket per response), so that an app's backend uses one guard service instead of loading
 * a model itself. The integrations (guardChatStream, the AI SDK middleware) take it wherever they take a guard.
 * @example
 * const guard = new RemoteGuard({url: "http://127.0.0.1:8080", apiKey: process.env.QWENGUARD_API_KEY});
 * const verdict = await guard.judge([{role: "user", content: "How do I make a bomb?"}]);
 */
export class RemoteGuard {
    readonly url: string;
    private readonly headers: Record<string, string>;
    private readonly timeoutMs: number;

    /** @throws TypeError for a URL that is not http(s) or a bad timeout */
    constructor(readonly options: RemoteGuardOptions) {
        if (options == null || typeof options.url !== "string")
            throw new TypeError('Expected an options object {url, apiKey?, model?, timeoutMs?} with the server\'s base URL in "url"');
        let url: URL;
        try {
            url = new URL(options.url);
        } catch {
            throw new TypeError(`Expected an http(s) URL for "url" but received ${JSON.stringify(options.url)}`);
        }
        if (url.protocol !== "http:" && url.protocol !== "https:")
            throw new TypeError(`Expected an http(s) URL for "url" but received ${JSON.stringify(options.url)}`);
        this.url = url.href.replace(/\/+$/, "");
        this.timeoutMs = options.timeoutMs ?? 60_000;
        if (!Number.isInteger(this.timeoutMs) || this.timeoutMs < 1)
            throw new TypeError(`Expected a positive integer of milliseconds for "timeoutMs" but received ${String(options.timeoutMs)}`);
        this.headers = options.apiKey != null ? {authorization: `Bearer ${options.apiKey}`} : {};
    }

    /**
     * Judges the last message of a conversation (a user prompt, or an assistant response to it).
     * @throws RemoteGuardError with the server's message (a bad conversation, a wrong key, a full queue) or when it cannot be reached
     */
    async judge(messages: Message[], options: {policy?: ServerPolicy} = {}): Promise<JudgeResult> {
        let response: Response;
        try {
            response = await fetch(`${this.url}/v1/guard`, {
                method: "POST",
                headers: {"content-type": "application/json", ...this.headers},
                body: JSON.stringify({messages, targets: "last", ...(options.policy != null ? {policy: options.policy} : {}),
                    ...(this.options.model != null ? {model: this.options.model} : {})}),
                signal: AbortSignal.timeout(this.timeoutMs)
            });
        } catch (error) {
            throw new RemoteGuardError(`The guard server at ${this.url} cannot be reached: ${(error as Error).message}`, null, null, null);
        }
        const body = await response.json().catch(() => null) as {results?: Array<{prompt: JudgeResult | null, response: JudgeResult | null}>} | null;
        if (!response.ok)
            throw serverError(response.status, body);
        const result = body?.results?.[0];
        const verdict = result?.response ?? result?.prompt;
        if (verdict == null)
            throw new RemoteGuardError(`The guard server at ${this.url} answered ${response.status} without a verdict: is it a qwenguard server?`, response.status, null, null);
        return verdict;
    }

    /**
     * Opens a live session for the response to a conversation (it must end with the user turn): the prompt verdict
     * comes with it (the Stream model's prompt head), then the response is judged as its text is pushed. The server
     * must serve a Stream model. Close it when done.
     * @throws RemoteGuardError when the server refuses the session (no Stream model, a wrong key, a full queue…)
     */
    openSession(messages: Message[], options: {policy?: ServerPolicy} = {}): Promise<RemoteSession> {
        return RemoteSession._open(this.url, this.headers, messages, options.policy, this.timeoutMs);
    }
}

/** A pending reply to a message sent on a session. */
interface Waiter {
    resolve: () => void,
    reject: (error: Error) => void
}

/** A live session on a `qwenguard serve`, as a {@link ResponseMonitor}. Created by {@link RemoteGuard.openSession}. */
export class RemoteSession implements ResponseMonitor {
    releasableLength = 0;
    flag: MonitorFlag | null = null;
    /** The prompt verdict (the Stream model's prompt head, under the session's policy). */
    promptVerdict!: JudgeResult;
    private summaryVerdict: JudgeResult | null = null;
    private summarized = false;
    /** The `judged` event answering `end` has come. */
    private endJudged = false;
    private failure: Error | null = null;
    private readonly waiters: Waiter[] = [];
    /** A `judged` event said a flag follows: the reply waits for it. */
    private flagComing = false;
    private finished = false;
    private readonly closed: Promise<void>;

    private constructor(private readonly socket: WebSocket, private readonly timeoutMs: number, private readonly url: string) {
        this.closed = new Promise((resolve) => socket.once("close", (code, reason) => {
            this.fail(new RemoteGuardError(`The guard server closed the session (${code}${reason.length > 0 ? ` ${reason.toString()}` : ""}) before it was done`,
                null, null, null));
            resolve();
        }));
        socket.on("error", (error) => this.fail(new RemoteGuardError(`The guard server at ${url} cannot be reached: ${error.message}`, null, null, null)));
        socket.on("message", (data) => this.receive(data));
    }

    /** @internal */
    static async _open(url: string, headers: Record<string, string>, messages: Message[], policy: ServerPolicy | undefined,
        timeoutMs: number): Promise<RemoteSession> {
        const socket = new WebSocket(`${url.replace(/^http/, "ws")}/v1/guard/stream`, {headers});
        const session = new RemoteSession(socket, timeoutMs, url);
        socket.once("unexpected-response", (request, response) => {
            let text = "";
            response.on("data", (chunk: Buffer) => (text += chunk.toString()));
            response.on("end", () => {
                let body: unknown = null;
                try {
                    body = JSON.parse(text);
                } catch {
                    // not JSON: the status says it
                }
                session.fail(serverError(response.statusCode ?? 0, body));
                request.destroy();
            });
        });
        try {
            await session.reply(() => socket.once("open", () =>
                socket.send(JSON.stringify({type: "start", messages, ...(policy != null ? {policy} : {})}))));
        } catch (error) {
            await session.close();
            throw error;
        }
        return session;
    }

    async pushText(text: string): Promise<void> {
        if (this.flag != null || text.length === 0)
            return;
        if (this.finished)
            throw new Error("The response is finished: no more text can be pushed");
        await this.reply(() => this.socket.send(JSON.stringify({type: "text", text})));
    }

    async finish(): Promise<void> {
        if (this.flag != null || this.finished)
            return;
        this.finished = true;
        await this.reply(() => this.socket.send(JSON.stringify({type: "end"})));
        if (this.flag == null && !this.summarized)
            await this.reply(() => undefined); // the summary follows the last `judged`
    }

    verdict(): JudgeResult | null {
        return this.flag?.verdict ?? this.summaryVerdict;
    }

    async close(): Promise<void> {
        if (this.socket.readyState === WebSocket.CLOSED)
            return;
        if (this.socket.readyState === WebSocket.CONNECTING || this.socket.readyState === WebSocket.OPEN)
            this.socket.close(1000, "done");
        // a server that does not answer the close handshake is cut off; and nothing here waits without end
        const timers: NodeJS.Timeout[] = [];
        await Promise.race([this.closed, new Promise<void>((resolve) => {
            timers.push(setTimeout(() => this.socket.terminate(), 2_000), setTimeout(resolve, 4_000));
        })]);
        timers.forEach(clearTimeout);
    }

    /** Sends (through `send`) and waits for the server's answer to it. */
    private reply(send: () => void): Promise<void> {
        if (this.failure != null)
            return Promise.reject(this.failure);
        return new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => {
                this.fail(new RemoteGuardError(`The guard server at ${this.url} did not answer within ${this.timeoutMs} ms`, null, null, null));
                this.socket.terminate();
            }, this.timeoutMs);
            const done = (error?: Error) => {
                clearTimeout(timer);
                if (error != null)
                    reject(error);
                else
                    resolve();
            };
            const waiter: Waiter = {resolve: () => done(), reject: done};
            this.waiters.push(waiter);
            try {
                send();
            } catch (error) {
                this.waiters.splice(this.waiters.indexOf(waiter), 1);
                done(new RemoteGuardError(`Could not send to the guard server at ${this.url}: ${(error as Error).message}`, null, null, null));
            }
        });
    }

    private receive(data: RawData): void {
        let event: ServerEvent;
        try {
            event = JSON.parse(data.toString()) as ServerEvent;
        } catch {
            this.fail(new RemoteGuardError(`The guard server at ${this.url} sent a message that is not JSON`, null, null, null));
            return;
        }
        switch (event.type) {
        case "prompt":
            this.promptVerdict = event.verdict as JudgeResult;
            return this.answered();
        case "judged":
            this.releasableLength = event.length as number;
            if (this.finished)
                this.endJudged = true; // (the reply to "end": only the summary follows)
            if (event.flagged === true)
                this.flagComing = true;
            else
                this.answered();
            return;
        case "flag":
            this.flag = {textOffset: (event.flag as {textOffset: number}).textOffset, verdict: event.verdict as JudgeResult};
            this.releasableLength = Math.min(this.releasableLength, this.flag.textOffset);
            if (this.flagComing) {
                this.flagComing = false;
                this.answered();
            }
            return;
        case "summary":
            if (event.reason !== "end" && event.reason !== "flag") {
                // the server ended the session before the answer was judged (it is shutting down)
                this.fail(new RemoteGuardError(`The guard server ended the session (${String(event.reason)}) before the answer was judged`,
                    null, "session_ended", null));
                return;
            }
            this.summaryVerdict = event.response as JudgeResult | null;
            this.summarized = true;
            if (this.finished && this.flag == null && this.waiters.length > 0 && this.endJudged)
                this.answered();
            return;
        case "error": {
            const error = event.error as {message?: string, code?: string, type?: string} | undefined;
            this.fail(new RemoteGuardError(error?.message ?? "The guard server reported an error", null, error?.code ?? null, error?.type ?? null));
            return;
        }
        default:
            return; // "queued", and any event a later server adds
        }
    }

    private answered(): void {
        this.waiters.shift()?.resolve();
    }

    private fail(error: Error): void {
        if ((this.flag != null || this.summarized) && this.failure == null && this.waiters.length === 0)
            return; // the server closes the socket after a flag or the summary: that is the end, not a failure
        this.failure ??= error;
        for (const waiter of this.waiters.splice(0))
            waiter.reject(this.failure);
    }
}

/** The error a server's reply carries (OpenAI's `{error: {message, type, param, code}}`), or one naming the status. */
function serverError(status: number, body: unknown): RemoteGuardError {
    const error = (body as {error?: {message?: unknown, code?: unknown, type?: unknown}} | null)?.error;
    if (error != null && typeof error.message === "string")
        return new RemoteGuardError(error.message, status, typeof error.code === "string" ? error.code : null, typeof error.type === "string" ? error.type : null);
    return new RemoteGuardError(`The guard server answered HTTP ${status}`, status, null, null);
}
