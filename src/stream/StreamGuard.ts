import {existsSync} from "node:fs";
import os from "node:os";
import path from "node:path";
import {GgufValueType, checkLoadable, checkStreamHead, readGguf} from "../../gguf/index.js";
import type {GgufFile} from "../../gguf/index.js";
import {addedTokenIds, plainTextTokenizer} from "../conversation/plainText.js";
import type {TokenizeFunction} from "../conversation/TokenSegments.js";
import {describeValue, validateMessages} from "../conversation/messages.js";
import type {Message} from "../conversation/messages.js";
import {KV_CACHE_TYPES} from "../native/AddonTypes.js";
import type {AddonStreamContext, AddonStreamContextOptions, AddonStreamModel, AddonStreamModelInfo, KvCacheType} from "../native/AddonTypes.js";
import {loadLlamaRuntime} from "../native/loadAddon.js";
import type {GpuOption} from "../native/loadAddon.js";
import {booleanOption, integerOption, oneOfOption, stringOption} from "../options.js";
import {resolveModel} from "../hub/resolveModel.js";
import {AdmissionQueue} from "../concurrency/AdmissionQueue.js";
import {assertLoadsSafely} from "../probe/probeModel.js";
import {resolvePolicy} from "./DecisionRule.js";
import {checkHeadLabels} from "./headVerdicts.js";
import type {HeadLabels} from "./headVerdicts.js";
import {StreamEvaluator} from "./StreamEvaluator.js";
import {monitorStream} from "./monitor.js";
import type {MonitorChunk, MonitorOptions} from "./monitor.js";
import {StreamSession} from "./StreamSession.js";
import type {PolicyOption, ResponseReport, Verdict} from "./types.js";

export interface StreamGuardOptions {
    /**
     * The Stream backbone GGUF (from `qwenguard convert`), or a model name (`stream-0.6b`, `stream-4b:q4_k_m`,
     * `hf:OWNER/REPO`): found in the model cache, or pulled into it first (see pullModel).
     */
    model: string,
    /** Pull a named model that is not in the cache (default true); false: a ModelNotCachedError naming `qwenguard pull`. */
    pull?: boolean,
    /** Its head GGUF; default: the file the backbone names (`qwen3guard.stream.head_file`), beside it. */
    head?: string,
    /** CPU threads; default: all available cores. */
    threads?: number,
    /** Layers offloaded to the GPU; default: all when a GPU flavour is loaded, else 0. */
    gpuLayers?: number,
    /** KV cells of all sessions together, the guard's one KV budget. With `kvLayout` `"per-session"` each session
     * holds at most `contextSize / maxSessions` tokens ({@link StreamGuard.sessionTokenLimit}). Default: twice the
     * model's training context (16,384 cells for Qwen3Guard-Stream: 2,048 a session at 8 sessions, 1.8 GiB at 0.6B)
     * with kvLayout `"per-session"` and several sessions, else the training context. */
    contextSize?: number,
    /** Most sessions open at once; default 8. */
    maxSessions?: number,
    /**
     * How sessions share the KV budget. `"per-session"` (default): each session has a KV stream of its own
     * (`contextSize / maxSessions` cells) and a token's attention runs over its own session's tokens only, so sessions
     * do not slow each other as they grow (0.6B, 2 threads, 8 sessions of ~800 tokens stepped together: 18.8 tokens/s,
     * 2.2× the 8.5 of one shared pool, where they ran slower than one session alone). `"shared"`: one pool of
     * `contextSize` cells that any one session may fill, for a few long sessions; every token then attends over the
     * cells of all sessions (masked).
     */
    kvLayout?: "per-session" | "shared",
    /** Most tokens per llama_decode; default 512. Scored positions go at most 64 per call (llama.cpp keeps a logits
     * row for each). */
    batchSize?: number,
    /**
     * llama.cpp's flash attention. Default: off when the model runs on the CPU (gpuLayers 0 or no GPU flavour), where
     * with it a token's cost grows 3.0× from context 100 to 4,000 instead of 1.47× (0.6B, 2 threads); `true` scores
     * whole responses about 12% faster on a CPU at short contexts. With layers offloaded to a GPU: llama.cpp's own
     * choice ("auto": on where the device supports it). `guard.options.flashAttention` says what was used.
     */
    flashAttention?: boolean,
    /**
     * The element type of the KV cache's keys, as llama.cpp's `--cache-type-k`: `"f16"` (default) or `"q8_0"`, which
     * stores them in 34 bytes a block of 32 values instead of 64, so the same memory holds more cells: at 0.6B a cell
     * takes 86 KiB instead of 112 (keys and values together). It moves the head's probabilities about as much as flash
     * attention does; on a 2-core CPU a step costs the same (the README's "KV cache types").
     */
    cacheTypeK?: KvCacheType,
    /** The element type of the KV cache's values: `"f16"` (default) or `"q8_0"` (with `cacheTypeK` `"q8_0"`, 60 KiB a
     * cell at 0.6B). llama.cpp quantizes values only with flash attention: `"q8_0"` needs `flashAttention: true`, which
     * on a CPU is faster for short sessions and slower for long ones (8 sessions of ~800 tokens: 0.67× f16 without it). */
    cacheTypeV?: KvCacheType,
    /** The llama.cpp flavour node-llama-cpp loads; default `"auto"`. */
    gpu?: GpuOption,
    /**
     * Load the files in a child process first (see {@link probeModel}), for files you do not trust: an abort deep in
     * llama.cpp that the pre-flight check cannot foresee then fails this call with an UnloadableModelError instead of
     * ending the process. Costs a second load. Default false.
     */
    isolate?: boolean
}

