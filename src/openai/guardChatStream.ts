import type {JudgeResult} from "../moderation/Judge.js";
import {assertGuard, openMonitor} from "../integrations/guardKinds.js";
import type {AnyGuard} from "../integrations/guardKinds.js";
import {Lookahead, MonitoredText, coalesceLimit} from "../integrations/ResponseMonitor.js";
import type {ResponseMonitor} from "../integrations/ResponseMonitor.js";
import type {ServerPolicy} from "../server/serverPolicy.js";
import {chatConversation, splitConversation} from "./chatMessages.js";

/**
 * The parts of an OpenAI chat completion chunk the guard reads (the `openai` client's `ChatCompletionChunk` is one);
 * every other field passes through as it is.
 */
export interface ChatChunkLike {
    id?: string,
    object?: string,
    created?: number,
    model?: string,
    choices?: ReadonlyArray<{
        index: number,
        delta?: {content?: unknown, reasoning_content?: unknown, refusal?: unknown} | null,
        finish_reason?: string | null
    }>
}

/** Options of {@link guardChatStream}. */
export interface GuardChatStreamOptions {
    /**
     * What judges the answer: a StreamGuard (live: text is released as it is judged), a RemoteGuard (the same, on a
     * `qwenguard serve`'s Stream model) or a GenGuard (it judges whole texts: the answer is held until it is complete).
     */
    guard?: AnyGuard,
    /**
     * The request's messages (OpenAI's `messages`, as sent to `chat.completions.create`, or the guard's `{role,
     * content}` messages): the answer is judged as the response to the conversation up to the last user message;
     * assistant messages after it are a prefill, judged as the answer's start (see `responsePrefix`).
     */
    messages?: unknown[],
    /** `"strict"` (default), `"loose"`, a threshold on P(Unsafe) + P(Controversial), or `{minProb?, controversial?, window?}`. */
    policy?: ServerPolicy,
    /**
     * Text the answer continues (an assistant message the request ends with, which the upstream goes on from): judged
     * first as the start of every choice's response, and never yielded (the client has it). Default: the text of the
     * assistant messages after the last user message.
     */
    responsePrefix?: string,
    /** Opens the monitor of a choice, instead of one per choice from `guard` and `messages` (closed at the end). */
    openSession?: (choice: number) => Promise<ResponseMonitor>,
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
    /** The response verdict (level, category, probabilities; Stream: where it stopped, `stoppedAt`, in the choice's judged text). */
    verdict: JudgeResult
}

