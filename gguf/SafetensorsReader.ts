import {access, open, readFile, stat} from "node:fs/promises";
import {basename, dirname, join} from "node:path";
import {
    GgufOptionError, SafetensorsCheckpointError, SafetensorsDtypeError, SafetensorsHeaderJsonError, SafetensorsHeaderLengthError,
    SafetensorsMissingTensorError, SafetensorsOffsetsError, SafetensorsOverlapError, SafetensorsShapeError
} from "./errors.js";
import {findOverlap} from "./findOverlap.js";
import {GgmlType} from "./ggmlTypes.js";
import {dequantize} from "./quant.js";
import {readFully} from "./readFully.js";

/** The safetensors dtypes this toolkit reads and writes: their element size and the matching ggml type. */
export const SAFETENSORS_DTYPES = Object.freeze({
    BF16: {bytes: 2, ggmlType: GgmlType.BF16},
    F16: {bytes: 2, ggmlType: GgmlType.F16},
    F32: {bytes: 4, ggmlType: GgmlType.F32}
} as const);

/** A safetensors dtype this toolkit reads and writes. */
export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPES;

/** File name of a single-file checkpoint. */
export const SAFETENSORS_SINGLE_FILE = "model.safetensors";

/** File name of the index of a sharded checkpoint. */
export const SAFETENSORS_INDEX_FILE = "model.safetensors.index.json";

/** Default limit on the JSON header length of one file (the limit of the reference safetensors library). */
export const DEFAULT_SAFETENSORS_MAX_HEADER_LENGTH = 100_000_000;

/** The header key that holds free-form string metadata instead of a tensor. */
const METADATA_KEY = "__metadata__";

/** Options of {@link SafetensorsReader.open}. */
export interface SafetensorsReaderOptions {
    /** Longest JSON header accepted per file, in bytes; default {@link DEFAULT_SAFETENSORS_MAX_HEADER_LENGTH}. */
    maxHeaderLength?: number;
}

/** Where and how one tensor is stored in a safetensors checkpoint. */
export interface SafetensorsTensorInfo {
    readonly name: string;
    readonly dtype: SafetensorsDtype;
    /** PyTorch shape, outermost first. */
    readonly shape: readonly number[];
    /** Path of the file that holds the tensor. */
    readonly file: string;
    /** Absolute byte offset of the tensor data in `file`. */
    readonly offset: number;
    readonly byteLength: number;
}

interface SafetensorsHeader {
    readonly tensors: SafetensorsTensorInfo[];
    readonly metadata: Record<string, string>;
}

/**
 * A safetensors checkpoint (one file, or shards listed by `model.safetensors.index.json`) whose headers have been read
 * and validated; tensor data is read from disk one tensor at a time, on demand.
 *
 * @example
 * const checkpoint = await SafetensorsReader.open("Qwen3Guard-Stream-0.6B/");
 * for (const tensor of checkpoint.tensors)
 *     console.log(tensor.name, tensor.dtype, tensor.shape);
 * const norm = await checkpoint.readTensorAsFloat32("model.norm.weight");
 */
export class SafetensorsReader {
    private readonly byName: ReadonlyMap<string, SafetensorsTensorInfo>;

    private constructor(
        /** Every tensor, in file order (shards in the order the index first names them). */
        public readonly tensors: readonly SafetensorsTensorInfo[],
        /** The `__metadata__` strings of the file(s), merged. */
        public readonly metadata: Readonly<Record<string, string>>
    ) {
        this.byName = new Map(tensors.map((tensor) => [tensor.name, tensor]));
    }

