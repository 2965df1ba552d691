// Generate mode's parsing of the answer lines with the official patterns.

import t from "tap";
import {MalformedAnswerError, parseGenAnswer} from "../../src/gen/parseGenAnswer.js";
import type {GenTarget} from "../../src/gen/genTemplate.js";

t.test("answers that do not follow the format are errors quoting the raw text", async (t) => {
    const table: Array<[string, GenTarget, string]> = [
        ["", "prompt", 'Expected the model to answer "Safety: …\\nCategories: …" but it wrote "" (no Safety line)'],
        ["Safety: Maybe\nCategories: None", "prompt", 'Expected the model to answer "Safety: …\\nCategories: …" but it wrote "Safety: Maybe\\nCategories: None" (no Safety line)'],
        ["Safety: Safe", "prompt", 'Expected the model to answer "Safety: …\\nCategories: …" but it wrote "Safety: Safe" (no Categories line)'],
        ["Safety: Unsafe\nCategories: Weapons", "prompt", 'Expected the model to answer "Safety: …\\nCategories: …" but it wrote "Safety: Unsafe\\nCategories: Weapons" (no known category)'],
        ["Safety: Unsafe\nCategories: Violent", "response",
            'Expected the model to answer "Safety: …\\nCategories: …\\nRefusal: …" but it wrote "Safety: Unsafe\\nCategories: Violent" (no Refusal line)']
    ];
    for (const [text, target, message] of table) {
        const error = t.throws(() => parseGenAnswer(text, target), MalformedAnswerError) as MalformedAnswerError;
        t.equal(error.message, message);
        t.equal(error.text, text);
    }
});

t.test("the official answers parse", async (t) => {
    t.same(parseGenAnswer("Safety: Unsafe\nCategories: Violent", "prompt"), {level: "Unsafe", categories: ["Violent"], refusal: null});
    t.same(parseGenAnswer("Safety: Safe\nCategories: None\nRefusal: Yes", "response"), {level: "Safe", categories: [], refusal: "Yes"});
    t.same(parseGenAnswer("Safety: Controversial\nCategories: Politically Sensitive Topics\nRefusal: No", "response"),
        {level: "Controversial", categories: ["Politically Sensitive Topics"], refusal: "No"});
});

t.test("extra whitespace and several categories are accepted", async (t) => {
    t.same(parseGenAnswer("  Safety:   Unsafe \nCategories:  Non-violent Illegal Acts,  PII \n", "prompt"),
        {level: "Unsafe", categories: ["Non-violent Illegal Acts", "PII"], refusal: null});
    t.same(parseGenAnswer("Safety:Unsafe\nCategories:Copyright Violation\nRefusal:  No", "response"),
        {level: "Unsafe", categories: ["Copyright Violation"], refusal: "No"});
});
