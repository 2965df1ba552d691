/** A risk level of Qwen3Guard. */
export type RiskLevel = "Safe" | "Unsafe" | "Controversial";

/** The head's judgement at one position. Label names come from the model's head file. */
export interface Verdict {
    /** The most probable risk level. */
    level: RiskLevel,
    /** The most probable category when the level is not Safe; null when Safe (the category head has no "None"). */
    category: string | null,
    probs: Record<RiskLevel, number>,
    categoryProbs: Record<string, number>
}

/** The verdict at one response token. */
export interface TokenVerdict extends Verdict {
    /** 0-based index of the token in the response. */
    index: number,
    /** Token id (Qwen3 vocabulary). */
    token: number,
    /** The token's text (may be empty while a multi-byte character is split across tokens). */
    text: string,
    /** UTF-16 offset of the token's text in the response. */
    textOffset: number
}

/** Where the decision rule fired: streaming stops here. */
export interface Flag {
    /** Index of the response token at which the rule fired. */
    index: number,
    level: Exclude<RiskLevel, "Safe">,
    category: string | null,
    /** UTF-16 offset in the response text where the unsafe span starts (the first token of the run that fired). */
    textOffset: number,
    /** Index of the first token of the run that fired. */
    startIndex: number
}

/** The judgement of a whole response. */
export interface ResponseReport {
    /**
     * Unsafe when two consecutive tokens are Unsafe anywhere; else Controversial when two consecutive tokens are
     * non-Safe; else Safe (the official evaluation's order: Unsafe pairs before Controversial pairs).
     */
    level: RiskLevel,
    category: string | null,
    /** Where live monitoring under the policy stops the response; null when it never fires. */
    flag: Flag | null,
    /** True when the policy flags the response. */
    flagged: boolean,
    tokens: TokenVerdict[]
}

/** `strict`: Controversial counts as unsafe; `loose`: it does not; or a custom rule. */
export type PolicyOption = "strict" | "loose" | CustomPolicy;

export interface CustomPolicy {
    /** Consecutive counting tokens needed to flag (the paper uses 2). Default 2. */
    window?: number,
    /**
     * A token counts when P(Unsafe) — plus P(Controversial) when `controversial` is true — reaches this value.
     * Default: a token counts when its most probable level counts.
     */
    minProb?: number,
    /** Whether Controversial counts as unsafe. Default true. */
    controversial?: boolean
}
