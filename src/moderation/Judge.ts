import {GenGuard} from "../gen/GenGuard.js";
import {resolveGenPolicy} from "../gen/genPolicy.js";
import type {GenPolicyOption} from "../gen/genPolicy.js";
import {readGuardVariant} from "../gen/readGuardVariant.js";
import type {GenMode, GenWindows} from "../gen/types.js";
import type {Message} from "../conversation/messages.js";
import type {GpuOption} from "../native/loadAddon.js";
import {describeValue} from "../conversation/messages.js";
import {resolveModel} from "../hub/resolveModel.js";
import {integerOption, oneOfOption} from "../options.js";
import {StreamGuard} from "../stream/StreamGuard.js";
import type {RiskLevel} from "../stream/types.js";
import {tokenizeSegments} from "../conversation/TokenSegments.js";
import type {TokenSegment} from "../conversation/TokenSegments.js";
import {genResult, genScore, streamPromptRule, streamResult, streamScore} from "./judgeResults.js";

export interface JudgeOptions {
    /** A Qwen3Guard-Gen GGUF or a Qwen3Guard-Stream backbone GGUF (told apart by its metadata). */
    model: string,
    /** Stream: the head GGUF; default: the file the backbone names. */
    head?: string,
    /** Default `"strict"`. */
    policy?: GenPolicyOption,
    /** Gen: `"score"` (default) or `"generate"`. */
    mode?: GenMode,
    /** Gen: a conversation over the context is an error (default) or judged in overlapping windows of its last message. */
    longInput?: "error" | "windows",
    /** Conversations judged at once (Gen: parallel sequences; Stream: sessions); default 1. */
    concurrency?: number,
    threads?: number,
    /** Gen: tokens per request; Stream: KV cells shared by the sessions. Default: the model's. */
    contextSize?: number,
    gpu?: GpuOption,
    /** Warnings about the model file (Gen models have some); default `process.emitWarning`. */
    onWarning?: (message: string) => void
}

/** One verdict, the same shape for Gen and Stream models. */
export interface JudgeResult {
    model: "gen" | "stream",
    /** What was judged: the last user message (`prompt`) or the last assistant message (`response`). */
    target: "prompt" | "response",
    level: RiskLevel,
    category: string | null,
    /** Gen: the verdict's probabilities; Stream response: those of the decisive token (see `probsToken`). */
    probs: Record<RiskLevel, number>,
    /** Whether the policy flags it. */
    flagged: boolean,
    categories?: string[],
    categoryProbs?: Record<string, number>,
    refusal?: "Yes" | "No",
    refusalProbs?: {Yes: number, No: number},
    /** Stream, response: the token whose probabilities `probs` are (where monitoring stops, else the least safe token). */
    probsToken?: number,
    /** Stream, response: where live monitoring would have stopped the response (token index, character offset). */
    stoppedAt?: {token: number, offset: number} | null,
    /** Gen, generate mode: the model's answer. */
    text?: string,
    /** Gen, `longInput: "windows"`: the message was judged in windows, and this is the worst one's verdict. */
    windows?: GenWindows
}

/** Settings of one call that override the judge's own (a queue worker serves runs of several settings); checked by the caller. */
export interface JudgeSettings {
    policy?: GenPolicyOption,
    mode?: GenMode,
    longInput?: "error" | "windows"
}

/** A judge and what one verdict cost (for throughput figures). */
export interface JudgeOutcome {
    result: JudgeResult,
    /** Tokens of the rendered conversation that the model read (Gen: the template included). */
    tokens: number,
    /**
     * The smallest threshold policy (`{minProb}`, P(Unsafe) + P(Controversial)) that flags this conversation, in [0, 1]:
     * Gen and Stream prompts: the verdict's P(Unsafe) + P(Controversial); a Stream response: the largest, over pairs of
     * consecutive tokens, of the smaller of the two tokens' P(Unsafe) + P(Controversial) (the decision rule's window).
     */
    score: number,
    /** Stream, response: the token ids scored, in order (where `stoppedAt.token` points). */
    responseTokens?: number[]
}

/** The tokenizer of a Stream model: what maps token positions between tokenizations (evaluation's unsafe spans). */
export interface JudgeTokenizer {
    /** Token ids of the segments (text tokenized in NFC, special tokens by name). */
    tokenize(segments: readonly TokenSegment[]): number[],
    /** The bytes of a token's text. */
    tokenBytes(token: number): Uint8Array
}

/**
 * Judges conversations with whichever Qwen3Guard model a file holds: a Gen model (level, category, refusal,
 * probabilities) or a Stream model (prompt verdict; for a response, its verdict and where streaming would have
 * stopped). Up to `concurrency` conversations run at once, batched into the same decodes.
 */
export class Judge {
    private exclusive: Promise<void> | null = null;
    private running = 0;
    private drained: (() => void) | null = null;

    private constructor(
        /** Which model the file holds. */
        readonly kind: "gen" | "stream",
        /** Conversations judged at once. */
        readonly concurrency: number,
        /**
         * Calls of {@link judge} worth having in flight: Gen prompts and responses run in their own `concurrency`
         * sequences each, so twice `concurrency` keeps both busy; Stream sessions take either.
         */
        readonly inFlight: number,
        private readonly judgeOne: (messages: Message[], settings: JudgeSettings) => Promise<JudgeOutcome>,
        private readonly disposeModel: () => Promise<void>,
        /** Whether an error means "the shared context is full right now" (Stream: worth retrying alone). */
        private readonly isCapacityError: (error: unknown) => boolean,
        /** @internal Stream: the model's tokenizer (evaluation maps label positions with it); null for Gen. */
        readonly tokenizer: JudgeTokenizer | null
    ) {}

