// The invariants llama.cpp's loader enforces by aborting the process (GGML_ASSERT, GGML_ABORT, an exception that
// escapes a C API) rather than with an error, checked before llama.cpp sees a file. Source lines are of the llama.cpp
// release node-llama-cpp 3.21.1 ships (v0.4.0, commit 80fb11a; a Release build: assert() is compiled out, GGML_ASSERT
// is not). What llama.cpp already refuses with an error (a missing key, a wrong key type, a tensor of the wrong shape in
// a real load, an unknown tokenizer) is not repeated here, except where node-llama-cpp's simulated load (before every
// real one, in-process, without llama.cpp's shape checks) would abort instead.
//
//  the reader (gguf/readGguf.ts) already refuses, among the GGUF format's own rules:
//   gguf.cpp 143  GGML_ASSERT(!key.empty()): a metadata key that holds a NUL byte (copied as a C string, it is cut short)
//  vocabulary (src/llama-vocab.cpp)
//   2501  GGML_ASSERT(id_to_token.size() == token_to_id.size()): two token strings equal; strings are cut at a NUL
//         byte (2468) and an empty one becomes "[EMPTY_<id>]" (2471), so those collide too
//   3375, 3171, 3944  GGML_ASSERT(type != NONE) at the first tokenize: tokenizer.ggml.model "none" / "no_vocab"
//   192, 3926  std::out_of_range escaping llama_tokenize: a "llama" (SPM) tokenizer over a vocabulary without byte tokens
//   3159  a BYTE token (type 6) of fewer than 3 bytes: substr throws while the piece cache is built
//   2586  a special-token id (tokenizer.ggml.*_token_id) past the vocabulary: llama.cpp warns and keeps its default id,
//         so the model would run with another end-of-text token than the file says: refused as garbage, not an abort
//   2011, 699  a merge whose halves or result are no token: llama.cpp falls back to bytes silently, and the file's
//         tokenization is no longer the model's: refused for the same reason; merges must be "LEFT RIGHT"
//  hyperparameters (src/llama-model.cpp, src/models/qwen3.cpp, ggml/src/ggml.c)
//   1226  GGML_ASSERT(n_layer > 0 && n_layer <= 512): block_count
//   1228  GGML_ASSERT(n_layer_nextn <= n_layer): nextn_predict_layers
//   1259–1271  the expert asserts, which a dense qwen3 model still runs: any expert_* key
//   1318  GGML_ASSERT(rope_scaling_type != UNSPECIFIED): an unknown rope.scaling.type
//   llama-model-loader.cpp 1309  GGML_ASSERT(ne[dim] >= 1) (simulated load): a dimension derived from the
//         hyperparameters that is 0 (feed_forward_length, head_count, head_count_kv, key/value_length, the vocabulary)
//   qwen3.cpp 56, 57  GGML_ASSERT(n_embd_head_v == n_embd_head_k), (n_embd_head == n_rot): head sizes, rope.dimension_count
//   ggml.c 3294, 5455  ggml_can_mul_mat(k, q): head_count not a multiple of head_count_kv
//   ggml.c 3954  ggml_set_rows (KV store): per-layer head_count_kv (an array) that differs between layers
//   llama-context.cpp 1724  GGML_ASSERT(causal_attn || n_ubatch >= n_tokens): attention.causal false
//   llama-graph.cpp 3699  GGML_ABORT("unknown pooling type"): pooling_type over 4
//   llama-model-loader.cpp 641 → gguf.cpp 194: split.* keys of a split file
//  tensors (ggml/src/ggml-backend.cpp, ggml/src/ggml-cpu)
//   ggml-backend.cpp 2515  GGML_ASSERT(ptr % 32 == 0) on mmap: general.alignment under 32, a data offset not a multiple of 32
//   binary-ops.cpp 135  GGML_ABORT("unsupported types") at the first decode: a 1-D (norm) tensor that is not F32
//   mul_mat with no dot product (I8…I64, F64, and the activation-only Q8_1 / Q8_K) as weights
//   the shapes a real load checks (llama-model-loader.cpp 910, an error) and the simulated load does not
//  the Stream head (native/core, qwenguard's own loader: errors, not aborts), checked here before the backbone loads
//   qg_stream_model.cpp 115, 133  the head's qwen3guard.fingerprint and hidden_size against the backbone

