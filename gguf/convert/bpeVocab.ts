// The tokenizer metadata llama.cpp's converter writes for a Hugging Face byte-level BPE tokenizer (its `gpt2` model):
// the token list padded to the model's vocabulary size, token types, merges, special token ids, add-token flags and
// the chat template, read from tokenizer.json, tokenizer_config.json and config.json.

import fs from "node:fs/promises";
import path from "node:path";
import {GgufValueType} from "../ggmlTypes.js";
import type {GgufWriter} from "../GgufWriter.js";
import {CheckpointConfigError} from "./errors.js";
import {readJsonFile} from "./hfCheckpoint.js";
import type {HfConfig} from "./qwen3Hparams.js";

/** llama.cpp token types (`enum llama_token_type`, gguf-py `TokenType`). */
export enum LlamaTokenType {
    NORMAL = 1,
    UNKNOWN = 2,
    CONTROL = 3,
    USER_DEFINED = 4,
    UNUSED = 5,
    BYTE = 6
}

/** The special token kinds of gguf-py's `SpecialVocab`, in its order. */
const SPECIAL_TOKEN_KINDS = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"] as const;

/** A special token kind. */
export type SpecialTokenKind = (typeof SPECIAL_TOKEN_KINDS)[number];

/** Everything a GGUF's `tokenizer.*` keys hold for a byte-level BPE tokenizer. */
export interface BpeVocab {
    /** One token per id up to the model's vocab_size; ids the tokenizer lacks are `[PAD<id>]`. */
    readonly tokens: readonly string[];
    readonly tokenTypes: readonly LlamaTokenType[];
    /** Merges as `"left right"`, spaces inside a part written as U+0120 (`Ġ`) as gguf-py does. */
    readonly merges: readonly string[];
    /** Special token ids, in the order gguf-py finds them (tokenizer_config.json first, then config.json). */
    readonly specialTokenIds: ReadonlyMap<SpecialTokenKind, number>;
    /** The `add_<kind>_token` flags of tokenizer_config.json. */
    readonly addSpecialTokens: ReadonlyMap<SpecialTokenKind, boolean>;
    readonly chatTemplate: string | undefined;
}

interface AddedToken {
    readonly id: number;
    readonly content: string;
    readonly special: boolean;
}

// The GGUF keys of gguf-py's GGUFWriter handlers; kinds without a handler (cls ids, most add flags) are not written.
const SPECIAL_TOKEN_ID_KEYS: Partial<Record<SpecialTokenKind, string>> = {
    bos: "tokenizer.ggml.bos_token_id",
    eos: "tokenizer.ggml.eos_token_id",
    unk: "tokenizer.ggml.unknown_token_id",
    sep: "tokenizer.ggml.seperator_token_id",
    pad: "tokenizer.ggml.padding_token_id",
    mask: "tokenizer.ggml.mask_token_id"
};
const ADD_SPECIAL_TOKEN_KEYS: Partial<Record<SpecialTokenKind, string>> = {
    bos: "tokenizer.ggml.add_bos_token",
    eos: "tokenizer.ggml.add_eos_token",
    sep: "tokenizer.ggml.add_sep_token"
};

/** The tokenizer files a conversion reads. */
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"] as const;

/**
 * Read a Hugging Face fast tokenizer (tokenizer.json with a BPE model) the way llama.cpp's `_set_vocab_gpt2` does.
 * @param dir - the checkpoint directory
 * @param config - its parsed config.json (for `*_token_id` fallbacks)
 * @param vocabSize - the model's vocab_size: the token list is padded to it
 * @throws {MissingCheckpointFileError} when tokenizer.json or tokenizer_config.json is absent
 * @throws {CheckpointConfigError} when tokenizer.json is not a BPE tokenizer, or has a token id at or above `vocabSize`
 */
