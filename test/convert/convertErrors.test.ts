// What the converter refuses, with the exact messages: bad config.json fields, missing files and tensors, wrong
// shapes and dtypes, unknown architectures and options. Nothing is written when a conversion is refused.

import {existsSync} from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import t from "tap";
import {
    CheckpointConfigError, MissingCheckpointFileError, MissingTensorError, TensorShapeError, UnexpectedTensorError,
    UnsupportedArchitectureError, convert
} from "../../gguf/convert/index.js";
import type {OutType} from "../../gguf/convert/index.js";
import {GgufOptionError, QuantNonFiniteError, SafetensorsCheckpointError, SafetensorsDtypeError} from "../../gguf/errors.js";
import {checkpointTensorShapes, randomTensorSpecs} from "../helpers/checkpointTensors.js";
import type {TensorSpec} from "../helpers/checkpointTensors.js";
import {writeCheckpoint} from "../helpers/fixtures.js";
import {createHfConfig} from "../helpers/hfConfig.js";
import {TINY_DIMENSIONS} from "../helpers/hfConfig.js";
import type {GuardVariant, Qwen3Dimensions} from "../helpers/hfConfig.js";
import {expectError, tempDir} from "../gguf/ggufTestKit.js";

// A checkpoint small enough to write per case; its vocab_size (16) is below the real tokenizer's ids, so a conversion
// that gets as far as the tokenizer stops there.
const MICRO: Qwen3Dimensions = {
    hiddenSize: 8,
    numHiddenLayers: 1,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    headDim: 4,
    intermediateSize: 16,
    vocabSize: 16,
    tieWordEmbeddings: true,
    guardInnerSize: 4
};

interface Case {
    readonly name: string;
    readonly variant?: GuardVariant;
    /** Change config.json and/or the tensors before they are written. */
    readonly edit?: (config: Record<string, unknown>, specs: TensorSpec[]) => TensorSpec[] | void;
    /** Change the written checkpoint directory. */
    readonly after?: (dir: string) => Promise<void>;
    readonly outType?: string;
    readonly error: abstract new (...args: never[]) => Error;
    readonly message: (dir: string) => string;
}

const zeros = (name: string, shape: number[]): TensorSpec => ({name, shape, fill: (out) => out.fill(0)});
const file = (dir: string) => path.join(dir, "model.safetensors");