    /**
     * Opens a checkpoint and validates every header: the header length, the JSON, each tensor's dtype, shape and
     * `data_offsets` (inside the data area, begin ≤ end, matching shape × dtype size, no overlap) and, when sharded,
     * that the index's `weight_map` matches the shards exactly.
     * @param path - a directory (holding `model.safetensors.index.json` or `model.safetensors`), an index `.json`
     *   file, or a single `.safetensors` file
     * @param options - the header length limit
     * @throws {GgufOptionError} when `maxHeaderLength` is not a positive integer
     * @throws {SafetensorsCheckpointError} when no checkpoint is found or the index does not match its shards
     * @throws {SafetensorsHeaderLengthError | SafetensorsHeaderJsonError | SafetensorsDtypeError | SafetensorsShapeError
     *   | SafetensorsOffsetsError | SafetensorsOverlapError} for an invalid header, naming the file and tensor
     */
    public static async open(path: string, options: SafetensorsReaderOptions = {}): Promise<SafetensorsReader> {
        const maxHeaderLength = options.maxHeaderLength ?? DEFAULT_SAFETENSORS_MAX_HEADER_LENGTH;
        if (!Number.isSafeInteger(maxHeaderLength) || maxHeaderLength < 1)
            throw new GgufOptionError(`Expected a positive integer for "maxHeaderLength" but received ${String(maxHeaderLength)}`);

        let file = path;
        if ((await stat(path)).isDirectory()) {
            file = join(path, SAFETENSORS_INDEX_FILE);
            if (!await exists(file))
                file = join(path, SAFETENSORS_SINGLE_FILE);
            if (!await exists(file))
                throw new SafetensorsCheckpointError(
                    `Expected "${SAFETENSORS_INDEX_FILE}" or "${SAFETENSORS_SINGLE_FILE}" in directory ${path} but got neither`
                );
        }

        const {tensors, metadata} = file.endsWith(".json")
            ? await readShardedHeaders(file, maxHeaderLength)
            : await readSafetensorsHeader(file, maxHeaderLength);
        return new SafetensorsReader(tensors, metadata);
    }

    /** Whether the checkpoint has a tensor called `name`. */
    public has(name: string): boolean {
        return this.byName.has(name);
    }

    /**
     * The info of one tensor.
     * @throws {SafetensorsMissingTensorError} when there is no such tensor
     */
    public getTensor(name: string): SafetensorsTensorInfo {
        const tensor = this.byName.get(name);
        if (tensor === undefined)
            throw new SafetensorsMissingTensorError(`Expected a tensor of the checkpoint but got unknown tensor "${name}"`);

        return tensor;
    }

    /**
     * Reads the raw bytes of one tensor (little-endian, its own dtype), and nothing else, from disk.
     * @throws {SafetensorsMissingTensorError} when there is no such tensor
     * @throws {SafetensorsOffsetsError} when the file has shrunk since it was opened
     */
    public async readTensor(name: string): Promise<Buffer> {
        const tensor = this.getTensor(name);
        const handle = await open(tensor.file, "r");
        try {
            const data = await readFully(handle, tensor.offset, tensor.byteLength);
            if (data.length !== tensor.byteLength)
                throw new SafetensorsOffsetsError(
                    `Expected ${tensor.byteLength} bytes of data for tensor "${name}" in ${tensor.file} but got ${data.length} before the end of the file`
                );

            return data;
        } finally {
            await handle.close();
        }
    }

    /**
     * Reads one tensor and widens it to float32, exactly (BF16 and F16 values are all representable in float32).
     * @throws like {@link SafetensorsReader.readTensor}
     */
    public async readTensorAsFloat32(name: string): Promise<Float32Array> {
        const data = await this.readTensor(name);
        return dequantize(data, SAFETENSORS_DTYPES[this.getTensor(name).dtype].ggmlType);
    }
}

async function exists(path: string): Promise<boolean> {
    return access(path).then(() => true, () => false);
}

/**
 * Reads and validates the header of one safetensors file.
 * @param file - the `.safetensors` file
 * @param maxHeaderLength - the header length limit
 */
