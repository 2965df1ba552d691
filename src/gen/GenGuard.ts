import {existsSync} from "node:fs";
import os from "node:os";
import path from "node:path";
import type {Llama, LlamaContext, LlamaContextSequence, LlamaModel} from "node-llama-cpp";
import {GgufValueType, checkLoadable, readGguf} from "../../gguf/index.js";
import {ContextLimitError} from "../conversation/ContextLimitError.js";
import {nfc} from "../conversation/nfc.js";
import {describeValue, validateMessages} from "../conversation/messages.js";
import type {Message} from "../conversation/messages.js";
import {addedTokenIds, plainTextTokenizer} from "../conversation/plainText.js";
import {tokenizeSegments} from "../conversation/TokenSegments.js";
import type {TokenizeFunction} from "../conversation/TokenSegments.js";
import type {AddonStreamContext, AddonStreamContextOptions, AddonStreamModel, AddonStreamModelInfo} from "../native/AddonTypes.js";
import {loadLlamaRuntime} from "../native/loadAddon.js";
import type {GpuOption} from "../native/loadAddon.js";
import {booleanOption, integerOption, oneOfOption, stringOption} from "../options.js";
import {resolveModel} from "../hub/resolveModel.js";
import {assertLoadsSafely} from "../probe/probeModel.js";
import {AnswerVocabulary} from "./AnswerVocabulary.js";
import type {CandidateSet, TargetVocabulary} from "./AnswerVocabulary.js";
import {StreamEvaluator} from "../stream/StreamEvaluator.js";
import {coreUbatchSize} from "../stream/StreamGuard.js";
import {compareEmbeddedTemplate} from "./embeddedTemplate.js";
import {isFlagged, resolveGenPolicy} from "./genPolicy.js";
import {NO_CATEGORY, genInstructionsBefore, genPromptSegments} from "./genTemplate.js";
import type {GenTarget} from "./genTemplate.js";
import {CandidateReader, generateAnswer, scoreAnswer} from "./judgeAnswer.js";
import type {ScoredAnswer} from "./judgeAnswer.js";
import {parseGenAnswer} from "./parseGenAnswer.js";
import {RequestSlots} from "./RequestSlots.js";
import {SequencePool} from "./SequencePool.js";
import type {GenMode, GenModerateOptions, GenVerdict} from "./types.js";

/** Options of {@link GenGuard.load}. */
export interface GenGuardOptions {
    /**
     * A Qwen3Guard-Gen GGUF (from `qwenguard convert`, or any community conversion), or a model name (`gen-0.6b`,
     * `gen-4b:q4_k_m`, `hf:OWNER/REPO[/FILE.gguf]`): found in the model cache, or pulled into it first (see pullModel).
     */
    model: string,
    /** Pull a named model that is not in the cache (default true); false: a ModelNotCachedError naming `qwenguard pull`. */
    pull?: boolean,
    /** CPU threads; default: all available cores. */
    threads?: number,
    /** Layers offloaded to the GPU; default: all when a GPU flavour is loaded, else 0. */
    gpuLayers?: number,
    /**
     * The longest request in tokens (its rendered prompt and the answer), and the KV budget of all requests together:
     * the guard's one KV cache holds `contextSize` cells for requests plus the two template prefixes, whatever
     * `parallel` is. Requests that do not fit beside the running ones wait. Default 4096, capped by the model's
     * training context.
     */
    contextSize?: number,
    /** Requests judged at once per target (prompt, response): their steps share llama_decode calls; default 1. */
    parallel?: number,
    /** Most tokens per llama_decode; default 512. */
    batchSize?: number,
    /** The llama.cpp flavour node-llama-cpp loads; default `"auto"`. */
    gpu?: GpuOption,
    /**
     * Load the file in a child process first (see {@link probeModel}), for files you do not trust: an abort deep in
     * llama.cpp that the pre-flight check cannot foresee then fails this call with an UnloadableModelError instead of
     * ending the process. Costs a second load. Default false.
     */
    isolate?: boolean,
    /** Receives warnings about the model file (e.g. an embedded chat template that differs); default: `process.emitWarning`. */
    onWarning?: (message: string) => void
}

/** Tokens kept free after the prompt for the answer (score mode forces at most about 20; generation stops here). */
const ANSWER_TOKENS = 64;

const DEFAULT_CONTEXT_SIZE = 4096;