/** What {@link guardChatStream} returns when the stream ends. */
export interface GuardChatStreamResult {
    /** The flag, when the answer was cut. */
    flag: ChatStreamFlag | null,
    /** Each judged choice's verdict, by choice index (null: nothing of it was judged yet when the stream ended). */
    verdicts: Map<number, JudgeResult | null>
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
    open: Promise<MonitoredText>,
    text?: MonitoredText
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
 * When the source fails, the text received is judged to its end and what is safe is yielded before the error.
 * @throws ContextLimitError when an answer grows past the session's limit (what was judged of it was yielded first);
 *   TypeError for a judged field that is not a string
 * @example
 * const stream = await openai.chat.completions.create({model, messages, stream: true});
 * for await (const chunk of guardChatStream(stream, {guard, messages}))
 *     process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
 */
export async function* guardChatStream<Chunk extends ChatChunkLike>(source: AsyncIterable<Chunk>, options: GuardChatStreamOptions):
    AsyncGenerator<Chunk, GuardChatStreamResult> {
    const {openSession, prefix} = monitors(options);
    const abort = options.abort ?? (() => (source as {controller?: AbortController}).controller?.abort());
    const choices = new Map<number, ChoiceState>();
    /** Choices that ended (a finish_reason) before any text of theirs was judged. */
    const endedBare = new Set<number>();
    const held: HeldChunk[] = [];
    let last: ChatChunkLike | null = null;
    let completed = false;
    let exhausted = false;
    let batches = 0;
    const iterator = source[Symbol.asyncIterator]();
    const chunks = new Lookahead(() => iterator.next());

    const choiceText = async (index: number): Promise<MonitoredText> => {
        let state = choices.get(index);
        if (state == null) {
            const open = openSession(index).then(async (monitor) => {
                const text = new MonitoredText(monitor);
                try {
                    if (prefix.length > 0)
                        await text.push(prefix);
                } catch (error) {
                    await monitor.close();
                    throw error;
                }
                return text;
            });
            state = {open};
            choices.set(index, state);
            state.text = await open;
        }
        return state.open;
    };
    const flagged = (): ChatStreamFlag | null => {
        for (const [choice, state] of choices) {
            const flag = state.text?.monitor.flag;
            if (flag != null)
                return {choice, verdict: flag.verdict};
        }
        return null;
    };
    const limit = (choice: number) => choices.get(choice)!.text!.limit;
    // chunks whose text every choice has judged, in order
    const releasable = function* (): Generator<Chunk> {
        while (held.length > 0 && held[0].segments.every((segment) => limit(segment.choice) >= segment.end))
            yield held.shift()!.chunk as Chunk;
    };
    // pushes a chunk's text into its choices' monitors (a finish_reason ends that choice's text)
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
                const judged = await choiceText(choice.index);
                entry.segments.push({choice: choice.index, field, ...judged.add(text)}); // judged at the batch's end
            }
            if (choice.finish_reason != null) {
                const state = choices.get(choice.index);
                if (state == null)
                    endedBare.add(choice.index);
                else
                    await (await state.open).finish();
            }
        }
        held.push(entry); // only a chunk read whole is held: one that could not be judged is never released
    };

    try {
        try {
            for (;;) {
                // what has piled up meanwhile is judged together (one decode per choice), up to coalesceLimit chunks
                let result = await chunks.next();
                const most = coalesceLimit(batches++);
                for (let taken = 1; !result.done; taken++) {
                    await take(result.value);
                    const soon = taken < most ? await chunks.ready() : null;
                    if (soon == null)
                        break;
                    result = soon;
                }
                exhausted = result.done === true;
                for (const state of choices.values())
                    await state.text?.flush();
                if (flagged() != null || exhausted)
                    break;
                yield* releasable();
            }
            for (const state of choices.values())
                if (flagged() == null)
                    await state.text!.finish();
        } catch (error) {
            // the source failed, or an answer outgrew its session: the text received is judged to its end, what is
            // safe goes out, then the error (unless the rule fired: then the answer is cut as usual)
            for (const state of choices.values())
                if (flagged() == null)
                    await state.text?.finish().catch(() => undefined);
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
        return {flag: null, verdicts: verdicts()};
    } finally {
        if (!completed)
            abort();
        if (!exhausted)
            void Promise.resolve(iterator.return?.()).catch(() => undefined); // as for-await's break would (not awaited: a stalled source)
        await Promise.allSettled([...choices.values()].map(async (state) => (await state.open).monitor.close()));
    }

    function verdicts(): Map<number, JudgeResult | null> {
        return new Map([...choices].filter(([, state]) => state.text != null).map(([choice, state]) => [choice, state.text!.monitor.verdict()]));
    }

    // the text before the unsafe span (each choice up to what it has judged), then the content_filter chunk
    async function* cut(flag: ChatStreamFlag): AsyncGenerator<Chunk, GuardChatStreamResult> {
        abort();
        options.onFlag?.(flag);
        // (a choice whose session failed to open has no text held: nothing of it goes out)
        const limits = new Map([...choices].map(([choice, state]) => [choice, state.text != null ? limit(choice) : 0]));
        const stopped = new Set<number>();
        for (const entry of held.splice(0)) {
            const trimmed = trimChunk(entry, limits, stopped);
            if (trimmed != null)
                yield trimmed as Chunk;
        }
        // every choice still open ends here: the flagged one, those cut short, those that never spoke
        const unfinished = [...choices].filter(([choice, state]) => state.text?.finished !== true || stopped.has(choice) || choice === flag.choice)
            .map(([choice]) => choice);
        const seen = new Set([...choices.keys(), ...endedBare]);
        const silent = last?.choices?.map((choice) => choice.index).filter((index) => !seen.has(index)) ?? [];
        yield {
            id: last?.id, object: "chat.completion.chunk", created: last?.created ?? Math.floor(Date.now() / 1000), model: last?.model,
            choices: [...new Set([...unfinished, ...silent])].sort((a, b) => a - b)
                .map((index) => ({index, delta: {}, logprobs: null, finish_reason: CONTENT_FILTER})),
            qwen3guard: {choice: flag.choice, response: flag.verdict}
        } as unknown as Chunk;
        return {flag, verdicts: verdicts()};
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

/** How each choice's monitor is opened, and the prefix every choice's response starts with. */
function monitors(options: GuardChatStreamOptions): {openSession: (choice: number) => Promise<ResponseMonitor>, prefix: string} {
    if (options == null || typeof options !== "object")
        throw new TypeError("Expected an options object {guard, messages, policy?} (or {openSession}) for guardChatStream");
    if (options.openSession != null)
        return {openSession: options.openSession, prefix: options.responsePrefix ?? ""};
    const {guard, messages, policy} = options;
    assertGuard(guard, "guard");
    const {conversation, responsePrefix} = splitConversation(chatConversation(messages));
    return {
        openSession: async () => (await openMonitor(guard, conversation, policy)).monitor,
        prefix: options.responsePrefix ?? responsePrefix
    };
}