async function readSafetensorsHeader(file: string, maxHeaderLength: number): Promise<SafetensorsHeader> {
    const handle = await open(file, "r");
    try {
        const {size} = await handle.stat();
        const prefix = await readFully(handle, 0, 8);
        if (prefix.length < 8)
            throw new SafetensorsHeaderLengthError(`Expected an 8-byte header length at the start of ${file} but got a file of ${size} bytes`);

        const headerLength = prefix.readBigUInt64LE(0);
        if (headerLength > BigInt(maxHeaderLength))
            throw new SafetensorsHeaderLengthError(
                `Expected a header of at most ${maxHeaderLength} bytes (limit maxHeaderLength) in ${file} but got ${headerLength}`
            );
        if (headerLength > BigInt(size - 8))
            throw new SafetensorsHeaderLengthError(
                `Expected a header of at most ${size - 8} bytes (the rest of the file) in ${file} but got ${headerLength}`
            );

        const length = Number(headerLength);
        const text = (await readFully(handle, 8, length)).toString("utf8");
        let json: unknown;
        try {
            json = JSON.parse(text);
        } catch (error) {
            throw new SafetensorsHeaderJsonError(`Expected a JSON header in ${file} but got invalid JSON (${(error as Error).message})`);
        }

        return parseHeader(json, file, 8 + length, size - 8 - length);
    } finally {
        await handle.close();
    }
}

function parseHeader(json: unknown, file: string, dataStart: number, dataLength: number): SafetensorsHeader {
    if (!isPlainObject(json))
        throw new SafetensorsHeaderJsonError(`Expected a JSON object as the header of ${file} but got ${describeJson(json)}`);

    let metadata: Record<string, string> = {};
    const tensors: SafetensorsTensorInfo[] = [];
    for (const [name, entry] of Object.entries(json)) {
        if (name === METADATA_KEY) {
            metadata = parseMetadata(entry, file);
            continue;
        }

        const subject = `tensor "${name}" in ${file}`;
        if (!isPlainObject(entry))
            throw new SafetensorsHeaderJsonError(`Expected an object for ${subject} but got ${describeJson(entry)}`);

        const {data_offsets: offsets} = entry;
        const dtype = checkSafetensorsDtype(entry.dtype, subject);
        const shape = checkSafetensorsShape(entry.shape, subject);
        if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger) || offsets[0] > offsets[1] || offsets[1] > dataLength)
            throw new SafetensorsOffsetsError(
                `Expected data_offsets [begin, end] with 0 ≤ begin ≤ end ≤ ${dataLength} (the data area) for ${subject} but got ${describeJson(offsets)}`
            );

        const [begin, end] = offsets as [number, number];
        const byteLength = shapeByteLength(shape, dtype);
        if (byteLength !== end - begin)
            throw new SafetensorsShapeError(
                `Expected data_offsets spanning ${byteLength} bytes (${dtype} [${shape.join(", ")}]) for ${subject} but got ${end - begin} bytes (${begin} to ${end})`
            );

        tensors.push({name, dtype, shape, file, offset: dataStart + begin, byteLength});
    }

    const overlap = findOverlap(tensors, (tensor) => [tensor.offset, tensor.byteLength]);
    if (overlap !== undefined) {
        const [previous, tensor] = overlap;
        throw new SafetensorsOverlapError(
            `Expected the data of tensor "${tensor.name}" in ${file} to start at or after the end of tensor "${previous.name}" (offset ${previous.offset + previous.byteLength - dataStart}) but got offset ${tensor.offset - dataStart}`
        );
    }

    return {tensors, metadata};
}

/**
 * Checks that `dtype` is one this toolkit supports.
 * @param dtype - a dtype from a header or a caller
 * @param subject - the tensor it belongs to, for the error message (e.g. `tensor "w" in model.safetensors`)
 * @throws {SafetensorsDtypeError} otherwise
 */
export function checkSafetensorsDtype(dtype: unknown, subject: string): SafetensorsDtype {
    if (typeof dtype !== "string" || !Object.hasOwn(SAFETENSORS_DTYPES, dtype))
        throw new SafetensorsDtypeError(`Expected dtype BF16, F16 or F32 for ${subject} but got ${describeJson(dtype)}`);

    return dtype as SafetensorsDtype;
}