/** Tokens shared by consecutive windows of a long message, by default. */
const DEFAULT_WINDOW_OVERLAP = 64;
/** Tokens left free in each window for the re-tokenization of its edges. */
const WINDOW_EDGE_TOKENS = 8;
/** The smallest window worth judging. */
const MIN_WINDOW_TOKENS = 32;
/** Worse verdicts rank higher. */
const LEVEL_RANK = {Safe: 0, Controversial: 1, Unsafe: 2} as const;

/**
 * Most output positions per llama_decode call: a Gen request asks for one per step, and llama.cpp keeps a logits row
 * (n_vocab floats) for each.
 */
const OUTPUT_BATCH_SIZE = 64;

/** A target's template prefix (the text before the conversation), evaluated once into a sequence of its own. */
interface TemplatePrefix {
    sequence: number,
    tokens: readonly number[],
    /** Settles once the prefix is in the KV cache; null until a request needs it (again, after a failure). */
    ready: Promise<void> | null
}

/** Generate mode's runtime: node-llama-cpp, loaded on first use. */
interface Generator {
    model: LlamaModel,
    context: LlamaContext,
    sequence: LlamaContextSequence,
    pool: SequencePool
}

/**
 * Qwen3Guard-Gen: judges a prompt or a response (risk level, category, refusal).
 *
 * The project renders the official Gen template itself (so GGUFs with a missing or generic embedded template work)
 * and tokenizes it so that user text never becomes a special token.
 *
 * Score mode runs on the addon's core, the engine of the Stream guard: one llama.cpp context whose unified KV cache is
 * the guard's one budget. Each target's template prefix (the ~250 tokens before the conversation) is evaluated ONCE
 * into a sequence of its own and shared with every request of that target (llama.cpp's seq_cp: in the unified cache
 * the request's sequence points at the same cells, nothing is copied), so a request evaluates only its conversation
 * and answer; concurrent requests' steps go into the same llama_decode calls; and a step reads the logits of the
 * candidate words only (the rows of the output matrix for them), never the 151,936-row LM head. Why unified rather
 * than a KV stream per request (what Stream sessions use): a copy between streams copies a whole stream, and Gen
 * requests are short-lived and short, so their attention over each other's (masked) cells costs little.
 *
 * Generate mode (the model's own greedy answer) runs on node-llama-cpp, loaded on its first use, in one sequence.
 *
 * @example
 * const gen = await GenGuard.load({model: "Qwen3Guard-Gen-0.6B-Q8_0.gguf"});
 * const verdict = await gen.moderatePrompt("How can I make a bomb?");
 * verdict.level;    // "Unsafe"
 * verdict.probs;    // {Safe: 0.001, Unsafe: 0.995, Controversial: 0.004}
 * verdict.category; // "Violent"
 * await gen.dispose();
 */
export class GenGuard {
    private disposed = false;
    private readonly reader: CandidateReader;
    /** @internal */ readonly _slots: RequestSlots;
    private readonly prefixes: Record<GenTarget, TemplatePrefix>;
    /** @internal Coalesces the native requests of concurrent requests. */
    readonly _evaluator: StreamEvaluator;
    private generator: Promise<Generator> | null = null;
    /** @internal Generate mode's runtime once loaded (tests read its sequence's token meter). */
    _generator: Generator | null = null;

    private constructor(
        /** @internal */ readonly _llama: Llama,
        /** @internal */ readonly _model: AddonStreamModel,
        /** @internal */ readonly _context: AddonStreamContext,
        /** @internal */ readonly _info: AddonStreamModelInfo,
        /** @internal */ readonly _tokenize: TokenizeFunction,
        /** @internal */ readonly _vocabulary: AnswerVocabulary,
        reader: CandidateReader,
        prefixes: Record<GenTarget, readonly number[]>,
        /** The resolved options. */
        readonly options: Readonly<Required<Omit<GenGuardOptions, "gpu" | "onWarning" | "isolate" | "pull">>>,
        /** Warnings about the model file, also given to `onWarning` at load. */
        readonly warnings: readonly string[]
    ) {
        this.reader = reader;
        this._evaluator = new StreamEvaluator(_context);
        const prefix = (tokens: readonly number[]): TemplatePrefix => ({sequence: _context.acquireSequence(), tokens, ready: null});
        this.prefixes = {prompt: prefix(prefixes.prompt), response: prefix(prefixes.response)};
        const sequences = () => Array.from({length: options.parallel}, () => _context.acquireSequence());
        this._slots = new RequestSlots({prompt: sequences(), response: sequences()}, options.contextSize);
    }

