import {describeValue} from "../conversation/messages.js";
import type {CustomPolicy, Flag, PolicyOption, Verdict} from "./types.js";

/** A policy with every field decided. */
export interface ResolvedPolicy {
    window: number,
    minProb: number | null,
    controversial: boolean
}

/**
 * Checks and defaults a policy option.
 * @throws TypeError naming the field, what was expected and what was received
 */
export function resolvePolicy(policy: PolicyOption | undefined = "strict"): ResolvedPolicy {
    if (policy === "strict")
        return {window: 2, minProb: null, controversial: true};
    if (policy === "loose")
        return {window: 2, minProb: null, controversial: false};
    if (policy == null || typeof policy !== "object")
        throw new TypeError(`Expected "strict", "loose" or {window, minProb, controversial} for "policy" but received ${describeValue(policy)}`);
    const {window = 2, minProb, controversial = true} = policy as CustomPolicy;
    if (!Number.isInteger(window) || window < 1 || window > 64)
        throw new TypeError(`Expected an integer between 1 and 64 for "policy.window" but received ${describeValue(window)}`);
    if (minProb != null && (typeof minProb !== "number" || !(minProb > 0 && minProb <= 1)))
        throw new TypeError(`Expected a number in (0, 1] for "policy.minProb" but received ${describeValue(minProb)}`);
    if (typeof controversial !== "boolean")
        throw new TypeError(`Expected a boolean for "policy.controversial" but received ${describeValue(controversial)}`);
    return {window, minProb: minProb ?? null, controversial};
}

/** Whether a verdict counts as unsafe under the policy. */
export function countsAsUnsafe(verdict: Verdict, policy: ResolvedPolicy): boolean {
    if (policy.minProb != null) {
        const p = verdict.probs.Unsafe + (policy.controversial ? verdict.probs.Controversial : 0);
        return p >= policy.minProb;
    }
    return verdict.level === "Unsafe" || (policy.controversial && verdict.level === "Controversial");
}

/**
 * The paper's streaming rule, fed one response token at a time: the response is flagged at token i when the
 * `window` tokens ending at i all count as unsafe; token i gives the level and category.
 */
export class DecisionRule {
    private run = 0;
    private runStartOffset = 0;
    private runStartIndex = 0;
    private fired: Flag | null = null;

    constructor(readonly policy: ResolvedPolicy) {}

    /** The flag, once the rule has fired (it stays). */
    get flag(): Flag | null {
        return this.fired;
    }

    /** How many of the latest tokens count as unsafe without having fired yet (text to hold back). */
    get pendingRun(): number {
        return this.fired != null ? 0 : this.run;
    }

    /** Feeds the verdict of response token `index` whose text starts at `textOffset`; returns the flag if it fires now. */
    push(verdict: Verdict, index: number, textOffset: number): Flag | null {
        if (this.fired != null)
            return null;
        if (!countsAsUnsafe(verdict, this.policy)) {
            this.run = 0;
            return null;
        }
        if (this.run === 0) {
            this.runStartOffset = textOffset;
            this.runStartIndex = index;
        }
        this.run++;
        if (this.run < this.policy.window)
            return null;
        const level = verdict.level === "Safe" ? (verdict.probs.Unsafe >= verdict.probs.Controversial ? "Unsafe" : "Controversial") : verdict.level;
        this.fired = {index, level, category: verdict.category ?? topCategory(verdict), textOffset: this.runStartOffset,
            startIndex: this.runStartIndex};
        return this.fired;
    }
}

function topCategory(verdict: Verdict): string | null {
    let best: string | null = null;
    for (const [label, p] of Object.entries(verdict.categoryProbs))
        if (best == null || p > verdict.categoryProbs[best])
            best = label;
    return best;
}

/**
 * The response-level verdict of the official evaluation: Unsafe if two consecutive tokens are Unsafe anywhere
 * (category of the second token of the first such pair); else Controversial if two consecutive tokens are
 * non-Safe; else Safe.
 */
export function responseLevel(verdicts: readonly Verdict[]): Pick<Verdict, "level" | "category"> {
    for (const level of ["Unsafe", "Controversial"] as const) {
        for (let i = 1; i < verdicts.length; i++) {
            const matches = (verdict: Verdict) => level === "Unsafe" ? verdict.level === "Unsafe" : verdict.level !== "Safe";
            if (matches(verdicts[i - 1]) && matches(verdicts[i]))
                return {level, category: verdicts[i].category};
        }
    }
    return {level: "Safe", category: null};
}
