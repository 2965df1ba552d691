import {open, rename, rm} from "node:fs/promises";
import type {FileHandle} from "node:fs/promises";
import {ByteWriter} from "./ByteWriter.js";
import {
    GgufAlignmentError, GgufDuplicateKeyError, GgufDuplicateTensorError, GgufKeyError, GgufMetadataTypeError,
    GgufMissingTensorDataError, GgufTensorDataSizeError, GgufTensorDimsError, GgufTensorNameError, GgufTensorOrderError,
    GgufValueError, GgufWriterStateError
} from "./errors.js";
import {GgmlType, GgufValueType, isGgufValueType, tensorByteSize} from "./ggmlTypes.js";
import type {GgufArray, GgufValue} from "./GgufMetadata.js";
import {
    DEFAULT_GGUF_LIMITS, GGUF_ALIGNMENT_KEY, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, alignUp, isPowerOfTwo
} from "./readGguf.js";
import {writeFully} from "./writeFully.js";

/** Tensor data for {@link GgufWriter.writeTensorData}: the whole tensor at once, or its bytes in consecutive chunks. */
export type TensorDataSource = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

type WriterState = "metadata" | "data" | "failed" | "closed" | "aborted";

const STATE_DESCRIPTIONS: Record<WriterState, string> = {
    metadata: "has not written the header yet",
    data: "has already written the header",
    failed: "failed while writing tensor data (call abort)",
    closed: "is closed",
    aborted: "was aborted"
};

interface PendingTensor {
    readonly name: string;
    readonly ne: readonly number[];
    readonly type: GgmlType;
    readonly byteSize: number;
}

const INTEGER_RANGES: Partial<Record<GgufValueType, readonly [number, number]>> = {
    [GgufValueType.UINT8]: [0, 0xff],
    [GgufValueType.INT8]: [-0x80, 0x7f],
    [GgufValueType.UINT16]: [0, 0xffff],
    [GgufValueType.INT16]: [-0x8000, 0x7fff],
    [GgufValueType.UINT32]: [0, 0xffffffff],
    [GgufValueType.INT32]: [-0x80000000, 0x7fffffff]
};

const BIGINT_RANGES: Partial<Record<GgufValueType, readonly [bigint, bigint]>> = {
    [GgufValueType.UINT64]: [0n, 2n ** 64n - 1n],
    [GgufValueType.INT64]: [-(2n ** 63n), 2n ** 63n - 1n]
};

/**
 * Writes a GGUF (version 3) file as a state machine, like gguf-py's `GGUFWriter`: first add metadata and tensor
 * infos (in any order), then write the header, then stream each tensor's data in the order the infos were added,
 * then close. Every value is checked against its declared type when it is added, and every call made out of order,
 * every duplicate and every wrongly sized tensor is refused with an error naming the key or tensor. Tensor data goes
 * straight to disk; only the header is built in memory.
 *
 * On any error after {@link GgufWriter.create}, call {@link GgufWriter.abort} to close and delete the partial file.
 *
 * @example
 * const writer = await GgufWriter.create("head.gguf");
 * try {
 *     writer.addString("general.architecture", "qwen3guard-stream-head");
 *     writer.addUint32("qwen3guard.head.guard_inner_size", 512);
 *     writer.addTensorInfo("risk_level_head.weight", [512, 3], GgmlType.F32);
 *     await writer.writeHeader();
 *     await writer.writeTensorData("risk_level_head.weight", new Uint8Array(512 * 3 * 4));
 *     await writer.close();
 * } catch (error) {
 *     await writer.abort();
 *     throw error;
 * }
 */
export class GgufWriter {
    private readonly kvBytes = new ByteWriter();
    private readonly keys = new Set<string>();
    private readonly tensors: PendingTensor[] = [];
    private readonly tensorNames = new Set<string>();
    private alignment = GGUF_DEFAULT_ALIGNMENT;
    private state: WriterState = "metadata";
    private nextTensor = 0;
    private position = 0;

    private constructor(public readonly path: string, private readonly partialPath: string, private readonly handle: FileHandle) {}

