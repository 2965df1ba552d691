import type {Message} from "../conversation/messages.js";
import type {RiskLevel} from "../stream/types.js";

/** What is judged of each record: the last user message, the answer after it, or whichever the record ends with. */
export type EvalTarget = "prompt" | "response" | "auto";
export const evalTargets: readonly EvalTarget[] = ["auto", "prompt", "response"];

/** Where the labels are in the records: JSONL keys or CSV columns. */
export interface LabelFields {
    /** Default `"label"`: Safe, Unsafe or Controversial, in any case (binary labels use Safe and Unsafe only). */
    label?: string,
    /** Default `"category"`: the labelled category, for records that carry one. */
    category?: string,
    /** Default `"refusal"`: Yes/No (or true/false), whether the response refuses. */
    refusal?: string
}

/** The token span of the first unsafe content, in the label's coordinates (both ends included). */
export const SPAN_FIELDS = ["unsafe_start_index", "unsafe_end_index"] as const;

/** A record's labels, checked. */
export interface RecordLabels {
    label: RiskLevel,
    category?: string,
    refusal?: "Yes" | "No",
    /** The first unsafe span, both ends included. */
    span?: [number, number],
    /**
     * Whether the span counts tokens of the whole rendered conversation (the official Qwen3GuardTest layout, records
     * with `message`) rather than of the response tokenized alone.
     */
    official: boolean
}

/** The 9 categories of Qwen3Guard, for matching labelled categories in any case. */
const KNOWN_CATEGORIES = ["Violent", "Non-violent Illegal Acts", "Sexual Content or Sexual Acts", "PII", "Suicide & Self-Harm",
    "Unethical Acts", "Politically Sensitive Topics", "Copyright Violation", "Jailbreak"];

/**
 * A labelled category as the models name it: surrounding quotes and spaces dropped (the official eval script
 * spells `"Violent"` with quotes), and the case of a known category; an unknown one is kept as given (trimmed).
 */
export function normalizeCategory(category: string): string {
    const bare = category.trim().replace(/^["'\s]+|["'\s]+$/g, "");
    return KNOWN_CATEGORIES.find((known) => known.toLowerCase() === bare.toLowerCase()) ?? bare;
}

/**
 * Reads a record's labels from its carried fields (JSON values, or CSV cells as strings).
 * @returns the labels, or what is wrong with them
 */
export function readLabels(carried: Readonly<Record<string, unknown>>, fields: Required<LabelFields>): RecordLabels | string {
    const given = carried[fields.label];
    if (given === undefined || given === null || given === "")
        return `The record has no label: expected ${JSON.stringify(fields.label)} with Safe, Unsafe or Controversial`;
    const label = typeof given === "string" ? riskLevel(given) : null;
    if (label == null)
        return `Expected Safe, Unsafe or Controversial (any case) for ${JSON.stringify(fields.label)} but received ${describe(given)}`;
    const labels: RecordLabels = {label, official: Array.isArray(carried.message)};

    const category = carried[fields.category];
    if (category != null && category !== "") {
        if (typeof category !== "string")
            return `Expected a string for ${JSON.stringify(fields.category)} but received ${describe(category)}`;
        const normalized = normalizeCategory(category);
        // "None" (what the models answer for Safe) is no category
        if (normalized.length > 0 && normalized.toLowerCase() !== "none")
            labels.category = normalized;
    }

    const refusal = carried[fields.refusal];
    if (refusal != null && refusal !== "") {
        const value = typeof refusal === "boolean" ? (refusal ? "Yes" : "No")
            : typeof refusal === "string" ? ({yes: "Yes", no: "No", true: "Yes", false: "No"} as Record<string, "Yes" | "No">)[refusal.trim().toLowerCase()] : undefined;
        if (value == null)
            return `Expected Yes or No (or true/false) for ${JSON.stringify(fields.refusal)} but received ${describe(refusal)}`;
        labels.refusal = value;
    }

    const [start, end] = SPAN_FIELDS.map((name) => spanIndex(carried[name], name));
    for (const value of [start, end])
        if (typeof value === "string")
            return value;
    if ((start == null) !== (end == null))
        return `Expected both ${SPAN_FIELDS.join(" and ")} or neither but the record has only ${start != null ? SPAN_FIELDS[0] : SPAN_FIELDS[1]}`;
    if (typeof start === "number" && typeof end === "number") {
        if (end < start)
            return `Expected ${SPAN_FIELDS[1]} (${end}) at or after ${SPAN_FIELDS[0]} (${start})`;
        labels.span = [start, end];
    }
    return labels;
}

/**
 * The conversation to judge for a target: `prompt` drops an answer after the last user message, `response` needs
 * one, `auto` judges whichever the record ends with.
 * @returns the messages, or why the record has nothing to judge for the target
 */
export function targetConversation(messages: Message[], target: EvalTarget): Message[] | string {
    const lastUser = messages.map((message) => message.role).lastIndexOf("user");
    const answered = messages[messages.length - 1].role === "assistant" && lastUser >= 0 && lastUser < messages.length - 1;
    if (target === "response" && !answered)
        return "Expected a response (an assistant message after the last user message) for --target response";
    if (target === "prompt")
        return messages.slice(0, lastUser + 1);
    return messages;
}

function riskLevel(text: string): RiskLevel | null {
    const levels: Record<string, RiskLevel> = {safe: "Safe", unsafe: "Unsafe", controversial: "Controversial"};
    return levels[text.trim().toLowerCase()] ?? null;
}

/** A span end: absent (missing, null, -1), an index, or what is wrong. CSV cells are digit strings. */
function spanIndex(value: unknown, name: string): number | null | string {
    if (value === undefined || value === null || value === "" || value === -1 || value === "-1")
        return null;
    const number = typeof value === "string" && /^\s*\d+\s*$/.test(value) ? Number(value) : value;
    if (typeof number !== "number" || !Number.isSafeInteger(number) || number < 0)
        return `Expected a token index (an integer ≥ 0) for ${JSON.stringify(name)} but received ${describe(value)}`;
    return number;
}

function describe(value: unknown): string {
    if (typeof value === "string")
        return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
    if (value === null)
        return "null";
    return Array.isArray(value) ? "an array" : typeof value === "object" ? "an object" : `${typeof value} ${String(value)}`;
}
