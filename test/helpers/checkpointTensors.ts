// The tensors of a generated checkpoint: names and shapes come from the converter's own tables (so fixtures and
// converter agree on the state-dict layout; llama.cpp and the reference forward check it independently), values from a
// seeded generator, produced in consecutive chunks so that multi-gigabyte checkpoints stream to disk.

import {readQwen3Hparams, qwen3BackboneTensors} from "../../gguf/convert/qwen3Hparams.js";
import type {HfConfig} from "../../gguf/convert/qwen3Hparams.js";
import {readStreamHeadConfig, streamHeadTensors} from "../../gguf/convert/streamHead.js";
import {SeededRandom} from "./SeededRandom.js";

/** A tensor to generate: `fill` writes the values of elements `start` … `start + out.length - 1` (row-major). */
export interface TensorSpec {
    readonly name: string;
    /** PyTorch shape, outermost first. */
    readonly shape: readonly number[];
    /**
     * Write the next values. Random specs must be called with consecutive ranges from 0 upwards (their generator is
     * sequential); the result does not depend on how the tensor is cut into chunks.
     */
    fill(out: Float32Array, start: number): void;
}

/** A tensor's name and shape in PyTorch order. */
export interface NamedShape {
    readonly name: string;
    readonly shape: readonly number[];
}

/**
 * The names and shapes of every tensor of a checkpoint with this config.json, in writing order: the backbone
 * (`lm_head.weight` only when the embeddings are untied), then for `Qwen3ForGuardModel` the eight head tensors.
 * @param config - the checkpoint's config.json
 */
export function checkpointTensorShapes(config: HfConfig): NamedShape[] {
    const hparams = readQwen3Hparams(config);
    const backbone = qwen3BackboneTensors(hparams, !hparams.tieWordEmbeddings).map(({hfName, shape}) => ({name: hfName, shape}));
    const isStream = (config.architectures as string[])[0] === "Qwen3ForGuardModel";
    return isStream ? [...backbone, ...streamHeadTensors(readStreamHeadConfig(config))] : backbone;
}

/**
 * Random weights that keep activations of order one: norm weights uniform around 1 (±0.2), the token embedding
 * uniform with standard deviation 0.25, every other matrix uniform with standard deviation 1/√(fan-in).
 * Each tensor draws from its own generator seeded from `seed` and its name.
 * @param shapes - the tensors, e.g. from {@link checkpointTensorShapes}
 * @param seed - the fixture seed
 */
export function randomTensorSpecs(shapes: readonly NamedShape[], seed: number): TensorSpec[] {
    return shapes.map(({name, shape}) => {
        const isVector = shape.length === 1;
        const std = isVector ? 0 : name === "model.embed_tokens.weight" ? 0.25 : 1 / Math.sqrt(shape[shape.length - 1]);
        const halfWidth = isVector ? 0.2 : std * Math.sqrt(3);
        let random = new SeededRandom(0);
        return {
            name,
            shape,
            fill(out: Float32Array, start: number): void {
                if (start === 0)
                    random = new SeededRandom(seed ^ stringHash(name));
                for (let i = 0; i < out.length; i++)
                    out[i] = (isVector ? 1 : 0) + random.uniform(halfWidth);
            }
        };
    });
}

/**
 * A 32-bit FNV-1a hash of a string, to derive per-tensor seeds.
 * @param text - any string
 */
function stringHash(text: string): number {
    let hash = 0x811c9dc5;
    for (let i = 0; i < text.length; i++) {
        hash ^= text.charCodeAt(i);
        hash = Math.imul(hash, 0x01000193);
    }
    return hash >>> 0;
}
