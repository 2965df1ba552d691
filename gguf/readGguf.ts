import {open} from "node:fs/promises";
import type {FileHandle} from "node:fs/promises";
import type {ByteReader} from "./ByteReader.js";
import {FileByteReader} from "./FileByteReader.js";
import {findOverlap} from "./findOverlap.js";
import {
    GgufAlignmentError, GgufArrayDepthError, GgufArrayLengthError, GgufDuplicateKeyError, GgufDuplicateTensorError,
    GgufElementCountError, GgufKeyError, GgufKvCountError, GgufMagicError, GgufOptionError, GgufStringLengthError,
    GgufTensorBoundsError, GgufTensorCountError, GgufTensorDimsError, GgufTensorNameError, GgufTensorOffsetError,
    GgufTensorOverlapError, GgufTruncatedError, GgufValueTypeError, GgufVersionError
} from "./errors.js";
import {GgufValueType, ggmlTypeLayout, isGgufValueType, tensorByteSize} from "./ggmlTypes.js";
import type {GgmlType} from "./ggmlTypes.js";
import {GgufMetadata} from "./GgufMetadata.js";
import type {GgufArray, GgufKv, GgufValue} from "./GgufMetadata.js";
import {readFully} from "./readFully.js";

/** The magic bytes every GGUF file starts with. */
export const GGUF_MAGIC = "GGUF";

/** The GGUF version this toolkit writes. */
export const GGUF_VERSION = 3;

/** The data alignment of a GGUF file without a `general.alignment` key. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** The metadata key that sets the data alignment. */
export const GGUF_ALIGNMENT_KEY = "general.alignment";

/** Limits that protect the reader against hostile or corrupt files; each breach has its own error class. */
export interface GgufLimits {
    /** Longest string (key, value or tensor name), in bytes. */
    maxStringLength: number;
    /** Most metadata entries. */
    maxKvCount: number;
    /** Most tensors. */
    maxTensorCount: number;
    /** Most elements in one array. */
    maxArrayLength: number;
    /** Deepest nesting of arrays (a plain array has depth 1). */
    maxArrayDepth: number;
    /** Most dimensions of a tensor (ggml's GGML_MAX_DIMS). */
    maxTensorDims: number;
    /** Longest tensor name in bytes (ggml's GGML_MAX_NAME − 1). */
    maxTensorNameLength: number;
}

/** The default {@link GgufLimits}: generous for real models (a 151,936-token vocabulary, thousands of tensors). */
export const DEFAULT_GGUF_LIMITS: Readonly<GgufLimits> = Object.freeze({
    maxStringLength: 16 * 1024 * 1024,
    maxKvCount: 65_536,
    maxTensorCount: 1_048_576,
    maxArrayLength: 16 * 1024 * 1024,
    maxArrayDepth: 8,
    maxTensorDims: 4,
    maxTensorNameLength: 63
});

/** Options of {@link readGguf}. */
export interface ReadGgufOptions {
    /** Overrides of {@link DEFAULT_GGUF_LIMITS}, each a positive integer. */
    limits?: Partial<GgufLimits>;
}

/** Where and how one tensor is stored in a GGUF file. */
export interface GgufTensorInfo {
    readonly name: string;
    /** ggml dimensions, innermost (row) first: PyTorch shape `[out, in]` is `ne = [in, out]`. */
    readonly ne: readonly number[];
    readonly type: GgmlType;
    /** Absolute byte offset of the tensor data in the file. */
    readonly offset: number;
    /** Number of bytes of tensor data (without alignment padding). */
    readonly byteSize: number;
}

/** Everything the header of a GGUF file declares. */
export interface GgufFile {
    readonly path: string;
    readonly version: number;
    readonly metadata: GgufMetadata;
    /** Tensor infos in file order. */
    readonly tensors: readonly GgufTensorInfo[];
    readonly alignment: number;
    /** Absolute offset of the data section (the first tensor's data). */
    readonly dataOffset: number;
    readonly fileSize: number;
}

/** The value types of a fixed byte size: all but STRING and ARRAY. */
type FixedSizeValueType = Exclude<GgufValueType, GgufValueType.STRING | GgufValueType.ARRAY>;

