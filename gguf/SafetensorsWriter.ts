import {mkdir, open, rm, writeFile} from "node:fs/promises";
import type {FileHandle} from "node:fs/promises";
import {join} from "node:path";
import {
    GgufOptionError, SafetensorsDataSizeError, SafetensorsDuplicateTensorError, SafetensorsHeaderJsonError,
    SafetensorsWriterStateError
} from "./errors.js";
import {SAFETENSORS_INDEX_FILE, checkSafetensorsDtype, checkSafetensorsShape, shapeByteLength} from "./SafetensorsReader.js";
import type {SafetensorsDtype} from "./SafetensorsReader.js";
import {writeFully} from "./writeFully.js";

/** A tensor to be written: name, dtype and PyTorch shape (outermost first). */
export interface SafetensorsTensorSpec {
    readonly name: string;
    readonly dtype: SafetensorsDtype;
    readonly shape: readonly number[];
}

/** A tensor to be written together with its little-endian data. */
export interface SafetensorsTensorData extends SafetensorsTensorSpec {
    readonly data: Uint8Array;
}

/** Options of {@link writeShardedSafetensors}. */
export interface ShardedSafetensorsOptions {
    /** Most data bytes per shard; a tensor larger than this gets a shard of its own. */
    maxShardBytes: number;
    /** `__metadata__` strings written into every shard. */
    metadata?: Record<string, string>;
}

interface PlannedTensor extends SafetensorsTensorSpec {
    readonly byteLength: number;
}

/**
 * Writes a safetensors file as a stream: the header (which needs every name, dtype and shape up front) at
 * {@link SafetensorsWriter.create}, then the data of one tensor at a time, in the order of the specs.
 *
 * @example
 * const writer = await SafetensorsWriter.create("model.safetensors", [{name: "w", dtype: "F32", shape: [2, 2]}]);
 * await writer.writeTensor("w", Buffer.from(new Float32Array([1, 2, 3, 4]).buffer));
 * await writer.close();
 */
export class SafetensorsWriter {
    private next = 0;
    private position: number;
    private open = true;

    private constructor(
        public readonly path: string,
        private readonly handle: FileHandle,
        private readonly tensors: readonly PlannedTensor[],
        headerEnd: number
    ) {
        this.position = headerEnd;
    }

    /**
     * Checks the specs, creates (or truncates) `path` and writes the header.
     * @param path - the `.safetensors` file to write
     * @param tensors - every tensor of the file, in the order their data will be written
     * @param metadata - `__metadata__` strings, if any
     * @throws {SafetensorsDtypeError | SafetensorsShapeError} for an unsupported dtype or an invalid shape
     * @throws {SafetensorsDuplicateTensorError | SafetensorsHeaderJsonError} for a repeated or reserved name
     */
    public static async create(
        path: string, tensors: readonly SafetensorsTensorSpec[], metadata?: Record<string, string>
    ): Promise<SafetensorsWriter> {
        const planned = planTensors(tensors);
        const header: Record<string, unknown> = metadata === undefined ? {} : {__metadata__: metadata};
        let offset = 0;
        for (const tensor of planned) {
            header[tensor.name] = {dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + tensor.byteLength]};
            offset += tensor.byteLength;
        }

        const json = Buffer.from(JSON.stringify(header), "utf8");
        const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, " ");
        json.copy(padded);
        const prefix = Buffer.alloc(8);
        prefix.writeBigUInt64LE(BigInt(padded.length));

        const handle = await open(path, "w");
        try {
            await writeFully(handle, Buffer.concat([prefix, padded]), 0);
        } catch (error) {
            await handle.close();
            throw error;
        }

        return new SafetensorsWriter(path, handle, planned, 8 + padded.length);
    }

    /**
     * Writes the data of the next tensor.
     * @param name - the next tensor in the order of the specs
     * @param data - exactly its byte length (shape product × dtype size), little-endian
     * @throws {SafetensorsWriterStateError} for another tensor than the next one, or after close
     * @throws {SafetensorsDataSizeError} for data of the wrong size (nothing is written)
     */
    public async writeTensor(name: string, data: Uint8Array): Promise<void> {
        this.expectOpen("writeTensor");
        const tensor = this.tensors[this.next];
        if (tensor === undefined || tensor.name !== name)
            throw new SafetensorsWriterStateError(
                `Expected ${tensor === undefined ? "no more tensor data" : `data for tensor "${tensor.name}" (next in order)`} but got data for "${name}"`
            );
        if (data.length !== tensor.byteLength)
            throw new SafetensorsDataSizeError(
                `Expected ${tensor.byteLength} bytes of data for tensor "${name}" (${tensor.dtype} [${tensor.shape.join(", ")}]) but got ${data.length}`
            );

        await writeFully(this.handle, data, this.position);
        this.position += data.length;
        this.next++;
    }

    /**
     * Closes the file once every tensor's data is written.
     * @throws {SafetensorsWriterStateError} when some tensor data is missing (the writer stays open) or after close
     */
    public async close(): Promise<void> {
        this.expectOpen("close");
        const missing = this.tensors.slice(this.next).map((tensor) => `"${tensor.name}"`);
        if (missing.length > 0)
            throw new SafetensorsWriterStateError(`Expected data for every tensor before close but got none for ${missing.join(", ")}`);

        this.open = false;
        await this.handle.close();
    }

    /** Closes and deletes the partial file; does nothing once closed or aborted. */
    public async abort(): Promise<void> {
        if (!this.open)
            return;

        this.open = false;
        await this.handle.close();
        await rm(this.path, {force: true});
    }

    private expectOpen(method: string): void {
        if (!this.open)
            throw new SafetensorsWriterStateError(`Expected ${method} on an open writer but the writer is closed`);
    }
}