/** The options a StreamGuard was loaded with, defaults filled in; `flashAttention` is `"auto"` when llama.cpp decides. */
export type StreamGuardResolvedOptions = Readonly<Required<Omit<StreamGuardOptions, "gpu" | "flashAttention" | "isolate" | "pull">> & {flashAttention: boolean | "auto"}>;

/**
 * Most scored (output) positions per llama_decode call on the CPU. llama.cpp keeps n_vocab floats of logits per output
 * row of a call (151,936 for Qwen3: 600 KiB a row), which a Stream model never reads: 64 rows are 39 MB where a full
 * batch of 512 is 311 MB, at the same speed on a CPU. Offloaded, a call of 64 tokens leaves the GPU idle: scoring 3,534
 * tokens took 376 ms at 64 rows per call and 165 ms at 512 on an H200, so there up to 512 go in one call, for 311 MB
 * of (pinned) host memory (README, "On a GPU"); not more, whatever the batch size.
 */
const CPU_OUTPUT_BATCH_SIZE = 64;
const GPU_OUTPUT_BATCH_SIZE = 512;

/**
 * Tokens per llama.cpp compute graph (n_ubatch). On the CPU, 128 evaluated prompts 8–15% faster than llama.cpp's 512
 * and, with flash attention off, keeps the attention-score buffer (n_kv × ubatch × heads floats) to a quarter; a GPU
 * keeps 512.
 */
const CPU_UBATCH_SIZE = 128;
const GPU_UBATCH_SIZE = 512;

/** Tokens per compute graph of a core context (Stream or Gen): see CPU_UBATCH_SIZE. */
export function coreUbatchSize(batchSize: number, offloaded: boolean): number {
    return Math.min(batchSize, offloaded ? GPU_UBATCH_SIZE : CPU_UBATCH_SIZE);
}

export interface StreamSessionOptions {
    /** The conversation so far, ending with the user turn the response answers. */
    messages: Message[],
    /** Score the response's own `<think>…</think>` reasoning too; default false. */
    thinking?: boolean,
    /** Default `"strict"`. */
    policy?: PolicyOption,
    /**
     * Most tokens the session may hold (the conversation, the assistant header and the response), e.g. so that one
     * session cannot fill a shared pool; default and at most {@link StreamGuard.sessionTokenLimit} (its KV share).
     */
    maxTokens?: number,
    /** Ends the wait for a free session (when `maxSessions` are open, createSession waits until one is disposed): the
     * call then rejects with the signal's reason. */
    signal?: AbortSignal
}

export interface StreamModerationReport {
    /** The verdict of the last user turn; null when the conversation has no user turn. */
    prompt: Verdict | null,
    /** The verdict of the last assistant message after the last user turn; null when there is none. */
    response: ResponseReport | null,
    /** Tokens the model read: the rendered conversation, the assistant header and the response (0 without a user turn). */
    tokens: number
}

/** A Stream model's labels, checked at load. */
export interface StreamLabels {
    query: HeadLabels,
    response: HeadLabels
}

