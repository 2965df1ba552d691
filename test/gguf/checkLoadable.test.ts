// The pre-flight check of what llama.cpp's loader would abort on: the bad-input table (each mutation of a valid tiny
// Qwen3 header and its exact error), the valid files it accepts (its cost is measured by `npm run bench:fuzz -- --part
// cost`, not here), and proof in child processes
// that llama.cpp itself aborts on such files where the check is skipped.

import t from "tap";
import {
    GgmlType, GgufHyperparameterError, GgufMetadata, GgufModelTensorError, GgufTensorOffsetError, GgufValueType, GgufVocabularyError, checkLoadable, checkStreamHead, readGguf
} from "../../gguf/index.js";
import type {GgufError, GgufFile, GgufKv, GgufTensorInfo} from "../../gguf/index.js";
import {ModelProber, assertLoadsSafely, probeModel} from "../../src/probe/probeModel.js";
import {cachedConvertedFixture, cachedPlantedGen} from "../helpers/plantedGen.js";
import {rewriteGguf} from "../helpers/ggufRewrite.js";
import {tempDir} from "./ggufTestKit.js";

const genPath = await cachedConvertedFixture("tiny-gen", "q8_0");
const gen = await readGguf(genPath);

/** The header with its metadata and tensors edited, in memory. */
function edited(file: GgufFile, edit: {kv?: (entries: Map<string, GgufKv>) => void, tensors?: (tensors: GgufTensorInfo[]) => GgufTensorInfo[]}): GgufFile {
    const entries = new Map(file.metadata.entries);
    edit.kv?.(entries);
    return {...file, metadata: new GgufMetadata(entries), tensors: edit.tensors?.([...file.tensors]) ?? file.tensors};
}
const u32 = (value: number): GgufKv => ({type: GgufValueType.UINT32, value});
const text = (value: string): GgufKv => ({type: GgufValueType.STRING, value});
const tokensWith = (change: (tokens: string[]) => void): GgufKv => {
    const tokens = [...gen.metadata.getStringArray("tokenizer.ggml.tokens")];
    change(tokens);
    return {type: GgufValueType.ARRAY, value: {elementType: GgufValueType.STRING, values: tokens}};
};
const mergesWith = (change: (merges: string[]) => void): GgufKv => {
    const merges = [...gen.metadata.getStringArray("tokenizer.ggml.merges")];
    change(merges);
    return {type: GgufValueType.ARRAY, value: {elementType: GgufValueType.STRING, values: merges}};
};
const setKv = (key: string, value: GgufKv) => ({kv: (entries: Map<string, GgufKv>) => void entries.set(key, value)});
const dropKv = (key: string) => ({kv: (entries: Map<string, GgufKv>) => void entries.delete(key)});
const retype = (name: string, type: GgmlType) => ({tensors: (tensors: GgufTensorInfo[]) => tensors.map((tensor) => tensor.name === name ? {...tensor, type} : tensor)});