export async function readBpeVocab(dir: string, config: HfConfig, vocabSize: number): Promise<BpeVocab> {
    const [tokenizer, tokenizerConfig] = await Promise.all(TOKENIZER_FILES.map(async (file) => readJsonFile(dir, file)));
    const model = tokenizer.model as {type?: unknown; vocab?: unknown; merges?: unknown} | undefined;
    if (model?.type !== "BPE" || typeof model.vocab !== "object" || model.vocab === null)
        throw new CheckpointConfigError(`Expected a BPE model with a vocab in tokenizer.json but got ${JSON.stringify(model?.type)}`);

    const addedTokens = readAddedTokens(tokenizer.added_tokens);
    const byId = new Map<number, string>();
    for (const [token, id] of Object.entries(model.vocab as Record<string, unknown>)) {
        if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0)
            throw new CheckpointConfigError(`Expected a non-negative integer id for token ${JSON.stringify(token)} in tokenizer.json's vocab but got ${JSON.stringify(id)}`);
        const previous = byId.get(id);
        if (previous !== undefined)
            throw new CheckpointConfigError(`Expected one token per id in tokenizer.json's vocab but id ${id} is both ${JSON.stringify(previous)} and ${JSON.stringify(token)}`);
        byId.set(id, token);
    }
    for (const added of addedTokens)
        byId.set(added.id, added.content);

    const maxId = [...byId.keys()].reduce((max, id) => Math.max(max, id), -1);
    if (maxId >= vocabSize)
        throw new CheckpointConfigError(`Expected token ids below vocab_size ${vocabSize} (config.json) but tokenizer.json has id ${maxId}`);

    // gguf-py: padding ids are UNUSED, added tokens CONTROL when special or special-looking, else USER_DEFINED (with
    // SentencePiece spaces pre-normalised), the BPE vocabulary NORMAL.
    const addedById = new Map(addedTokens.map((added) => [added.id, added]));
    const entries = Array.from({length: vocabSize}, (_, id): [string, LlamaTokenType] => {
        const token = byId.get(id);
        const added = addedById.get(id);
        if (token === undefined)
            return [`[PAD${id}]`, LlamaTokenType.UNUSED];
        if (added === undefined)
            return [token, LlamaTokenType.NORMAL];
        if (added.special || looksSpecial(token))
            return [token, LlamaTokenType.CONTROL];
        return [token.replaceAll("\u2581", " "), LlamaTokenType.USER_DEFINED];
    });

    const {specialTokenIds, addSpecialTokens} = readSpecialTokens(tokenizerConfig, addedTokens, config);
    return {
        tokens: entries.map(([token]) => token),
        tokenTypes: entries.map(([, type]) => type),
        merges: readMerges(model.merges),
        specialTokenIds,
        addSpecialTokens,
        chatTemplate: await readChatTemplate(dir, tokenizerConfig)
    };
}

/**
 * Add the `tokenizer.*` keys of a byte-level BPE vocabulary, in the order llama.cpp's converter writes them.
 * @param writer - a GGUF writer before its header is written
 * @param vocab - the vocabulary from {@link readBpeVocab}
 * @param pre - the pre-tokenizer name llama.cpp knows the tokenizer by (`tokenizer.ggml.pre`, e.g. `qwen2`)
 */
export function addBpeVocab(writer: GgufWriter, vocab: BpeVocab, pre: string): void {
    writer.addString("tokenizer.ggml.model", "gpt2");
    writer.addString("tokenizer.ggml.pre", pre);
    writer.addArray("tokenizer.ggml.tokens", GgufValueType.STRING, vocab.tokens);
    writer.addArray("tokenizer.ggml.token_type", GgufValueType.INT32, vocab.tokenTypes);
    writer.addArray("tokenizer.ggml.merges", GgufValueType.STRING, vocab.merges);
    for (const [kind, id] of vocab.specialTokenIds) {
        const key = SPECIAL_TOKEN_ID_KEYS[kind];
        if (key !== undefined)
            writer.addUint32(key, id);
    }
    for (const [kind, add] of vocab.addSpecialTokens) {
        const key = ADD_SPECIAL_TOKEN_KEYS[kind];
        if (key !== undefined)
            writer.addBool(key, add);
    }
    if (vocab.chatTemplate !== undefined)
        writer.addString("tokenizer.chat_template", vocab.chatTemplate);
}

