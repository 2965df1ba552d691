import {describeValue} from "../conversation/messages.js";
import type {GenGuard} from "../gen/GenGuard.js";
import type {GenMode} from "../gen/types.js";
import type {GpuOption} from "../native/loadAddon.js";
import {KV_CACHE_TYPES} from "../native/AddonTypes.js";
import type {KvCacheType} from "../native/AddonTypes.js";
import {integerOption, oneOfOption, stringOption} from "../options.js";
import type {StreamGuard} from "../stream/StreamGuard.js";
import {resolveServerPolicy} from "./serverPolicy.js";
import type {ResolvedServerPolicy, ServerPolicy} from "./serverPolicy.js";

/** Options of the qwenguard server ({@link createServer}) and of its fastify plugin. */
export interface QwenguardServerOptions {
    /**
     * Models to load, as files or names (`gen-0.6b`, …: from the cache, pulled when missing): at most one Gen and one
     * Stream model (told apart by their metadata).
     */
    models?: readonly string[],
    /** Or a Gen model loaded by the caller; the server does not free it. */
    gen?: GenGuard,
    /** Or a Stream model loaded by the caller; the server does not free it. */
    stream?: StreamGuard,
    /** CPU threads of each model; default: all cores. */
    threads?: number,
    /** Gen: tokens per request; Stream: KV cells of all its sessions together (each session's KV share is this divided
     * by `maxSessions`). Default: the model's (StreamGuard's `contextSize`). */
    contextSize?: number,
    /** The llama.cpp flavour; default `"auto"`. */
    gpu?: GpuOption,
    /** Gen: requests judged at once per target (prompt, response), in parallel sequences; default 1. */
    parallel?: number,
    /** Stream: sessions at once, live streams and one-shot judgements together; default 8. */
    maxSessions?: number,
    /** Stream: the element type of the KV cache's keys, `"f16"` (default) or `"q8_0"` (see StreamGuard's `cacheTypeK`), for
     * a Stream model the server loads (a `stream` guard passed in keeps its own). */
    cacheTypeK?: KvCacheType,
    /** Stream: the element type of the KV cache's values, `"f16"` (default) or `"q8_0"`, which turns flash attention on
     * (llama.cpp quantizes values only with it; see StreamGuard's `cacheTypeV`). */
    cacheTypeV?: KvCacheType,
    /** Load each model file in a child process first, for files you do not trust (see `isolate` of GenGuard / StreamGuard). */
    isolate?: boolean,
    /**
     * Stream: most tokens one session may hold (conversation and response), at most its KV share; default: the share
     * (`contextSize / maxSessions`), or half of the pool for a StreamGuard passed in with kvLayout `"shared"`.
     */
    maxSessionTokens?: number,
    /** Work that may wait for a busy model (per model) before the server answers 429; default 64. */
    maxQueue?: number,
    /** The default policy of requests that name none; default `"strict"`. */
    policy?: ServerPolicy,
    /** The default Gen mode; default `"score"`. */
    mode?: GenMode,
    /** Clients must send `Authorization: Bearer <apiKey>` (all routes but `/health`). Default: none. */
    apiKey?: string,
    /**
     * An OpenAI-compatible LLM server to guard (its base URL, as OpenAI clients take it: `http://127.0.0.1:8081/v1`;
     * a URL without a path gets `/v1`): enables the guard proxy `POST /v1/chat/completions`.
     */
    upstream?: string,
    /** The upstream's API key; default: the client's Authorization header passes through (unless `apiKey` is set, which is the server's own). */
    upstreamKey?: string,
    /** Milliseconds the upstream may take to answer, and then between two streamed chunks; default 60,000. */
    upstreamTimeout?: number,
    /** Milliseconds a live stream session may stay without a message from its client; default 300,000. */
    streamIdleTimeout?: number,
    /**
     * Web origins (`https://app.example.com`, or `*`) whose pages may open live stream sessions. A browser says which
     * page opens a WebSocket (`Origin`); without this, a page on any site could use a guard on the user's machine.
     * Clients outside a browser send no Origin and are not affected. Default: none.
     */
    allowOrigins?: readonly string[],
    /** Milliseconds the server waits at close for the work in flight before it frees the models; default 10,000. */
    shutdownGrace?: number
}

