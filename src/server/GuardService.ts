import {resolveModel} from "../hub/resolveModel.js";
import path from "node:path";
import {GenGuard} from "../gen/GenGuard.js";
import {readGuardVariant} from "../gen/readGuardVariant.js";
import type {GenMode} from "../gen/types.js";
import type {Message} from "../conversation/messages.js";
import type {JudgeResult} from "../moderation/Judge.js";
import {genResult, streamPromptResult, streamPromptRule, streamResponseResult} from "../moderation/judgeResults.js";
import {StreamGuard} from "../stream/StreamGuard.js";
import type {StreamSession} from "../stream/StreamSession.js";
import type {TokenVerdict} from "../stream/types.js";
import {AdmissionQueue} from "../concurrency/AdmissionQueue.js";
import type {ServerMetrics} from "./ServerMetrics.js";
import type {QwenguardServerOptions} from "./serverOptions.js";
import type {ResolvedServerPolicy} from "./serverPolicy.js";
import type {KvCacheType} from "../native/AddonTypes.js";

/** A model the server judges with. */
export interface ServedModel<Guard> {
    /** The name clients give as `model`: the file's name without `.gguf`. */
    id: string,
    variant: "gen" | "stream",
    path: string,
    guard: Guard,
    /** Bounds the work on this model: its slots, then a bounded wait. */
    queue: AdmissionQueue,
    /** Whether the server loaded it (and so frees it when it closes). */
    owned: boolean
}

/** What the server loads, and how: the server's model options, with the queue bound resolved. */
export type GuardServiceOptions = Pick<QwenguardServerOptions, "models" | "gen" | "stream" | "threads" | "contextSize" | "gpu" | "parallel" | "maxSessions" | "isolate"> & {
    maxQueue: number,
    maxSessionTokens: number | null,
    cacheTypeK: KvCacheType,
    cacheTypeV: KvCacheType
};

/** The native judgement of a conversation: the prompt verdict and/or the response verdict. */
export interface ConversationJudgement {
    prompt: JudgeResult | null,
    response: (JudgeResult & {tokens?: TokenVerdict[]}) | null,
    /** Whether either is flagged. */
    flagged: boolean
}

/** A live Stream session holding a model slot; `close` frees both (safe to call twice). */
export interface HeldSession {
    session: StreamSession,
    model: ServedModel<StreamGuard>,
    close: () => Promise<void>
}

/**
 * The models behind a server: loads them (in the background, so the server can answer `/health` with "loading"),
 * bounds the work on each with an {@link AdmissionQueue}, judges, and frees what it loaded when it closes.
 */
export class GuardService {
    gen: ServedModel<GenGuard> | null = null;
    stream: ServedModel<StreamGuard> | null = null;
    /** `loading` until every model is loaded; `failed` with {@link loadError} when one could not be. */
    state: "loading" | "ready" | "failed" | "closed" = "loading";
    loadError: Error | null = null;
    /** Settles when the models are loaded (rejects with the load error). */
    readonly loaded: Promise<void>;

    constructor(private readonly options: GuardServiceOptions, private readonly metrics: ServerMetrics) {
        this.loaded = this.load();
        this.loaded.catch(() => undefined); // observed through state and /health; callers may await it
    }

    /** Most tokens one Stream session holds: the option, else the session's KV share (half of the pool when the
     * sessions share one). */
    get sessionTokens(): number {
        const {guard} = this.stream!;
        const pooled = guard.options.kvLayout === "shared" && guard.options.maxSessions > 1;
        return this.options.maxSessionTokens ?? (pooled ? Math.floor(guard.options.contextSize / 2) : guard.sessionTokenLimit);
    }

    /** The loaded models. */
    get models(): Array<ServedModel<GenGuard> | ServedModel<StreamGuard>> {
        return [this.gen, this.stream].filter((model) => model != null);
    }

    /**
     * The model a request names, or the default: Gen when loaded (the whole-text judge), else Stream.
     * @param name - a model id, `gen` or `stream`, or undefined
     * @returns null when no loaded model has that name
     */
    find(name: string | undefined, prefer: "gen" | "stream" = "gen"): ServedModel<GenGuard> | ServedModel<StreamGuard> | null {
        if (name == null)
            return prefer === "gen" ? this.gen ?? this.stream : this.stream ?? this.gen;
        return this.models.find((model) => model.id === name || model.variant === name) ?? null;
    }