import {GgufHyperparameterError, GgufModelTensorError, GgufStreamHeadError, GgufTensorOffsetError, GgufVocabularyError} from "./errors.js";
import {GgmlType, GgufValueType, ggmlTypeName} from "./ggmlTypes.js";
import type {GgufFile, GgufTensorInfo} from "./readGguf.js";

/** The data alignment llama.cpp's CPU backend needs of mmapped tensor data. */
const MMAP_ALIGNMENT = 32;
/** llama.cpp's limit on layers. */
const MAX_LAYERS = 512;
/** Token types llama.cpp knows (llama_token_type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte). */
const MAX_TOKEN_TYPE = 6;
const BYTE_TOKEN_TYPE = 6;
/** Pooling types llama.cpp knows (none, mean, cls, last, rank). */
const MAX_POOLING_TYPE = 4;
/** The special-token keys llama.cpp reads (llama-vocab.cpp 2560–2575). */
const SPECIAL_TOKEN_KEYS = ["bos", "eos", "eot", "eom", "unknown", "separator", "padding", "mask", "cls",
    "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep"].map((name) => `tokenizer.ggml.${name}_token_id`);
const ROPE_SCALING_TYPES = new Set(["none", "linear", "yarn", "longrope"]);
/** ggml types with no dot product as a matrix's weights. */
const NOT_WEIGHT_TYPES = new Set([GgmlType.I8, GgmlType.I16, GgmlType.I32, GgmlType.I64, GgmlType.F64, GgmlType.Q8_1, GgmlType.Q8_K]);

/** The architectures this check knows the tensors of. */
export const LOADABLE_ARCHITECTURES = ["qwen3"] as const;

/**
 * Checks that llama.cpp can load a Qwen3 GGUF (a Gen model or a Stream backbone) without aborting the process: the
 * invariants its loader asserts rather than reports, listed with their source lines at the top of this file. Cheap: the
 * header only (tens of milliseconds for a 151,936-token vocabulary).
 * @param file - the file's header, from {@link readGguf}
 * @throws GgufVocabularyError, GgufHyperparameterError, GgufModelTensorError, GgufTensorOffsetError naming the key or tensor
 * @example
 * checkLoadable(await readGguf("model.gguf")); // throws before llama.cpp could abort on the file
 */
export function checkLoadable(file: GgufFile): void {
    const {metadata} = file;
    const arch = metadata.getString("general.architecture");
    if (!(LOADABLE_ARCHITECTURES as readonly string[]).includes(arch))
        throw new GgufHyperparameterError(`Expected general.architecture ${LOADABLE_ARCHITECTURES.join(" or ")} but got ${JSON.stringify(arch)}`);
    const vocabSize = checkVocabulary(file);
    const shape = checkHyperparameters(file, arch);
    checkTensors(file, shape, vocabSize);
}