/**
 * Qwen3Guard-Stream on llama.cpp: judges a prompt, then a response token by token while it is generated, with the
 * KV cache reused (constant cost per token). Sessions share one model and one context.
 *
 * @example
 * const guard = await StreamGuard.load({model: "Qwen3Guard-Stream-0.6B.gguf"});
 * const session = await guard.createSession({messages: [{role: "user", content: "hi"}]});
 * for await (const chunk of llmOutput) {
 *     await session.pushText(chunk);
 *     if (session.flag) break;
 * }
 */
export class StreamGuard {
    /** @internal */ readonly _evaluator: StreamEvaluator;
    private disposed = false;
    private readonly sessions = new Map<StreamSession, () => void>();
    /** @internal At most maxSessions open; the others wait, first come first served. */
    readonly _slots: AdmissionQueue;
    /** Aborts the waits for a session when the guard is disposed. */
    private readonly disposing = new AbortController();
    /** Most tokens the native context lets one sequence hold. */
    private readonly sequenceCells: number;

    private constructor(
        /** @internal */ readonly _model: AddonStreamModel,
        /** @internal */ readonly _context: AddonStreamContext,
        readonly info: AddonStreamModelInfo,
        readonly labels: StreamLabels,
        /** @internal The model's tokenizer; with parsing off it never yields an added token. */
        readonly _tokenize: TokenizeFunction,
        readonly options: StreamGuardResolvedOptions,
        /** @internal What the native context was created with. */
        readonly _contextOptions: AddonStreamContextOptions
    ) {
        this._evaluator = new StreamEvaluator(_context);
        this.sequenceCells = _context.sequenceCells();
        this._slots = new AdmissionQueue("StreamGuard's sessions", options.maxSessions, Infinity);
    }