const FIXED_VALUE_SIZES: Record<FixedSizeValueType, number> = {
    [GgufValueType.UINT8]: 1, [GgufValueType.INT8]: 1, [GgufValueType.BOOL]: 1,
    [GgufValueType.UINT16]: 2, [GgufValueType.INT16]: 2,
    [GgufValueType.UINT32]: 4, [GgufValueType.INT32]: 4, [GgufValueType.FLOAT32]: 4,
    [GgufValueType.UINT64]: 8, [GgufValueType.INT64]: 8, [GgufValueType.FLOAT64]: 8
};

/** The fewest bytes an element of each type takes: a string has its 8-byte length, an array its 12-byte header. */
function minimumValueSize(type: GgufValueType): number {
    return type === GgufValueType.STRING ? 8 : type === GgufValueType.ARRAY ? 12 : FIXED_VALUE_SIZES[type];
}

/**
 * Reads the header of a GGUF file (versions 2 and 3): metadata, tensor infos and where each tensor's data lies. Only
 * the header is read, through a buffered cursor, so this is fast on multi-gigabyte files. Every count, length and
 * offset is checked against the file size and the {@link GgufLimits} before it is trusted.
 *
 * @param path - the GGUF file
 * @param options - limit overrides
 * @returns the parsed header
 * @throws {GgufOptionError} when a limit override is not a positive integer
 * @throws {GgufMagicError | GgufVersionError | GgufTruncatedError} when the file is not a readable GGUF file
 * @throws {GgufStringLengthError | GgufKvCountError | GgufTensorCountError | GgufArrayLengthError | GgufArrayDepthError
 *   | GgufTensorDimsError | GgufTensorNameError} when a limit is exceeded
 * @throws {GgufKeyError | GgufValueTypeError | GgufDuplicateKeyError | GgufMetadataTypeError | GgufAlignmentError}
 *   on invalid metadata
 * @throws {GgufDuplicateTensorError | GgmlTypeError | GgmlShapeError | GgufElementCountError | GgufTensorOffsetError
 *   | GgufTensorBoundsError | GgufTensorOverlapError} on invalid tensor infos
 * @example
 * const gguf = await readGguf("Qwen3Guard-Stream-0.6B.gguf");
 * gguf.metadata.getString("general.architecture"); // "qwen3"
 * const embedding = gguf.tensors.find((tensor) => tensor.name === "token_embd.weight");
 */
export async function readGguf(path: string, options: ReadGgufOptions = {}): Promise<GgufFile> {
    const limits = resolveLimits(options.limits);
    const reader = await FileByteReader.open(path);
    try {
        return await parseGguf(reader, path, limits);
    } finally {
        await reader.close();
    }
}

/**
 * Reads the data of one tensor, and nothing else, from a GGUF file.
 * @param source - the GGUF file, as a path or an open handle (left open)
 * @param tensor - a tensor info from {@link readGguf} on that file
 * @returns `tensor.byteSize` bytes
 * @throws {GgufTruncatedError} when the file ends before the tensor data
 */
export async function readTensorData(source: string | FileHandle, tensor: GgufTensorInfo): Promise<Buffer> {
    const handle = typeof source === "string" ? await open(source, "r") : source;
    try {
        const data = await readFully(handle, tensor.offset, tensor.byteSize);
        if (data.length < tensor.byteSize)
            throw new GgufTruncatedError(
                `Expected ${tensor.byteSize} bytes of data for tensor "${tensor.name}" at offset ${tensor.offset} but got ${data.length} before the end of the file`
            );

        return data;
    } finally {
        if (typeof source === "string")
            await handle.close();
    }
}

function resolveLimits(overrides: Partial<GgufLimits> = {}): GgufLimits {
    const limits = {...DEFAULT_GGUF_LIMITS};
    for (const [name, value] of Object.entries(overrides) as [keyof GgufLimits, unknown][]) {
        if (!Object.hasOwn(DEFAULT_GGUF_LIMITS, name))
            throw new GgufOptionError(`Expected a limit among ${Object.keys(DEFAULT_GGUF_LIMITS).join(", ")} but received "${name}"`);
        if (!Number.isSafeInteger(value) || (value as number) < 1)
            throw new GgufOptionError(`Expected a positive integer for "limits.${name}" but received ${String(value)}`);

        limits[name] = value as number;
    }

    return limits;
}

