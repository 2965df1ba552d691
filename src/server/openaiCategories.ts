import type {RiskLevel} from "../stream/types.js";

/** The 13 category keys of OpenAI's moderation API (`omni-moderation-*`), in OpenAI's order. */
export const OPENAI_MODERATION_CATEGORIES = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic"
] as const;

/** One of OpenAI's moderation category keys. */
export type OpenAiModerationCategory = typeof OPENAI_MODERATION_CATEGORIES[number];

/**
 * Which OpenAI key each Qwen3Guard category fills. Only categories that mean the same thing are mapped: a client that
 * reads `categories.violence` must not see a Qwen3Guard judgement of something else there. Qwen3Guard's "Unethical
 * Acts" spans bias, insults, harassment, hate speech, defamation, extremism and more, so no single OpenAI key is
 * right for it; "PII", "Politically Sensitive Topics", "Copyright Violation" and "Jailbreak" have no OpenAI key.
 * Those appear only in the result's `qwen3guard` field (and in `flagged`).
 */
export const QWEN3GUARD_TO_OPENAI: Readonly<Record<string, OpenAiModerationCategory>> = {
    "Violent": "violence",
    "Non-violent Illegal Acts": "illicit",
    "Sexual Content or Sexual Acts": "sexual",
    "Suicide & Self-Harm": "self-harm"
};

/** What an OpenAI moderation result needs from a verdict. */
export interface CategoryVerdict {
    level: RiskLevel,
    /** The primary category; null when Safe. */
    category: string | null,
    probs: Record<RiskLevel, number>,
    /** P(category | not Safe) (Stream) or P(category | level) with `None` (Gen). */
    categoryProbs?: Record<string, number>,
    flagged: boolean
}

/** The `categories`, `category_scores` and `category_applied_input_types` of an OpenAI moderation result. */
export interface OpenAiCategoryFields {
    categories: Record<OpenAiModerationCategory, boolean>,
    category_scores: Record<OpenAiModerationCategory, number>,
    category_applied_input_types: Record<OpenAiModerationCategory, Array<"text">>
}

/**
 * Fills OpenAI's category fields from a Qwen3Guard verdict. A key is true when the verdict is flagged and its primary
 * category maps to the key (Qwen3Guard names one primary category). A key's score is the probability that the text
 * is unsafe under the policy times the probability of the categories mapped to it:
 * `(P(Unsafe) + P(Controversial) when the policy counts it) × Σ P(category)`.
 * @param verdict - the verdict, with `flagged` decided by the policy
 * @param controversialCounts - whether the policy counts Controversial as unsafe (strict)
 */
export function openAiCategoryFields(verdict: CategoryVerdict, controversialCounts: boolean): OpenAiCategoryFields {
    const unsafe = verdict.probs.Unsafe + (controversialCounts ? verdict.probs.Controversial : 0);
    const categories = {} as Record<OpenAiModerationCategory, boolean>;
    const scores = {} as Record<OpenAiModerationCategory, number>;
    const applied = {} as Record<OpenAiModerationCategory, Array<"text">>;
    for (const key of OPENAI_MODERATION_CATEGORIES) {
        categories[key] = false;
        scores[key] = 0;
        applied[key] = ["text"];
    }
    for (const [category, p] of Object.entries(verdict.categoryProbs ?? {})) {
        const key = QWEN3GUARD_TO_OPENAI[category];
        if (key != null)
            scores[key] += unsafe * p;
    }
    const primary = verdict.category != null ? QWEN3GUARD_TO_OPENAI[verdict.category] : undefined;
    if (verdict.flagged && primary != null)
        categories[primary] = true;
    return {categories, category_scores: scores, category_applied_input_types: applied};
}