    /**
     * Loads a Stream backbone and its head.
     * @param options - `model` (required), `head`, `threads`, `gpuLayers`, `contextSize`, `maxSessions`, `kvLayout`, `batchSize`,
     * `flashAttention`, `cacheTypeK`, `cacheTypeV`, `gpu`; defaults on {@link StreamGuardOptions}
     * @returns the loaded guard; `guard.options` holds the options as resolved
     * @throws TypeError for a bad option; Error when the files are missing, not a Stream pair, or do not belong together
     * @example
     * const guard = await StreamGuard.load({model: "stream-0.6b.gguf", threads: 4, flashAttention: false});
     */
    static async load(options: StreamGuardOptions): Promise<StreamGuard> {
        if (options == null || typeof options !== "object")
            throw new TypeError("Expected an options object {model, head?, threads?, gpuLayers?, contextSize?} for StreamGuard.load");
        const pull = options.pull != null ? booleanOption("pull", options.pull) : true;
        const cacheTypeK = oneOfOption("cacheTypeK", options.cacheTypeK ?? "f16", KV_CACHE_TYPES);
        const cacheTypeV = oneOfOption("cacheTypeV", options.cacheTypeV ?? "f16", KV_CACHE_TYPES);
        // before any file is read: llama.cpp quantizes values only with flash attention, which is on only when asked for
        if (cacheTypeV !== "f16" && options.flashAttention !== true)
            throw new RangeError(`Expected "flashAttention" true with "cacheTypeV" "${cacheTypeV}" (llama.cpp quantizes the KV cache's values ` +
                `only with flash attention) but received ${options.flashAttention == null ? "none (by default it is off on the CPU, llama.cpp's " +
                "choice on a GPU)" : describeValue(options.flashAttention)}: pass flashAttention: true, or leave cacheTypeV \"f16\"`);
        const model = path.resolve((await resolveModel(stringOption("model", options.model), {pull})).path);
        if (!existsSync(model))
            throw new Error(`Model file ${model} does not exist`);
        const gguf = await readGguf(model);
        const head = options.head != null ? path.resolve(stringOption("head", options.head)) : defaultHeadPath(model, gguf);
        if (!existsSync(head))
            throw new Error(`Head file ${head} does not exist: pass the Stream head GGUF written by \`qwenguard convert\` as "head"`);
        // before llama.cpp sees them: what its loader would abort on, and a head of another model, are errors here
        checkLoadable(gguf);
        checkStreamHead(gguf, await readGguf(head));
        if (options.isolate != null && booleanOption("isolate", options.isolate))
            await assertLoadsSafely(model, {head});

        const {llama, addon} = await loadLlamaRuntime(options.gpu != null ? {gpu: options.gpu} : {});
        const threads = integerOption("threads", options.threads ?? Math.max(1, os.availableParallelism()), 1, 1024);
        const gpuLayers = integerOption("gpuLayers", options.gpuLayers ?? (llama.gpu === false ? 0 : 999), 0, 100000);
        const maxSessions = integerOption("maxSessions", options.maxSessions ?? 8, 1, 256);
        const kvLayout = oneOfOption("kvLayout", options.kvLayout ?? "per-session", ["per-session", "shared"] as const);
        const batchSize = integerOption("batchSize", options.batchSize ?? 512, 1, 65536);
        const offloaded = gpuLayers > 0 && llama.gpu !== false;
        const flashAttention = options.flashAttention != null ? booleanOption("flashAttention", options.flashAttention) : offloaded ? "auto" : false;

        const native = await addon.StreamModel.load({modelPath: model, headPath: head, gpuLayers, useMmap: true});
        try {
            const info = native.info();
            const labels = {
                query: checkHeadLabels(info.queryRiskLabels, info.queryCategoryLabels, "query"),
                response: checkHeadLabels(info.responseRiskLabels, info.responseCategoryLabels, "response")
            };
            const defaultSize = kvLayout === "per-session" && maxSessions > 1 ? 2 * info.trainContextSize : info.trainContextSize;
            const contextSize = integerOption("contextSize", options.contextSize ?? defaultSize, 16, 1 << 22);
            if (kvLayout === "per-session" && contextSize < 16 * maxSessions)
                throw new RangeError(`Expected "contextSize" of at least 16 cells per session (${16 * maxSessions} for ${maxSessions} sessions) ` +
                    `with kvLayout "per-session" but received ${contextSize}: pass a larger contextSize or fewer maxSessions`);
            const contextOptions: AddonStreamContextOptions = {
                contextSize, maxSequences: maxSessions, batchSize, ubatchSize: coreUbatchSize(batchSize, offloaded),
                outputBatchSize: Math.min(batchSize, offloaded ? GPU_OUTPUT_BATCH_SIZE : CPU_OUTPUT_BATCH_SIZE), threads,
                flashAttention: flashAttention === "auto" ? "auto" : flashAttention ? "on" : "off", stopAfterHidden: true,
                kvLayout: kvLayout === "per-session" ? "per-sequence" : "shared", cacheTypeK, cacheTypeV
            };
            const context = await native.createContext(contextOptions);
            const tokenize = plainTextTokenizer((text, special) => native.tokenize(text, special), addedTokenIds(gguf));
            return new StreamGuard(native, context, info, labels, tokenize,
                {model, head, threads, gpuLayers, contextSize, maxSessions, kvLayout, batchSize, flashAttention, cacheTypeK, cacheTypeV},
                contextOptions);
        } catch (error) {
            await native.dispose();
            throw error;
        }
    }

    /** Most tokens one session can hold: its share of the KV budget (`contextSize / maxSessions` with kvLayout
     * `"per-session"`, else `contextSize`), capped by the model's training context. */
    get sessionTokenLimit(): number {
        return Math.min(this.sequenceCells, this.info.trainContextSize);
    }

    /** @internal Where {@link sessionTokenLimit} comes from, for error messages. */
    _sessionLimitSource(): string {
        const {contextSize, maxSessions, kvLayout} = this.options;
        const share = kvLayout === "per-session" && maxSessions > 1 ? `contextSize ${contextSize} / maxSessions ${maxSessions}` : `contextSize ${contextSize}`;
        return `${share}, model context ${this.info.trainContextSize}`;
    }

