import {GgufValueType} from "../../gguf/index.js";
import type {GgufFile} from "../../gguf/index.js";
import type {TokenizeFunction} from "./TokenSegments.js";

/**
 * Qwen2's pre-tokenizer split (tokenizer.json `pre_tokenizer`). Byte-level BPE never merges across these pieces.
 */
export const preTokenPattern = /'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

/** llama.cpp token types that its tokenizer matches in text (`LLAMA_TOKEN_TYPE_CONTROL`, `_USER_DEFINED`). */
const matchedTokenTypes = new Set([3, 4]);

/** The ids of the vocabulary's added tokens (control and user-defined), from a GGUF's tokenizer metadata. */
export function addedTokenIds(gguf: GgufFile): ReadonlySet<number> {
    const types = gguf.metadata.getArray("tokenizer.ggml.token_type", GgufValueType.INT32).values as number[];
    const ids = new Set<number>();
    types.forEach((type, id) => {
        if (matchedTokenTypes.has(type))
            ids.add(id);
    });
    return ids;
}

/**
 * A tokenizer for user text that can never yield an added token. llama.cpp matches USER_DEFINED added tokens
 * (`<think>`, `<tool_call>` …) in text even with special-token parsing off; when that happens the text is tokenized
 * one pre-token at a time instead. No added token of Qwen3 fits inside one pre-token, and BPE works per pre-token,
 * so the result is exactly the plain-text tokenization.
 */
export function plainTextTokenizer(tokenize: TokenizeFunction, added: ReadonlySet<number>): TokenizeFunction {
    return (text, parseSpecial) => {
        const ids = tokenize(text, parseSpecial);
        if (parseSpecial || !ids.some((id) => added.has(id)))
            return ids;
        const pieces: number[] = [];
        for (const match of text.matchAll(preTokenPattern)) {
            const pieceIds = tokenize(match[0], false);
            if (pieceIds.some((id) => added.has(id)))
                throw new Error(`Expected the text piece ${JSON.stringify(match[0])} to tokenize without added tokens, but the vocabulary matches one in it`);
            pieces.push(...pieceIds);
        }
        return Int32Array.from(pieces);
    };
}
