// Shared by the server tests: a qwenguard server on a free loopback port with the planted models, a WebSocket session
// client, a scripted upstream LLM server, and raw JSON requests.

import http from "node:http";
import type {AddressInfo} from "node:net";
import type {Test} from "tap";
import type {FastifyInstance} from "fastify";
import WebSocket from "ws";
import {createServer} from "../../src/index.js";
import type {CreateServerOptions} from "../../src/index.js";
import {ensureAddonBuilt} from "../../src/native/addonBuild.js";
import {cachedConvertedFixture, cachedPlantedGen} from "../helpers/plantedGen.js";

/** The planted test models: a Gen model and a Stream backbone (its head beside it). */
export interface PlantedModels {
    gen: string,
    stream: string
}

let models: Promise<PlantedModels> | undefined;

/** The planted Gen and Stream models (q8_0), generated once per process. */
export function plantedModels(): Promise<PlantedModels> {
    models ??= (async () => {
        await ensureAddonBuilt();
        return {gen: await cachedPlantedGen(), stream: await cachedConvertedFixture("planted-stream", "q8_0")};
    })();
    return models;
}

/** A server started by a test. */
export interface TestServer {
    app: FastifyInstance,
    /** `http://127.0.0.1:PORT` */
    url: string,
    port: number
}

/**
 * Starts a qwenguard server on a free loopback port (single-threaded models, small contexts), waits for its models,
 * and closes it when the test ends.
 * @param options - server options; `models` defaults to both planted models
 */
export async function startServer(t: Test, options: Partial<CreateServerOptions> = {}): Promise<TestServer> {
    const planted = await plantedModels();
    const app = await createServer({models: [planted.gen, planted.stream], threads: 1, contextSize: 2048, ...options});
    t.teardown(() => app.close());
    await app.listen({host: "127.0.0.1", port: 0});
    await app.qwenguard.service.loaded;
    const {port} = app.server.address() as AddressInfo;
    return {app, url: `http://127.0.0.1:${port}`, port};
}

/** A JSON answer: its status, headers and parsed body. */
export interface JsonReply {
    status: number,
    headers: Headers,
    body: Record<string, unknown> & {error?: {message: string, type: string, param: string | null, code: string | null}}
}

/** POSTs a body (an object is sent as JSON, a string as it is) and parses the JSON answer. */
export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<JsonReply> {
    const response = await fetch(url, {
        method: "POST", body: typeof body === "string" ? body : JSON.stringify(body),
        headers: {"content-type": "application/json", ...headers}
    });
    return {status: response.status, headers: response.headers, body: await response.json() as JsonReply["body"]};
}

/** An event the server sent on a stream WebSocket. */
export type StreamEvent = Record<string, unknown> & {type: string};

/** A WebSocket client of `/v1/guard/stream` that records every event. */
export class StreamClient {
    readonly events: StreamEvent[] = [];
    readonly closed: Promise<{code: number, reason: string}>;
    private readonly socket: WebSocket;
    private readonly waiters: Array<() => void> = [];

    private constructor(socket: WebSocket) {
        this.socket = socket;
        socket.on("message", (data) => {
            this.events.push(JSON.parse(data.toString()) as StreamEvent);
            this.waiters.splice(0).forEach((wake) => wake());
        });
        this.closed = new Promise((resolve) => socket.on("close", (code, reason) => {
            resolve({code, reason: reason.toString()});
            this.waiters.splice(0).forEach((wake) => wake());
        }));
    }

    /** Connects (rejects with the HTTP status when the server refuses the upgrade). */
    static connect(t: Test, url: string, headers: Record<string, string> = {}): Promise<StreamClient> {
        const socket = new WebSocket(`${url.replace(/^http/, "ws")}/v1/guard/stream`, {headers});
        t.teardown(() => {
            socket.on("error", () => undefined); // a refused handshake reports its end as an error
            socket.terminate();
        });
        return new Promise((resolve, reject) => {
            socket.once("open", () => resolve(new StreamClient(socket)));
            socket.once("unexpected-response", (_request, response) => {
                let body = "";
                response.on("data", (chunk: Buffer) => (body += chunk));
                response.on("end", () => reject(Object.assign(new Error(`HTTP ${response.statusCode}`), {status: response.statusCode, body: JSON.parse(body)})));
            });
            socket.once("error", reject);
        });
    }