    /**
     * Returns a writer for `path`. The data goes to a temporary file beside it (`<path>.partial-<pid>`), renamed over
     * `path` by {@link GgufWriter.close}: until then a file already at `path` is untouched, and a failure or a kill never
     * leaves a partial file under that name.
     * @param path - the GGUF file to write
     */
    public static async create(path: string): Promise<GgufWriter> {
        const partialPath = `${path}.partial-${process.pid}`;
        return new GgufWriter(path, partialPath, await open(partialPath, "w"));
    }

    /**
     * Adds a metadata entry. Setting `general.alignment` (UINT32, a power of two) changes the data alignment.
     * @param key - a non-empty key, not added before
     * @param type - the GGUF value type to store
     * @param value - a value of that type: `number` for integers up to 32 bits and floats; `bigint` or a safe integer
     *   for UINT64/INT64; `boolean`; `string`; `{elementType, values}` for ARRAY (nested arrays as the same object)
     * @throws {GgufWriterStateError} after {@link GgufWriter.writeHeader}
     * @throws {GgufKeyError | GgufDuplicateKeyError} for an empty or repeated key
     * @throws {GgufValueError} when `value` does not fit `type` (wrong JS type, not an integer, out of range)
     * @throws {GgufMetadataTypeError | GgufAlignmentError} for a `general.alignment` that is not a UINT32 power of two
     */
    public addKv(key: string, type: GgufValueType, value: GgufValue): void {
        this.expectState("metadata", "addKv before writeHeader");
        if (typeof key !== "string" || key.length === 0)
            throw new GgufKeyError(`Expected a non-empty string key but got ${describeReceived(key)}`);
        if (this.keys.has(key))
            throw new GgufDuplicateKeyError(`Expected a new metadata key but got "${key}", which was already added`);
        if (!isGgufValueType(type))
            throw new GgufValueError(`Expected a GGUF value type for "${key}" but got ${describeReceived(type)}`);

        const start = this.kvBytes.length;
        try {
            writeString(this.kvBytes, key);
            this.kvBytes.writeUint32(type);
            writeValue(this.kvBytes, type, value, `"${key}"`);
            if (key === GGUF_ALIGNMENT_KEY)
                this.alignment = checkAlignment(type, value);
        } catch (error) {
            this.kvBytes.truncate(start);
            throw error;
        }
        this.keys.add(key);
    }

    /** Adds a UINT8 entry; see {@link GgufWriter.addKv}. */
    public addUint8(key: string, value: number): void {
        this.addKv(key, GgufValueType.UINT8, value);
    }

    /** Adds an INT8 entry; see {@link GgufWriter.addKv}. */
    public addInt8(key: string, value: number): void {
        this.addKv(key, GgufValueType.INT8, value);
    }

    /** Adds a UINT16 entry; see {@link GgufWriter.addKv}. */
    public addUint16(key: string, value: number): void {
        this.addKv(key, GgufValueType.UINT16, value);
    }

    /** Adds an INT16 entry; see {@link GgufWriter.addKv}. */
    public addInt16(key: string, value: number): void {
        this.addKv(key, GgufValueType.INT16, value);
    }

    /** Adds a UINT32 entry; see {@link GgufWriter.addKv}. */
    public addUint32(key: string, value: number): void {
        this.addKv(key, GgufValueType.UINT32, value);
    }

    /** Adds an INT32 entry; see {@link GgufWriter.addKv}. */
    public addInt32(key: string, value: number): void {
        this.addKv(key, GgufValueType.INT32, value);
    }

    /** Adds a UINT64 entry; see {@link GgufWriter.addKv}. */
    public addUint64(key: string, value: bigint | number): void {
        this.addKv(key, GgufValueType.UINT64, value);
    }

    /** Adds an INT64 entry; see {@link GgufWriter.addKv}. */
    public addInt64(key: string, value: bigint | number): void {
        this.addKv(key, GgufValueType.INT64, value);
    }

    /** Adds a FLOAT32 entry (rounded to the nearest float32); see {@link GgufWriter.addKv}. */
    public addFloat32(key: string, value: number): void {
        this.addKv(key, GgufValueType.FLOAT32, value);
    }

