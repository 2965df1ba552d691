import type {ReadableStreamDefaultReader, ReadableStreamReadResult} from "node:stream/web";
import {createParser} from "eventsource-parser";
import {ApiError} from "./ApiError.js";
import type {ResolvedServerOptions} from "./serverOptions.js";

/** Most characters of one server-sent event (or an unterminated line) read from the upstream. */
const MAX_EVENT_CHARS = 8 << 20;
/** Most bytes of an upstream answer that is not streamed (a whole chat completion). */
const MAX_ANSWER_BYTES = 64 << 20;
/** Most bytes of an upstream error body read (for its message). */
const MAX_ERROR_BYTES = 64 << 10;

/** The upstream's part of the options. */
type UpstreamOptions = Pick<ResolvedServerOptions, "upstream" | "upstreamKey" | "upstreamTimeout" | "apiKey">;

/**
 * The Authorization header for the upstream: `upstreamKey` when set; else the client's own header, unless the
 * client's header carries this server's key (`apiKey`), which must never travel on.
 */
export function upstreamAuthorization(options: UpstreamOptions, clientAuthorization: string | undefined): string | undefined {
    if (options.upstreamKey != null)
        return `Bearer ${options.upstreamKey}`;
    return options.apiKey != null ? undefined : clientAuthorization;
}

/**
 * Posts a JSON body to the upstream and waits for its answer's headers (at most `upstreamTimeout`).
 * @param signal - aborts the request (the client went away, or the guard stopped the answer)
 * @returns the response, when its status is 2xx
 * @throws ApiError: 502 when the upstream cannot be reached or fails (5xx, said with its message), 504 when it does
 *   not answer in time, and the upstream's own 4xx status and error (the request's fault, not the proxy's)
 */
export async function postUpstream(options: UpstreamOptions, path: string, body: unknown, clientAuthorization: string | undefined,
    signal: AbortSignal): Promise<Response> {
    const url = upstreamUrl(options, path);
    const authorization = upstreamAuthorization(options, clientAuthorization);
    // the timeout covers the wait for the answer's headers; the body's chunks each have their own (readUpstreamChunks)
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(new Error(`no answer within ${options.upstreamTimeout} ms`)), options.upstreamTimeout);
    let response: Response;
    try {
        response = await fetch(url, {
            method: "POST", body: JSON.stringify(body), signal: AbortSignal.any([signal, timeout.signal]),
            headers: {"content-type": "application/json", accept: "application/json, text/event-stream", ...(authorization != null ? {authorization} : {})}
        });
    } catch (error) {
        throw fetchError(error, signal, options.upstreamTimeout, timeout.signal);
    } finally {
        clearTimeout(timer);
    }
    if (response.ok)
        return response;
    const text = await readText(response, options, signal, MAX_ERROR_BYTES, true).catch(() => "");
    const upstreamError = parseErrorBody(text);
    if (response.status >= 400 && response.status < 500)
        throw new ApiError(response.status, upstreamError?.message ?? (text.slice(0, 500) || `the upstream answered ${response.status}`),
            upstreamError?.type ?? "invalid_request_error", upstreamError?.code ?? null, upstreamError?.param ?? null);
    throw new ApiError(502, `The upstream LLM server answered ${response.status}: ${upstreamError?.message ?? (text.slice(0, 500) || response.statusText)}`,
        "upstream_error", "upstream_error");
}

/**
 * The upstream's models (`GET /models`), for `/v1/models` behind the proxy; none when it cannot say (within the
 * timeout), since the guard's own list still answers.
 */
export async function fetchUpstreamModels(options: UpstreamOptions, clientAuthorization: string | undefined): Promise<unknown[]> {
    const authorization = upstreamAuthorization(options, clientAuthorization);
    try {
        const response = await fetch(upstreamUrl(options, "/models"), {
            signal: AbortSignal.timeout(Math.min(options.upstreamTimeout, 5000)),
            headers: authorization != null ? {authorization} : {}
        });
        const body = await response.json() as {data?: unknown};
        return response.ok && Array.isArray(body.data) ? body.data : [];
    } catch {
        return [];
    }
}

/**
 * The upstream's answer that was not streamed, as JSON: each read waits at most `upstreamTimeout`, and the body may be
 * at most 64 MiB.
 * @throws ApiError (502) for a body that is too large or not JSON; (504) for one that stalls
 */
export async function readUpstreamJson(response: Response, options: UpstreamOptions, signal: AbortSignal): Promise<unknown> {
    const text = await readText(response, options, signal, MAX_ANSWER_BYTES, false);
    try {
        return JSON.parse(text);
    } catch (error) {
        throw new ApiError(502, `The upstream's answer is not JSON: ${(error as Error).message}`, "upstream_error", "upstream_malformed");
    }
}

/** A body as text, read within the timeout per read; over `maxBytes` it fails, or (`truncate`) ends there. */
async function readText(response: Response, options: UpstreamOptions, signal: AbortSignal, maxBytes: number, truncate: boolean): Promise<string> {
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    let bytes = 0;
    try {
        for (;;) {
            const {done, value} = await readWithin(reader as ReadableStreamDefaultReader<Uint8Array>, options.upstreamTimeout, signal);
            if (done)
                return text + decoder.decode();
            bytes += value.byteLength;
            if (bytes > maxBytes) {
                if (truncate)
                    return text;
                throw new ApiError(502, `The upstream's answer is over ${maxBytes} bytes`, "upstream_error", "upstream_malformed");
            }
            text += decoder.decode(value, {stream: true});
        }
    } finally {
        await reader.cancel().catch(() => undefined);
    }
}

