import {resolveGenPolicy} from "../gen/genPolicy.js";
import type {GenPolicyOption} from "../gen/genPolicy.js";
import {describeValue} from "../conversation/messages.js";
import {resolvePolicy} from "../stream/DecisionRule.js";
import type {PolicyOption} from "../stream/types.js";

/**
 * A policy as a request or the server's options give it: `"strict"`, `"loose"`, a number in (0, 1] (flag when
 * P(Unsafe) + P(Controversial) reaches it, as `--policy` takes it), or an object `{minProb?, controversial?, window?}`
 * (`window`: consecutive tokens for the Stream decision rule; Gen and prompt verdicts ignore it).
 */
export type ServerPolicy = "strict" | "loose" | number | {minProb?: number, controversial?: boolean, window?: number};

/** A server policy in the two forms the library takes, both checked. */
export interface ResolvedServerPolicy {
    /** For Gen verdicts and Stream prompt verdicts. */
    gen: GenPolicyOption,
    /** For the Stream decision rule over a response. */
    stream: PolicyOption,
    /** Whether Controversial counts as unsafe (for OpenAI's category scores). */
    controversial: boolean
}

/**
 * Checks a policy and gives it in the library's forms.
 * @throws TypeError naming "policy", what was expected and what was received
 */
export function resolveServerPolicy(policy: unknown): ResolvedServerPolicy {
    if (policy === "strict" || policy === "loose")
        return {gen: policy, stream: policy, controversial: policy === "strict"};
    if (typeof policy === "number")
        return resolveServerPolicy({minProb: policy});
    if (policy == null || typeof policy !== "object" || Array.isArray(policy))
        throw new TypeError(`Expected "strict", "loose", a number in (0, 1] or {minProb?, controversial?, window?} for "policy" but received ${describeValue(policy)}`);
    const {minProb, controversial, window, ...rest} = policy as Record<string, unknown>;
    const unknown = Object.keys(rest);
    if (unknown.length > 0)
        throw new TypeError(`Expected only minProb, controversial and window in "policy" but received ${unknown.map((key) => JSON.stringify(key)).join(", ")}`);
    const stream = {window, minProb, controversial} as PolicyOption;
    const checked = resolvePolicy(stream);
    const gen: GenPolicyOption = checked.minProb == null ? (checked.controversial ? "strict" : "loose")
        : {minProb: checked.minProb, controversial: checked.controversial};
    resolveGenPolicy(gen);
    return {gen, stream: {window: checked.window, ...(checked.minProb != null ? {minProb: checked.minProb} : {}), controversial: checked.controversial},
        controversial: checked.controversial};
}
