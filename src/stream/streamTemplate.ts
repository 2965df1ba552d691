import type {Message} from "../conversation/messages.js";
import type {TokenSegment} from "../conversation/TokenSegments.js";

const imStart = {special: "<|im_start|>"};
const imEnd = {special: "<|im_end|>"};

/** The empty think block Qwen3 puts before the answer when thinking is off. */
const emptyThink: TokenSegment[] = [{special: "<think>"}, {text: "\n\n"}, {special: "</think>"}, {text: "\n\n"}];

function turn(role: string, content: TokenSegment[]): TokenSegment[] {
    return [imStart, {text: `${role}\n`}, ...content, imEnd, {text: "\n"}];
}

/**
 * The plain Qwen3 ChatML rendering that Qwen3Guard-Stream reads (`enable_thinking=False`, no generation prompt),
 * byte for byte as the official tokenizer's chat template for messages as a generator produces them: the assistant
 * turn that follows the LAST user message gets an empty think block before its text; earlier assistant turns do not.
 * The response is kept as given, since it is scored as it streams: the official template would also strip its leading
 * newlines and move text before a `</think>` into the think block (eval's officialStreamRendering does that, for the
 * official test set's token indices).
 */
export function streamConversationSegments(messages: readonly Message[]): TokenSegment[] {
    const lastUser = messages.map((message) => message.role).lastIndexOf("user");
    return messages.flatMap((message, index) => {
        const content: TokenSegment[] = [{text: message.content}];
        if (message.role === "assistant" && index > lastUser)
            return turn("assistant", [...emptyThink, ...content]);
        return turn(message.role, content);
    });
}

/**
 * The session prompt: the conversation up to and including the `<|im_end|>` that closes the last user turn,
 * where the query head gives the prompt verdict.
 */
export function streamPromptSegments(messages: readonly Message[]): TokenSegment[] {
    const segments = streamConversationSegments(messages);
    // drop the "\n" after the final <|im_end|>: it belongs to the assistant header
    return segments.slice(0, -1);
}

/**
 * What comes between the prompt verdict position and the first response token.
 * With `thinking`, the response is expected to carry its own `<think>…</think>` block, and every token of it is scored.
 */
export function streamAssistantHeaderSegments(thinking: boolean): TokenSegment[] {
    return [{text: "\n"}, imStart, {text: "assistant\n"}, ...(thinking ? [] : emptyThink)];
}
