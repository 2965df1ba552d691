import {ContextLimitError} from "../conversation/ContextLimitError.js";
import type {Message} from "../conversation/messages.js";
import {MalformedAnswerError} from "../gen/parseGenAnswer.js";
import {conversationOf} from "../moderation/conversationOf.js";
import {Judge} from "../moderation/Judge.js";
import type {JudgeOptions, JudgeResult, JudgeSettings} from "../moderation/Judge.js";
import {mapInOrder} from "../moderation/mapInOrder.js";

/** One item to judge: a conversation, or a prompt with an optional response; `id` is carried to the result. */
export type BatchItem = {id?: string | number, messages: Message[]} | {id?: string | number, prompt: string, response?: string};

/** The result of one item, in input order: a verdict, or why the item could not be judged. */
export interface BatchItemResult {
    /** 0-based position of the item in the input. */
    index: number,
    id?: string | number,
    result?: JudgeResult,
    error?: string,
    /** Tokens the model read for it (0 on error). */
    tokens: number
}

export type ModerateManyOptions = (JudgeOptions | {judge: Judge}) & {
    /** Stop taking new items (those started still finish and are yielded). */
    signal?: AbortSignal
};

/** Whether an error is about one item (bad shape, too long, a malformed generated answer) rather than the run. */
export function isItemError(error: unknown): boolean {
    return error instanceof TypeError || error instanceof ContextLimitError || error instanceof MalformedAnswerError;
}

/** What judging one item gave: a verdict and the tokens read, or why it could not be judged (0 tokens). */
export interface ItemOutcome {
    result?: JudgeResult,
    error?: string,
    tokens: number,
    /** With a result: as in JudgeOutcome. */
    score?: number,
    responseTokens?: number[]
}

/**
 * Judges one conversation (built by `conversation`, whose TypeError counts as the item's too); an item error
 * ({@link isItemError}) becomes `error`, any other failure is thrown.
 */
export async function judgeItem(judge: Judge, conversation: () => Message[], settings?: JudgeSettings): Promise<ItemOutcome> {
    try {
        return await judge.judge(conversation(), settings);
    } catch (error) {
        if (!isItemError(error))
            throw error;
        return {error: (error as Error).message, tokens: 0};
    }
}

/**
 * Judges many items with a Gen or Stream model, `concurrency` at a time in parallel sequences, and yields the
 * results in input order. A bad item (no user message, wrong types, over the context) yields an `error`, never
 * stops the run; any other failure (the model, the machine) ends the run with that error. Memory holds at most
 * `concurrency` items.
 * @param items - any (async) iterable, e.g. an async generator reading a file
 * @param options - the model's options ({@link JudgeOptions}), or an open `judge` to use (left open)
 * @example
 * for await (const {index, result, error} of moderateMany(prompts.map((prompt) => ({prompt})), {model: "gen.gguf", concurrency: 4}))
 *     console.log(index, error ?? `${result.level} ${result.category ?? ""}`);
 */
export async function* moderateMany(items: AsyncIterable<BatchItem> | Iterable<BatchItem>, options: ModerateManyOptions): AsyncGenerator<BatchItemResult> {
    if (options == null || typeof options !== "object")
        throw new TypeError("Expected an options object: the model's options {model, …} or {judge}");
    const given = "judge" in options ? options.judge : null;
    if (given != null && !(given instanceof Judge))
        throw new TypeError("Expected a Judge (from Judge.open) for \"judge\"");
    const judge = given ?? await Judge.open(options as JudgeOptions);
    let index = 0;
    try {
        yield* mapInOrder(items, judge.inFlight, async (item: BatchItem): Promise<BatchItemResult> => {
            const at = index++;
            const id = item != null && typeof item === "object" && "id" in item ? item.id : undefined;
            const {result, error, tokens} = await judgeItem(judge, () => conversationOf(item));
            return {index: at, ...(id != null ? {id} : {}), ...(result != null ? {result} : {error}), tokens};
        }, options.signal);
    } finally {
        if (given == null)
            await judge.dispose();
    }
}