/**
 * Reads the upstream's server-sent events as JSON chunks until `data: [DONE]`. Every read waits at most
 * `upstreamTimeout` for the next bytes.
 * @throws ApiError (502) for a chunk that is not JSON, an error event, or a stream that ends before `[DONE]` and before
 *   every choice finished; ApiError (504) when the upstream goes quiet for longer than the timeout
 */
export async function* readUpstreamChunks(response: Response, options: UpstreamOptions, signal: AbortSignal): AsyncGenerator<Record<string, unknown>> {
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    const events: Array<{data: string, event?: string}> = [];
    let parseError: Error | null = null;
    const parser = createParser({
        onEvent: (event) => void events.push(event),
        onError: (error) => {
            if (error.type === "max-buffer-size-exceeded")
                parseError = error;
        },
        maxBufferSize: MAX_EVENT_CHARS
    });
    const unfinished = new Set<number>();
    try {
        for (;;) {
            const {done, value} = await readWithin(reader, options.upstreamTimeout, signal);
            if (done) {
                if (unfinished.size > 0 || events.length > 0)
                    throw new ApiError(502, "The upstream's stream ended before the answer was complete (no [DONE] and " +
                        `${unfinished.size} choice${unfinished.size === 1 ? "" : "s"} without a finish_reason)`, "upstream_error", "upstream_stream_cut");
                return;
            }
            parser.feed(value);
            if (parseError != null)
                throw new ApiError(502, `The upstream sent a server-sent event over ${MAX_EVENT_CHARS} characters`, "upstream_error", "upstream_malformed");
            while (events.length > 0) {
                const event = events.shift()!;
                if (event.data === "[DONE]")
                    return;
                let chunk: unknown;
                try {
                    chunk = JSON.parse(event.data);
                } catch {
                    throw new ApiError(502, `The upstream sent a stream event that is not JSON: ${JSON.stringify(event.data.slice(0, 200))}`,
                        "upstream_error", "upstream_malformed");
                }
                if (chunk == null || typeof chunk !== "object" || Array.isArray(chunk))
                    throw new ApiError(502, `The upstream sent a stream event that is not a JSON object: ${JSON.stringify(event.data.slice(0, 200))}`,
                        "upstream_error", "upstream_malformed");
                const object = chunk as Record<string, unknown>;
                if (object.error != null || event.event === "error") {
                    const upstreamError = parseErrorBody(event.data);
                    throw new ApiError(502, `The upstream failed mid-stream: ${upstreamError?.message ?? event.data.slice(0, 500)}`, "upstream_error", "upstream_error");
                }
                for (const choice of Array.isArray(object.choices) ? object.choices as Array<Record<string, unknown>> : []) {
                    if (typeof choice?.index !== "number")
                        continue;
                    if (choice.finish_reason != null)
                        unfinished.delete(choice.index);
                    else
                        unfinished.add(choice.index);
                }
                yield object;
            }
        }
    } finally {
        await reader.cancel().catch(() => undefined);
    }
}

/** One read, failing with a 504 when nothing arrives within `timeoutMs`. */
async function readWithin<T>(reader: ReadableStreamDefaultReader<T>, timeoutMs: number, signal: AbortSignal): Promise<ReadableStreamReadResult<T>> {
    let timer: NodeJS.Timeout | undefined;
    const quiet = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ApiError(504, `The upstream sent nothing for ${timeoutMs} ms mid-answer`, "upstream_error", "upstream_timeout")), timeoutMs);
    });
    try {
        return await Promise.race([reader.read(), quiet]);
    } catch (error) {
        if (error instanceof ApiError || signal.aborted)
            throw error;
        throw new ApiError(502, `The upstream's stream broke: ${describeCause(error)}`, "upstream_error", "upstream_stream_cut");
    } finally {
        clearTimeout(timer);
    }
}

/** OpenAI's `{error: {message, type, param, code}}` (or llama.cpp's similar shape) from a body, if it is one. */
function parseErrorBody(text: string): {message?: string, type?: string, code?: string, param?: string} | null {
    try {
        const body = JSON.parse(text) as {error?: unknown};
        if (body?.error == null)
            return null;
        if (typeof body.error === "string")
            return {message: body.error};
        const error = body.error as Record<string, unknown>;
        const text_ = (value: unknown) => value == null ? undefined : String(value);
        return {message: text_(error.message), type: text_(error.type), code: text_(error.code), param: text_(error.param)};
    } catch {
        return null;
    }
}

/** The URL of an upstream path: the base URL's path, then `path` (its query, if any, kept). */
function upstreamUrl(options: UpstreamOptions, path: string): URL {
    const url = new URL(options.upstream!.href);
    url.pathname = url.pathname.replace(/\/+$/, "") + path;
    return url;
}

// (the upstream's address is the operator's business: the client hears what went wrong, not where)
function fetchError(error: unknown, signal: AbortSignal, timeoutMs: number, timeout: AbortSignal): unknown {
    if (signal.aborted)
        return signal.reason;
    if (timeout.aborted)
        return new ApiError(504, `The upstream LLM server did not answer within ${timeoutMs} ms`, "upstream_error", "upstream_timeout");
    return new ApiError(502, `The upstream LLM server could not be reached: ${describeCause(error)}`, "upstream_error", "upstream_unreachable");
}

/** fetch's errors put the reason (ECONNREFUSED, a reset) in `cause`. */
function describeCause(error: unknown): string {
    const cause = (error as {cause?: {code?: string, message?: string}})?.cause;
    if (cause?.code != null)
        return `${cause.code}${cause.message != null && !cause.message.includes(cause.code) ? ` (${cause.message})` : ""}`;
    if (cause?.message != null)
        return cause.message;
    return error instanceof Error ? error.message : String(error);
}