/**
 * Checks that `shape` is a list of non-negative integers.
 * @param shape - a shape from a header or a caller
 * @param subject - the tensor it belongs to, for the error message
 * @throws {SafetensorsShapeError} otherwise
 */
export function checkSafetensorsShape(shape: unknown, subject: string): number[] {
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger))
        throw new SafetensorsShapeError(`Expected a shape of non-negative integers for ${subject} but got ${describeJson(shape)}`);

    return shape;
}

function parseMetadata(entry: unknown, file: string): Record<string, string> {
    if (!isPlainObject(entry) || !Object.values(entry).every((value) => typeof value === "string"))
        throw new SafetensorsHeaderJsonError(`Expected "${METADATA_KEY}" in ${file} to map strings to strings but got ${describeJson(entry)}`);

    return entry as Record<string, string>;
}

/**
 * The number of bytes a tensor of `dtype` and `shape` takes.
 * @param shape - PyTorch shape of non-negative integers
 * @param dtype - a supported dtype
 */
export function shapeByteLength(shape: readonly number[], dtype: SafetensorsDtype): number {
    return shape.reduce((product, n) => product * n, SAFETENSORS_DTYPES[dtype].bytes);
}

async function readShardedHeaders(indexFile: string, maxHeaderLength: number): Promise<SafetensorsHeader> {
    let index: unknown;
    try {
        index = JSON.parse(await readFile(indexFile, "utf8"));
    } catch (error) {
        throw new SafetensorsCheckpointError(`Expected a JSON index in ${indexFile} but got ${(error as Error).message}`);
    }

    const weightMap = isPlainObject(index) ? index.weight_map : undefined;
    if (!isPlainObject(weightMap))
        throw new SafetensorsCheckpointError(`Expected a "weight_map" object in ${indexFile} but got ${describeJson(weightMap)}`);

    const shardFiles = new Set<string>();
    for (const [name, shard] of Object.entries(weightMap)) {
        if (typeof shard !== "string" || shard !== basename(shard) || shard === "." || shard === "..")
            throw new SafetensorsCheckpointError(
                `Expected a file name beside ${indexFile} for tensor "${name}" in its weight_map but got ${describeJson(shard)}`
            );

        shardFiles.add(shard);
    }

    const tensors: SafetensorsTensorInfo[] = [];
    const metadata: Record<string, string> = {};
    for (const shard of shardFiles) {
        const file = join(dirname(indexFile), shard);
        if (!await exists(file))
            throw new SafetensorsCheckpointError(`Expected shard "${shard}" named by ${indexFile} to exist but got no such file`);

        const header = await readSafetensorsHeader(file, maxHeaderLength);
        for (const tensor of header.tensors) {
            const listed = weightMap[tensor.name];
            if (listed !== shard)
                throw new SafetensorsCheckpointError(
                    `Expected tensor "${tensor.name}" of shard "${shard}" to be listed for that shard in the weight_map of ${indexFile} but got ${listed === undefined ? "no entry" : describeJson(listed)}`
                );
        }
        const present = new Set(header.tensors.map((tensor) => tensor.name));
        for (const [name, listed] of Object.entries(weightMap)) {
            if (listed === shard && !present.has(name))
                throw new SafetensorsCheckpointError(
                    `Expected tensor "${name}" in shard "${shard}", as the weight_map of ${indexFile} says, but got no such tensor`
                );
        }
        tensors.push(...header.tensors);
        Object.assign(metadata, header.metadata);
    }

    return {tensors, metadata};
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isNonNegativeInteger(value: unknown): value is number {
    return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** Renders a JSON value for an error message, shortened to 80 characters. */
function describeJson(value: unknown): string {
    const text = value === undefined ? "nothing" : JSON.stringify(value);
    return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
