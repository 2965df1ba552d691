import type {GenPolicyOption} from "../gen/genPolicy.js";
import {UsageError} from "./UsageError.js";

/** `--policy`: strict, loose, or a number in (0, 1] (flag when P(Unsafe) + P(Controversial) reaches it). */
export function parsePolicy(policy: string): GenPolicyOption {
    if (policy === "strict" || policy === "loose")
        return policy;
    const minProb = probabilityOf(policy);
    if (minProb == null)
        throw new UsageError(`Expected strict, loose or a number in (0, 1] for --policy but received ${JSON.stringify(policy)}`);
    return {minProb};
}

/** A flag that takes a number in (0, 1], or undefined when not given. */
export function probabilityFlag(flag: string, value: string | undefined): number | undefined {
    if (value == null)
        return undefined;
    const number = probabilityOf(value);
    if (number == null)
        throw new UsageError(`Expected a number in (0, 1] for ${flag} but received ${JSON.stringify(value)}`);
    return number;
}

/** A plain decimal in (0, 1], or null. */
function probabilityOf(text: string): number | null {
    const number = Number(text);
    return /^(?:\d+\.?\d*|\.\d+)$/.test(text) && number > 0 && number <= 1 ? number : null;
}

/** A positive integer flag, or undefined when not given. */
export function integerFlag(flag: string, value: string | undefined): number | undefined {
    if (value == null)
        return undefined;
    const number = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(number) || number === 0)
        throw new UsageError(`Expected a positive integer for ${flag} but received ${JSON.stringify(value)}`);
    return number;
}

/** `--mode`: score or generate (Gen models). */
export function parseMode(mode: string | undefined): "score" | "generate" | undefined {
    if (mode != null && mode !== "score" && mode !== "generate")
        throw new UsageError(`Expected score or generate for --mode but received ${JSON.stringify(mode)}`);
    return mode;
}