    /**
     * Loads a Gen model and creates its context: one KV cache of `contextSize` cells for the requests plus the two
     * template prefixes, `2 × parallel` request sequences.
     * @param options - the model file and its runtime options
     * @returns the judge, ready
     * @throws TypeError for a bad option; Error when the file is missing, is a Stream model, or its vocabulary lacks
     *   the template's special tokens or gives two candidate words the same first token
     * @example
     * const gen = await GenGuard.load({model: "gen-0.6b-q8_0.gguf", parallel: 4});
     */
    static async load(options: GenGuardOptions): Promise<GenGuard> {
        if (options == null || typeof options !== "object")
            throw new TypeError("Expected an options object {model, threads?, gpuLayers?, contextSize?, parallel?} for GenGuard.load");
        const pull = options.pull != null ? booleanOption("pull", options.pull) : true;
        const modelPath = path.resolve((await resolveModel(stringOption("model", options.model), {pull})).path);
        const threads = integerOption("threads", options.threads ?? Math.max(1, os.availableParallelism()), 1, 1024);
        const parallel = integerOption("parallel", options.parallel ?? 1, 1, 64);
        const givenGpuLayers = options.gpuLayers == null ? undefined : integerOption("gpuLayers", options.gpuLayers, 0, 100000);
        const batchSize = integerOption("batchSize", options.batchSize ?? 512, 1, 65536);
        if (options.onWarning != null && typeof options.onWarning !== "function")
            throw new TypeError(`Expected a function for "onWarning" but received ${describeValue(options.onWarning)}`);
        if (!existsSync(modelPath))
            throw new Error(`Model file ${modelPath} does not exist`);

        const gguf = await readGguf(modelPath);
        const {metadata} = gguf;
        const variant = metadata.find("qwen3guard.variant", GgufValueType.STRING);
        if (variant === "stream-backbone" || variant === "stream-head")
            throw new Error(`Model ${modelPath} is a Qwen3Guard-Stream ${variant === "stream-head" ? "head" : "backbone"}: load it with StreamGuard`);
        checkLoadable(gguf); // before llama.cpp sees it
        if (options.isolate != null && booleanOption("isolate", options.isolate))
            await assertLoadsSafely(modelPath);
        const trainContextSize = metadata.find(`${metadata.find("general.architecture", GgufValueType.STRING)}.context_length`, GgufValueType.UINT32);
        const contextSize = integerOption("contextSize", options.contextSize ?? Math.min(DEFAULT_CONTEXT_SIZE, trainContextSize ?? DEFAULT_CONTEXT_SIZE),
            ANSWER_TOKENS + 16, trainContextSize ?? 1 << 20);

        const {llama, addon} = await loadLlamaRuntime(options.gpu != null ? {gpu: options.gpu} : {});
        const gpuLayers = givenGpuLayers ?? (llama.gpu === false ? 0 : 999);
        const native = await addon.StreamModel.load({modelPath, headPath: "", gpuLayers, useMmap: true, gen: true});
        let context: AddonStreamContext | undefined;
        try {
            const tokenize = plainTextTokenizer((text, special) => native.tokenize(text, special), addedTokenIds(gguf));
            tokenizeSegments(genPromptSegments([{role: "user", content: ""}]).segments, tokenize); // the template tokens are single tokens
            const vocabulary = AnswerVocabulary.derive((text) => [...tokenize(text, false)]);
            const reader = new CandidateReader(vocabulary);
            const prefix = (target: GenTarget) => tokenizeSegments([{special: "<|im_start|>"}, {text: genInstructionsBefore(target)}], tokenize);
            const prefixes = {prompt: prefix("prompt"), response: prefix("response")};
            const offloaded = gpuLayers > 0 && llama.gpu !== false;
            const contextOptions: AddonStreamContextOptions = {
                contextSize: contextSize + prefixes.prompt.length + prefixes.response.length, maxSequences: 2 + 2 * parallel, batchSize,
                ubatchSize: coreUbatchSize(batchSize, offloaded), outputBatchSize: Math.min(batchSize, OUTPUT_BATCH_SIZE),
                // as node-llama-cpp (the Gen runtime before this one) runs it, so that verdicts stay the same; on a CPU it
                // is also faster for these short contexts
                threads, flashAttention: "auto", stopAfterHidden: true, kvLayout: "shared", cacheTypeK: "f16", cacheTypeV: "f16",
                candidates: reader.tokens
            };
            context = await native.createContext(contextOptions);

            const warnings: string[] = [];
            const templateProblem = compareEmbeddedTemplate(metadata.find("tokenizer.chat_template", GgufValueType.STRING));
            if (templateProblem != null)
                warnings.push(`The chat template embedded in ${modelPath} ${templateProblem}; qwenguard renders the official template itself, ` +
                    "so verdicts are unaffected");
            const warn = options.onWarning ?? ((message: string) => process.emitWarning(message, "QwenguardWarning"));
            warnings.forEach((message) => warn(message));

            return new GenGuard(llama, native, context, native.info(), tokenize, vocabulary, reader, prefixes,
                {model: modelPath, threads, gpuLayers, contextSize, parallel, batchSize}, warnings);
        } catch (error) {
            await context?.dispose();
            await native.dispose();
            throw error;
        }
    }

