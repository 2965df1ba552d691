import {describeValue} from "./conversation/messages.js";

/**
 * The few predicates all option validation goes through. Each throws a TypeError naming the option, what was
 * expected and what was received: `Expected an integer between 1 and 64 for "threads" but received 0`.
 */
export function integerOption(name: string, value: unknown, min: number, max: number): number {
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max)
        throw new TypeError(`Expected an integer between ${min} and ${max} for "${name}" but received ${describeValue(value)}`);
    return value;
}

export function stringOption(name: string, value: unknown): string {
    if (typeof value !== "string" || value.length === 0)
        throw new TypeError(`Expected a non-empty string for "${name}" but received ${describeValue(value)}`);
    return value;
}

export function booleanOption(name: string, value: unknown): boolean {
    if (typeof value !== "boolean")
        throw new TypeError(`Expected a boolean for "${name}" but received ${describeValue(value)}`);
    return value;
}

export function oneOfOption<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
    if (typeof value !== "string" || !(allowed as readonly string[]).includes(value))
        throw new TypeError(`Expected one of ${allowed.map((v) => JSON.stringify(v)).join(", ")} for "${name}" but received ${describeValue(value)}`);
    return value as T;
}
