import {nfc} from "../conversation/nfc.js";
import type {Message} from "../conversation/messages.js";
import type {JudgeTokenizer} from "../moderation/Judge.js";
import type {TokenSegment} from "../conversation/TokenSegments.js";

/** Where a Stream flag falls in a label's tokenization, and how many tokens that tokenization has. */
export interface LabelPosition {
    /** The label token that holds the last byte of the response token where the rule fired; null when it never fired. */
    flagAt: number | null,
    /** Tokens in the label's tokenization (a span must lie before this). */
    labelTokens: number
}

/** A stretch of the response that the label's rendering keeps: its UTF-8 byte offset in the response as scored, its
 * offset in the label's rendering, and its length. */
interface KeptStretch {
    scored: number,
    label: number,
    length: number
}

const bytesOf = (text: string) => Buffer.byteLength(text);
const leadingNewlines = (text: string) => text.length - text.replace(/^\n+/, "").length;
const trailingNewlines = (text: string) => text.length - text.replace(/\n+$/, "").length;

/**
 * The conversation as the official Qwen3 chat template renders it (`enable_thinking=False`, no generation prompt):
 * the rendering whose tokens the official Qwen3GuardTest indices count. It differs from the Stream model's own
 * rendering (streamConversationSegments, the response as given) where the template rewrites an assistant message:
 * a `</think>` in it splits reasoning from the answer (the reasoning goes into the think block of the turn after the
 * last user message, and is dropped from earlier turns), and newlines at the start of the answer are stripped.
 * @returns the segments, and where the last message's (the response's) kept stretches lie in them
 */
export function officialStreamRendering(messages: readonly Message[]): {segments: TokenSegment[], response: KeptStretch[], responseEnd: number} {
    const lastUser = messages.map((message) => message.role).lastIndexOf("user");
    const segments: TokenSegment[] = [];
    let offset = 0;
    const push = (segment: TokenSegment) => {
        segments.push(segment);
        offset += bytesOf("special" in segment ? segment.special : segment.text);
    };
    let response: KeptStretch[] = [];
    let responseEnd = 0;
    messages.forEach((message, index) => {
        const text = nfc(message.content);
        push({special: "<|im_start|>"});
        push({text: `${message.role}\n`});
        if (message.role !== "assistant") {
            push({text});
        } else {
            // the template's own string operations, with the offsets of what they keep
            let answerStart = 0;
            let reasoning = {start: 0, text: ""};
            const close = text.lastIndexOf("</think>");
            if (close >= 0) {
                const before = text.slice(0, text.indexOf("</think>"));
                const open = before.lastIndexOf("<think>");
                const start = open >= 0 ? open + "<think>".length : 0;
                const raw = before.slice(start);
                const lead = leadingNewlines(raw);
                reasoning = {start: start + lead, text: raw.slice(lead, raw.length - trailingNewlines(raw))};
                answerStart = close + "</think>".length;
            }
            const afterLastUser = index > lastUser && (index === messages.length - 1 || reasoning.text.length > 0);
            // lstrip("\n") of the answer: where </think> split it, and in the turn after the last user message
            if (close >= 0 || afterLastUser)
                answerStart += leadingNewlines(text.slice(answerStart));
            const answer = text.slice(answerStart);
            const stretches: KeptStretch[] = [];
            if (afterLastUser) {
                push({special: "<think>"});
                push({text: "\n"});
                stretches.push({scored: bytesOf(text.slice(0, reasoning.start)), label: offset, length: bytesOf(reasoning.text)});
                push({text: reasoning.text + "\n"});
                push({special: "</think>"});
                push({text: "\n\n"});
            }
            stretches.push({scored: bytesOf(text.slice(0, answerStart)), label: offset, length: bytesOf(answer)});
            push({text: answer});
            if (index === messages.length - 1)
                response = stretches.filter((stretch) => stretch.length > 0);
        }
        push({special: "<|im_end|>"});
        responseEnd = offset;
        push({text: "\n"});
    });
    return {segments, response, responseEnd};
}

/**
 * The byte count in the label's rendering that ends where `scoredEnd` bytes of the response end: inside a kept
 * stretch, the same byte; in text the template drops (a stripped newline, a `<think>` tag), the first kept byte after
 * it; after the last kept byte (an answer that is all newlines), the response turn's `<|im_end|>`.
 */
function labelEnd(stretches: readonly KeptStretch[], scoredEnd: number, fallback: number): number {
    for (const stretch of stretches) {
        if (scoredEnd <= stretch.scored)
            return stretch.label + 1;
        if (scoredEnd <= stretch.scored + stretch.length)
            return stretch.label + scoredEnd - stretch.scored;
    }
    return fallback;
}

/**
 * Maps the response token where the decision rule fired to the label's token positions, through bytes: the label
 * tokenization is the whole conversation as the official Qwen3 chat template renders it (the official layout: the
 * official script's `unsafe_start_index` counts tokens of `apply_chat_template(messages)`; see
 * officialStreamRendering), or the response alone. Token texts are byte-level BPE pieces, so their bytes add up to
 * the NFC text exactly, whatever the tokenizations' boundaries (an answer that starts with a newline merges with the
 * template's `\n\n` in our rendering, and loses it in the official one).
 * @param messages - the conversation judged, ending with the response
 * @param responseTokens - the token ids the Stream model scored for the response
 * @param flagIndex - the index among them where the rule fired, or null
 */
export function labelPosition(tokenizer: JudgeTokenizer, messages: readonly Message[], responseTokens: readonly number[], flagIndex: number | null,
    official: boolean): LabelPosition {
    const rendering = official ? officialStreamRendering(messages) : null;
    const labelIds = tokenizer.tokenize(rendering?.segments ?? [{text: messages[messages.length - 1].content}]);
    if (flagIndex == null)
        return {flagAt: null, labelTokens: labelIds.length};
    let scoredEnd = 0;
    for (let i = 0; i <= flagIndex; i++)
        scoredEnd += tokenizer.tokenBytes(responseTokens[i]).length;
    const flagEnd = rendering == null ? scoredEnd : labelEnd(rendering.response, scoredEnd, rendering.responseEnd);
    let bytes = 0;
    for (let j = 0; j < labelIds.length; j++) {
        bytes += tokenizer.tokenBytes(labelIds[j]).length;
        if (bytes >= flagEnd)
            return {flagAt: j, labelTokens: labelIds.length};
    }
    throw new Error(`The response token ${flagIndex} ends at byte ${flagEnd}, past the label tokenization's ${bytes} bytes`);
}
