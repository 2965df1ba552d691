import {ContextLimitError} from "../conversation/ContextLimitError.js";
import type {Message} from "../conversation/messages.js";
import type {JudgeResult} from "../moderation/Judge.js";
import {streamResponseResult} from "../moderation/judgeResults.js";
import type {StreamGuard} from "../stream/StreamGuard.js";
import type {StreamSession} from "../stream/StreamSession.js";
import type {PolicyOption, ResponseReport} from "../stream/types.js";

/** The parts of an OpenAI chat completion chunk the guard reads; every other field passes through as it is. */
export interface ChatChunkLike {
    id?: string,
    object?: string,
    created?: number,
    model?: string,
    choices?: Array<{
        index: number,
        delta?: {content?: string | null, [key: string]: unknown} | null,
        finish_reason?: string | null,
        [key: string]: unknown
    }>,
    [key: string]: unknown
}

/** A session for one choice of the answer, and how to give it back. */
export interface ChoiceSession {
    session: StreamSession,
    close: () => Promise<void>
}

/** Options of {@link guardChatStream}. */
export interface GuardChatStreamOptions {
    /** The Stream model. */
    guard?: StreamGuard,
    /** The conversation the answer responds to (it must end with the user turn); what the default sessions are opened with. */
    messages?: Message[],
    /** Default `"strict"`. */
    policy?: PolicyOption,
    /** Opens the session of a choice (default: `guard.createSession({messages, policy})`, disposed at the end). */
    openSession?: (choice: number) => Promise<ChoiceSession>,
    /**
     * Stops the upstream when the guard cuts the answer (or the consumer leaves early). Default: the source's
     * `controller.abort()`, as the `openai` client's streams have it.
     */
    abort?: () => void,
    /** Called when the decision rule fires, before the last chunk is yielded. */
    onFlag?: (flag: ChatStreamFlag) => void
}

/** Where and why a streamed answer was cut. */
export interface ChatStreamFlag {
    /** The choice whose text fired the rule. */
    choice: number,
    /** The response verdict (level, category, probabilities, where it stopped: `stoppedAt`). */
    verdict: JudgeResult,
    report: ResponseReport
}

/** What {@link guardChatStream} returns when the stream ends. */
export interface GuardChatStreamResult {
    /** The flag, when the answer was cut. */
    flag: ChatStreamFlag | null,
    /** Each judged choice's report, by choice index. */
    reports: Map<number, ResponseReport>
}

/** A chunk waiting for its text to be judged, with where each choice's text ends in that choice's answer. */
interface HeldChunk {
    chunk: ChatChunkLike,
    ends: Map<number, number>
}

interface ChoiceState {
    open: Promise<ChoiceSession>,
    session?: StreamSession,
    /** UTF-16 length of this choice's content so far. */
    length: number,
    finished: boolean
}

/** The `finish_reason` of the chunk that ends a cut answer, as OpenAI names it. */
export const CONTENT_FILTER = "content_filter";

/**
 * Guards a streamed OpenAI chat completion (an async iterable of chunk objects, such as the `openai` client's
 * `chat.completions.create({stream: true})`): yields the same chunk objects, each once the text it carries is judged
 * (held back meanwhile: the tokenizer's unstable tail, and a run of unsafe tokens that may still fire the rule).
 * When the rule fires, the text before the unsafe span is yielded (the chunk that straddles it cut short), then one
 * last chunk whose `finish_reason` is `"content_filter"` and whose `qwen3guard` field carries the verdict; the
 * upstream is aborted and the generator returns. Chunks without content (role, tool calls, usage) keep their place.
 * Each choice of an `n > 1` answer has its own session; a flag in one ends them all.
 * @throws ContextLimitError when an answer grows past the session's limit (what fitted was judged and yielded first)
 * @example
 * const stream = await openai.chat.completions.create({model, messages, stream: true});
 * for await (const chunk of guardChatStream(stream, {guard, messages}))
 *     process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
 */