/** @returns the number of tokens */
function checkVocabulary({metadata}: GgufFile): number {
    const model = metadata.getString("tokenizer.ggml.model");
    if (model !== "gpt2")
        throw new GgufVocabularyError(`Expected tokenizer.ggml.model "gpt2" (Qwen3's byte-level BPE) but got ${JSON.stringify(model)}`);
    const tokens = metadata.getStringArray("tokenizer.ggml.tokens");
    if (tokens.length === 0)
        throw new GgufVocabularyError("Expected tokenizer.ggml.tokens to hold tokens but got an empty array");
    const seen = new Map<string, number>();
    tokens.forEach((token, id) => {
        if (token.length === 0)
            throw new GgufVocabularyError(`Expected every token of tokenizer.ggml.tokens to be non-empty but token ${id} is ""`);
        if (token.includes("\0"))
            throw new GgufVocabularyError(`Expected no NUL character in tokenizer.ggml.tokens but token ${id} is ${JSON.stringify(token)}`);
        const first = seen.get(token);
        if (first !== undefined)
            throw new GgufVocabularyError(`Expected the strings of tokenizer.ggml.tokens to be distinct but tokens ${first} and ${id} are both ${JSON.stringify(token)}`);
        seen.set(token, id);
    });
    const types = metadata.find("tokenizer.ggml.token_type", GgufValueType.ARRAY);
    if (types !== undefined) {
        if (types.values.length < tokens.length)
            throw new GgufVocabularyError(`Expected tokenizer.ggml.token_type to have one type per token (${tokens.length}) but got ${types.values.length}`);
        types.values.forEach((type, id) => {
            if (id >= tokens.length)
                return;
            if (typeof type !== "number" || !Number.isInteger(type) || type < 0 || type > MAX_TOKEN_TYPE)
                throw new GgufVocabularyError(`Expected token types between 0 and ${MAX_TOKEN_TYPE} in tokenizer.ggml.token_type but token ${id} has ${String(type)}`);
            if (type === BYTE_TOKEN_TYPE && Buffer.byteLength(tokens[id]) < 3)
                throw new GgufVocabularyError(`Expected a byte token (type 6) to be written <0xXX> but token ${id} is ${JSON.stringify(tokens[id])}`);
        });
    }
    const scores = metadata.find("tokenizer.ggml.scores", GgufValueType.ARRAY);
    if (scores !== undefined) {
        if (scores.values.length < tokens.length)
            throw new GgufVocabularyError(`Expected tokenizer.ggml.scores to have one score per token (${tokens.length}) but got ${scores.values.length}`);
        const bad = scores.values.findIndex((score) => typeof score !== "number" || !Number.isFinite(score));
        if (bad >= 0 && bad < tokens.length)
            throw new GgufVocabularyError(`Expected finite numbers in tokenizer.ggml.scores but token ${bad} has ${String(scores.values[bad])}`);
    }
    for (const key of SPECIAL_TOKEN_KEYS) {
        const kv = metadata.entries.get(key);
        if (kv === undefined)
            continue;
        const id = Number(kv.value);
        if (typeof kv.value === "object" || !Number.isInteger(id) || id < 0 || id >= tokens.length)
            throw new GgufVocabularyError(`Expected ${key} to be a token id below ${tokens.length} but got ${typeof kv.value === "object" ? "an array" : String(kv.value)}`);
    }
    checkMerges(metadata.find("tokenizer.ggml.merges", GgufValueType.ARRAY)?.values, seen);
    return tokens.length;
}

/** Every merge "LEFT RIGHT" of a byte-level BPE joins two tokens into a third. */
function checkMerges(merges: readonly unknown[] | undefined, tokens: ReadonlyMap<string, number>): void {
    if (merges === undefined)
        return; // llama.cpp refuses a BPE vocabulary without merges with an error
    merges.forEach((merge, i) => {
        const space = typeof merge === "string" ? merge.indexOf(" ", 1) : -1;
        if (space < 0)
            throw new GgufVocabularyError(`Expected merge ${i} of tokenizer.ggml.merges to be two tokens separated by a space but got ${JSON.stringify(merge)}`);
        const text = merge as string;
        for (const piece of [text.slice(0, space), text.slice(space + 1), text.slice(0, space) + text.slice(space + 1)])
            if (!tokens.has(piece))
                throw new GgufVocabularyError(`Expected merge ${i} of tokenizer.ggml.merges (${JSON.stringify(text)}) to join tokens into a token ` +
                    `but ${JSON.stringify(piece)} is no token of tokenizer.ggml.tokens`);
    });
}

/**
 * Checks that a Stream head file belongs to its backbone before either is loaded: the same checkpoint (fingerprint) and
 * the backbone's hidden size. The head's own tensors are checked with errors by qwenguard's native loader.
 * @param backbone - the backbone's header, from {@link readGguf}
 * @param head - the head's header
 * @throws GgufStreamHeadError naming the key
 */
export function checkStreamHead(backbone: GgufFile, head: GgufFile): void {
    const variant = head.metadata.find("qwen3guard.variant", GgufValueType.STRING);
    if (variant !== "stream-head")
        throw new GgufStreamHeadError(`Expected a Qwen3Guard-Stream head (qwen3guard.variant "stream-head") but got ${JSON.stringify(variant ?? null)}`);
    const fingerprints = [backbone, head].map((file) => file.metadata.find("qwen3guard.fingerprint", GgufValueType.STRING));
    if (fingerprints[0] !== fingerprints[1])
        throw new GgufStreamHeadError(`Expected the head's qwen3guard.fingerprint to equal the backbone's (${fingerprints[0] ?? "none"}) but got ` +
            `${fingerprints[1] ?? "none"}: pass the head converted from the same checkpoint`);
    const arch = backbone.metadata.getString("general.architecture");
    const embedding = backbone.metadata.find(`${arch}.embedding_length`, GgufValueType.UINT32);
    const hidden = head.metadata.find("qwen3guard.head.hidden_size", GgufValueType.UINT32);
    if (hidden !== embedding)
        throw new GgufStreamHeadError(`Expected qwen3guard.head.hidden_size to equal the backbone's ${arch}.embedding_length (${embedding}) but got ${hidden ?? "no such key"}`);
}