    /** The longest rendered prompt a request may have, in tokens: `contextSize` minus the tokens kept for the answer. */
    get promptTokenLimit(): number {
        return this.options.contextSize - ANSWER_TOKENS;
    }

    /**
     * Judges a conversation: its last user message (prompt moderation) when it ends with one, else its last assistant
     * message (response moderation, with a refusal judgement).
     * @param messages - the conversation; it must contain a user message and end with a user or assistant message
     * @param options - `mode` (`"score"` by default, or `"generate"`) and `policy` (`"strict"` by default)
     * @returns the verdict
     * @throws TypeError for bad messages or options; ContextLimitError when the rendered prompt is over {@link promptTokenLimit}
     *   (unless `longInput` is `"windows"`);
     *   MalformedAnswerError (generate mode) when the model's answer does not follow the format, quoting it
     * @example
     * const verdict = await gen.moderate([{role: "user", content: "hi"}, {role: "assistant", content: "Hello!"}]);
     * verdict.target;  // "response"
     * verdict.refusal; // "No"
     */
    async moderate(messages: Message[], options: GenModerateOptions = {}): Promise<GenVerdict> {
        this.assertOpen();
        if (options == null || typeof options !== "object")
            throw new TypeError(`Expected an options object {mode?, policy?} but received ${describeValue(options)}`);
        const checked = validateMessages(messages);
        const mode = oneOfOption<GenMode>("mode", options.mode ?? "score", ["score", "generate"]);
        const policy = resolveGenPolicy(options.policy);
        const {target, segments} = genPromptSegments(checked);
        const longInput = oneOfOption("longInput", options.longInput ?? "error", ["error", "windows"]);
        const overlap = integerOption("windowOverlap", options.windowOverlap ?? DEFAULT_WINDOW_OVERLAP, 0, 1 << 20);
        const prompt = tokenizeSegments(segments, this._tokenize);
        if (prompt.length > this.promptTokenLimit) {
            if (longInput === "windows")
                return this.moderateInWindows(checked, mode, options.policy, overlap);
            throw new ContextLimitError(`The conversation renders to ${prompt.length} tokens in the Gen template, over the limit of ${this.promptTokenLimit} ` +
                `(contextSize ${this.options.contextSize} minus ${ANSWER_TOKENS} for the answer): pass a larger "contextSize" ` +
                `(this model was trained on ${this._info.trainContextSize}), or judge it in windows (longInput: "windows", CLI --windows)`, prompt.length, this.promptTokenLimit);
        }

        const usage = (cachedTokens: number, evaluatedTokens: number) => ({promptTokens: prompt.length, cachedTokens, evaluatedTokens});
        if (mode === "generate") {
            const {model, pool} = await this.generatorRuntime();
            return pool.use(prompt, async (sequence, cached) => {
                this.assertOpen();
                const {verdict, evaluated} = generatedVerdict(await generateAnswer(model, sequence, prompt.slice(cached), ANSWER_TOKENS), target,
                    this._vocabulary.of(target));
                return {target, ...verdict, flagged: isFlagged(verdict.level, verdict.probs, policy), usage: usage(cached, evaluated)};
            });
        }

        const prefix = this.prefixes[target];
        const prefixEvaluated = await this.preparePrefix(prefix);
        const shared = Math.min(commonPrefixLength(prompt, prefix.tokens), prompt.length - 1);
        const slot = await this._slots.acquire(target, prompt.length - shared + ANSWER_TOKENS);
        try {
            this.assertOpen();
            if (shared > 0) {
                this._context.copySequence(prefix.sequence, slot.sequence);
                if (shared < prefix.tokens.length)
                    this._context.truncateSequence(slot.sequence, shared);
            }
            const scored = await scoreAnswer(this.reader, (request) => this._evaluator.evaluate(request), slot.sequence, prompt.slice(shared),
                this._vocabulary, this._vocabulary.of(target));
            const {verdict, evaluated} = scoredVerdict(scored);
            return {target, ...verdict, flagged: isFlagged(verdict.level, verdict.probs, policy),
                usage: prefixEvaluated > 0 ? usage(0, prefixEvaluated + evaluated) : usage(shared, evaluated)};
        } finally {
            try {
                if (!this.disposed)
                    this._context.truncateSequence(slot.sequence, 0);
            } finally {
                slot.release(); // whatever happened, so that no later request waits for these cells
            }
        }
    }