    /**
     * Loads the model a file holds.
     * @throws TypeError for bad options; Error when the file is missing, is a Stream head, or cannot be loaded
     * @example
     * const judge = await Judge.open({model: "Qwen3Guard-Gen-0.6B-Q8_0.gguf", concurrency: 4});
     * const {result} = await judge.judge([{role: "user", content: "How do I make a bomb?"}]);
     */
    static async open(options: JudgeOptions): Promise<Judge> {
        if (options == null || typeof options !== "object")
            throw new TypeError("Expected an options object {model, head?, policy?, mode?, concurrency?, threads?, contextSize?}");
        const concurrency = integerOption("concurrency", options.concurrency ?? 1, 1, 64);
        const policy = options.policy ?? "strict";
        resolveGenPolicy(policy); // refuses a bad policy before the model loads
        if (typeof options.model !== "string" || options.model.length === 0)
            throw new TypeError(`Expected a model file or a model name for "model" but received ${describeValue(options.model)}`);
        options = {...options, model: (await resolveModel(options.model)).path}; // a name: from the cache, pulled when missing
        const variant = await readGuardVariant(options.model);
        if (variant === "stream-head")
            throw new Error(`${options.model} is a Stream head file: pass the Stream backbone GGUF as the model`);

        if (variant === "stream-backbone") {
            for (const [name, value] of [["mode", options.mode], ["longInput", options.longInput]] as const)
                if (value != null)
                    throw new TypeError(`"${name}" applies to Gen models only, and ${options.model} is a Stream model`);
            const guard = await StreamGuard.load({model: options.model, head: options.head, threads: options.threads, gpu: options.gpu,
                // records are judged whole and each may need the model's whole context: one pool they share (a
                // share per session would refuse a long record that the pool can hold)
                contextSize: options.contextSize, maxSessions: Math.max(8, concurrency), kvLayout: "shared"});
            const promptFlagged = streamPromptRule(policy);
            const judgeOne = async (messages: Message[], settings: JudgeSettings): Promise<JudgeOutcome> => {
                const report = await guard.moderate(messages, {policy: settings.policy ?? policy});
                const result = streamResult(messages, report, settings.policy != null ? streamPromptRule(settings.policy) : promptFlagged);
                return {result, tokens: report.tokens, score: streamScore(result, report),
                    ...(result.target === "response" ? {responseTokens: report.response!.tokens.map((token) => token.token)} : {})};
            };
            const tokenizer: JudgeTokenizer = {
                tokenize: (segments) => tokenizeSegments(segments, guard._tokenize),
                tokenBytes: (token) => guard._model.tokenBytes(token)
            };
            return new Judge("stream", concurrency, concurrency, judgeOne, () => guard.dispose(),
                (error) => error instanceof Error && error.message.startsWith("The context is full"), tokenizer);
        }

        if (options.head != null)
            throw new TypeError(`"head" applies to Stream models only, and ${options.model} is a Gen model`);
        const mode = oneOfOption<GenMode>("mode", options.mode ?? "score", ["score", "generate"]);
        const longInput = oneOfOption("longInput", options.longInput ?? "error", ["error", "windows"]);
        const gen = await GenGuard.load({model: options.model, threads: options.threads, contextSize: options.contextSize, gpu: options.gpu,
            parallel: concurrency, onWarning: options.onWarning});
        const judgeOne = async (messages: Message[], settings: JudgeSettings): Promise<JudgeOutcome> => {
            const verdict = await gen.moderate(messages, {mode: settings.mode ?? mode, policy: settings.policy ?? policy, longInput: settings.longInput ?? longInput});
            const result = genResult(verdict);
            return {result, tokens: verdict.usage.promptTokens, score: genScore(result)};
        };
        return new Judge("gen", concurrency, 2 * concurrency, judgeOne, () => gen.dispose(), () => false, null);
    }

    /**
     * Judges one conversation. Calls may overlap (up to `concurrency` make sense). A Stream conversation that finds
     * the shared context full because of the others waits for them and runs alone. `settings` override the judge's
     * policy, mode and long-input handling for this call (Gen's mode and long input; Stream's policy).
     * @throws TypeError for a bad conversation; Error when it does not fit the context on its own
     */
    async judge(messages: Message[], settings: JudgeSettings = {}): Promise<JudgeOutcome> {
        while (this.exclusive != null)
            await this.exclusive;
        this.running++;
        try {
            return await this.judgeOne(messages, settings);
        } catch (error) {
            if (!this.isCapacityError(error))
                throw error;
        } finally {
            this.running--;
            if (this.running === 0)
                this.drained?.();
        }
        return this.judgeAlone(messages, settings);
    }

    /** Frees the model. */
    dispose(): Promise<void> {
        return this.disposeModel();
    }

    private async judgeAlone(messages: Message[], settings: JudgeSettings): Promise<JudgeOutcome> {
        while (this.exclusive != null)
            await this.exclusive;
        let release!: () => void;
        this.exclusive = new Promise((resolve) => release = resolve);
        try {
            if (this.running > 0)
                await new Promise<void>((resolve) => this.drained = resolve);
            this.drained = null;
            return await this.judgeOne(messages, settings);
        } finally {
            this.exclusive = null;
            release();
        }
    }
}
