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
        delta?: {content?: unknown, reasoning_content?: unknown, refusal?: unknown, [key: string]: unknown} | null,
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
    /**
     * Text the answer continues (an assistant message the request ends with, which the upstream goes on from): judged
     * first as the start of every choice's response, and never yielded (the client has it).
     */
    responsePrefix?: string,
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
    /** The response verdict (level, category, probabilities, where it stopped: `stoppedAt`, in the choice's judged text). */
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

/** The delta fields whose text is judged, in the order they are read: a reasoning model thinks, then answers. */
const JUDGED_FIELDS = ["reasoning_content", "content", "refusal"] as const;
type JudgedField = typeof JUDGED_FIELDS[number];

/** A judged field of one chunk's choice: where its text lies in the choice's judged text. */
interface Segment {
    choice: number,
    field: JudgedField,
    start: number,
    end: number
}

/** A chunk waiting for its text to be judged. */
interface HeldChunk {
    chunk: ChatChunkLike,
    segments: Segment[]
}

interface ChoiceState {
    open: Promise<ChoiceSession>,
    session?: StreamSession,
    /** UTF-16 length of this choice's judged text so far (the response prefix included). */
    length: number,
    finished: boolean
}

/** The `finish_reason` of the chunk that ends a cut answer, as OpenAI names it. */
export const CONTENT_FILTER = "content_filter";

/**
 * Guards a streamed OpenAI chat completion (an async iterable of chunk objects, such as the `openai` client's
 * `chat.completions.create({stream: true})`): yields the same chunk objects, each once the text it carries is judged
 * (held back meanwhile: the tokenizer's unstable tail, and a run of unsafe tokens that may still fire the rule).
 * A choice's `reasoning_content`, `content` and `refusal` deltas are judged as one text, in the order they arrive;
 * tool calls and other fields pass through in their place, unjudged. When the rule fires, the text before the unsafe
 * span is yielded (the chunk that straddles it cut short), then one last chunk whose `finish_reason` is
 * `"content_filter"` and whose `qwen3guard` field carries the verdict; the upstream is aborted and the generator
 * returns. Each choice of an `n > 1` answer has its own session; a flag in one ends them all.
 * @throws ContextLimitError when an answer grows past the session's limit (what fitted was judged and yielded first);
 *   TypeError for a judged field that is not a string
 * @example
 * const stream = await openai.chat.completions.create({model, messages, stream: true});
 * for await (const chunk of guardChatStream(stream, {guard, messages}))
 *     process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
 */