function planTensors(tensors: readonly SafetensorsTensorSpec[]): PlannedTensor[] {
    const names = new Set<string>();
    return tensors.map(({name, dtype, shape}) => {
        if (name === "__metadata__")
            throw new SafetensorsHeaderJsonError(`Expected a tensor name other than the reserved "__metadata__" but got it`);
        if (names.has(name))
            throw new SafetensorsDuplicateTensorError(`Expected unique tensor names but got "${name}" twice`);
        const subject = `tensor "${name}"`;
        checkSafetensorsDtype(dtype, subject);
        checkSafetensorsShape(shape, subject);
        names.add(name);
        return {name, dtype, shape: [...shape], byteLength: shapeByteLength(shape, dtype)};
    });
}

/**
 * Writes tensors held in memory to one safetensors file; on failure the partial file is deleted.
 * @param path - the `.safetensors` file to write
 * @param tensors - the tensors, in file order
 * @param metadata - `__metadata__` strings, if any
 * @throws like {@link SafetensorsWriter.create} and {@link SafetensorsWriter.writeTensor}
 */
export async function writeSafetensors(path: string, tensors: readonly SafetensorsTensorData[], metadata?: Record<string, string>): Promise<void> {
    const writer = await SafetensorsWriter.create(path, tensors, metadata);
    try {
        for (const tensor of tensors)
            await writer.writeTensor(tensor.name, tensor.data);

        await writer.close();
    } catch (error) {
        await writer.abort();
        throw error;
    }
}

/**
 * Writes tensors held in memory as a sharded checkpoint, as Hugging Face lays it out: shards
 * `model-00001-of-0000N.safetensors` of at most `maxShardBytes` data bytes each (in tensor order), and
 * `model.safetensors.index.json` with `metadata.total_size` and the `weight_map`.
 * @param directory - the checkpoint directory (created if missing)
 * @param tensors - the tensors, in order
 * @param options - the shard size limit and `__metadata__`
 * @returns the names of the files written, shards first, then the index
 * @throws {GgufOptionError} when `maxShardBytes` is not a positive integer
 * @throws like {@link writeSafetensors}
 * @example
 * await writeShardedSafetensors("fixture/", tensors, {maxShardBytes: 1 << 20});
 */
export async function writeShardedSafetensors(
    directory: string, tensors: readonly SafetensorsTensorData[], options: ShardedSafetensorsOptions
): Promise<string[]> {
    const {maxShardBytes, metadata} = options;
    if (!Number.isSafeInteger(maxShardBytes) || maxShardBytes < 1)
        throw new GgufOptionError(`Expected a positive integer for "maxShardBytes" but received ${String(maxShardBytes)}`);

    const planned = planTensors(tensors);
    const shards: SafetensorsTensorData[][] = [];
    let shardBytes = 0;
    for (const [index, tensor] of planned.entries()) {
        if (shards.length === 0 || (shardBytes > 0 && shardBytes + tensor.byteLength > maxShardBytes)) {
            shards.push([]);
            shardBytes = 0;
        }
        shards[shards.length - 1].push(tensors[index]);
        shardBytes += tensor.byteLength;
    }

    await mkdir(directory, {recursive: true});
    const count = String(shards.length).padStart(5, "0");
    const files: string[] = [];
    const weightMap: Record<string, string> = {};
    for (const [index, shard] of shards.entries()) {
        const file = `model-${String(index + 1).padStart(5, "0")}-of-${count}.safetensors`;
        await writeSafetensors(join(directory, file), shard, metadata);
        for (const tensor of shard)
            weightMap[tensor.name] = file;

        files.push(file);
    }

    const totalSize = planned.reduce((sum, tensor) => sum + tensor.byteLength, 0);
    await writeFile(join(directory, SAFETENSORS_INDEX_FILE), `${JSON.stringify({metadata: {total_size: totalSize}, weight_map: weightMap}, null, 2)}\n`);
    files.push(SAFETENSORS_INDEX_FILE);
    return files;
}