t.test("what llama.cpp would abort on is refused, naming the key or tensor", async (t) => {
    const types = gen.metadata.getArray("tokenizer.ggml.token_type");
    const table: Array<[string, Parameters<typeof edited>[1], new (message: string) => GgufError, string]> = [
        ["two equal token strings", setKv("tokenizer.ggml.tokens", tokensWith((tokens) => (tokens[500] = tokens[400]))), GgufVocabularyError,
            `Expected the strings of tokenizer.ggml.tokens to be distinct but tokens 400 and 500 are both ${JSON.stringify(gen.metadata.getStringArray("tokenizer.ggml.tokens")[400])}`],
        ["an empty token", setKv("tokenizer.ggml.tokens", tokensWith((tokens) => (tokens[7] = ""))), GgufVocabularyError,
            'Expected every token of tokenizer.ggml.tokens to be non-empty but token 7 is ""'],
        ["a NUL in a token", setKv("tokenizer.ggml.tokens", tokensWith((tokens) => (tokens[9] = "ab\0c"))), GgufVocabularyError,
            'Expected no NUL character in tokenizer.ggml.tokens but token 9 is "ab\\u0000c"'],
        ["no tokens", setKv("tokenizer.ggml.tokens", {type: GgufValueType.ARRAY, value: {elementType: GgufValueType.STRING, values: []}}),
            GgufVocabularyError, "Expected tokenizer.ggml.tokens to hold tokens but got an empty array"],
        ["the tokenizer 'none'", setKv("tokenizer.ggml.model", text("none")), GgufVocabularyError,
            'Expected tokenizer.ggml.model "gpt2" (Qwen3\'s byte-level BPE) but got "none"'],
        ["an SPM tokenizer over the BPE vocabulary", setKv("tokenizer.ggml.model", text("llama")), GgufVocabularyError,
            'Expected tokenizer.ggml.model "gpt2" (Qwen3\'s byte-level BPE) but got "llama"'],
        ["too few token types", setKv("tokenizer.ggml.token_type", {type: GgufValueType.ARRAY, value: {elementType: GgufValueType.INT32, values: types.values.slice(1)}}),
            GgufVocabularyError, "Expected tokenizer.ggml.token_type to have one type per token (151936) but got 151935"],
        ["a token type out of range", setKv("tokenizer.ggml.token_type", {type: GgufValueType.ARRAY, value: {elementType: GgufValueType.INT32,
            values: types.values.map((type, i) => i === 12 ? 9 : type)}}), GgufVocabularyError,
        "Expected token types between 0 and 6 in tokenizer.ggml.token_type but token 12 has 9"],
        ["a short byte token", setKv("tokenizer.ggml.token_type", {type: GgufValueType.ARRAY, value: {elementType: GgufValueType.INT32,
            values: types.values.map((type, i) => i === 0 ? 6 : type)}}), GgufVocabularyError,
        'Expected a byte token (type 6) to be written <0xXX> but token 0 is "!"'],
        ["a merge that makes no token", setKv("tokenizer.ggml.merges", mergesWith((merges) => (merges[3] = "Ġ qqqzz"))), GgufVocabularyError,
            'Expected merge 3 of tokenizer.ggml.merges ("Ġ qqqzz") to join tokens into a token but "qqqzz" is no token of tokenizer.ggml.tokens'],
        ["a merge without a space", setKv("tokenizer.ggml.merges", mergesWith((merges) => (merges[5] = "abc"))), GgufVocabularyError,
            'Expected merge 5 of tokenizer.ggml.merges to be two tokens separated by a space but got "abc"'],
        ["an end-of-text id past the vocabulary", setKv("tokenizer.ggml.eos_token_id", u32(151936)), GgufVocabularyError,
            "Expected tokenizer.ggml.eos_token_id to be a token id below 151936 but got 151936"],
        ["a score that is not a number", setKv("tokenizer.ggml.scores", {type: GgufValueType.ARRAY, value: {elementType: GgufValueType.FLOAT32,
            values: Array.from({length: 151936}, (_, i) => i === 42 ? Number.NaN : 0)}}), GgufVocabularyError,
        "Expected finite numbers in tokenizer.ggml.scores but token 42 has NaN"],
        ["vocab_size against the tokens", setKv("qwen3.vocab_size", u32(1000)), GgufHyperparameterError,
            "Expected qwen3.vocab_size to equal the 151936 tokens of tokenizer.ggml.tokens but got 1000"],
        ["no layers", setKv("qwen3.block_count", u32(0)), GgufHyperparameterError, "Expected qwen3.block_count to be a positive integer but got 0"],
        ["too many layers", setKv("qwen3.block_count", u32(1000)), GgufHyperparameterError, "Expected qwen3.block_count between 1 and 512 but got 1000"],
        ["no feed-forward length", dropKv("qwen3.feed_forward_length"), GgufHyperparameterError, 'Expected metadata key "qwen3.feed_forward_length" but got no such key'],
        ["zero KV heads", setKv("qwen3.attention.head_count_kv", u32(0)), GgufHyperparameterError, "Expected qwen3.attention.head_count_kv to be a positive integer but got 0"],
        ["heads not a multiple of KV heads", setKv("qwen3.attention.head_count_kv", u32(3)), GgufHyperparameterError,
            "Expected qwen3.attention.head_count (4) to be a multiple of qwen3.attention.head_count_kv (3)"],
        ["KV heads that differ between layers", setKv("qwen3.attention.head_count_kv", {type: GgufValueType.ARRAY, value: {elementType: GgufValueType.UINT32, values: [2, 1]}}),
            GgufHyperparameterError, "Expected qwen3.attention.head_count_kv to be one number, or the same number for each of the 2 layers, but got [2, 1] (2 values)"],
        ["key and value heads of other sizes", setKv("qwen3.attention.value_length", u32(8)), GgufHyperparameterError,
            "Expected qwen3.attention.key_length (16) to equal qwen3.attention.value_length (8)"],
        ["a rope size that is not the head size", setKv("qwen3.rope.dimension_count", u32(8)), GgufHyperparameterError,
            "Expected qwen3.rope.dimension_count to equal the head size (16) but got 8"],
        ["an unknown rope scaling", setKv("qwen3.rope.scaling.type", text("dynamic")), GgufHyperparameterError,
            'Expected qwen3.rope.scaling.type to be one of none, linear, yarn, longrope but got "dynamic"'],
        ["experts in a dense model", setKv("qwen3.expert_count", u32(8)), GgufHyperparameterError, "Expected no qwen3.expert_count in a dense qwen3 model but got 8"],
        ["next-token layers", setKv("qwen3.nextn_predict_layers", u32(99)), GgufHyperparameterError, "Expected no qwen3.nextn_predict_layers in a dense qwen3 model but got 99"],
        ["non-causal attention", setKv("qwen3.attention.causal", {type: GgufValueType.BOOL, value: false}), GgufHyperparameterError,
            "Expected qwen3.attention.causal to be true (a causal language model) but got false"],
        ["an unknown pooling type", setKv("qwen3.pooling_type", u32(7)), GgufHyperparameterError, "Expected qwen3.pooling_type between 0 and 4 but got 7"],
        ["a split file", setKv("split.count", {type: GgufValueType.UINT16, value: 2}), GgufHyperparameterError,
            "Expected a model in one file but got split.count: merge split files first (llama-gguf-split --merge)"],
        ["another architecture", setKv("general.architecture", text("llama")), GgufHyperparameterError, 'Expected general.architecture qwen3 but got "llama"'],
        ["a missing tensor", {tensors: (tensors) => tensors.filter((tensor) => tensor.name !== "blk.1.ffn_up.weight")}, GgufModelTensorError,
            "Expected tensor blk.1.ffn_up.weight in this 2-layer model but the file has none"],
        ["an unexpected tensor", {tensors: (tensors) => [...tensors, {...tensors[1], name: "blk.0.attn_qkv.weight"}]}, GgufModelTensorError,
            "Expected only the tensors of a dense Qwen3 model but got blk.0.attn_qkv.weight"],
        ["a tensor of the wrong shape", {tensors: (tensors) => tensors.map((tensor) => tensor.name === "blk.0.attn_k.weight" ? {...tensor, ne: [64, 64]} : tensor)},
            GgufModelTensorError, "Expected tensor blk.0.attn_k.weight of shape [64, 32] (from the hyperparameters) but got [64, 64]"],
        ["a quantized norm", retype("blk.0.attn_norm.weight", GgmlType.F16), GgufModelTensorError,
            "Expected the 1-D tensor blk.0.attn_norm.weight to be F32 (llama.cpp's CPU backend multiplies norms as F32) but got F16"],
        ["integer weights", retype("blk.0.ffn_down.weight", GgmlType.I32), GgufModelTensorError,
            "Expected the weights of tensor blk.0.ffn_down.weight in a type llama.cpp can multiply but got I32"],
        ["tensor data that llama.cpp cannot map in place", {tensors: (tensors) => tensors.map((tensor, i) => i === 3 ? {...tensor, offset: tensor.offset + 8} : tensor)},
            GgufTensorOffsetError, `Expected the data of tensor ${gen.tensors[3].name} at a multiple of 32 bytes (llama.cpp maps it in place) but it starts at ${gen.tensors[3].offset + 8} (general.alignment 32)`]
    ];
    for (const [what, edit, ErrorClass, message] of table)
        t.throws(() => checkLoadable(edited(gen, edit)), {name: ErrorClass.name, message}, what);
});

