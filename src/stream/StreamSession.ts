import {ContextLimitError} from "../conversation/ContextLimitError.js";
import type {Message} from "../conversation/messages.js";
import {describeValue} from "../conversation/messages.js";
import {tokenizeSegments} from "../conversation/TokenSegments.js";
import {AddonHead} from "../native/AddonTypes.js";
import {DecisionRule, responseLevel} from "./DecisionRule.js";
import type {ResolvedPolicy} from "./DecisionRule.js";
import {headVerdicts} from "./headVerdicts.js";
import {IncrementalTokenizer} from "./IncrementalTokenizer.js";
import type {CommittedToken} from "./IncrementalTokenizer.js";
import type {StreamGuard} from "./StreamGuard.js";
import {streamAssistantHeaderSegments, streamPromptSegments} from "./streamTemplate.js";
import type {Flag, ResponseReport, TokenVerdict, Verdict} from "./types.js";

/**
 * One conversation being monitored: its prompt verdict, then every response token's verdict as tokens arrive.
 * Created by {@link StreamGuard.createSession}. Calls on one session are applied in order.
 */
export class StreamSession {
    private readonly tokenizer: IncrementalTokenizer;
    /** Decodes the response tokens' bytes for display. */
    private decoder = new TextDecoder("utf-8", {fatal: false});
    /** Decodes UTF-8 byte chunks given to pushText, keeping a character split across chunks. */
    private readonly utf8Input = new TextDecoder("utf-8", {fatal: false});
    private rule: DecisionRule;
    private readonly verdicts: TokenVerdict[] = [];
    /** Tokens of the sequence (prompt + header + response) in the KV cache. */
    private length: number;
    private readonly responseStart: number;
    private textLength = 0;
    /** Where the text after the last scored token starts (UTF-16 offset in the text given to pushText); null before any. */
    private scoredEnd: number | null = null;
    private queue: Promise<unknown> = Promise.resolve();
    private disposed = false;

    private constructor(
        private readonly guard: StreamGuard,
        private readonly sequence: number,
        readonly promptVerdict: Verdict,
        readonly policy: ResolvedPolicy,
        promptLength: number,
        /** Most tokens the session may hold (conversation, header and response). */
        readonly tokenLimit: number,
        /** Where the limit comes from, for error messages. */
        private readonly limitSource: string
    ) {
        const model = guard._model;
        this.tokenizer = new IncrementalTokenizer(guard._tokenize, (token) => model.tokenBytes(token).length);
        this.rule = new DecisionRule(policy);
        this.length = promptLength;
        this.responseStart = promptLength;
    }

    /** @internal */
    static async _open(guard: StreamGuard, messages: Message[], thinking: boolean, policy: ResolvedPolicy, maxTokens: number | null): Promise<StreamSession> {
        const tokenize = guard._tokenize;
        const prompt = tokenizeSegments(streamPromptSegments(messages), tokenize);
        const header = tokenizeSegments(streamAssistantHeaderSegments(thinking), tokenize);
        const total = prompt.length + header.length;
        const [limit, source] = maxTokens != null && maxTokens < guard.sessionTokenLimit ? [maxTokens, `maxTokens ${maxTokens}`]
            : [guard.sessionTokenLimit, guard._sessionLimitSource()];
        if (total > limit)
            throw new ContextLimitError(`The conversation is ${prompt.length} tokens (+${header.length} for the assistant header), ` +
                `over the session limit of ${limit} tokens (${source})`, total, limit);

        const sequence = guard._context.acquireSequence();
        try {
            const result = await guard._evaluator.evaluate({
                sequence,
                tokens: Int32Array.from([...prompt, ...header]),
                outputs: Int32Array.of(prompt.length - 1),
                heads: AddonHead.query
            });
            const [promptVerdict] = headVerdicts(result.query!, guard.labels.query);
            return new StreamSession(guard, sequence, promptVerdict, policy, total, limit, source);
        } catch (error) {
            guard._context.releaseSequence(sequence);
            throw error;
        }
    }