async function parseGguf(reader: ByteReader, path: string, limits: GgufLimits): Promise<GgufFile> {
    const version = await readPreamble(reader);

    reader.context = "the tensor count";
    const tensorCount = checkCount(await fetchUint64(reader), limits.maxTensorCount, "maxTensorCount", "tensors", GgufTensorCountError);
    reader.context = "the metadata entry count";
    const kvCount = checkCount(await fetchUint64(reader), limits.maxKvCount, "maxKvCount", "metadata entries", GgufKvCountError);

    const entries = new Map<string, GgufKv>();
    for (let index = 0; index < kvCount; index++) {
        const [key, kv] = await readKv(reader, index, limits);
        if (entries.has(key))
            throw new GgufDuplicateKeyError(`Expected unique metadata keys but got "${key}" twice`);

        entries.set(key, kv);
    }
    const metadata = new GgufMetadata(entries);
    const alignment = readAlignment(metadata);

    const infos: RelativeTensorInfo[] = [];
    const names = new Set<string>();
    for (let index = 0; index < tensorCount; index++) {
        const info = await readTensorInfo(reader, index, limits, alignment);
        if (names.has(info.name))
            throw new GgufDuplicateTensorError(`Expected unique tensor names but got "${info.name}" twice`);

        names.add(info.name);
        infos.push(info);
    }

    const dataOffset = infos.length === 0 ? reader.offset : alignUp(reader.offset, alignment);
    const tensors = infos.map(({relativeOffset, ...info}) => ({...info, offset: dataOffset + relativeOffset}));
    checkTensorPlacement(tensors, dataOffset, reader.size);

    return {path, version, metadata, tensors, alignment, dataOffset, fileSize: reader.size};
}

async function readPreamble(reader: ByteReader): Promise<number> {
    reader.context = "the magic";
    await reader.ensure(4);
    const magic = reader.readBytes(4);
    if (magic.toString("latin1") !== GGUF_MAGIC)
        throw new GgufMagicError(`Expected the magic "${GGUF_MAGIC}" at the start of the file but got ${describeMagic(magic)}`);

    reader.context = "the version";
    const version = await fetchUint32(reader);
    if (version === 2 || version === GGUF_VERSION)
        return version;

    if (version === 1)
        throw new GgufVersionError("Expected GGUF version 2 or 3 but got version 1, which is no longer supported: re-convert the model");
    if (version !== 0 && (version & 0xffff) === 0)
        throw new GgufVersionError(
            `Expected GGUF version 2 or 3 but got ${version} (0x${version.toString(16)}): a big-endian file, which is not supported`
        );

    throw new GgufVersionError(`Expected GGUF version 2 or 3 but got version ${version}`);
}

function describeMagic(magic: Buffer): string {
    const printable = [...magic].every((byte) => byte >= 0x20 && byte < 0x7f);
    return printable ? `"${magic.toString("latin1")}"` : `bytes 0x${magic.toString("hex")}`;
}

type CountErrorClass = new (message: string) => Error;

function checkCount(count: bigint, limit: number, limitName: keyof GgufLimits, what: string, ErrorClass: CountErrorClass): number {
    if (count > BigInt(limit))
        throw new ErrorClass(`Expected at most ${limit} ${what} (limit ${limitName}) but got ${count}`);

    return Number(count);
}

async function readKv(reader: ByteReader, index: number, limits: GgufLimits): Promise<[string, GgufKv]> {
    reader.context = `the key of metadata entry ${index}`;
    const key = await readString(reader, limits);
    if (key.length === 0)
        throw new GgufKeyError(`Expected a non-empty key for metadata entry ${index} but got ""`);
    // llama.cpp copies keys as C strings: one that starts with NUL is empty there, and gguf.cpp:143
    // GGML_ASSERT(!key.empty()) aborts the process (found by the fuzz: bench/fuzzBench.ts, seed 2)
    if (key.includes("\0"))
        throw new GgufKeyError(`Expected a key without NUL bytes for metadata entry ${index} but got ${JSON.stringify(key)}`);

    reader.context = `the value of key "${key}"`;
    const type = await readValueType(reader, reader.context);
    const value = await readValue(reader, type, limits, 0);
    return [key, {type, value}];
}

