import {describeValue} from "../conversation/messages.js";
import type {RiskLevel} from "../stream/types.js";

/**
 * When a Gen verdict counts as flagged: `strict` (Unsafe or Controversial, the default), `loose` (Unsafe only), or a
 * threshold on the probabilities.
 */
export type GenPolicyOption = "strict" | "loose" | GenThresholdPolicy;

/** A threshold policy: flag by probability rather than by the most probable level. */
export interface GenThresholdPolicy {
    /** Flagged when P(Unsafe) — plus P(Controversial) when `controversial` is true — reaches this value. */
    minProb: number,
    /** Whether P(Controversial) counts toward `minProb`. Default true. */
    controversial?: boolean
}

/** A policy with every field decided; `minProb` null means "by the level". */
export interface ResolvedGenPolicy {
    minProb: number | null,
    controversial: boolean
}

/**
 * Checks and defaults a Gen policy option.
 * @param policy - `"strict"` (default), `"loose"` or `{minProb, controversial?}`
 * @returns the policy with every field decided
 * @throws TypeError naming the field, what was expected and what was received
 * @example
 * resolveGenPolicy({minProb: 0.3}); // {minProb: 0.3, controversial: true}
 */
export function resolveGenPolicy(policy: GenPolicyOption | undefined = "strict"): ResolvedGenPolicy {
    if (policy === "strict")
        return {minProb: null, controversial: true};
    if (policy === "loose")
        return {minProb: null, controversial: false};
    if (policy == null || typeof policy !== "object")
        throw new TypeError(`Expected "strict", "loose" or {minProb, controversial} for "policy" but received ${describeValue(policy)}`);
    const {minProb, controversial = true} = policy as GenThresholdPolicy;
    if (typeof minProb !== "number" || !(minProb > 0 && minProb <= 1))
        throw new TypeError(`Expected a number in (0, 1] for "policy.minProb" but received ${describeValue(minProb)}`);
    if (typeof controversial !== "boolean")
        throw new TypeError(`Expected a boolean for "policy.controversial" but received ${describeValue(controversial)}`);
    return {minProb, controversial};
}

/** Whether a verdict is flagged under the policy. */
export function isFlagged(level: RiskLevel, probs: Readonly<Record<RiskLevel, number>>, policy: ResolvedGenPolicy): boolean {
    if (policy.minProb != null)
        return probs.Unsafe + (policy.controversial ? probs.Controversial : 0) >= policy.minProb;
    return level === "Unsafe" || (policy.controversial && level === "Controversial");
}