    /** The flag once the decision rule has fired; null until then. */
    get flag(): Flag | null {
        return this.rule.flag;
    }

    /** Tokens at the end that count as unsafe but have not fired the rule yet: a monitor holds their text back. */
    get pendingUnsafeTokens(): number {
        return this.rule.pendingRun;
    }

    /** Verdicts of all response tokens so far. */
    get tokens(): readonly TokenVerdict[] {
        return this.verdicts;
    }

    /** Tokens the session holds: the rendered conversation, the assistant header and the response tokens scored. */
    get tokenCount(): number {
        return this.length;
    }

    /**
     * How much of the response text is judged and may be shown: the UTF-16 length of its prefix (in the text as given
     * to {@link pushText}, or as decoded from {@link pushTokens}' tokens) that holds no text still held back, no token
     * of an unsafe run that may still fire the rule, and nothing from the start of the run that fired it.
     */
    get releasableLength(): number {
        const end = this.flag?.startIndex ?? this.verdicts.length - this.pendingUnsafeTokens;
        if (end < this.verdicts.length)
            return this.verdicts[end].textOffset;
        return this.scoredEnd ?? this.textLength;
    }

    /** Text received by {@link pushText} but not yet scored (the unstable tail of the tokenization). */
    get heldBackText(): string {
        return this.tokenizer.heldBack;
    }

    /**
     * Appends response text, in any chunking: the tokens scored equal those of the whole text. Tokens that can still
     * change (the last pre-tokens) wait for more text or {@link finish}. Text may come as strings (a surrogate pair
     * may be split across chunks) or as UTF-8 bytes (a character may be split across chunks).
     * @returns the verdicts of the tokens scored by this call
     */
    pushText(chunk: string | Uint8Array): Promise<TokenVerdict[]> {
        if (chunk instanceof Uint8Array)
            chunk = this.utf8Input.decode(chunk, {stream: true});
        else if (typeof chunk !== "string")
            return Promise.reject(new TypeError(`Expected a string or UTF-8 bytes for "chunk" but received ${describeValue(chunk)}`));
        const text = chunk;
        return this.enqueue(() => this.score(this.tokenizer.push(text), this.tokenizer.committedLength));
    }

    /**
     * Appends response tokens (Qwen3 vocabulary ids, e.g. straight from a generator on the same tokenizer).
     * @returns their verdicts
     */
    pushTokens(ids: Iterable<number>): Promise<TokenVerdict[]> {
        let tokens: number[];
        try {
            tokens = this.checkTokens(ids);
        } catch (error) {
            return Promise.reject(error);
        }
        return this.enqueue(() => {
            if (this.tokenizer.heldBack.length > 0)
                throw new Error("pushTokens after pushText: call finish() first so the held-back text is scored");
            return this.score(tokens.map((id) => ({id, offset: -1})), -1);
        });
    }

    /** Scores the text still held back by the tokenizer (end of response); an incomplete UTF-8 sequence becomes U+FFFD. */
    finish(): Promise<TokenVerdict[]> {
        const rest = this.utf8Input.decode();
        return this.enqueue(() => this.score([...this.tokenizer.push(rest), ...this.tokenizer.finish()], this.tokenizer.committedLength));
    }