/** @param subject - what has this type, for the error message */
async function readValueType(reader: ByteReader, subject: string): Promise<GgufValueType> {
    const type = await fetchUint32(reader);
    if (!isGgufValueType(type))
        throw new GgufValueTypeError(
            `Expected a GGUF value type (${GgufValueType.UINT8} to ${GgufValueType.FLOAT64}) for ${subject} but got ${type}`
        );

    return type;
}

async function fetchUint32(reader: ByteReader): Promise<number> {
    await reader.ensure(4);
    return reader.readUint32();
}

async function fetchUint64(reader: ByteReader): Promise<bigint> {
    await reader.ensure(8);
    return reader.readUint64();
}

async function readString(reader: ByteReader, limits: GgufLimits): Promise<string> {
    const length = await fetchUint64(reader);
    if (length > BigInt(limits.maxStringLength))
        throw new GgufStringLengthError(
            `Expected a string of at most ${limits.maxStringLength} bytes (limit maxStringLength) for ${reader.context} but got ${length} bytes`
        );

    await reader.ensure(Number(length));
    return reader.readUtf8(Number(length));
}

async function readValue(reader: ByteReader, type: GgufValueType, limits: GgufLimits, depth: number): Promise<GgufValue> {
    if (type === GgufValueType.STRING)
        return readString(reader, limits);
    if (type === GgufValueType.ARRAY)
        return readArray(reader, limits, depth + 1);

    await reader.ensure(FIXED_VALUE_SIZES[type]);
    return readFixedValue(reader, type);
}

/**
 * Reads a value synchronously when the reader's window already holds all of it (the common case inside large
 * arrays, so a vocabulary costs no await per token).
 * @returns the value, or undefined (with nothing consumed) when the window is too short or the value needs checks
 */
function readBufferedValue(reader: ByteReader, type: GgufValueType, limits: GgufLimits): GgufValue | undefined {
    if (type === GgufValueType.STRING) {
        const length = reader.buffered >= 8 ? Number(reader.peekUint64()) : Infinity;
        if (length > limits.maxStringLength || length > reader.buffered - 8)
            return undefined;

        reader.readUint64();
        return reader.readUtf8(length);
    }
    if (type === GgufValueType.ARRAY || reader.buffered < FIXED_VALUE_SIZES[type])
        return undefined;

    return readFixedValue(reader, type);
}

function readFixedValue(reader: ByteReader, type: FixedSizeValueType): number | bigint | boolean {
    switch (type) {
        case GgufValueType.UINT8: return reader.readUint8();
        case GgufValueType.INT8: return reader.readInt8();
        case GgufValueType.UINT16: return reader.readUint16();
        case GgufValueType.INT16: return reader.readInt16();
        case GgufValueType.UINT32: return reader.readUint32();
        case GgufValueType.INT32: return reader.readInt32();
        case GgufValueType.FLOAT32: return reader.readFloat32();
        case GgufValueType.BOOL: return reader.readInt8() !== 0;
        case GgufValueType.UINT64: return reader.readUint64();
        case GgufValueType.INT64: return reader.readInt64();
        case GgufValueType.FLOAT64: return reader.readFloat64();
    }
}

async function readArray(reader: ByteReader, limits: GgufLimits, depth: number): Promise<GgufArray> {
    if (depth > limits.maxArrayDepth)
        throw new GgufArrayDepthError(
            `Expected arrays nested at most ${limits.maxArrayDepth} deep (limit maxArrayDepth) in ${reader.context} but got depth ${depth}`
        );

    const elementType = await readValueType(reader, `the elements of ${reader.context}`);
    const length = checkCount(await fetchUint64(reader), limits.maxArrayLength, "maxArrayLength", `elements in ${reader.context}`, GgufArrayLengthError);
    const minimumSize = length * minimumValueSize(elementType);
    if (minimumSize > reader.remaining)
        throw new GgufTruncatedError(
            `Expected at least ${minimumSize} bytes for the ${length} elements of ${reader.context} at offset ${reader.offset} but got ${reader.remaining} before the end of the file`
        );

    const values: GgufValue[] = [];
    for (let index = 0; index < length; index++)
        values.push(readBufferedValue(reader, elementType, limits) ?? await readValue(reader, elementType, limits, depth));

    return {elementType, values};
}

function readAlignment(metadata: GgufMetadata): number {
    const alignment = metadata.find(GGUF_ALIGNMENT_KEY, GgufValueType.UINT32) ?? GGUF_DEFAULT_ALIGNMENT;
    if (!isPowerOfTwo(alignment))
        throw new GgufAlignmentError(`Expected "${GGUF_ALIGNMENT_KEY}" to be a power of two but got ${alignment}`);

    return alignment;
}

