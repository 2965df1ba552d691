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
    policy?: GenPolicyOption
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
    usage: GenUsage
}
