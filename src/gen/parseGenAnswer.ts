import type {RiskLevel} from "../stream/types.js";
import {GEN_PROMPT_CATEGORIES, NO_CATEGORY} from "./genTemplate.js";
import type {GenTarget} from "./genTemplate.js";

/** A generated answer that does not follow the Gen output format; `text` is what the model wrote. */
export class MalformedAnswerError extends Error {
    override name = "MalformedAnswerError";

    constructor(readonly text: string, readonly target: GenTarget, missing: string) {
        super(`Expected the model to answer "Safety: …\\nCategories: …${target === "response" ? "\\nRefusal: …" : ""}" ` +
            `but it wrote ${JSON.stringify(text)} (${missing})`);
    }
}

/** What a generated answer says. */
export interface ParsedGenAnswer {
    level: RiskLevel,
    /** The categories named, in order, without `None`. */
    categories: string[],
    refusal: "Yes" | "No" | null
}

// The official parsing patterns (Qwen3Guard README), tolerant of extra whitespace after the colon.
const safetyPattern = /Safety:\s*(Safe|Unsafe|Controversial)\b/;
const refusalPattern = /Refusal:\s*(Yes|No)\b/;
const categoriesLinePattern = /Categories:[ \t]*([^\n]*)/;
const categoryPattern = new RegExp(`(${[...GEN_PROMPT_CATEGORIES, NO_CATEGORY].map(escapeRegExp).join("|")})`, "g");

/**
 * Reads the verdict lines of a generated Gen answer with the official patterns.
 * @throws MalformedAnswerError quoting the raw text when a line is missing or names no known label
 */
export function parseGenAnswer(text: string, target: GenTarget): ParsedGenAnswer {
    const safety = safetyPattern.exec(text);
    if (safety == null)
        throw new MalformedAnswerError(text, target, "no Safety line");
    const categoriesLine = categoriesLinePattern.exec(text);
    if (categoriesLine == null)
        throw new MalformedAnswerError(text, target, "no Categories line");
    const named = [...categoriesLine[1].matchAll(categoryPattern)].map((match) => match[1]);
    if (named.length === 0)
        throw new MalformedAnswerError(text, target, "no known category");
    let refusal: ParsedGenAnswer["refusal"] = null;
    if (target === "response") {
        const match = refusalPattern.exec(text);
        if (match == null)
            throw new MalformedAnswerError(text, target, "no Refusal line");
        refusal = match[1] as "Yes" | "No";
    }
    return {level: safety[1] as RiskLevel, categories: named.filter((category) => category !== NO_CATEGORY), refusal};
}

function escapeRegExp(text: string): string {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