    /**
     * Opens a session: renders and scores the conversation (the prompt verdict), then waits for response tokens.
     * When `maxSessions` sessions are open it first waits (first come first served) until one is disposed.
     * @throws TypeError for bad messages or options; ContextLimitError when the prompt can never fit; the signal's
     *   reason when `signal` aborts the wait; Error when the guard is disposed meanwhile
     */
    async createSession(options: StreamSessionOptions): Promise<StreamSession> {
        this.assertOpen();
        if (options == null || typeof options !== "object")
            throw new TypeError("Expected an options object {messages, thinking?, policy?} for createSession");
        const messages = validateMessages(options.messages);
        if (messages.length === 0 || messages[messages.length - 1].role !== "user")
            throw new TypeError('Expected "messages" to end with a user message (the turn the response answers)');
        const thinking = booleanOption("thinking", options.thinking ?? false);
        const policy = resolvePolicy(options.policy);
        const maxTokens = options.maxTokens == null ? null : integerOption("maxTokens", options.maxTokens, 1, 1 << 30);
        if (options.signal != null && !(options.signal instanceof AbortSignal))
            throw new TypeError(`Expected an AbortSignal for "signal" but received ${describeValue(options.signal)}`);
        const release = await this._slots.acquire(options.signal == null ? this.disposing.signal : AbortSignal.any([options.signal, this.disposing.signal]));
        try {
            this.assertOpen();
            const session = await StreamSession._open(this, messages, thinking, policy, maxTokens);
            this.sessions.set(session, release);
            return session;
        } catch (error) {
            release();
            throw error;
        }
    }

    /**
     * Judges a finished conversation in one call: the prompt verdict of the last user turn and, when an assistant
     * message follows it, the response report (every token scored, the decision rule applied).
     * @throws TypeError when anything but one assistant message (the response) follows the last user message
     */
    async moderate(messages: Message[], options: {thinking?: boolean, policy?: PolicyOption, maxTokens?: number} = {}): Promise<StreamModerationReport> {
        const checked = validateMessages(messages);
        const lastUser = checked.map((message) => message.role).lastIndexOf("user");
        if (lastUser < 0)
            return {prompt: null, response: null, tokens: 0};
        const after = checked.slice(lastUser + 1);
        if (after.length > 1 || after.some((message) => message.role !== "assistant"))
            throw new TypeError('Expected "messages" to end with a user message (prompt moderation) or with one assistant message after it ' +
                `(response moderation) but the last user message is followed by ${after.map((message) => message.role).join(", ")}`);
        const session = await this.createSession({...options, messages: checked.slice(0, lastUser + 1)});
        try {
            const response = after[0];
            if (response == null)
                return {prompt: session.promptVerdict, response: null, tokens: session.tokenCount};
            await session.pushText(response.content);
            await session.finish();
            return {prompt: session.promptVerdict, response: session.report(), tokens: session.tokenCount};
        } finally {
            await session.dispose();
        }
    }

    /**
     * Guards a response while it is generated: yields its text once judged, and throws
     * {@link UnsafeContentError} the moment the decision rule fires (abort your generator then).
     * @example
     * for await (const text of guard.monitor(llm.stream(prompt), {messages})) process.stdout.write(text);
     */
    monitor(source: AsyncIterable<MonitorChunk> | Iterable<MonitorChunk>, options: MonitorOptions): AsyncGenerator<string, ResponseReport> {
        return monitorStream(this, source, options);
    }

    /** Frees the sessions, the context and the model. */
    async dispose(): Promise<void> {
        if (this.disposed)
            return;
        this.disposed = true;
        this.disposing.abort(new Error("This StreamGuard has been disposed"));
        for (const session of [...this.sessions.keys()])
            await session.dispose();
        await this._context.dispose();
        await this._model.dispose();
    }

    /** @internal */
    _forget(session: StreamSession): void {
        this.sessions.get(session)?.();
        this.sessions.delete(session);
    }

    /** @internal */
    assertOpen(): void {
        if (this.disposed)
            throw new Error("This StreamGuard has been disposed");
    }
}

/** The head a Stream backbone names (`qwen3guard.stream.head_file`, beside it). */
export function defaultHeadPath(model: string, {metadata}: GgufFile): string {
    const variant = metadata.find("qwen3guard.variant", GgufValueType.STRING);
    if (variant !== "stream-backbone")
        throw new Error(`Model ${model} is not a Qwen3Guard-Stream backbone (qwen3guard.variant is ${variant == null ? "missing" : JSON.stringify(variant)}): ` +
            "convert a Qwen3Guard-Stream checkpoint with `qwenguard convert`, or use GenGuard for Gen models");
    const headFile = metadata.find("qwen3guard.stream.head_file", GgufValueType.STRING);
    if (headFile == null)
        throw new Error(`Model ${model} names no head file (qwen3guard.stream.head_file): pass "head"`);
    return path.join(path.dirname(model), headFile);
}