    /** Adds a FLOAT64 entry; see {@link GgufWriter.addKv}. */
    public addFloat64(key: string, value: number): void {
        this.addKv(key, GgufValueType.FLOAT64, value);
    }

    /** Adds a BOOL entry; see {@link GgufWriter.addKv}. */
    public addBool(key: string, value: boolean): void {
        this.addKv(key, GgufValueType.BOOL, value);
    }

    /** Adds a STRING entry (UTF-8); see {@link GgufWriter.addKv}. */
    public addString(key: string, value: string): void {
        this.addKv(key, GgufValueType.STRING, value);
    }

    /**
     * Adds an ARRAY entry; see {@link GgufWriter.addKv}.
     * @param key - the metadata key
     * @param elementType - the type of every element (ARRAY for an array of arrays, each a {@link GgufArray})
     * @param values - the elements
     * @example
     * writer.addArray("tokenizer.ggml.tokens", GgufValueType.STRING, ["<|im_start|>", "<|im_end|>"]);
     */
    public addArray(key: string, elementType: GgufValueType, values: readonly GgufValue[]): void {
        this.addKv(key, GgufValueType.ARRAY, {elementType, values});
    }

    /**
     * Declares a tensor; its data must later be written with {@link GgufWriter.writeTensorData}, in declaration order.
     * @param name - a unique name of 1 to 63 UTF-8 bytes (ggml's limit)
     * @param ne - 1 to 4 ggml dimensions, innermost (row) first: PyTorch shape `[out, in]` is `[in, out]`
     * @param type - the ggml type of the data
     * @throws {GgufWriterStateError} after {@link GgufWriter.writeHeader}
     * @throws {GgufTensorNameError | GgufDuplicateTensorError} for an invalid or repeated name
     * @throws {GgufTensorDimsError | GgmlTypeError | GgmlShapeError} for an invalid shape or type
     */
    public addTensorInfo(name: string, ne: readonly number[], type: GgmlType): void {
        this.expectState("metadata", "addTensorInfo before writeHeader");
        const maxLength = DEFAULT_GGUF_LIMITS.maxTensorNameLength;
        const nameLength = typeof name === "string" ? Buffer.byteLength(name) : 0;
        if (nameLength === 0 || nameLength > maxLength)
            throw new GgufTensorNameError(`Expected a tensor name of 1 to ${maxLength} bytes but got ${describeReceived(name)}`);
        if (this.tensorNames.has(name))
            throw new GgufDuplicateTensorError(`Expected a new tensor name but got "${name}", which was already added`);

        const subject = `tensor "${name}"`;
        const maxDims = DEFAULT_GGUF_LIMITS.maxTensorDims;
        if (!Array.isArray(ne) || ne.length === 0 || ne.length > maxDims)
            throw new GgufTensorDimsError(`Expected 1 to ${maxDims} dimensions for ${subject} but got ${describeReceived(ne)}`);

        const byteSize = tensorByteSize(type, ne, subject);
        this.tensors.push({name, ne: [...ne], type, byteSize});
        this.tensorNames.add(name);
    }

    /**
     * Writes the header (metadata, tensor infos with their offsets) and the padding before the data section.
     * @throws {GgufWriterStateError} when called twice
     */
    public async writeHeader(): Promise<void> {
        this.expectState("metadata", "writeHeader once");
        const header = new ByteWriter();
        header.writeBytes(Buffer.from(GGUF_MAGIC, "latin1"));
        header.writeUint32(GGUF_VERSION);
        header.writeUint64(BigInt(this.tensors.length));
        header.writeUint64(BigInt(this.keys.size));
        header.writeBytes(this.kvBytes.toBuffer());

        let offset = 0;
        for (const tensor of this.tensors) {
            writeString(header, tensor.name);
            header.writeUint32(tensor.ne.length);
            for (const n of tensor.ne)
                header.writeUint64(BigInt(n));
            header.writeUint32(tensor.type);
            header.writeUint64(BigInt(offset));
            offset = alignUp(offset + tensor.byteSize, this.alignment);
        }

        this.state = "data";
        await this.writeBytes(header.toBuffer());
        if (this.tensors.length > 0)
            await this.padToAlignment();
    }

