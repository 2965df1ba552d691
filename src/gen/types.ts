import type {RiskLevel} from "../stream/types.js";
import type {GenPolicyOption} from "./genPolicy.js";
import type {GenTarget} from "./genTemplate.js";

/**
 * How the judge answers. `score` (default): one forward pass over the prompt and the forced `Safety:`, then the
 * next-token distribution over the verdict words, category words and refusal words: probabilities, no sampling.
 * `generate`: greedy generation of the answer lines, parsed with the official patterns.
 */
export type GenMode = "score" | "generate";

/** Options of {@link GenGuard.moderate}. */
export interface GenModerateOptions {
    /** Default `"score"`. */
    mode?: GenMode,
    /** Default `"strict"`. */
    policy?: GenPolicyOption,
    /**
     * A conversation over the context: `"error"` (default) refuses it with a ContextLimitError; `"windows"` judges the
     * judged message (the last user or assistant message) in overlapping windows of tokens, each rendered with the
     * rest of the conversation, and returns the worst window's verdict (see {@link GenVerdict.windows}).
     */
    longInput?: "error" | "windows",
    /** Tokens shared by consecutive windows; default 64 (at most half a window). */
    windowOverlap?: number
}

/** How a long message was judged in windows. */
export interface GenWindows {
    /** Windows judged. */
    count: number,
    /** The window whose verdict this is (0-based): the worst level, then the highest P(Unsafe) + P(Controversial). */
    worst: number,
    /** Its tokens in the judged message, [start, end) (Qwen3 tokens of the message's text). */
    startToken: number,
    endToken: number
}

/** Token counts of one request. */
export interface GenUsage {
    /** Tokens of the rendered Gen prompt. */
    promptTokens: number,
    /** Of those, how many were already in the sequence's KV cache (the template prefix, at least, after the first request). */
    cachedTokens: number,
    /** Tokens evaluated by this request: the rest of the prompt plus the forced or generated answer tokens. */
    evaluatedTokens: number
}

/** The judgement of a conversation by Qwen3Guard-Gen. */
export interface GenVerdict {
    /** `prompt` when the conversation ends with a user message, `response` when it ends with an assistant message. */
    target: GenTarget,
    level: RiskLevel,
    /** The first category the model names; null for `None`. */
    category: string | null,
    /** Every category named, without `None` (score mode names at most one). */
    categories: string[],
    /** Whether the response refuses; response target only. */
    refusal?: "Yes" | "No",
    /**
     * P(level) over the three verdict words, renormalised. In generate mode the generated level has probability 1:
     * plain generation carries no distribution.
     */
    probs: Record<RiskLevel, number>,
    /** P(category | level) over the target's categories and `None` (as for `probs` in generate mode). */
    categoryProbs: Record<string, number>,
    /** P(refusal | level, category); response target only. */
    refusalProbs?: {Yes: number, No: number},
    /** Whether the policy flags the verdict. */
    flagged: boolean,
    /** The generated answer (generate mode). */
    text?: string,
    /** Present when the judged message was judged in windows (`longInput: "windows"`). */
    windows?: GenWindows,
    /** Token counts (summed over the windows, when there are several). */
    usage: GenUsage
}