/** The server's options with defaults filled in and values checked. */
export interface ResolvedServerOptions {
    maxQueue: number,
    /** null: the default, decided once the Stream model is loaded. */
    maxSessionTokens: number | null,
    /** The Stream model's KV cache element types. */
    cacheTypeK: KvCacheType,
    cacheTypeV: KvCacheType,
    policy: ResolvedServerPolicy,
    mode: GenMode,
    apiKey: string | null,
    upstream: URL | null,
    upstreamKey: string | null,
    upstreamTimeout: number,
    streamIdleTimeout: number,
    allowOrigins: readonly string[],
    shutdownGrace: number
}

const MAX_TIMEOUT = 24 * 3600 * 1000;

/**
 * Checks the server options and fills in the defaults.
 * @throws TypeError naming the option, what was expected and what was received
 */
export function resolveServerOptions(options: QwenguardServerOptions): ResolvedServerOptions {
    if (options == null || typeof options !== "object")
        throw new TypeError(`Expected an options object {models?, gen?, stream?, upstream?, apiKey?, …} but received ${describeValue(options)}`);
    if (options.models != null && (!Array.isArray(options.models) || options.models.some((model) => typeof model !== "string" || model.length === 0)))
        throw new TypeError(`Expected an array of model files or model names for "models" but received ${describeValue(options.models)}`);
    if ((options.models?.length ?? 0) === 0 && options.gen == null && options.stream == null)
        throw new TypeError('Expected a model to serve: "models" (files), "gen" or "stream" (loaded guards)');
    let policy: ResolvedServerPolicy;
    try {
        policy = resolveServerPolicy(options.policy ?? "strict");
    } catch (error) {
        throw new TypeError((error as Error).message);
    }
    return {
        maxQueue: integerOption("maxQueue", options.maxQueue ?? 64, 0, 1 << 20),
        maxSessionTokens: options.maxSessionTokens == null ? null : integerOption("maxSessionTokens", options.maxSessionTokens, 16, 1 << 22),
        cacheTypeK: oneOfOption("cacheTypeK", options.cacheTypeK ?? "f16", KV_CACHE_TYPES),
        cacheTypeV: oneOfOption("cacheTypeV", options.cacheTypeV ?? "f16", KV_CACHE_TYPES),
        policy,
        mode: oneOfOption<GenMode>("mode", options.mode ?? "score", ["score", "generate"]),
        apiKey: options.apiKey == null ? null : stringOption("apiKey", options.apiKey),
        upstream: options.upstream == null ? null : upstreamUrl(options.upstream),
        upstreamKey: options.upstreamKey == null ? null : stringOption("upstreamKey", options.upstreamKey),
        upstreamTimeout: integerOption("upstreamTimeout", options.upstreamTimeout ?? 60_000, 1, MAX_TIMEOUT),
        streamIdleTimeout: integerOption("streamIdleTimeout", options.streamIdleTimeout ?? 300_000, 1, MAX_TIMEOUT),
        allowOrigins: origins(options.allowOrigins),
        shutdownGrace: integerOption("shutdownGrace", options.shutdownGrace ?? 10_000, 0, MAX_TIMEOUT)
    };
}

/** The upstream's base URL: http(s) only; no path means `/v1`; no trailing slash. */
function upstreamUrl(value: unknown): URL {
    let url: URL;
    try {
        url = new URL(stringOption("upstream", value));
    } catch (error) {
        if (error instanceof TypeError && error.message.startsWith("Expected"))
            throw error;
        throw new TypeError(`Expected an http:// or https:// URL for "upstream" but received ${describeValue(value)}`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:")
        throw new TypeError(`Expected an http:// or https:// URL for "upstream" but received ${describeValue(value)}`);
    if (url.pathname === "/")
        url.pathname = "/v1";
    url.pathname = url.pathname.replace(/\/+$/, "");
    return url;
}

function origins(value: unknown): readonly string[] {
    if (value == null)
        return [];
    if (!Array.isArray(value) || value.some((origin) => typeof origin !== "string" || !(origin === "*" || /^https?:\/\/[^/]+$/.test(origin))))
        throw new TypeError(`Expected an array of origins ("https://host[:port]" or "*") for "allowOrigins" but received ${describeValue(value)}`);
    return value as string[];
}