    /**
     * Judges one text as a user prompt.
     * @param signal - the client went away: a judgement still waiting for a slot leaves the queue
     */
    async judgePrompt(model: ServedModel<GenGuard> | ServedModel<StreamGuard>, text: string, policy: ResolvedServerPolicy,
        mode: GenMode, signal?: AbortSignal): Promise<JudgeResult> {
        const messages: Message[] = [{role: "user", content: text}];
        return (await this.judge(model, messages, policy, mode, "last", false, signal)).prompt!;
    }

    /**
     * Judges a conversation: the last user message and, when an assistant message follows it, that response
     * (`targets: "both"`), or only the last message (`"last"`). Gen judges the two in parallel sequences; Stream reads
     * both from one pass (and `tokens` adds every response token's verdict).
     */
    async judge(model: ServedModel<GenGuard> | ServedModel<StreamGuard>, messages: Message[], policy: ResolvedServerPolicy, mode: GenMode,
        targets: "both" | "last", tokens: boolean, signal?: AbortSignal): Promise<ConversationJudgement> {
        const endsWithResponse = messages[messages.length - 1]?.role === "assistant";
        let prompt: JudgeResult | null = null;
        let response: ConversationJudgement["response"] = null;
        if (model.variant === "gen") {
            const gen = model as ServedModel<GenGuard>;
            const lastUser = messages.map((message) => message.role).lastIndexOf("user");
            const judgeOne = (conversation: Message[]) => gen.queue.run(async () => {
                const verdict = await gen.guard.moderate(conversation, {mode, policy: policy.gen});
                this.metrics.tokens.inc({model: "gen"}, verdict.usage.promptTokens);
                return genResult(verdict);
            }, signal);
            const wantPrompt = !endsWithResponse || (targets === "both" && lastUser >= 0);
            [prompt, response] = await Promise.all([
                wantPrompt ? judgeOne(endsWithResponse ? messages.slice(0, lastUser + 1) : messages) : null,
                endsWithResponse ? judgeOne(messages) : null
            ]);
        } else {
            const stream = model as ServedModel<StreamGuard>;
            const report = await stream.queue.run(() => stream.guard.moderate(messages, {policy: policy.stream, maxTokens: this.sessionTokens}), signal);
            this.metrics.tokens.inc({model: "stream"}, report.tokens);
            if (report.prompt != null && (!endsWithResponse || targets === "both"))
                prompt = streamPromptResult(report.prompt, streamPromptRule(policy.gen));
            if (report.response != null)
                response = {...streamResponseResult(report.response), ...(tokens ? {tokens: report.response.tokens} : {})};
        }
        for (const result of [prompt, response])
            if (result != null)
                this.metrics.verdict(model.variant, result.target, result.flagged, result.level, result.category);
        return {prompt, response, flagged: prompt?.flagged === true || response?.flagged === true};
    }

    /**
     * Opens a live Stream session once a slot is free (waiting in the bounded queue).
     * @param kind - for the open-sessions gauge: `websocket` or `proxy`
     * @throws QueueFullError when the queue is full; what createSession throws (bad messages, a prompt over the limit)
     */
    async openSession(messages: Message[], policy: ResolvedServerPolicy, thinking: boolean, kind: "websocket" | "proxy",
        signal?: AbortSignal): Promise<HeldSession> {
        return (await this.openSessions(messages, policy, thinking, kind, 1, signal))[0];
    }

    /**
     * Opens `count` sessions of the same conversation (the choices of one answer), their slots taken together.
     * @throws RangeError when `count` is over the Stream model's slots; as {@link openSession}
     */
    async openSessions(messages: Message[], policy: ResolvedServerPolicy, thinking: boolean, kind: "websocket" | "proxy", count: number,
        signal?: AbortSignal): Promise<HeldSession[]> {
        const model = this.stream!;
        const releases = await model.queue.acquireMany(count, signal);
        const held: HeldSession[] = [];
        try {
            for (const release of releases)
                held.push(this.hold(model, await model.guard.createSession({messages, policy: policy.stream, thinking, maxTokens: this.sessionTokens}),
                    release, policy, kind));
        } catch (error) {
            await Promise.allSettled(held.map(({close}) => close()));
            releases.forEach((release) => release());
            throw error;
        }
        return held;
    }