/** The dimensions every tensor's shape follows from. */
interface ModelShape {
    layers: number,
    embedding: number,
    feedForward: number,
    heads: number,
    kvHeads: number,
    headDim: number
}

function checkHyperparameters({metadata}: GgufFile, arch: string): ModelShape {
    const key = (name: string) => `${arch}.${name}`;
    const positive = (name: string, value: number | undefined, fallback?: number): number => {
        const resolved = value ?? fallback;
        if (resolved === undefined)
            throw new GgufHyperparameterError(`Expected metadata key "${key(name)}" but got no such key`);
        if (!Number.isInteger(resolved) || resolved < 1)
            throw new GgufHyperparameterError(`Expected ${key(name)} to be a positive integer but got ${resolved}`);
        return resolved;
    };
    const layers = positive("block_count", metadata.find(key("block_count"), GgufValueType.UINT32));
    if (layers > MAX_LAYERS)
        throw new GgufHyperparameterError(`Expected ${key("block_count")} between 1 and ${MAX_LAYERS} but got ${layers}`);
    // a per-layer key may be one number or an array of one per layer; llama.cpp sizes tensors from layer 0 and the KV
    // cache from each layer, so the layers must agree
    const uniform = (name: string): number | undefined => {
        const kv = metadata.entries.get(key(name));
        if (kv === undefined)
            return undefined;
        if (kv.type !== GgufValueType.ARRAY)
            return metadata.find(key(name), GgufValueType.UINT32);
        const values = metadata.getArray(key(name)).values as number[];
        if (values.length !== layers || values.some((value) => value !== values[0]))
            throw new GgufHyperparameterError(`Expected ${key(name)} to be one number, or the same number for each of the ${layers} layers, but got ` +
                `[${values.slice(0, 8).join(", ")}${values.length > 8 ? ", …" : ""}] (${values.length} values)`);
        return values[0];
    };
    const embedding = positive("embedding_length", metadata.find(key("embedding_length"), GgufValueType.UINT32));
    const heads = positive("attention.head_count", uniform("attention.head_count"));
    const kvHeads = positive("attention.head_count_kv", uniform("attention.head_count_kv"), heads);
    const feedForward = positive("feed_forward_length", uniform("feed_forward_length"));
    if (heads % kvHeads !== 0)
        throw new GgufHyperparameterError(`Expected ${key("attention.head_count")} (${heads}) to be a multiple of ${key("attention.head_count_kv")} (${kvHeads})`);
    const keyLength = positive("attention.key_length", metadata.find(key("attention.key_length"), GgufValueType.UINT32), Math.floor(embedding / heads));
    const valueLength = positive("attention.value_length", metadata.find(key("attention.value_length"), GgufValueType.UINT32), Math.floor(embedding / heads));
    if (keyLength !== valueLength)
        throw new GgufHyperparameterError(`Expected ${key("attention.key_length")} (${keyLength}) to equal ${key("attention.value_length")} (${valueLength})`);
    const rope = metadata.find(key("rope.dimension_count"), GgufValueType.UINT32);
    if (rope !== undefined && rope !== keyLength)
        throw new GgufHyperparameterError(`Expected ${key("rope.dimension_count")} to equal the head size (${keyLength}) but got ${rope}`);
    const scaling = metadata.find(key("rope.scaling.type"), GgufValueType.STRING);
    if (scaling !== undefined && !ROPE_SCALING_TYPES.has(scaling))
        throw new GgufHyperparameterError(`Expected ${key("rope.scaling.type")} to be one of ${[...ROPE_SCALING_TYPES].join(", ")} but got ${JSON.stringify(scaling)}`);
    for (const [name, value] of metadata.entries) {
        const zeroOrAbsent = name.startsWith(`${arch}.expert_`) || name === key("nextn_predict_layers");
        if (zeroOrAbsent && value.value !== 0 && value.value !== 0n)
            throw new GgufHyperparameterError(`Expected no ${name} in a dense ${arch} model but got ${String(value.value)}`);
        if (name.startsWith("split."))
            throw new GgufHyperparameterError(`Expected a model in one file but got ${name}: merge split files first (llama-gguf-split --merge)`);
    }
    if (metadata.find(key("attention.causal"), GgufValueType.BOOL) === false)
        throw new GgufHyperparameterError(`Expected ${key("attention.causal")} to be true (a causal language model) but got false`);
    const pooling = metadata.find(key("pooling_type"), GgufValueType.UINT32);
    if (pooling !== undefined && pooling > MAX_POOLING_TYPE)
        throw new GgufHyperparameterError(`Expected ${key("pooling_type")} between 0 and ${MAX_POOLING_TYPE} but got ${pooling}`);
    const vocabKey = metadata.find(key("vocab_size"), GgufValueType.UINT32);
    const tokens = metadata.getStringArray("tokenizer.ggml.tokens").length;
    if (vocabKey !== undefined && vocabKey !== tokens)
        throw new GgufHyperparameterError(`Expected ${key("vocab_size")} to equal the ${tokens} tokens of tokenizer.ggml.tokens but got ${vocabKey}`);
    return {layers, embedding, feedForward, heads, kvHeads, headDim: keyLength};
}