    /**
     * Goes back to the first `tokenCount` response tokens (a generator that re-samples): later tokens leave the KV
     * cache and the verdicts, and the decision rule is replayed over the kept ones.
     */
    truncate(tokenCount: number): Promise<void> {
        return this.enqueue(async () => {
            if (!Number.isInteger(tokenCount) || tokenCount < 0 || tokenCount > this.verdicts.length)
                throw new TypeError(`Expected an integer between 0 and ${this.verdicts.length} for "tokenCount" but received ${describeValue(tokenCount)}`);
            if (this.tokenizer.heldBack.length > 0)
                throw new Error("truncate while text is held back: call finish() first");
            this.verdicts.length = tokenCount;
            this.length = this.responseStart + tokenCount;
            this.guard._context.truncateSequence(this.sequence, this.length);
            this.rule = new DecisionRule(this.policy);
            this.decoder = new TextDecoder("utf-8", {fatal: false});
            this.textLength = tokenCount === 0 ? 0 : this.verdicts[tokenCount - 1].textOffset + this.verdicts[tokenCount - 1].text.length;
            for (const verdict of this.verdicts)
                this.rule.push(verdict, verdict.index, verdict.textOffset);
        });
    }

    /** The report over the response so far. */
    report(): ResponseReport {
        const {level, category} = responseLevel(this.verdicts);
        return {level, category, flag: this.flag, flagged: this.flag != null, tokens: [...this.verdicts]};
    }

    /** Frees the session's sequence. Safe to call twice. */
    async dispose(): Promise<void> {
        if (this.disposed)
            return;
        this.disposed = true;
        await this.queue.catch(() => undefined);
        this.guard._context.releaseSequence(this.sequence);
        this.guard._forget(this);
    }

    private enqueue<T>(work: () => T | Promise<T>): Promise<T> {
        const run = this.queue.then(() => {
            if (this.disposed)
                throw new Error("This StreamSession has been disposed");
            this.guard.assertOpen();
            return work();
        });
        this.queue = run.catch(() => undefined);
        return run;
    }

    private checkTokens(ids: Iterable<number>): number[] {
        if (ids == null || typeof (ids as Iterable<number>)[Symbol.iterator] !== "function")
            throw new TypeError(`Expected an iterable of token ids for "ids" but received ${describeValue(ids)}`);
        const tokens = [...ids];
        const vocabSize = this.guard.info.vocabSize;
        tokens.forEach((id, i) => {
            if (!Number.isInteger(id) || id < 0 || id >= vocabSize)
                throw new TypeError(`Expected token ids between 0 and ${vocabSize - 1} but ids[${i}] is ${describeValue(id)}`);
        });
        return tokens;
    }

    /** Scores tokens; `end` is where the text after the last of them starts (-1 for tokens pushed as ids). */
    private async score(tokens: CommittedToken[], end: number): Promise<TokenVerdict[]> {
        if (tokens.length === 0)
            return [];
        const limit = this.tokenLimit;
        if (this.length + tokens.length > limit) {
            // what fits is scored first (its verdicts and any flag are in the session), then the rest is refused
            const room = Math.max(0, limit - this.length);
            const wanted = this.length + tokens.length;
            if (room > 0)
                await this.score(tokens.slice(0, room), tokens[room].offset);
            throw new ContextLimitError(`The session would hold ${wanted} tokens, over its limit of ${limit} (${this.limitSource}); ` +
                `the first ${room} of these ${tokens.length} response tokens were scored (see the session's tokens and flag), ` +
                `the other ${tokens.length - room} were not`, wanted, limit);
        }

        const result = await this.guard._evaluator.evaluate({
            sequence: this.sequence,
            tokens: Int32Array.from(tokens, (token) => token.id),
            outputs: Int32Array.from(tokens, (_, i) => i),
            heads: AddonHead.response
        });
        this.length += tokens.length;
        if (end >= 0)
            this.scoredEnd = end;

        const verdicts = headVerdicts(result.response!, this.guard.labels.response);
        return tokens.map((token, i) => {
            const text = this.decoder.decode(this.guard._model.tokenBytes(token.id), {stream: true});
            const textOffset = token.offset >= 0 ? token.offset : this.textLength;
            this.textLength = textOffset + text.length;
            const verdict: TokenVerdict = {...verdicts[i], index: this.verdicts.length, token: token.id, text, textOffset};
            this.verdicts.push(verdict);
            this.rule.push(verdict, verdict.index, textOffset);
            return verdict;
        });
    }
}
