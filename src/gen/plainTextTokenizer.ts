import type {TokenizeFunction} from "../conversation/TokenSegments.js";

/**
 * A tokenizer for {@link tokenizeSegments} under which user text can never become a special token.
 *
 * llama.cpp skips CONTROL tokens (`<|im_end|>`, …) when special-token parsing is off, but it still matches
 * USER_DEFINED tokens inside plain text: Qwen3's `<think>`, `</think>`, `<tool_call>`, … So a user who writes
 * `</think>` would place the real `</think>` token in the conversation. Here every occurrence of a user-defined
 * token's text inside plain text is cut before its last character (`</think` + `>`), which is also a boundary of
 * Qwen2's pre-tokenizer (a letter, then `>`), so the ids equal those of a tokenizer that knew no such token.
 *
 * @param tokenize - the model's tokenizer (`parseSpecial` as llama.cpp's `parse_special`)
 * @param userDefinedTexts - the texts of the vocabulary's USER_DEFINED tokens
 * @param isUserDefined - whether a token id is one of them (the result is checked)
 */
export function plainTextTokenizer(tokenize: TokenizeFunction, userDefinedTexts: readonly string[],
    isUserDefined: (token: number) => boolean): TokenizeFunction {
    const texts = userDefinedTexts.filter((text) => text.length > 1);
    return (text, parseSpecial) => {
        if (parseSpecial || texts.length === 0)
            return tokenize(text, parseSpecial);
        const ids: number[] = [];
        let start = 0;
        for (const cut of cutPoints(text, texts)) {
            ids.push(...tokenize(text.slice(start, cut), false));
            start = cut;
        }
        ids.push(...tokenize(text.slice(start), false));
        const leaked = ids.find(isUserDefined);
        if (leaked != null)
            throw new Error(`Expected plain text to tokenize without special tokens but token ${leaked} appeared in ${JSON.stringify(text.slice(0, 80))}`);
        return Int32Array.from(ids);
    };
}

/** Offsets just before the last character of every occurrence of the texts, in ascending order. */
function cutPoints(text: string, texts: readonly string[]): number[] {
    const cuts = new Set<number>();
    for (const special of texts) {
        for (let at = text.indexOf(special); at >= 0; at = text.indexOf(special, at + 1))
            cuts.add(at + special.length - 1);
    }
    return [...cuts].sort((a, b) => a - b);
}