    /**
     * Writes the data of the next tensor, then pads it to the alignment.
     * @param name - the tensor, which must be the next one in the order of {@link GgufWriter.addTensorInfo}
     * @param data - exactly the tensor's byte size, at once or as consecutive chunks (streamed to disk)
     * @throws {GgufWriterStateError} before {@link GgufWriter.writeHeader} or after close
     * @throws {GgufTensorOrderError} for any tensor but the next one
     * @throws {GgufTensorDataSizeError} for data of the wrong size: a whole buffer is refused before anything is written;
 *   a chunked source that turns out too long or too short leaves the writer failed (only abort is then possible)
     */
    public async writeTensorData(name: string, data: TensorDataSource): Promise<void> {
        this.expectState("data", "writeTensorData after writeHeader and before close");
        const tensor = this.tensors[this.nextTensor];
        if (tensor === undefined || tensor.name !== name) {
            const expected = tensor === undefined ? `no more tensor data (all ${this.tensors.length} tensors are written)` : `data for tensor "${tensor.name}" (next in the order of addTensorInfo)`;
            const got = this.tensorNames.has(name) ? `"${name}"` : `unknown tensor ${describeReceived(name)}`;
            throw new GgufTensorOrderError(`Expected ${expected} but got data for ${got}`);
        }

        const sizeError = (received: string): GgufTensorDataSizeError => new GgufTensorDataSizeError(
            `Expected ${tensor.byteSize} bytes of data for tensor "${name}" (${GgmlType[tensor.type]} [${tensor.ne.join(", ")}]) but got ${received}`
        );
        if (data instanceof Uint8Array && data.length !== tensor.byteSize)
            throw sizeError(`${data.length}`);

        this.state = "failed";
        let written = 0;
        for await (const chunk of data instanceof Uint8Array ? [data] : data) {
            if (written + chunk.length > tensor.byteSize)
                throw sizeError(`${written + chunk.length} or more`);

            await this.writeBytes(chunk);
            written += chunk.length;
        }
        if (written !== tensor.byteSize)
            throw sizeError(`${written}`);

        await this.padToAlignment();
        this.state = "data";
        this.nextTensor++;
    }

    /**
     * Closes the file once every tensor's data is written, and renames it to `path` (replacing a file there).
     * @throws {GgufWriterStateError} before {@link GgufWriter.writeHeader} or when already closed
     * @throws {GgufMissingTensorDataError} when some tensor data is missing (the writer stays open)
     */
    public async close(): Promise<void> {
        this.expectState("data", "close after writeHeader");
        const missing = this.tensors.slice(this.nextTensor).map((tensor) => `"${tensor.name}"`);
        if (missing.length > 0)
            throw new GgufMissingTensorDataError(
                `Expected data for all ${this.tensors.length} tensors before close but got none for ${missing.join(", ")}`
            );

        this.state = "closed";
        await this.handle.close();
        try {
            await rename(this.partialPath, this.path);
        } catch (error) {
            await rm(this.partialPath, {force: true});
            throw error;
        }
    }

    /** Closes and deletes the temporary file, in any state (a file already at `path` stays); nothing once closed. */
    public async abort(): Promise<void> {
        if (this.state === "closed" || this.state === "aborted")
            return;

        this.state = "aborted";
        await this.handle.close();
        await rm(this.partialPath, {force: true});
    }

    /** @param call - the call and when it is allowed, e.g. `addKv before writeHeader` */
    private expectState(expected: "metadata" | "data", call: string): void {
        if (this.state !== expected)
            throw new GgufWriterStateError(`Expected ${call} but the writer ${STATE_DESCRIPTIONS[this.state]}`);
    }

    private async writeBytes(bytes: Uint8Array): Promise<void> {
        await writeFully(this.handle, bytes, this.position);
        this.position += bytes.length;
    }

