import {nfc} from "./nfc.js";

/**
 * A prompt as a list of pieces, each either a special token of the template or plain text.
 * Rendering gives the exact template text; tokenizing parses special tokens ONLY where the template put them:
 * the text between two special tokens is tokenized as one fragment with special-token parsing off, so user text
 * containing `<|im_end|>` stays text (no injection) while token boundaries equal whole-text tokenization.
 */
export type TokenSegment = {special: string} | {text: string};

/** Tokenizes text with the model's vocabulary; `parseSpecial` turns special-token parsing on. */
export type TokenizeFunction = (text: string, parseSpecial: boolean) => Int32Array;

/** The exact text of the segments. */
export function renderSegments(segments: readonly TokenSegment[]): string {
    return segments.map((segment) => "special" in segment ? segment.special : segment.text).join("");
}

/**
 * Token ids of the segments; text is tokenized in NFC, as the Qwen3 tokenizer normalizes it (special tokens are
 * untouched by NFC either way).
 * @throws when a template special token is not a single token of the vocabulary
 */
export function tokenizeSegments(segments: readonly TokenSegment[], tokenize: TokenizeFunction): number[] {
    const ids: number[] = [];
    let fragment = "";
    const flush = () => {
        if (fragment.length > 0) {
            // one by one: spreading a few hundred thousand ids into push() overflows the call stack
            for (const id of tokenize(nfc(fragment), false))
                ids.push(id);
        }
        fragment = "";
    };
    for (const segment of segments) {
        if ("text" in segment) {
            fragment += segment.text;
            continue;
        }
        flush();
        const special = tokenize(segment.special, true);
        if (special.length !== 1)
            throw new Error(`Expected the template token ${segment.special} to be one token of the model's vocabulary but it is ${special.length}`);
        ids.push(special[0]);
    }
    flush();
    return ids;
}