t.test("a Stream head must belong to its backbone", async (t) => {
    const pair = await cachedConvertedFixture("planted-stream", "q8_0");
    const backbone = await readGguf(pair);
    const head = await readGguf(pair.replace(/\.gguf$/, ".head.gguf"));
    t.doesNotThrow(() => checkStreamHead(backbone, head), "its own head");
    const headWith = (key: string, value: GgufKv) => edited(head, setKv(key, value));
    const table: Array<[string, GgufFile, GgufFile, string]> = [
        ["a head of another checkpoint", backbone, headWith("qwen3guard.fingerprint", text("0123abcd")),
            `Expected the head's qwen3guard.fingerprint to equal the backbone's (${backbone.metadata.getString("qwen3guard.fingerprint")}) but got 0123abcd: ` +
            "pass the head converted from the same checkpoint"],
        ["a head of another hidden size", backbone, headWith("qwen3guard.head.hidden_size", u32(4096)),
            `Expected qwen3guard.head.hidden_size to equal the backbone's qwen3.embedding_length (${backbone.metadata.getUint32("qwen3.embedding_length")}) but got 4096`],
        ["the backbone as its own head", backbone, backbone, 'Expected a Qwen3Guard-Stream head (qwen3guard.variant "stream-head") but got "stream-backbone"']
    ];
    for (const [what, model, candidate, message] of table)
        t.throws(() => checkStreamHead(model, candidate), {name: "GgufStreamHeadError", message}, what);
});

