import {nfc} from "../conversation/nfc.js";
import type {Message} from "../conversation/messages.js";
import type {JudgeTokenizer} from "../moderation/Judge.js";
import {streamConversationSegments} from "../stream/streamTemplate.js";

/** Where a Stream flag falls in a label's tokenization, and how many tokens that tokenization has. */
export interface LabelPosition {
    /** The label token that holds the last byte of the response token where the rule fired; null when it never fired. */
    flagAt: number | null,
    /** Tokens in the label's tokenization (a span must lie before this). */
    labelTokens: number
}

/**
 * Maps the response token where the decision rule fired to the label's token positions, through bytes: the label
 * tokenization is the whole conversation rendered with the Stream chat template (the official layout: the official
 * script's `unsafe_start_index` counts tokens of `apply_chat_template(messages)`), or the response alone. Token
 * texts are byte-level BPE pieces, so their bytes add up to the NFC text exactly, whatever the tokenizations'
 * boundaries (a response that starts with a newline merges with the template's `\n\n` in the whole text).
 * @param messages - the conversation judged, ending with the response
 * @param responseTokens - the token ids the Stream model scored for the response
 * @param flagIndex - the index among them where the rule fired, or null
 */
export function labelPosition(tokenizer: JudgeTokenizer, messages: readonly Message[], responseTokens: readonly number[], flagIndex: number | null,
    official: boolean): LabelPosition {
    const response = messages[messages.length - 1].content;
    let labelIds: number[];
    let responseStart = 0;
    if (official) {
        const segments = streamConversationSegments(messages);
        labelIds = tokenizer.tokenize(segments);
        // the response's text is the last turn's content: followed only by <|im_end|> and "\n"
        for (const segment of segments.slice(0, -3))
            responseStart += Buffer.byteLength("special" in segment ? segment.special : nfc(segment.text));
    } else {
        labelIds = tokenizer.tokenize([{text: response}]);
    }
    if (flagIndex == null)
        return {flagAt: null, labelTokens: labelIds.length};
    let flagEnd = responseStart;
    for (let i = 0; i <= flagIndex; i++)
        flagEnd += tokenizer.tokenBytes(responseTokens[i]).length;
    let bytes = 0;
    for (let j = 0; j < labelIds.length; j++) {
        bytes += tokenizer.tokenBytes(labelIds[j]).length;
        if (bytes >= flagEnd)
            return {flagAt: j, labelTokens: labelIds.length};
    }
    throw new Error(`The response token ${flagIndex} ends at byte ${flagEnd}, past the label tokenization's ${bytes} bytes`);
}