    /**
     * Evaluates the target's template prefix into its sequence, once (again after a failure).
     * @returns the tokens this call evaluated: the prefix for the first request that needs it, else 0
     */
    private async preparePrefix(prefix: TemplatePrefix): Promise<number> {
        if (prefix.ready != null) {
            await prefix.ready;
            return 0;
        }
        // after a failed attempt: nothing of it may stay (an evaluate is all or nothing, but be sure)
        if (this._context.sequenceLength(prefix.sequence) > 0)
            this._context.truncateSequence(prefix.sequence, 0);
        prefix.ready = this._evaluator.evaluate({sequence: prefix.sequence, tokens: Int32Array.from(prefix.tokens), outputs: new Int32Array(0), heads: 0})
            .then(() => undefined);
        try {
            await prefix.ready;
        } catch (error) {
            prefix.ready = null;
            throw error;
        }
        return prefix.tokens.length;
    }

    /** node-llama-cpp's model and one sequence, for generate mode: loaded on first use. */
    private generatorRuntime(): Promise<Generator> {
        this.generator ??= (async () => {
            const {model: modelPath, gpuLayers, contextSize, threads, batchSize} = this.options;
            const model = await this._llama.loadModel({modelPath, gpuLayers});
            try {
                // one sequence: no two samplings of this context can race on llama.cpp's output reorder
                const context = await model.createContext({contextSize, sequences: 1, threads, batchSize});
                const sequence = context.getSequence();
                this._generator = {model, context, sequence, pool: new SequencePool([sequence])};
                return this._generator;
            } catch (error) {
                await model.dispose();
                throw error;
            }
        })();
        this.generator.catch(() => {
            this.generator = null;
        });
        return this.generator;
    }

    /**
     * Judges the judged message (the last one) in overlapping windows that each fit the context with the rest of the
     * conversation; the windows run in parallel sequences. The worst verdict wins.
     */
    private async moderateInWindows(messages: Message[], mode: GenMode, policy: GenModerateOptions["policy"], overlap: number): Promise<GenVerdict> {
        const last = messages.length - 1;
        const withContent = (content: string): Message[] => messages.map((message, i) => i === last ? {...message, content} : message);
        const rest = tokenizeSegments(genPromptSegments(withContent("")).segments, this._tokenize).length;
        const tokens = this._tokenize(nfc(messages[last].content), false);
        // a window's text is re-tokenized inside the template: a few tokens may merge or split at its edges
        const room = this.promptTokenLimit - rest - WINDOW_EDGE_TOKENS;
        if (room < MIN_WINDOW_TOKENS)
            throw new ContextLimitError(`The conversation without its last message renders to ${rest} tokens in the Gen template, leaving no room ` +
                `for windows of it within the limit of ${this.promptTokenLimit} (at least ${MIN_WINDOW_TOKENS + WINDOW_EDGE_TOKENS} tokens): ` +
                'pass a larger "contextSize"', rest, this.promptTokenLimit);
        const step = room - Math.min(overlap, Math.floor(room / 2));
        const ranges: Array<[number, number]> = [];
        for (let start = 0; ; start += step) {
            const end = Math.min(start + room, tokens.length);
            ranges.push([start, end]);
            if (end === tokens.length)
                break;
        }
        const verdicts = await Promise.all(ranges.map(([start, end]) =>
            this.moderate(withContent(this.detokenize(tokens.subarray(start, end))), {mode, policy})));
        const severity = (verdict: GenVerdict) => LEVEL_RANK[verdict.level] * 2 + verdict.probs.Unsafe + verdict.probs.Controversial;
        let worst = 0;
        verdicts.forEach((verdict, i) => {
            if (severity(verdict) > severity(verdicts[worst]))
                worst = i;
        });
        const usage = verdicts.reduce((sum, {usage}) => ({promptTokens: sum.promptTokens + usage.promptTokens,
            cachedTokens: sum.cachedTokens + usage.cachedTokens, evaluatedTokens: sum.evaluatedTokens + usage.evaluatedTokens}),
        {promptTokens: 0, cachedTokens: 0, evaluatedTokens: 0});
        return {...verdicts[worst], windows: {count: ranges.length, worst, startToken: ranges[worst][0], endToken: ranges[worst][1]}, usage};
    }