t.test("the project's own models pass: Gen and Stream backbones, every output type, planted and random", async (t) => {
    for (const file of [genPath, await cachedPlantedGen(), await cachedConvertedFixture("planted-stream", "q8_0"),
        await cachedConvertedFixture("tiny-stream", "f16"), await cachedConvertedFixture("tiny-gen-untied", "bf16")])
        t.doesNotThrow(checkLoadable.bind(null, await readGguf(file)), file);
});

t.test("without the check, llama.cpp aborts the process on such files; with it, a child process reports the error", async (t) => {
    const dir = await tempDir(t);
    const mutants: Array<[string, Parameters<typeof rewriteGguf>[2], RegExp, RegExp]> = [
        ["duplicate-tokens.gguf", {kv: (entries) => void entries.set("tokenizer.ggml.tokens", tokensWith((tokens) => (tokens[500] = tokens[400])))},
            /GGML_ASSERT\(id_to_token\.size\(\) == token_to_id\.size\(\)\) failed/, /tokens 400 and 500 are both/],
        ["rope.gguf", {kv: (entries) => void entries.set("qwen3.rope.dimension_count", u32(8))},
            /GGML_ASSERT\(n_embd_head == n_rot\) failed/, /qwen3\.rope\.dimension_count to equal the head size/]
    ];
    for (const [name, edit, assertion, refusal] of mutants) {
        const file = `${dir}/${name}`;
        await rewriteGguf(genPath, file, edit);
        const raw = await probeModel(file, {raw: true});
        t.equal(raw.outcome, "crashed", `${name}: llama.cpp alone kills the process`);
        if (raw.outcome === "crashed") {
            t.equal(raw.signal, "SIGABRT", `${name}: by abort()`);
            t.match(raw.message, assertion, `${name}: llama.cpp's message is reported`);
        }
        const checked = await probeModel(file);
        t.match(checked, {outcome: "refused", name: /^Gguf\w+Error$/, message: refusal}, `${name}: qwenguard refuses it with an error`);
    }
    const crashing = `${dir}/duplicate-tokens.gguf`;
    await t.rejects(assertLoadsSafely(crashing, {raw: true}), {
        name: "UnloadableModelError",
        message: new RegExp(`^llama\\.cpp aborts the process when it loads ${crashing.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} \\(SIGABRT\\): .*GGML_ASSERT`)
    }, "assertLoadsSafely names the file and llama.cpp's message");
    await t.resolves(assertLoadsSafely(genPath), "a valid file passes the probe");
    const prober = new ModelProber(); // the fuzz harness's many files in one child process
    t.teardown(() => prober.close());
    t.match(await prober.probe(crashing, {raw: true}), {outcome: "crashed", signal: "SIGABRT", message: /GGML_ASSERT\(id_to_token/}, "a prober reports the abort");
    t.same(await prober.probe(genPath), {outcome: "loaded"}, "and starts a new child for the next file");
    t.match(await prober.probe(crashing), {outcome: "refused", name: "GgufVocabularyError"}, "which refuses the file with the check");
});
