// The converter's entry point: reads config.json, picks the converter registered for its architecture, runs it.

import path from "node:path";
import {GgufOptionError} from "../errors.js";
import {CheckpointConfigError, UnsupportedArchitectureError} from "./errors.js";
import {SafetensorsCheckpoint, parseJsonObject, readCheckpointFile} from "./hfCheckpoint.js";
import {OUT_TYPES} from "./ModelConverter.js";
import type {ConversionResult, ModelConverterClass, OutType} from "./ModelConverter.js";
import {Qwen3Converter} from "./Qwen3Converter.js";
import {Qwen3GuardStreamConverter} from "./Qwen3GuardStreamConverter.js";

/** Options of {@link convert}. */
export interface ConvertOptions {
    /** The GGUF file to write (a Stream conversion also writes `<name>.head.gguf` beside it). */
    readonly outFile: string;
    /** The type of the 2-D weights (default `f16`, as llama.cpp's converter); norms are always F32. */
    readonly outType?: OutType;
    /** `general.name` (default: the checkpoint directory's name). */
    readonly name?: string;
}

/** The converter classes, registered by the Hugging Face architecture they convert. */
const CONVERTERS: ReadonlyMap<string, ModelConverterClass> = new Map(
    [Qwen3Converter, Qwen3GuardStreamConverter].map((converter) => [converter.architecture, converter])
);

/** The Hugging Face architectures {@link convert} supports. */
export const SUPPORTED_ARCHITECTURES: readonly string[] = [...CONVERTERS.keys()];

/**
 * Convert a Hugging Face Qwen3Guard checkpoint (config.json, tokenizer.json, tokenizer_config.json, safetensors:
 * single or sharded) to GGUF. Gen (`Qwen3ForCausalLM`) becomes a standard llama.cpp `qwen3` GGUF; Stream
 * (`Qwen3ForGuardModel`) becomes a `qwen3` backbone GGUF plus a head GGUF beside it (docs/FORMATS.md). Tensors are
 * streamed one at a time in chunks of rows, so memory stays far below the checkpoint's size.
 * @param hfDir - the checkpoint directory
 * @param options - output file, out type (default `f16`), name
 * @returns what was written
 * @throws {UnsupportedArchitectureError} when config.json names another architecture
 * @throws {MissingCheckpointFileError} when config.json, a tokenizer file or the safetensors are absent
 * @throws {GgufOptionError} for an unknown out type
 * @throws {CheckpointConfigError} for an invalid config.json or tokenizer field
 * @throws {MissingTensorError | UnexpectedTensorError | TensorShapeError} for tensors that do not match config.json;
 *   nothing is written then
 * @throws {SafetensorsError} for unreadable safetensors (no files, invalid headers, dtypes other than F32, F16, BF16)
 * @example
 * const result = await convert("Qwen3Guard-Stream-0.6B", {outFile: "stream-0.6b.gguf", outType: "q8_0"});
 * result.companionFiles; // ["stream-0.6b.head.gguf"]
 */
export async function convert(hfDir: string, options: ConvertOptions): Promise<ConversionResult> {
    const outType = options.outType ?? "f16";
    if (!OUT_TYPES.includes(outType))
        throw new GgufOptionError(`Expected one of ${OUT_TYPES.join(", ")} for "outType" but received ${JSON.stringify(outType)}`);

    const configBytes = await readCheckpointFile(hfDir, "config.json");
    const config = parseJsonObject(configBytes, "config.json");
    const architectures = config.architectures;
    if (!Array.isArray(architectures) || typeof architectures[0] !== "string")
        throw new CheckpointConfigError(`Expected "architectures" in config.json to list the model class but got ${JSON.stringify(architectures)}`);

    const Converter = CONVERTERS.get(architectures[0]);
    if (Converter === undefined)
        throw new UnsupportedArchitectureError(`Architecture ${architectures[0]} is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(", ")})`);

    const checkpoint = await SafetensorsCheckpoint.open(hfDir);
    const converter = new Converter({dir: hfDir, config, configBytes, checkpoint}, {
        outFile: options.outFile,
        outType,
        name: options.name ?? path.basename(path.resolve(hfDir))
    });
    return converter.convert();
}