/**
 * Whether `value` is a positive integer power of two (a valid alignment).
 * @param value - a candidate alignment
 */
export function isPowerOfTwo(value: number): boolean {
    return Number.isSafeInteger(value) && value > 0 && (value & (value - 1)) === 0;
}

/**
 * Rounds `offset` up to a multiple of `alignment`.
 * @param offset - a byte offset
 * @param alignment - a power of two
 */
export function alignUp(offset: number, alignment: number): number {
    return Math.ceil(offset / alignment) * alignment;
}

interface RelativeTensorInfo extends Omit<GgufTensorInfo, "offset"> {
    readonly relativeOffset: number;
}

async function readTensorInfo(reader: ByteReader, index: number, limits: GgufLimits, alignment: number): Promise<RelativeTensorInfo> {
    reader.context = `the name of tensor ${index}`;
    const name = await readString(reader, limits);
    const nameLength = Buffer.byteLength(name);
    if (nameLength > limits.maxTensorNameLength)
        throw new GgufTensorNameError(
            `Expected a tensor name of at most ${limits.maxTensorNameLength} bytes (limit maxTensorNameLength) for tensor ${index} but got ${nameLength} bytes ("${name}")`
        );

    if (name.includes("\0")) // ggml takes the name as a C string: cut short, it is another tensor's or none
        throw new GgufTensorNameError(`Expected a tensor name without NUL bytes for tensor ${index} but got ${JSON.stringify(name)}`);

    const subject = `tensor "${name}"`;
    reader.context = `the info of ${subject}`;
    const dimCount = await fetchUint32(reader);
    if (dimCount > limits.maxTensorDims)
        throw new GgufTensorDimsError(
            `Expected at most ${limits.maxTensorDims} dimensions (limit maxTensorDims) for ${subject} but got ${dimCount}`
        );

    const ne: number[] = [];
    for (let dim = 0; dim < dimCount; dim++)
        ne.push(toSafeInteger(await fetchUint64(reader), `dimension ${dim} of ${subject}`));

    const elements = ne.reduce((product, n) => product * BigInt(n), 1n);
    toSafeInteger(elements, `the element count of ${subject} (shape [${ne.join(", ")}])`);

    const type = await fetchUint32(reader);
    ggmlTypeLayout(type, subject);
    const byteSize = tensorByteSize(type, ne, subject);

    const offset = await fetchUint64(reader);
    if (offset % BigInt(alignment) !== 0n)
        throw new GgufTensorOffsetError(
            `Expected the data offset of ${subject} to be a multiple of the alignment ${alignment} but got ${offset}`
        );
    if (offset > BigInt(Number.MAX_SAFE_INTEGER))
        throw new GgufTensorBoundsError(`Expected the data of ${subject} to lie within the file but got data offset ${offset}`);

    return {name, ne, type, relativeOffset: Number(offset), byteSize};
}

function toSafeInteger(value: bigint, what: string): number {
    if (value > BigInt(Number.MAX_SAFE_INTEGER))
        throw new GgufElementCountError(`Expected ${what} to be at most ${Number.MAX_SAFE_INTEGER} but got ${value}`);

    return Number(value);
}

function checkTensorPlacement(tensors: readonly GgufTensorInfo[], dataOffset: number, fileSize: number): void {
    for (const tensor of tensors) {
        const end = tensor.offset + tensor.byteSize;
        if (end > fileSize)
            throw new GgufTensorBoundsError(
                `Expected the data of tensor "${tensor.name}" (${tensor.byteSize} bytes at data offset ${tensor.offset - dataOffset}) to end within the file of ${fileSize} bytes but got an end at ${end}`
            );
    }

    const overlap = findOverlap(tensors, (tensor) => [tensor.offset, tensor.byteSize]);
    if (overlap !== undefined) {
        const [previous, tensor] = overlap;
        throw new GgufTensorOverlapError(
            `Expected the data of tensor "${tensor.name}" to start at or after the end of tensor "${previous.name}" (data offset ${previous.offset + previous.byteSize - dataOffset}) but got data offset ${tensor.offset - dataOffset}`
        );
    }
}