const CASES: Case[] = [
    {
        name: "an architecture without a converter",
        edit: (config) => void (config.architectures = ["LlamaForCausalLM"]),
        error: UnsupportedArchitectureError,
        message: () => "Architecture LlamaForCausalLM is not supported (supported: Qwen3ForCausalLM, Qwen3ForGuardModel)"
    },
    {
        name: "config.json without architectures",
        edit: (config) => void delete config.architectures,
        error: CheckpointConfigError,
        message: () => "Expected \"architectures\" in config.json to list the model class but got undefined"
    },
    {
        name: "no config.json",
        after: async (dir) => fs.rm(path.join(dir, "config.json")),
        error: MissingCheckpointFileError,
        message: (dir) => `Expected config.json in ${dir} but it does not exist`
    },
    {
        name: "config.json that is not an object",
        after: async (dir) => fs.writeFile(path.join(dir, "config.json"), "[1, 2]"),
        error: CheckpointConfigError,
        message: () => "Expected config.json to hold a JSON object but got an array"
    },
    {
        name: "a hidden_size that is a string",
        edit: (config) => void (config.hidden_size = "8"),
        error: CheckpointConfigError,
        message: () => "Expected a positive integer for \"hidden_size\" in config.json but got \"8\""
    },
    {
        name: "more layers than llama.cpp takes (the fuzz ran the converter out of memory with 1e9)",
        edit: (config) => void (config.num_hidden_layers = 1e9),
        error: CheckpointConfigError,
        message: () => "Expected at most 512 (llama.cpp's limit on layers) for \"num_hidden_layers\" in config.json but got 1000000000"
    },
    {
        name: "no rope_theta",
        edit: (config) => void delete config.rope_theta,
        error: CheckpointConfigError,
        message: () => "Expected a positive number for \"rope_theta\" in config.json but got undefined"
    },
    {
        name: "head counts that do not divide",
        edit: (config) => void (config.num_key_value_heads = 3),
        error: CheckpointConfigError,
        message: () => "Expected \"num_attention_heads\" (2) in config.json to be a multiple of \"num_key_value_heads\" but got 3"
    },
    {
        name: "RoPE scaling",
        edit: (config) => void (config.rope_scaling = {rope_type: "yarn", factor: 4}),
        error: CheckpointConfigError,
        message: () => "Expected \"rope_scaling\" in config.json to be null but got {\"rope_type\":\"yarn\",\"factor\":4}"
    },
    {
        name: "no safetensors",
        after: async (dir) => fs.rm(file(dir)),
        error: SafetensorsCheckpointError,
        message: (dir) => `Expected "model.safetensors.index.json" or "model.safetensors" in directory ${dir} but got neither`
    },
    {
        name: "a tensor in a dtype other than F32, F16, BF16",
        after: async (dir) => fs.writeFile(file(dir), rawSafetensors({"model.norm.weight": {dtype: "I8", shape: [8], data_offsets: [0, 8]}}, 8)),
        error: SafetensorsDtypeError,
        message: (dir) => `Expected dtype BF16, F16 or F32 for tensor "model.norm.weight" in ${file(dir)} but got "I8"`
    },
    {
        name: "a missing tensor",
        edit: (_, specs) => specs.filter((spec) => spec.name !== "model.norm.weight"),
        error: MissingTensorError,
        message: (dir) => `Expected tensor "model.norm.weight" in the safetensors files of ${dir} but none holds it`
    },
    {
        name: "a tensor the architecture does not have",
        edit: (_, specs) => [...specs, zeros("model.layers.0.self_attn.q_proj.bias", [8])],
        error: UnexpectedTensorError,
        message: (dir) => `Expected only Qwen3ForCausalLM tensors but got "model.layers.0.self_attn.q_proj.bias" (${file(dir)})`
    },
    {
        name: "a tensor of the wrong shape",
        edit: (_, specs) => specs.map((spec) => (spec.name === "model.layers.0.self_attn.k_proj.weight" ? zeros(spec.name, [8, 8]) : spec)),
        error: TensorShapeError,
        message: (dir) => `Expected tensor "model.layers.0.self_attn.k_proj.weight" (${file(dir)}) to have shape [4, 8] (from config.json) but got [8, 8]`
    },
    {
        name: "an untied checkpoint without lm_head.weight",
        edit: (config) => void (config.tie_word_embeddings = false),
        error: MissingTensorError,
        message: (dir) => `Expected tensor "lm_head.weight" in the safetensors files of ${dir} but none holds it`
    },
    {
        name: "no tokenizer.json",
        after: async (dir) => fs.rm(path.join(dir, "tokenizer.json")),
        error: MissingCheckpointFileError,
        message: (dir) => `Expected tokenizer.json in ${dir} but it does not exist`
    },
    {
        name: "no tokenizer_config.json",
        after: async (dir) => fs.rm(path.join(dir, "tokenizer_config.json")),
        error: MissingCheckpointFileError,
        message: (dir) => `Expected tokenizer_config.json in ${dir} but it does not exist`
    },
    {
        name: "a tokenizer with ids beyond vocab_size",
        error: CheckpointConfigError,
        message: () => "Expected token ids below vocab_size 16 (config.json) but tokenizer.json has id 151668"
    },
    {
        name: "a tokenizer.json that is not BPE",
        after: async (dir) => fs.writeFile(path.join(dir, "tokenizer.json"), JSON.stringify({model: {type: "Unigram", vocab: []}})),
        error: CheckpointConfigError,
        message: () => "Expected a BPE model with a vocab in tokenizer.json but got \"Unigram\""
    },
    {
        name: "an unknown out type",
        outType: "q4_0",
        error: GgufOptionError,
        message: () => "Expected one of f32, f16, bf16, q8_0 for \"outType\" but received \"q4_0\""
    },
    {
        name: "Stream: no guard_inner_size",
        variant: "stream",
        edit: (config) => void delete config.guard_inner_size,
        error: CheckpointConfigError,
        message: () => "Expected a positive integer for \"guard_inner_size\" in config.json but got undefined"
    },
    {
        name: "Stream: a label map with a gap",
        variant: "stream",
        edit: (config) => void (config.query_risk_level_map = {0: "Safe", 1: "Unsafe", 3: "Controversial"}),
        error: CheckpointConfigError,
        message: () => "Expected \"query_risk_level_map\" in config.json to map \"0\" … \"2\" (\"num_query_risk_level\" is 3) to labels but got " +
            "{\"0\":\"Safe\",\"1\":\"Unsafe\",\"3\":\"Controversial\"}"
    },
    {
        name: "Stream: a label map of another size than its count",
        variant: "stream",
        edit: (config) => void (config.num_category = 9),
        error: CheckpointConfigError,
        message: () => "Expected \"response_category_map\" in config.json to map \"0\" … \"8\" (\"num_category\" is 9) to labels but got " +
            JSON.stringify(createHfConfig("stream", MICRO, "float32").response_category_map)
    },
    {
        name: "Stream: a count of a billion labels (the fuzz ran the converter out of memory with it)",
        variant: "stream",
        edit: (config) => void (config.num_category = 1e9),
        error: CheckpointConfigError,
        message: () => "Expected \"response_category_map\" in config.json to map \"0\" … \"999999999\" (\"num_category\" is 1000000000) to labels but got " +
            JSON.stringify(createHfConfig("stream", MICRO, "float32").response_category_map)
    },
    {
        name: "Stream: a label that is only quotes",
        variant: "stream",
        edit: (config) => void (config.response_risk_level_map = {0: "Safe", 1: "\"\"", 2: "Controversial"}),
        error: CheckpointConfigError,
        message: () => "Expected \"response_risk_level_map\" in config.json to map \"0\" … \"2\" (\"num_risk_level\" is 3) to labels but got " +
            "{\"0\":\"Safe\",\"1\":\"\\\"\\\"\",\"2\":\"Controversial\"}"
    },
    {
        name: "Stream: a head tensor of the wrong shape",
        variant: "stream",
        edit: (_, specs) => specs.map((spec) => (spec.name === "category_head.weight" ? zeros(spec.name, [4, 8]) : spec)),
        error: TensorShapeError,
        message: (dir) => `Expected tensor "category_head.weight" (${file(dir)}) to have shape [8, 4] (from config.json) but got [4, 8]`
    },
    {
        name: "a vocab id that is not an integer",
        after: (dir) => editTokenizer(dir, (tokenizer) => void (tokenizer.model.vocab["!"] = "0")),
        error: CheckpointConfigError,
        message: () => 'Expected a non-negative integer id for token "!" in tokenizer.json\'s vocab but got "0"'
    },
    {
        name: "a negative vocab id",
        after: (dir) => editTokenizer(dir, (tokenizer) => void (tokenizer.model.vocab["!"] = -5)),
        error: CheckpointConfigError,
        message: () => 'Expected a non-negative integer id for token "!" in tokenizer.json\'s vocab but got -5'
    },
    {
        name: "two vocab tokens with one id",
        after: (dir) => editTokenizer(dir, (tokenizer) => void (tokenizer.model.vocab["\""] = 0)),
        error: CheckpointConfigError,
        message: () => 'Expected one token per id in tokenizer.json\'s vocab but id 0 is both "!" and "\\""'
    },
    {
        name: "Stream: a missing head tensor",
        variant: "stream",
        edit: (_, specs) => specs.filter((spec) => spec.name !== "query_risk_level_category_layernorm.weight"),
        error: MissingTensorError,
        message: (dir) => `Expected tensor "query_risk_level_category_layernorm.weight" in the safetensors files of ${dir} but none holds it`
    }
];