export async function* guardChatStream<Chunk extends ChatChunkLike>(source: AsyncIterable<Chunk>, options: GuardChatStreamOptions):
    AsyncGenerator<Chunk, GuardChatStreamResult> {
    const openSession = options.openSession ?? defaultSessions(options);
    const abort = options.abort ?? (() => (source as {controller?: AbortController}).controller?.abort());
    const choices = new Map<number, ChoiceState>();
    const held: HeldChunk[] = [];
    let last: ChatChunkLike | null = null;
    let completed = false;

    const choiceSession = async (index: number): Promise<StreamSession> => {
        let state = choices.get(index);
        if (state == null) {
            state = {open: openSession(index), length: 0, finished: false};
            choices.set(index, state);
        }
        state.session ??= (await state.open).session;
        return state.session;
    };
    const flagged = (): ChatStreamFlag | null => {
        for (const [choice, state] of choices) {
            const report = state.session?.flag != null ? state.session.report() : null;
            if (report != null)
                return {choice, verdict: streamResponseResult(report), report};
        }
        return null;
    };
    // chunks whose text every choice has judged, in order
    const releasable = function* (): Generator<Chunk> {
        while (held.length > 0 && [...held[0].ends].every(([choice, end]) => (choices.get(choice)!.session!.releasableLength) >= end))
            yield held.shift()!.chunk as Chunk;
    };
    const scored = async (work: () => Promise<unknown>) => {
        try {
            await work();
        } catch (error) {
            if (!(error instanceof ContextLimitError) || flagged() == null)
                throw error; // over the limit without a flag in what fitted: the rest cannot be judged
        }
    };

    // pushes a chunk's text into its choices' sessions (a finish_reason ends that choice's text)
    const take = async (chunk: Chunk) => {
        last = chunk;
        const entry: HeldChunk = {chunk, ends: new Map()};
        held.push(entry);
        for (const choice of chunk.choices ?? []) {
            const content = choice.delta?.content;
            if (typeof content === "string" && content.length > 0) {
                const session = await choiceSession(choice.index);
                const state = choices.get(choice.index)!;
                state.length += content.length;
                entry.ends.set(choice.index, state.length);
                await scored(() => session.pushText(content));
            }
            const state = choices.get(choice.index);
            if (choice.finish_reason != null && state != null && !state.finished) {
                state.finished = true;
                await scored(() => state.session!.finish());
            }
        }
    };

    try {
        try {
            for await (const chunk of source) {
                await take(chunk);
                if (flagged() != null)
                    break;
                yield* releasable();
            }
            for (const state of choices.values())
                if (!state.finished && flagged() == null) {
                    state.finished = true;
                    await scored(() => state.session!.finish());
                }
        } catch (error) {
            // the source failed, or an answer outgrew its session: what was judged still goes out, then the error
            if (flagged() == null) {
                yield* releasable();
                throw error;
            }
        }
        const flag = flagged();
        if (flag != null)
            return yield* cut(flag);
        completed = true;
        for (const entry of held.splice(0))
            yield entry.chunk as Chunk;
        return {flag: null, reports: reports()};
    } finally {
        if (!completed)
            abort();
        await Promise.allSettled([...choices.values()].map(async (state) => (await state.open).close()));
    }

    function reports(): Map<number, ResponseReport> {
        return new Map([...choices].filter(([, state]) => state.session != null).map(([choice, state]) => [choice, state.session!.report()]));
    }

    // the text before the unsafe span (each choice up to what it has judged), then the content_filter chunk
    async function* cut(flag: ChatStreamFlag): AsyncGenerator<Chunk, GuardChatStreamResult> {
        abort();
        options.onFlag?.(flag);
        const limits = new Map([...choices].map(([choice, state]) =>
            [choice, choice === flag.choice ? flag.report.flag!.textOffset : state.session?.releasableLength ?? 0]));
        const stopped = new Set<number>();
        for (const entry of held.splice(0)) {
            const trimmed = trimChunk(entry, limits, stopped);
            if (trimmed != null)
                yield trimmed as Chunk;
        }
        const unfinished = [...choices].filter(([choice, state]) => !state.finished || choice === flag.choice).map(([choice]) => choice);
        yield {
            id: last?.id, object: "chat.completion.chunk", created: last?.created ?? Math.floor(Date.now() / 1000), model: last?.model,
            choices: unfinished.map((index) => ({index, delta: {}, logprobs: null, finish_reason: CONTENT_FILTER})),
            qwen3guard: {choice: flag.choice, response: flag.verdict}
        } as unknown as Chunk;
        return {flag, reports: reports()};
    }
}

/**
 * A held chunk with each choice's content cut at its limit; a choice past its limit is dropped from this chunk and
 * every later one (`stopped`). Null when nothing of the chunk is left to show.
 */
function trimChunk({chunk, ends}: HeldChunk, limits: Map<number, number>, stopped: Set<number>): ChatChunkLike | null {
    if (chunk.choices == null || chunk.choices.length === 0)
        return null; // a usage chunk or the like: it describes an answer that is not what the client received
    const kept = [];
    for (const choice of chunk.choices) {
        if (stopped.has(choice.index))
            continue;
        const end = ends.get(choice.index);
        const limit = limits.get(choice.index);
        if (end == null || limit == null || end <= limit) {
            kept.push(choice);
            continue;
        }
        stopped.add(choice.index);
        const content = choice.delta!.content as string;
        const keep = limit - (end - content.length);
        if (keep > 0)
            kept.push({...choice, delta: {...choice.delta, content: content.slice(0, keep)}, finish_reason: null});
    }
    return kept.length > 0 ? {...chunk, choices: kept} : null;
}

function defaultSessions(options: GuardChatStreamOptions): (choice: number) => Promise<ChoiceSession> {
    const {guard, messages, policy} = options;
    if (guard == null || messages == null)
        throw new TypeError('Expected "guard" and "messages" (or "openSession") in the options of guardChatStream');
    return async () => {
        const session = await guard.createSession({messages, policy});
        return {session, close: () => session.dispose()};
    };
}