    /** Sends a message (an object as JSON, a string as it is). */
    send(message: object | string): void {
        this.socket.send(typeof message === "string" ? message : JSON.stringify(message));
    }

    /** Waits for the first event of a type (after any seen so far). */
    async next(type: string, timeoutMs = 20_000): Promise<StreamEvent> {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
            const event = this.events.find((candidate) => candidate.type === type);
            if (event != null)
                return event;
            if (this.socket.readyState === WebSocket.CLOSED)
                throw new Error(`The socket closed before a ${JSON.stringify(type)} event; events: ${JSON.stringify(this.events.map((e) => e.type))}`);
            if (Date.now() > deadline)
                throw new Error(`No ${JSON.stringify(type)} event within ${timeoutMs} ms; events: ${JSON.stringify(this.events.map((e) => e.type))}`);
            await new Promise<void>((resolve) => {
                this.waiters.push(resolve);
                setTimeout(resolve, 100);
            });
        }
    }

    /** Closes from the client side, as a client that goes away. */
    close(): void {
        this.socket.close();
    }
}

/** What a scripted upstream request handler receives. */
export interface UpstreamRequest {
    method: string,
    url: string,
    headers: http.IncomingHttpHeaders,
    body: Record<string, unknown>
}

/** A scripted OpenAI-compatible upstream on a free loopback port: each request goes to `handle`. */
export interface ScriptedUpstream {
    /** Its base URL, `http://127.0.0.1:PORT/v1`. */
    url: string,
    requests: UpstreamRequest[],
    /** Requests whose connection the client (the proxy) closed before the answer ended. */
    aborted: number
}

/** Starts a scripted upstream, closed when the test ends (its open connections too). */
export async function startScriptedUpstream(t: Test,
    handle: (request: UpstreamRequest, response: http.ServerResponse) => void | Promise<void>): Promise<ScriptedUpstream> {
    const upstream: ScriptedUpstream = {url: "", requests: [], aborted: 0};
    const server = http.createServer((request, response) => {
        let text = "";
        request.on("data", (chunk: Buffer) => (text += chunk));
        request.on("end", () => {
            const scripted: UpstreamRequest = {method: request.method!, url: request.url!, headers: request.headers, body: text.length > 0 ? JSON.parse(text) : {}};
            upstream.requests.push(scripted);
            response.on("close", () => {
                if (!response.writableFinished)
                    upstream.aborted++;
            });
            void handle(scripted, response);
        });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    t.teardown(() => new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
    }));
    upstream.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    return upstream;
}

/** An OpenAI chat completion chunk with one choice's content delta. */
export function contentChunk(content: string, index = 0, finishReason: string | null = null): object {
    return {id: "chatcmpl-upstream", object: "chat.completion.chunk", created: 1, model: "upstream-model",
        choices: [{index, delta: {content}, logprobs: null, finish_reason: finishReason}]};
}

/**
 * Writes server-sent events for the chunks (one per `delayMs`), then `[DONE]` unless told not to. With `holdOpen` the
 * answer is left open after them, as a server's that is still generating (until the client closes it, or for 10 s).
 */
export async function writeSse(response: http.ServerResponse, chunks: readonly object[], options: {delayMs?: number, done?: boolean, holdOpen?: boolean} = {}): Promise<void> {
    response.writeHead(200, {"content-type": "text/event-stream"});
    for (const chunk of chunks) {
        if (response.destroyed)
            return;
        response.write(`data: ${JSON.stringify(chunk)}\n\n`);
        if (options.delayMs != null)
            await new Promise((resolve) => setTimeout(resolve, options.delayMs));
    }
    if (options.holdOpen === true) {
        // it still ends after 10 s: a client that never closes it fails its test instead of hanging it
        setTimeout(() => response.end(), 10_000).unref();
        return;
    }
    if (options.done !== false)
        response.write("data: [DONE]\n\n");
    response.end();
}