    /** A session and its slot, counted in the metrics until it is closed. */
    private hold(model: ServedModel<StreamGuard>, session: StreamSession, release: () => void, policy: ResolvedServerPolicy,
        kind: "websocket" | "proxy"): HeldSession {
        this.metrics.streamSessions.inc({kind});
        this.metrics.tokens.inc({model: "stream"}, session.tokenCount);
        const promptFlagged = streamPromptRule(policy.gen)(session.promptVerdict.level, session.promptVerdict.probs);
        this.metrics.verdict("stream", "prompt", promptFlagged, session.promptVerdict.level, session.promptVerdict.category);
        const start = session.tokenCount;
        let closed = false;
        const close = async () => {
            if (closed)
                return;
            closed = true;
            const report = session.report();
            this.metrics.tokens.inc({model: "stream"}, session.tokenCount - start);
            if (report.tokens.length > 0)
                this.metrics.verdict("stream", "response", report.flagged, report.flag?.level ?? report.level, report.flag?.category ?? report.category);
            this.metrics.streamSessions.dec({kind});
            try {
                await session.dispose();
            } finally {
                release();
            }
        };
        return {session, model, close};
    }

    /**
     * Frees the models the service loaded, once the work holding or waiting for their slots is done (at most
     * `graceMs`; after that they are freed anyway, and that work fails).
     */
    async close(graceMs: number): Promise<void> {
        if (this.state === "closed")
            return;
        await this.loaded.catch(() => undefined);
        this.state = "closed";
        const deadline = Date.now() + graceMs;
        while (this.models.some(({queue}) => queue.active + queue.depth > 0) && Date.now() < deadline)
            await new Promise((resolve) => setTimeout(resolve, 20));
        for (const model of this.models)
            if (model.owned)
                await model.guard.dispose();
    }

    private async load(): Promise<void> {
        const {options} = this;
        try {
            if (options.gen != null)
                this.gen = this.serve("gen", options.gen.options.model, options.gen, false, 2 * options.gen.options.parallel);
            if (options.stream != null)
                this.stream = this.serve("stream", options.stream.options.model, options.stream, false, options.stream.options.maxSessions);
            for (const model of options.models ?? []) {
                const file = (await resolveModel(model)).path; // a name: from the cache, pulled when missing
                const variant = (await readGuardVariant(file)) ?? "gen"; // community Gen GGUFs carry no qwen3guard keys
                if (variant === "stream-head")
                    throw new Error(`${file} is a Stream head file: pass the Stream backbone GGUF as the model`);
                const kind = variant === "stream-backbone" ? "stream" : "gen";
                if (this[kind] != null)
                    throw new Error(`Expected at most one ${kind === "gen" ? "Gen" : "Stream"} model but received two: ${this[kind].path} and ${path.resolve(file)}`);
                if (kind === "gen") {
                    const guard = await GenGuard.load({model: file, threads: options.threads, contextSize: options.contextSize, gpu: options.gpu,
                        parallel: options.parallel, isolate: options.isolate});
                    this.gen = this.serve("gen", guard.options.model, guard, true, 2 * guard.options.parallel);
                } else {
                    const guard = await StreamGuard.load({model: file, threads: options.threads, contextSize: options.contextSize, gpu: options.gpu,
                        maxSessions: options.maxSessions, isolate: options.isolate, cacheTypeK: options.cacheTypeK, cacheTypeV: options.cacheTypeV,
                        // llama.cpp quantizes the values only with flash attention
                        ...(options.cacheTypeV === "f16" ? {} : {flashAttention: true})});
                    this.stream = this.serve("stream", guard.options.model, guard, true, guard.options.maxSessions);
                }
            }
            if (this.models.length === 0)
                throw new Error("Expected a Gen and/or a Stream model to serve but received none");
            if (this.gen != null && this.gen.id === this.stream?.id) {
                // two files of the same name in different folders: the variant tells them apart
                this.gen.id += "-gen";
                this.stream.id += "-stream";
            }
            this.state = "ready";
        } catch (error) {
            this.state = "failed";
            this.loadError = error instanceof Error ? error : new Error(String(error));
            for (const model of this.models)
                if (model.owned)
                    await model.guard.dispose();
            this.gen = null;
            this.stream = null;
            throw this.loadError;
        }
    }

    private serve<Guard>(variant: "gen" | "stream", file: string, guard: Guard, owned: boolean, slots: number): ServedModel<Guard> {
        const {metrics} = this;
        const queue = new AdmissionQueue(`${variant === "gen" ? "Gen" : "Stream"} model`, slots, this.options.maxQueue, (running, waiting) => {
            metrics.active.set({model: variant}, running);
            metrics.queueDepth.set({model: variant}, waiting);
        }, () => metrics.rejected.inc({model: variant}));
        metrics.active.set({model: variant}, 0);
        metrics.queueDepth.set({model: variant}, 0);
        return {id: path.basename(file).replace(/\.gguf$/i, ""), variant, path: file, guard, queue, owned};
    }
}