for (const testCase of CASES) {
    t.test(testCase.name, async (t) => {
        const root = await tempDir(t);
        const dir = path.join(root, "checkpoint");
        const config = createHfConfig(testCase.variant ?? "gen", MICRO, "float32");
        const shapes = checkpointTensorShapes(createHfConfig(testCase.variant ?? "gen", MICRO, "float32"));
        let specs = randomTensorSpecs(shapes, 1);
        specs = testCase.edit?.(config, specs) ?? specs;
        await writeCheckpoint(dir, config, specs, {dtype: "F32"});
        await testCase.after?.(dir);

        const outFile = path.join(root, "out.gguf");
        await expectError(t, convert(dir, {outFile, outType: (testCase.outType ?? "f16") as OutType}), testCase.error, testCase.message(dir));
        t.notOk(existsSync(outFile), "writes no GGUF");
        t.notOk(existsSync(path.join(root, "out.head.gguf")), "writes no head GGUF");
    });
}

/** Rewrites the checkpoint's tokenizer.json through `edit`. */
async function editTokenizer(dir: string, edit: (tokenizer: {model: {vocab: Record<string, unknown>}}) => void): Promise<void> {
    const file = path.join(dir, "tokenizer.json");
    const tokenizer = JSON.parse(await fs.readFile(file, "utf8")) as {model: {vocab: Record<string, unknown>}};
    edit(tokenizer);
    await fs.writeFile(file, JSON.stringify(tokenizer));
}

// A safetensors file from a raw header (for dtypes the toolkit's writer refuses to write).
function rawSafetensors(header: Record<string, unknown>, dataBytes: number): Buffer {
    const json = Buffer.from(JSON.stringify(header));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([length, json, Buffer.alloc(dataBytes)]);
}

t.test("a weight that is not finite, converted to q8_0: the tensor and the element are named", async (t) => {
    const root = await tempDir(t);
    const dir = path.join(root, "checkpoint");
    const config = createHfConfig("gen", TINY_DIMENSIONS, "float32");
    const specs = randomTensorSpecs(checkpointTensorShapes(config), 1).map((spec) => spec.name !== "model.layers.1.mlp.down_proj.weight" ? spec : {
        ...spec, fill: (out: Float32Array, start: number) => {
            spec.fill(out, start);
            if (start <= 1000 && 1000 < start + out.length)
                out[1000 - start] = Number.NaN;
        }
    });
    await writeCheckpoint(dir, config, specs, {dtype: "F32"});
    const outFile = path.join(root, "out.gguf");
    await expectError(t, convert(dir, {outFile, outType: "q8_0"}), QuantNonFiniteError,
        'Tensor "model.layers.1.mlp.down_proj.weight" (rows 0–63 of 64): Expected finite values to quantize to Q8_0 but got NaN at element 1000');
    t.notOk(existsSync(outFile), "writes no GGUF");
});