    private async padToAlignment(): Promise<void> {
        const padding = alignUp(this.position, this.alignment) - this.position;
        if (padding > 0)
            await this.writeBytes(new Uint8Array(padding));
    }
}

/** Checks a `general.alignment` value that {@link writeValue} has already checked against `type`. */
function checkAlignment(type: GgufValueType, value: GgufValue): number {
    if (type !== GgufValueType.UINT32)
        throw new GgufMetadataTypeError(`Expected "${GGUF_ALIGNMENT_KEY}" to be of type UINT32 but got ${GgufValueType[type]}`);
    if (!isPowerOfTwo(value as number))
        throw new GgufAlignmentError(`Expected "${GGUF_ALIGNMENT_KEY}" to be a power of two but got ${String(value)}`);

    return value as number;
}

function writeString(out: ByteWriter, value: string): void {
    const bytes = Buffer.from(value, "utf8");
    out.writeUint64(BigInt(bytes.length));
    out.writeBytes(bytes);
}

/** Checks `value` against `type` and serializes it; `label` names it in errors (`"key"`, `"key"[3]`). */
function writeValue(out: ByteWriter, type: GgufValueType, value: unknown, label: string): void {
    const refuse = (expected: string): never => {
        throw new GgufValueError(`Expected ${expected} for ${label} (${GgufValueType[type]}) but got ${describeReceived(value)}`);
    };
    const integerRange = INTEGER_RANGES[type];
    const bigintRange = BIGINT_RANGES[type];
    if (integerRange !== undefined) {
        const [min, max] = integerRange;
        if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max)
            refuse(`an integer from ${min} to ${max}`);
    } else if (bigintRange !== undefined) {
        const [min, max] = bigintRange;
        const integer = typeof value === "number" && Number.isSafeInteger(value) ? BigInt(value) : value;
        if (typeof integer !== "bigint" || integer < min || integer > max)
            refuse(`a bigint or safe integer from ${min} to ${max}`);
    }

    switch (type) {
        case GgufValueType.UINT8: return out.writeUint8(value as number);
        case GgufValueType.INT8: return out.writeInt8(value as number);
        case GgufValueType.UINT16: return out.writeUint16(value as number);
        case GgufValueType.INT16: return out.writeInt16(value as number);
        case GgufValueType.UINT32: return out.writeUint32(value as number);
        case GgufValueType.INT32: return out.writeInt32(value as number);
        case GgufValueType.UINT64: return out.writeUint64(BigInt(value as bigint | number));
        case GgufValueType.INT64: return out.writeInt64(BigInt(value as bigint | number));
        case GgufValueType.FLOAT32:
        case GgufValueType.FLOAT64:
            if (typeof value !== "number")
                refuse("a number");

            return type === GgufValueType.FLOAT32 ? out.writeFloat32(value as number) : out.writeFloat64(value as number);
        case GgufValueType.BOOL:
            if (typeof value !== "boolean")
                refuse("a boolean");

            return out.writeUint8(value ? 1 : 0);
        case GgufValueType.STRING:
            if (typeof value !== "string")
                refuse("a string");

            return writeString(out, value as string);
        case GgufValueType.ARRAY: {
            const array = value as Partial<GgufArray> | null;
            if (typeof array !== "object" || array === null || !isGgufValueType(array.elementType as number) || !Array.isArray(array.values))
                refuse("an array as {elementType, values}");

            const {elementType, values} = array as GgufArray;
            out.writeUint32(elementType);
            out.writeUint64(BigInt(values.length));
            for (const [index, element] of values.entries())
                writeValue(out, elementType, element, `${label}[${index}]`);
        }
    }
}

/** Renders a received value for an error message: strings quoted, bigints with `n`, arrays and objects by kind. */
function describeReceived(value: unknown): string {
    if (typeof value === "string")
        return JSON.stringify(value);
    if (typeof value === "bigint")
        return `${value}n`;
    if (Array.isArray(value))
        return value.length <= 8 ? `[${value.map(describeReceived).join(", ")}]` : `an array of ${value.length} elements`;
    if (typeof value === "object" && value !== null)
        return "an object";

    return String(value);
}
