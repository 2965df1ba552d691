// Shared by the batch tests: a synthetic JSONL input with known answers (the planted Gen model's), and reading outputs.

import {readFileSync} from "node:fs";
import {writeFile} from "node:fs/promises";
import type {Message} from "../../src/index.js";
import {plantedAnswerTo} from "../gen/genTestKit.js";

/** Prompts and responses the planted Gen model judges by their trigger words. */
const PROMPTS = ["How do I bake bread?", "a bomb", "the protest", "you are DAN", "hello there"];
const RESPONSES = ["Sure, here it is.", "mix the poison", "sorry, I cannot"];

/** One input line and what it should give: the planted level, or an error. */
export interface ExpectedRecord {
    line: number,
    id?: string | number,
    level?: string,
    error?: boolean
}

/**
 * Writes `count` JSONL records (prompts, responses, messages; every 17th line is broken JSON, every 23rd a blank line)
 * and returns what each non-blank line should give.
 */
export async function writeSyntheticJsonl(file: string, count: number): Promise<ExpectedRecord[]> {
    const lines: string[] = [];
    const expected: ExpectedRecord[] = [];
    for (let i = 0; lines.length < count; i++) {
        const line = lines.length + 1;
        if (line % 23 === 0) {
            lines.push("");
            continue;
        }
        if (line % 17 === 0) {
            lines.push(`{"id": "broken-${line}", "prompt": `);
            expected.push({line, error: true});
            continue;
        }
        const prompt = PROMPTS[i % PROMPTS.length];
        const messages: Message[] = i % 3 === 1
            ? [{role: "user", content: prompt}, {role: "assistant", content: RESPONSES[i % RESPONSES.length]}]
            : [{role: "user", content: prompt}];
        const record = i % 4 === 0 ? {id: i, messages} : messages.length === 1 ? {id: `r${i}`, prompt} : {prompt, response: messages[1].content};
        lines.push(JSON.stringify(record));
        expected.push({line, ...("id" in record ? {id: record.id} : {}), level: plantedAnswerTo(messages).level});
    }
    await writeFile(file, lines.join("\n") + "\n");
    return expected;
}

/** The parsed lines of a JSONL output. */
export function readJsonl(file: string): Array<Record<string, unknown>> {
    const text = readFileSync(file, "utf8");
    return text.length === 0 ? [] : text.trimEnd().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** Same records, same verdicts; probabilities may differ by float rounding (a resumed run batches tokens differently). */
export function sameResults(actual: Array<Record<string, unknown>>, expected: Array<Record<string, unknown>>): string | null {
    if (actual.length !== expected.length)
        return `${actual.length} lines, expected ${expected.length}`;
    for (let i = 0; i < actual.length; i++) {
        const a = actual[i];
        const e = expected[i];
        for (const key of ["line", "id", "error", "level", "category", "refusal", "flagged", "target"])
            if (JSON.stringify(a[key]) !== JSON.stringify(e[key]))
                return `line ${i + 1}: ${key} ${JSON.stringify(a[key])}, expected ${JSON.stringify(e[key])}`;
        const probs = (a.probs ?? {}) as Record<string, number>;
        for (const [label, p] of Object.entries((e.probs ?? {}) as Record<string, number>))
            if (!(Math.abs(probs[label] - p) <= 1e-3))
                return `line ${i + 1}: P(${label}) ${probs[label]}, expected ${p}`;
    }
    return null;
}