export async function* guardChatStream<Chunk extends ChatChunkLike>(source: AsyncIterable<Chunk>, options: GuardChatStreamOptions):
    AsyncGenerator<Chunk, GuardChatStreamResult> {
    const openSession = options.openSession ?? defaultSessions(options);
    const abort = options.abort ?? (() => (source as {controller?: AbortController}).controller?.abort());
    const prefix = options.responsePrefix ?? "";
    const choices = new Map<number, ChoiceState>();
    /** Choices that ended (a finish_reason) before any text of theirs was judged. */
    const endedBare = new Set<number>();
    const held: HeldChunk[] = [];
    let last: ChatChunkLike | null = null;
    let completed = false;

    const choiceState = async (index: number): Promise<ChoiceState> => {
        let state = choices.get(index);
        if (state == null) {
            state = {open: openSession(index), length: 0, finished: false};
            choices.set(index, state);
            const {session} = await state.open;
            if (prefix.length > 0)
                await scored(() => session.pushText(prefix));
            state.length = prefix.length;
            state.session = session;
        }
        await state.open;
        return state;
    };
    const flagged = (): ChatStreamFlag | null => {
        for (const [choice, state] of choices) {
            const report = state.session?.flag != null ? state.session.report() : null;
            if (report != null)
                return {choice, verdict: streamResponseResult(report), report};
        }
        return null;
    };
    // how far each choice's text may be shown: all of it once the choice has finished without firing the rule
    const limit = (choice: number) => {
        const state = choices.get(choice)!;
        return state.finished && state.session!.flag == null ? Infinity : state.session!.releasableLength;
    };
    // chunks whose text every choice has judged, in order
    const releasable = function* (): Generator<Chunk> {
        while (held.length > 0 && held[0].segments.every((segment) => limit(segment.choice) >= segment.end))
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
        const entry: HeldChunk = {chunk, segments: []};
        for (const choice of chunk.choices ?? []) {
            for (const field of JUDGED_FIELDS) {
                const text = choice.delta?.[field];
                if (text == null || text === "")
                    continue;
                if (typeof text !== "string")
                    throw new TypeError(`Expected a string or null for "choices[${choice.index}].delta.${field}" but received ${typeof text}: ` +
                        "the guard judges only text, and lets nothing through unjudged");
                const state = await choiceState(choice.index);
                entry.segments.push({choice: choice.index, field, start: state.length, end: state.length + text.length});
                state.length += text.length;
                await scored(() => state.session!.pushText(text));
            }
            if (choice.finish_reason != null) {
                const state = choices.get(choice.index);
                if (state == null)
                    endedBare.add(choice.index);
                else if (!state.finished) {
                    state.finished = true;
                    await scored(() => state.session!.finish());
                }
            }
        }
        held.push(entry); // only a chunk read whole is held: one that could not be judged is never released
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
        const limits = new Map([...choices].map(([choice]) => [choice, choice === flag.choice ? flag.report.flag!.textOffset : limit(choice)]));
        const stopped = new Set<number>();
        for (const entry of held.splice(0)) {
            const trimmed = trimChunk(entry, limits, stopped);
            if (trimmed != null)
                yield trimmed as Chunk;
        }
        // every choice still open ends here: the flagged one, those cut short, those that never spoke
        const unfinished = [...choices].filter(([choice, state]) => !state.finished || stopped.has(choice) || choice === flag.choice)
            .map(([choice]) => choice);
        const seen = new Set([...choices.keys(), ...endedBare]);
        const silent = last?.choices?.map((choice) => choice.index).filter((index) => !seen.has(index)) ?? [];
        yield {
            id: last?.id, object: "chat.completion.chunk", created: last?.created ?? Math.floor(Date.now() / 1000), model: last?.model,
            choices: [...new Set([...unfinished, ...silent])].sort((a, b) => a - b)
                .map((index) => ({index, delta: {}, logprobs: null, finish_reason: CONTENT_FILTER})),
            qwen3guard: {choice: flag.choice, response: flag.verdict}
        } as unknown as Chunk;
        return {flag, reports: reports()};
    }
}

/**
 * A held chunk with each choice's judged text cut at its limit; a choice past its limit keeps only its other delta
 * fields (its role, say) in this chunk and is dropped from every later one (`stopped`). Null when nothing is left.
 */
function trimChunk({chunk, segments}: HeldChunk, limits: Map<number, number>, stopped: Set<number>): ChatChunkLike | null {
    if (chunk.choices == null || chunk.choices.length === 0)
        return null; // a usage chunk or the like: it describes an answer that is not what the client received
    const kept = [];
    for (const choice of chunk.choices) {
        if (stopped.has(choice.index))
            continue;
        const own = segments.filter((segment) => segment.choice === choice.index);
        const max = limits.get(choice.index) ?? Infinity;
        if (own.every((segment) => segment.end <= max)) {
            kept.push(choice);
            continue;
        }
        stopped.add(choice.index);
        const delta: Record<string, unknown> = {...choice.delta};
        for (const segment of own) {
            const keep = Math.max(0, max - segment.start);
            if (keep > 0)
                delta[segment.field] = (delta[segment.field] as string).slice(0, keep);
            else
                delete delta[segment.field];
        }
        delete delta.tool_calls; // nothing acts after the cut
        if (Object.keys(delta).length > 0)
            kept.push({...choice, delta, finish_reason: null});
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