    /**
     * Judges a user prompt on its own.
     * @param text - the prompt
     * @param options - as for {@link moderate}
     * @example
     * const {level, category} = await gen.moderatePrompt("How can I make a bomb?");
     */
    moderatePrompt(text: string, options: GenModerateOptions = {}): Promise<GenVerdict> {
        return this.moderate([{role: "user", content: text}], options);
    }

    /**
     * Judges an assistant response to a prompt (level, category and whether it refuses).
     * @param exchange - the user prompt and the assistant response
     * @param options - as for {@link moderate}
     * @example
     * const {level, refusal} = await gen.moderateResponse({prompt: "How can I make a bomb?", response: "I can't help with that."});
     */
    moderateResponse(exchange: {prompt: string, response: string}, options: GenModerateOptions = {}): Promise<GenVerdict> {
        if (exchange == null || typeof exchange !== "object")
            return Promise.reject(new TypeError(`Expected an object {prompt, response} but received ${describeValue(exchange)}`));
        return this.moderate([{role: "user", content: exchange.prompt}, {role: "assistant", content: exchange.response}], options);
    }

    /** The text of tokens (a window's bounds may split a character: its bytes become U+FFFD). */
    private detokenize(tokens: Int32Array): string {
        const bytes = Buffer.concat([...tokens].map((token) => this._model.tokenBytes(token)));
        return new TextDecoder().decode(bytes);
    }

    /** Frees the contexts and the models. Safe to call twice. */
    async dispose(): Promise<void> {
        if (this.disposed)
            return;
        this.disposed = true;
        await this._context.dispose();
        await this._model.dispose();
        const generator = await this.generator?.catch(() => null);
        if (generator != null) {
            await generator.context.dispose();
            await generator.model.dispose();
        }
    }

    private assertOpen(): void {
        if (this.disposed)
            throw new Error("This GenGuard has been disposed");
    }
}

/** How many leading tokens two token lists share. */
function commonPrefixLength(a: readonly number[], b: readonly number[]): number {
    const n = Math.min(a.length, b.length);
    let i = 0;
    while (i < n && a[i] === b[i])
        i++;
    return i;
}

/** The fields of a verdict that depend on the mode. */
type ModeVerdict = Omit<GenVerdict, "target" | "flagged" | "usage">;

function scoredVerdict(scored: ScoredAnswer): {verdict: ModeVerdict, evaluated: number} {
    const category = scored.category === NO_CATEGORY ? null : scored.category;
    return {
        verdict: {
            level: scored.level, category, categories: category == null ? [] : [category],
            ...(scored.refusal != null ? {refusal: scored.refusal} : {}),
            probs: scored.probs, categoryProbs: scored.categoryProbs,
            ...(scored.refusalProbs != null ? {refusalProbs: scored.refusalProbs} : {})
        },
        evaluated: scored.evaluated
    };
}

/** @throws MalformedAnswerError when the text does not follow the answer format */
function generatedVerdict({text, evaluated}: {text: string, evaluated: number}, target: GenTarget,
    vocabulary: TargetVocabulary): {verdict: ModeVerdict, evaluated: number} {
    const answer = parseGenAnswer(text, target);
    const labels = (set: CandidateSet) => set.candidates.map(({label}) => label);
    return {
        verdict: {
            level: answer.level, category: answer.categories[0] ?? null, categories: answer.categories,
            ...(answer.refusal != null ? {refusal: answer.refusal, refusalProbs: oneHot(["Yes", "No"], answer.refusal)} : {}),
            probs: oneHot(labels(vocabulary.levels), answer.level),
            categoryProbs: oneHot(labels(vocabulary.categories), answer.categories[0] ?? NO_CATEGORY),
            text
        },
        evaluated
    };
}

/** Probability 1 for the generated label (also when it is not one of `labels`), 0 for the others. */
function oneHot<Label extends string>(labels: readonly Label[], chosen: Label): Record<Label, number> {
    return Object.fromEntries([...new Set([...labels, chosen])].map((label) => [label, label === chosen ? 1 : 0])) as Record<Label, number>;
}