/** gguf-py's `does_token_look_special` for added tokens not flagged special (e.g. `<|fim_prefix|>`). */
function looksSpecial(token: string): boolean {
    return ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(token) ||
        (token.startsWith("<|") && token.endsWith("|>")) ||
        (token.startsWith("<｜") && token.endsWith("｜>")) ||
        (token.startsWith("<unused") && token.endsWith(">"));
}

function readAddedTokens(value: unknown): AddedToken[] {
    if (value === undefined)
        return [];
    if (!Array.isArray(value))
        throw new CheckpointConfigError(`Expected "added_tokens" in tokenizer.json to be an array but got ${typeof value}`);

    return value.map((entry: {id?: unknown; content?: unknown; special?: unknown}, index) => {
        if (typeof entry?.id !== "number" || !Number.isSafeInteger(entry.id) || entry.id < 0 || typeof entry.content !== "string")
            throw new CheckpointConfigError(`Expected "added_tokens"[${index}] in tokenizer.json to have a non-negative integer id and a string content`);

        return {id: entry.id, content: entry.content, special: entry.special === true};
    });
}

// Merges come as "a b" strings, or (transformers >= 4.45) as [a, b] pairs whose parts may contain spaces.
function readMerges(value: unknown): string[] {
    if (!Array.isArray(value) || value.length === 0)
        throw new CheckpointConfigError("Expected a non-empty \"merges\" list in the model of tokenizer.json");

    return value.map((merge: unknown, index) => {
        if (typeof merge === "string")
            return merge;
        if (Array.isArray(merge) && merge.length === 2 && merge.every((part) => typeof part === "string"))
            return merge.map((part: string) => part.replaceAll(" ", "\u0120")).join(" ");

        throw new CheckpointConfigError(`Expected merge ${index} in tokenizer.json to be a string or a pair of strings but got ${JSON.stringify(merge)}`);
    });
}

// gguf-py SpecialVocab: `<kind>_token` of tokenizer_config.json (a string or {content}) looked up among the added
// tokens, then `<kind>_token_id` of config.json for kinds still unset; `add_<kind>_token` booleans as given.
function readSpecialTokens(tokenizerConfig: Record<string, unknown>, addedTokens: readonly AddedToken[], config: HfConfig) {
    const specialTokenIds = new Map<SpecialTokenKind, number>();
    const addSpecialTokens = new Map<SpecialTokenKind, boolean>();
    for (const kind of SPECIAL_TOKEN_KINDS) {
        const add = tokenizerConfig[`add_${kind}_token`];
        if (typeof add === "boolean")
            addSpecialTokens.set(kind, add);

        const entry = tokenizerConfig[`${kind}_token`] as string | {content?: unknown} | null | undefined;
        const content = typeof entry === "string" ? entry : entry?.content;
        const id = addedTokens.find((added) => added.content === content)?.id;
        if (typeof content === "string" && id !== undefined)
            specialTokenIds.set(kind, id);
    }
    for (const kind of SPECIAL_TOKEN_KINDS) {
        const id = config[`${kind}_token_id`];
        if (!specialTokenIds.has(kind) && typeof id === "number" && Number.isInteger(id) && id >= 0)
            specialTokenIds.set(kind, id);
    }
    return {specialTokenIds, addSpecialTokens};
}

// tokenizer_config.json's chat_template wins; chat_template.jinja (newer transformers) is the fallback.
async function readChatTemplate(dir: string, tokenizerConfig: Record<string, unknown>): Promise<string | undefined> {
    const template = tokenizerConfig.chat_template;
    if (typeof template === "string")
        return template;
    if (template !== undefined && template !== null)
        throw new CheckpointConfigError(`Expected "chat_template" in tokenizer_config.json to be a string but got ${typeof template}`);

    try {
        return await fs.readFile(path.join(dir, "chat_template.jinja"), "utf8");
    } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT")
            return undefined;
        throw error;
    }
}
