// Access to a Hugging Face checkpoint directory: its JSON files, and its safetensors tensors read whole or in chunks
// of rows (so that a conversion never holds more than a slice of one tensor).

import fs from "node:fs/promises";
import path from "node:path";
import {dequantize} from "../quant.js";
import {readFully} from "../readFully.js";
import {SAFETENSORS_DTYPES, SafetensorsReader} from "../SafetensorsReader.js";
import type {SafetensorsTensorInfo} from "../SafetensorsReader.js";
import {CheckpointConfigError, MissingCheckpointFileError, MissingTensorError} from "./errors.js";

/**
 * The safetensors of a checkpoint directory (single `model.safetensors` or sharded with its index).
 * @example
 * const checkpoint = await SafetensorsCheckpoint.open(dir);
 * const firstRows = await checkpoint.readRowsAsFloat32("model.embed_tokens.weight", 0, 16);
 */
export class SafetensorsCheckpoint {
    private constructor(public readonly dir: string, private readonly reader: SafetensorsReader) {}

    /**
     * Read and validate the safetensors headers of a checkpoint directory.
     * @param dir - the checkpoint directory
     * @throws {SafetensorsCheckpointError} when it holds no safetensors, and the toolkit's header errors
     */
    public static async open(dir: string): Promise<SafetensorsCheckpoint> {
        return new SafetensorsCheckpoint(dir, await SafetensorsReader.open(dir));
    }

    /** The names of all tensors, in file order. */
    public tensorNames(): string[] {
        return this.reader.tensors.map((tensor) => tensor.name);
    }

    /** Whether the checkpoint has a tensor called `name`. */
    public hasTensor(name: string): boolean {
        return this.reader.has(name);
    }

    /**
     * Where and how a tensor is stored.
     * @throws {MissingTensorError} when no safetensors file holds it
     */
    public tensor(name: string): SafetensorsTensorInfo {
        if (!this.reader.has(name))
            throw new MissingTensorError(`Expected tensor "${name}" in the safetensors files of ${this.dir} but none holds it`);

        return this.reader.getTensor(name);
    }

    /** A tensor's PyTorch shape (outermost first); see {@link SafetensorsCheckpoint.tensor}. */
    public tensorShape(name: string): readonly number[] {
        return this.tensor(name).shape;
    }

    /** A tensor's raw little-endian bytes in its own dtype; see {@link SafetensorsCheckpoint.tensor}. */
    public async readTensorBytes(name: string): Promise<Uint8Array> {
        return this.reader.readTensor(this.tensor(name).name);
    }

    /** A whole tensor widened to float32 (exact); see {@link SafetensorsCheckpoint.tensor}. */
    public async readTensorAsFloat32(name: string): Promise<Float32Array> {
        return this.reader.readTensorAsFloat32(this.tensor(name).name);
    }

    /**
     * Rows `first` … `first + count - 1` of a tensor (a row is its innermost dimension; a 1-D tensor is one row),
     * widened to float32.
     * @param name - the tensor
     * @param first - the first row
     * @param count - the number of rows
     * @throws {MissingTensorError} when no safetensors file holds it
     * @throws {RangeError} when the rows are outside the tensor
     */
    public async readRowsAsFloat32(name: string, first: number, count: number): Promise<Float32Array> {
        const info = this.tensor(name);
        const rowBytes = info.shape.length === 0 ? info.byteLength : info.shape[info.shape.length - 1] * SAFETENSORS_DTYPES[info.dtype].bytes;
        const start = first * rowBytes;
        const length = count * rowBytes;
        if (!Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 0 || start + length > info.byteLength)
            throw new RangeError(`Expected rows within tensor "${name}" [${info.shape.join(", ")}] but got ${count} rows from row ${first}`);

        const handle = await fs.open(info.file, "r");
        try {
            return dequantize(await readFully(handle, info.offset + start, length), SAFETENSORS_DTYPES[info.dtype].ggmlType);
        } finally {
            await handle.close();
        }
    }
}

/**
 * Read a file of the checkpoint directory.
 * @param dir - the checkpoint directory
 * @param file - the file name inside it
 * @throws {MissingCheckpointFileError} when the file does not exist
 */
export async function readCheckpointFile(dir: string, file: string): Promise<Buffer> {
    try {
        return await fs.readFile(path.join(dir, file));
    } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT")
            throw new MissingCheckpointFileError(`Expected ${file} in ${dir} but it does not exist`);
        throw error;
    }
}

/**
 * Parse a JSON object file's bytes.
 * @param bytes - the file's content
 * @param file - its name, for errors
 * @throws {CheckpointConfigError} when it is not a JSON object
 */
export function parseJsonObject(bytes: Uint8Array, file: string): Record<string, unknown> {
    let parsed: unknown;
    try {
        parsed = JSON.parse(Buffer.from(bytes).toString("utf8"));
    } catch (error) {
        throw new CheckpointConfigError(`Expected ${file} to hold JSON but it does not: ${(error as Error).message}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
        throw new CheckpointConfigError(`Expected ${file} to hold a JSON object but got ${Array.isArray(parsed) ? "an array" : JSON.stringify(parsed)}`);

    return parsed as Record<string, unknown>;
}

/**
 * Read and parse a JSON object file of the checkpoint directory.
 * @param dir - the checkpoint directory
 * @param file - the file name inside it
 * @throws {MissingCheckpointFileError | CheckpointConfigError} see {@link readCheckpointFile}, {@link parseJsonObject}
 */
export async function readJsonFile(dir: string, file: string): Promise<Record<string, unknown>> {
    return parseJsonObject(await readCheckpointFile(dir, file), file);
}