/** The tensors of a qwen3 model with their ggml shapes (`ne`, innermost first); `output` is optional (tied embeddings). */
function expectedTensors({layers, embedding: e, feedForward: f, heads, kvHeads, headDim: d}: ModelShape, vocab: number): Map<string, number[]> {
    const tensors = new Map<string, number[]>([["token_embd.weight", [e, vocab]], ["output_norm.weight", [e]], ["output.weight", [e, vocab]]]);
    for (let i = 0; i < layers; i++) {
        const layer: Array<[string, number[]]> = [
            ["attn_norm", [e]], ["attn_q", [e, d * heads]], ["attn_k", [e, d * kvHeads]], ["attn_v", [e, d * kvHeads]],
            ["attn_output", [d * heads, e]], ["attn_q_norm", [d]], ["attn_k_norm", [d]], ["ffn_norm", [e]],
            ["ffn_gate", [e, f]], ["ffn_up", [e, f]], ["ffn_down", [f, e]]
        ];
        for (const [name, ne] of layer)
            tensors.set(`blk.${i}.${name}.weight`, ne);
    }
    return tensors;
}

function checkTensors(file: GgufFile, shape: ModelShape, vocab: number): void {
    const expected = expectedTensors(shape, vocab);
    const byName = new Map(file.tensors.map((tensor) => [tensor.name, tensor]));
    for (const [name] of expected)
        if (!byName.has(name) && name !== "output.weight")
            throw new GgufModelTensorError(`Expected tensor ${name} in this ${shape.layers}-layer model but the file has none`);
    for (const tensor of file.tensors) {
        const ne = expected.get(tensor.name);
        if (ne === undefined)
            throw new GgufModelTensorError(`Expected only the tensors of a dense Qwen3 model but got ${tensor.name}`);
        if (tensor.ne.length !== ne.length || tensor.ne.some((value, i) => value !== ne[i]))
            throw new GgufModelTensorError(`Expected tensor ${tensor.name} of shape [${ne.join(", ")}] (from the hyperparameters) but got [${tensor.ne.join(", ")}]`);
        checkType(tensor);
        if (tensor.offset % MMAP_ALIGNMENT !== 0)
            throw new GgufTensorOffsetError(`Expected the data of tensor ${tensor.name} at a multiple of ${MMAP_ALIGNMENT} bytes (llama.cpp maps it in place) ` +
                `but it starts at ${tensor.offset} (general.alignment ${file.alignment})`);
    }
}

function checkType(tensor: GgufTensorInfo): void {
    if (tensor.ne.length === 1 && tensor.type !== GgmlType.F32)
        throw new GgufModelTensorError(`Expected the 1-D tensor ${tensor.name} to be F32 (llama.cpp's CPU backend multiplies norms as F32) but got ${ggmlTypeName(tensor.type)}`);
    if (tensor.ne.length > 1 && NOT_WEIGHT_TYPES.has(tensor.type))
        throw new GgufModelTensorError(`Expected the weights of tensor ${tensor.name} in a type llama.cpp can multiply but got ${ggmlTypeName(tensor.type)}`);
}
