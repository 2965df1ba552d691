import {access, readFile} from "node:fs/promises";
import {join} from "node:path";
import t from "tap";
import type {Test} from "tap";
import {
    GgmlShapeError, GgmlType, GgmlTypeError, GgufAlignmentError, GgufDuplicateKeyError, GgufDuplicateTensorError,
    GgufKeyError, GgufMetadataTypeError, GgufMissingTensorDataError, GgufTensorDataSizeError, GgufTensorDimsError,
    GgufTensorNameError, GgufTensorOrderError, GgufValueError, GgufValueType, GgufWriter, GgufWriterStateError,
    readGguf, readTensorData, tensorByteSize
} from "../../gguf/index.js";
import type {GgufValue} from "../../gguf/index.js";
import {expectError, tempDir} from "./ggufTestKit.js";

const T = GgufValueType;

interface Refusal {
    readonly name: string;
    /** Brings the fresh writer into the state the refused call is made in. */
    readonly setup?: (writer: GgufWriter) => Promise<void> | void;
    readonly act: (writer: GgufWriter) => unknown;
    readonly error: abstract new (...args: never[]) => Error;
    readonly message: string;
}

/** Two tensors, header written: the state in which tensor data is written. */
async function twoTensorsHeaderWritten(writer: GgufWriter): Promise<void> {
    writer.addTensorInfo("a", [4], GgmlType.F32);
    writer.addTensorInfo("b", [2], GgmlType.F16);
    await writer.writeHeader();
}

async function everythingWritten(writer: GgufWriter): Promise<void> {
    await twoTensorsHeaderWritten(writer);
    await writer.writeTensorData("a", new Uint8Array(16));
    await writer.writeTensorData("b", new Uint8Array(4));
}

const refusals: Refusal[] = [
    {name: "empty key", act: (w) => w.addUint32("", 1), error: GgufKeyError, message: 'Expected a non-empty string key but got ""'},
    {
        name: "duplicate key", setup: (w) => w.addUint32("a", 1), act: (w) => w.addString("a", "x"), error: GgufDuplicateKeyError,
        message: 'Expected a new metadata key but got "a", which was already added'
    },
    {name: "unknown value type", act: (w) => w.addKv("k", 13 as GgufValueType, 1), error: GgufValueError, message: 'Expected a GGUF value type for "k" but got 13'},
    {name: "float for UINT32", act: (w) => w.addUint32("k", 1.5), error: GgufValueError, message: 'Expected an integer from 0 to 4294967295 for "k" (UINT32) but got 1.5'},
    {name: "negative UINT8", act: (w) => w.addUint8("k", -1), error: GgufValueError, message: 'Expected an integer from 0 to 255 for "k" (UINT8) but got -1'},
    {name: "UINT8 above 255", act: (w) => w.addUint8("k", 256), error: GgufValueError, message: 'Expected an integer from 0 to 255 for "k" (UINT8) but got 256'},
    {name: "INT8 below -128", act: (w) => w.addInt8("k", -129), error: GgufValueError, message: 'Expected an integer from -128 to 127 for "k" (INT8) but got -129'},
    {name: "UINT16 above 65535", act: (w) => w.addUint16("k", 65536), error: GgufValueError, message: 'Expected an integer from 0 to 65535 for "k" (UINT16) but got 65536'},
    {name: "INT16 above 32767", act: (w) => w.addInt16("k", 32768), error: GgufValueError, message: 'Expected an integer from -32768 to 32767 for "k" (INT16) but got 32768'},
    {name: "INT32 above 2^31 - 1", act: (w) => w.addInt32("k", 2 ** 31), error: GgufValueError, message: 'Expected an integer from -2147483648 to 2147483647 for "k" (INT32) but got 2147483648'},
    {name: "NaN for INT32", act: (w) => w.addInt32("k", NaN), error: GgufValueError, message: 'Expected an integer from -2147483648 to 2147483647 for "k" (INT32) but got NaN'},
    {name: "string for UINT32", act: (w) => w.addKv("k", T.UINT32, "5"), error: GgufValueError, message: 'Expected an integer from 0 to 4294967295 for "k" (UINT32) but got "5"'},
    {name: "bigint for UINT32", act: (w) => w.addKv("k", T.UINT32, 5n), error: GgufValueError, message: 'Expected an integer from 0 to 4294967295 for "k" (UINT32) but got 5n'},
    {
        name: "negative UINT64", act: (w) => w.addUint64("k", -1n), error: GgufValueError,
        message: 'Expected a bigint or safe integer from 0 to 18446744073709551615 for "k" (UINT64) but got -1n'
    },
    {
        name: "UINT64 of 2^64", act: (w) => w.addUint64("k", 2n ** 64n), error: GgufValueError,
        message: 'Expected a bigint or safe integer from 0 to 18446744073709551615 for "k" (UINT64) but got 18446744073709551616n'
    },
    {
        name: "unsafe number for INT64", act: (w) => w.addInt64("k", 2 ** 60), error: GgufValueError,
        message: 'Expected a bigint or safe integer from -9223372036854775808 to 9223372036854775807 for "k" (INT64) but got 1152921504606847000'
    },
    {
        name: "fraction for INT64", act: (w) => w.addInt64("k", 1.5), error: GgufValueError,
        message: 'Expected a bigint or safe integer from -9223372036854775808 to 9223372036854775807 for "k" (INT64) but got 1.5'
    },
    {name: "string for FLOAT32", act: (w) => w.addKv("k", T.FLOAT32, "1"), error: GgufValueError, message: 'Expected a number for "k" (FLOAT32) but got "1"'},
    {name: "bigint for FLOAT64", act: (w) => w.addKv("k", T.FLOAT64, 1n), error: GgufValueError, message: 'Expected a number for "k" (FLOAT64) but got 1n'},
    {name: "number for BOOL", act: (w) => w.addKv("k", T.BOOL, 1), error: GgufValueError, message: 'Expected a boolean for "k" (BOOL) but got 1'},
    {name: "number for STRING", act: (w) => w.addKv("k", T.STRING, 5), error: GgufValueError, message: 'Expected a string for "k" (STRING) but got 5'},
    {
        name: "string for ARRAY", act: (w) => w.addKv("k", T.ARRAY, "abc"), error: GgufValueError,
        message: 'Expected an array as {elementType, values} for "k" (ARRAY) but got "abc"'
    },
    {
        name: "plain JS array for ARRAY", act: (w) => w.addKv("k", T.ARRAY, [1, 2] as unknown as GgufValue), error: GgufValueError,
        message: 'Expected an array as {elementType, values} for "k" (ARRAY) but got [1, 2]'
    },
    {
        name: "array of an unknown element type", act: (w) => w.addArray("k", 42 as GgufValueType, []), error: GgufValueError,
        message: 'Expected an array as {elementType, values} for "k" (ARRAY) but got an object'
    },
    {
        name: "array element out of range", act: (w) => w.addArray("k", T.UINT8, [1, 2, 300]), error: GgufValueError,
        message: 'Expected an integer from 0 to 255 for "k"[2] (UINT8) but got 300'
    },
    {
        name: "nested array element of the wrong type", act: (w) => w.addArray("k", T.ARRAY, [{elementType: T.STRING, values: ["a", 5]}]),
        error: GgufValueError, message: 'Expected a string for "k"[0][1] (STRING) but got 5'
    },
    {
        name: "alignment of the wrong type", act: (w) => w.addFloat32("general.alignment", 64), error: GgufMetadataTypeError,
        message: 'Expected "general.alignment" to be of type UINT32 but got FLOAT32'
    },
    {
        name: "alignment not a power of two", act: (w) => w.addUint32("general.alignment", 48), error: GgufAlignmentError,
        message: 'Expected "general.alignment" to be a power of two but got 48'
    },
    {name: "alignment 0", act: (w) => w.addUint32("general.alignment", 0), error: GgufAlignmentError, message: 'Expected "general.alignment" to be a power of two but got 0'},
    {name: "empty tensor name", act: (w) => w.addTensorInfo("", [4], GgmlType.F32), error: GgufTensorNameError, message: 'Expected a tensor name of 1 to 63 bytes but got ""'},
    {
        name: "tensor name longer than ggml allows", act: (w) => w.addTensorInfo("é".repeat(32), [4], GgmlType.F32), error: GgufTensorNameError,
        message: `Expected a tensor name of 1 to 63 bytes but got "${"é".repeat(32)}"`
    },
    {
        name: "duplicate tensor", setup: (w) => w.addTensorInfo("t", [4], GgmlType.F32), act: (w) => w.addTensorInfo("t", [8], GgmlType.F16),
        error: GgufDuplicateTensorError, message: 'Expected a new tensor name but got "t", which was already added'
    },
    {name: "no dimensions", act: (w) => w.addTensorInfo("t", [], GgmlType.F32), error: GgufTensorDimsError, message: 'Expected 1 to 4 dimensions for tensor "t" but got []'},
    {
        name: "five dimensions", act: (w) => w.addTensorInfo("t", [1, 1, 1, 1, 1], GgmlType.F32), error: GgufTensorDimsError,
        message: 'Expected 1 to 4 dimensions for tensor "t" but got [1, 1, 1, 1, 1]'
    },
    {name: "removed ggml type", act: (w) => w.addTensorInfo("t", [4], 4 as GgmlType), error: GgmlTypeError, message: 'Expected a ggml type id for tensor "t" but got 4'},
    {
        name: "partial quantization block", act: (w) => w.addTensorInfo("t", [33], GgmlType.Q8_0), error: GgmlShapeError,
        message: 'Expected the row length (ne[0]) of tensor "t" to be a multiple of 32 (the block size of Q8_0) but got 33'
    },
    {
        name: "negative dimension", act: (w) => w.addTensorInfo("t", [4, -2], GgmlType.F32), error: GgmlShapeError,
        message: 'Expected dimension 1 of tensor "t" to be a non-negative integer but got -2'
    },
    {
        name: "fractional dimension", act: (w) => w.addTensorInfo("t", [1.5], GgmlType.F32), error: GgmlShapeError,
        message: 'Expected dimension 0 of tensor "t" to be a non-negative integer but got 1.5'
    },
    {
        name: "tensor data before the header", act: (w) => w.writeTensorData("t", new Uint8Array(0)), error: GgufWriterStateError,
        message: "Expected writeTensorData after writeHeader and before close but the writer has not written the header yet"
    },
    {
        name: "close before the header", act: (w) => w.close(), error: GgufWriterStateError,
        message: "Expected close after writeHeader but the writer has not written the header yet"
    },
    {
        name: "key after the header", setup: (w) => w.writeHeader(), act: (w) => w.addUint32("k", 1), error: GgufWriterStateError,
        message: "Expected addKv before writeHeader but the writer has already written the header"
    },
    {
        name: "tensor info after the header", setup: (w) => w.writeHeader(), act: (w) => w.addTensorInfo("t", [4], GgmlType.F32),
        error: GgufWriterStateError, message: "Expected addTensorInfo before writeHeader but the writer has already written the header"
    },
    {
        name: "header twice", setup: (w) => w.writeHeader(), act: (w) => w.writeHeader(), error: GgufWriterStateError,
        message: "Expected writeHeader once but the writer has already written the header"
    },
    {
        name: "tensor data out of order", setup: twoTensorsHeaderWritten, act: (w) => w.writeTensorData("b", new Uint8Array(4)),
        error: GgufTensorOrderError, message: 'Expected data for tensor "a" (next in the order of addTensorInfo) but got data for "b"'
    },
    {
        name: "data for an unknown tensor", setup: twoTensorsHeaderWritten, act: (w) => w.writeTensorData("zz", new Uint8Array(4)),
        error: GgufTensorOrderError, message: 'Expected data for tensor "a" (next in the order of addTensorInfo) but got data for unknown tensor "zz"'
    },
    {
        name: "data after every tensor", setup: everythingWritten, act: (w) => w.writeTensorData("a", new Uint8Array(16)),
        error: GgufTensorOrderError, message: 'Expected no more tensor data (all 2 tensors are written) but got data for "a"'
    },
    {
        name: "data of the wrong size", setup: twoTensorsHeaderWritten, act: (w) => w.writeTensorData("a", new Uint8Array(15)),
        error: GgufTensorDataSizeError, message: 'Expected 16 bytes of data for tensor "a" (F32 [4]) but got 15'
    },
    {
        name: "chunks adding up to too much", setup: twoTensorsHeaderWritten, act: (w) => w.writeTensorData("a", [new Uint8Array(8), new Uint8Array(12)]),
        error: GgufTensorDataSizeError, message: 'Expected 16 bytes of data for tensor "a" (F32 [4]) but got 20 or more'
    },
    {
        name: "chunks adding up to too little", setup: twoTensorsHeaderWritten, act: (w) => w.writeTensorData("a", [new Uint8Array(8)]),
        error: GgufTensorDataSizeError, message: 'Expected 16 bytes of data for tensor "a" (F32 [4]) but got 8'
    },
    {
        name: "close with tensor data missing",
        setup: async (w) => {
            await twoTensorsHeaderWritten(w);
            await w.writeTensorData("a", new Uint8Array(16));
        },
        act: (w) => w.close(), error: GgufMissingTensorDataError, message: 'Expected data for all 2 tensors before close but got none for "b"'
    },
    {
        name: "tensor data after a failed chunked write",
        setup: async (w) => {
            await twoTensorsHeaderWritten(w);
            await w.writeTensorData("a", [new Uint8Array(20)]).catch(() => undefined);
        },
        act: (w) => w.writeTensorData("a", new Uint8Array(16)), error: GgufWriterStateError,
        message: "Expected writeTensorData after writeHeader and before close but the writer failed while writing tensor data (call abort)"
    },
    {
        name: "key after close",
        setup: async (w) => {
            await everythingWritten(w);
            await w.close();
        },
        act: (w) => w.addUint32("k", 1), error: GgufWriterStateError, message: "Expected addKv before writeHeader but the writer is closed"
    },
    {
        name: "header after abort", setup: (w) => w.abort(), act: (w) => w.writeHeader(), error: GgufWriterStateError,
        message: "Expected writeHeader once but the writer was aborted"
    }
];

t.test("refuses calls out of order, duplicates and wrongly typed or sized values", async (t) => {
    const dir = await tempDir(t);
    for (const [index, {name, setup, act, error, message}] of refusals.entries()) {
        await t.test(name, async (t) => {
            const writer = await GgufWriter.create(join(dir, `refusal-${index}.gguf`));
            try {
                await setup?.(writer);
                await expectError(t, () => act(writer), error, message);
            } finally {
                await writer.abort();
            }
        });
    }
});

/** Deep equality where numbers compare with Object.is (NaN equals NaN, -0 differs from 0). */
function identical(a: GgufValue, b: GgufValue): boolean {
    if (typeof a === "object" && typeof b === "object")
        return a.elementType === b.elementType && a.values.length === b.values.length && a.values.every((value, index) => identical(value, b.values[index]));

    return Object.is(a, b);
}

/** An entry to write and the value it must read back as (floats rounded to float32, UINT64/INT64 as bigint). */
interface RoundTrip {
    readonly key: string;
    readonly type: GgufValueType;
    readonly value: GgufValue;
    readonly expected?: GgufValue;
}

const f32 = Math.fround;
const float32Edges = [0, -0, 1, -1.5, 0.1, Infinity, -Infinity, NaN, 3.4028234663852886e38, 1.401298464324817e-45, 1.1754943508222875e-38];
const float64Edges = [0, -0, Math.PI, Infinity, -Infinity, NaN, Number.MAX_VALUE, Number.MIN_VALUE, -Number.EPSILON];
const unicode = ["", "plain", "héllo ☃ 𝄞 日本語 🛡️", "nul\u0000inside", "line\nbreak\ttab"];

const scalarRoundTrips: RoundTrip[] = [
    {key: "u8.min", type: T.UINT8, value: 0}, {key: "u8.max", type: T.UINT8, value: 255},
    {key: "i8.min", type: T.INT8, value: -128}, {key: "i8.max", type: T.INT8, value: 127},
    {key: "u16.max", type: T.UINT16, value: 65535}, {key: "i16.min", type: T.INT16, value: -32768},
    {key: "u32.max", type: T.UINT32, value: 4294967295}, {key: "i32.min", type: T.INT32, value: -2147483648},
    {key: "i32.max", type: T.INT32, value: 2147483647},
    ...float32Edges.map((value, index) => ({key: `f32.${index}`, type: T.FLOAT32, value, expected: f32(value)})),
    ...float64Edges.map((value, index) => ({key: `f64.${index}`, type: T.FLOAT64, value})),
    {key: "u64.max", type: T.UINT64, value: 2n ** 64n - 1n}, {key: "u64.number", type: T.UINT64, value: 5, expected: 5n},
    {key: "i64.min", type: T.INT64, value: -(2n ** 63n)}, {key: "i64.max", type: T.INT64, value: 2n ** 63n - 1n},
    {key: "i64.number", type: T.INT64, value: -Number.MAX_SAFE_INTEGER, expected: -BigInt(Number.MAX_SAFE_INTEGER)},
    {key: "bool.true", type: T.BOOL, value: true}, {key: "bool.false", type: T.BOOL, value: false},
    ...unicode.map((value, index) => ({key: `string.${index}`, type: T.STRING, value})),
    {key: "ключ.☃", type: T.STRING, value: "a unicode key"}
];

const array = (elementType: GgufValueType, values: readonly GgufValue[]): GgufValue => ({elementType, values});

const arrayRoundTrips: RoundTrip[] = [
    {key: "a.u8", type: T.ARRAY, value: array(T.UINT8, [0, 1, 255])},
    {key: "a.i8", type: T.ARRAY, value: array(T.INT8, [-128, 0, 127])},
    {key: "a.u16", type: T.ARRAY, value: array(T.UINT16, [0, 65535])},
    {key: "a.i16", type: T.ARRAY, value: array(T.INT16, [-32768, 32767])},
    {key: "a.u32", type: T.ARRAY, value: array(T.UINT32, [0, 4294967295])},
    {key: "a.i32", type: T.ARRAY, value: array(T.INT32, [-2147483648, 2147483647])},
    {key: "a.f32", type: T.ARRAY, value: array(T.FLOAT32, float32Edges), expected: array(T.FLOAT32, float32Edges.map(f32))},
    {key: "a.bool", type: T.ARRAY, value: array(T.BOOL, [true, false, true])},
    {key: "a.string", type: T.ARRAY, value: array(T.STRING, unicode)},
    {key: "a.u64", type: T.ARRAY, value: array(T.UINT64, [0n, 7, 2n ** 64n - 1n]), expected: array(T.UINT64, [0n, 7n, 2n ** 64n - 1n])},
    {key: "a.i64", type: T.ARRAY, value: array(T.INT64, [-(2n ** 63n), 2n ** 63n - 1n])},
    {key: "a.f64", type: T.ARRAY, value: array(T.FLOAT64, float64Edges)},
    ...[T.UINT8, T.INT8, T.UINT16, T.INT16, T.UINT32, T.INT32, T.FLOAT32, T.BOOL, T.STRING, T.ARRAY, T.UINT64, T.INT64, T.FLOAT64]
        .map((elementType) => ({key: `a.empty.${T[elementType]}`, type: T.ARRAY, value: array(elementType, [])})),
    {
        key: "a.nested", type: T.ARRAY,
        value: array(T.ARRAY, [array(T.STRING, ["x", "☃"]), array(T.INT64, [-1n]), array(T.ARRAY, [array(T.FLOAT32, [0.5]), array(T.BOOL, [])]), array(T.UINT8, [])])
    }
];

t.test("round-trips every value type, arrays of each, empty and nested arrays", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "values.gguf");
    const entries = [...scalarRoundTrips, ...arrayRoundTrips];
    const writer = await GgufWriter.create(path);
    for (const {key, type, value} of entries)
        writer.addKv(key, type, value);
    await writer.writeHeader();
    await writer.close();

    const {metadata, tensors} = await readGguf(path);
    t.same([...metadata.entries.keys()], entries.map(({key}) => key), "keys keep their order");
    t.equal(tensors.length, 0);
    for (const {key, type, value, expected = value} of entries) {
        const kv = metadata.entries.get(key);
        t.equal(kv?.type, type, `${key} keeps its type`);
        t.ok(kv !== undefined && identical(kv.value, expected), `${key} reads back identical`);
    }
});

t.test("the typed helpers store the type they are named after", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "helpers.gguf");
    const writer = await GgufWriter.create(path);
    writer.addUint8("u8", 1);
    writer.addInt8("i8", -1);
    writer.addUint16("u16", 1);
    writer.addInt16("i16", -1);
    writer.addUint32("u32", 1);
    writer.addInt32("i32", -1);
    writer.addFloat32("f32", 1);
    writer.addBool("bool", true);
    writer.addString("string", "s");
    writer.addArray("array", T.STRING, ["s"]);
    writer.addUint64("u64", 1n);
    writer.addInt64("i64", -1n);
    writer.addFloat64("f64", 1);
    await writer.writeHeader();
    await writer.close();

    const {metadata} = await readGguf(path);
    t.same([...metadata.entries.values()].map((kv) => T[kv.type]),
        ["UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"]);
});

/** Writes tensors of several types and shapes, each filled with its own byte, and checks the read-back layout. */
async function roundTripTensors(t: Test, path: string, alignment: number | undefined): Promise<void> {
    const specs: [string, number[], GgmlType][] = [
        ["token_embd.weight", [64, 3], GgmlType.Q8_0], ["blk.0.attn_norm.weight", [5], GgmlType.F32],
        ["odd.bf16", [7, 2, 1], GgmlType.BF16], ["k.quant", [256], GgmlType.Q4_K], ["four.dims", [3, 1, 2, 2], GgmlType.F16],
        ["empty", [0, 4], GgmlType.F32]
    ];
    const writer = await GgufWriter.create(path);
    writer.addString("general.architecture", "qwen3");
    if (alignment !== undefined)
        writer.addUint32("general.alignment", alignment);
    for (const [name, ne, type] of specs)
        writer.addTensorInfo(name, ne, type);
    await writer.writeHeader();
    for (const [index, [name, ne, type]] of specs.entries())
        await writer.writeTensorData(name, new Uint8Array(tensorByteSize(type, ne)).fill(index + 1));
    await writer.close();

    const gguf = await readGguf(path);
    const expectedAlignment = alignment ?? 32;
    t.equal(gguf.alignment, expectedAlignment);
    t.equal(gguf.dataOffset % expectedAlignment, 0, "the data section is aligned");
    t.equal(gguf.fileSize % expectedAlignment, 0, "the last tensor is padded too");
    let expectedOffset = gguf.dataOffset;
    for (const [index, [name, ne, type]] of specs.entries()) {
        const tensor = gguf.tensors[index];
        t.same({name: tensor.name, ne: tensor.ne, type: tensor.type}, {name, ne, type});
        t.equal(tensor.offset, expectedOffset, `${name} follows the previous tensor, padded (as gguf.cpp requires)`);
        const data = await readTensorData(path, tensor);
        t.ok(data.length === tensorByteSize(type, ne) && data.every((byte) => byte === index + 1), `${name} data reads back`);
        expectedOffset += Math.ceil(tensor.byteSize / expectedAlignment) * expectedAlignment;
    }
}

t.test("round-trips tensors at the default and custom alignments", async (t) => {
    const dir = await tempDir(t);
    for (const alignment of [undefined, 1, 64, 4096])
        await t.test(`alignment ${alignment ?? "default (32)"}`, (t) => roundTripTensors(t, join(dir, `tensors-${alignment}.gguf`), alignment));
});

t.test("streams tensor data from sync and async chunk sources", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "chunks.gguf");
    const expected = new Uint8Array(3000).map((_, index) => index % 251);
    async function* asyncChunks(): AsyncGenerator<Uint8Array> {
        for (let start = 0; start < expected.length; start += 700)
            yield expected.subarray(start, start + 700);
    }
    const writer = await GgufWriter.create(path);
    writer.addTensorInfo("sync", [750], GgmlType.F32);
    writer.addTensorInfo("async", [1500], GgmlType.F16);
    await writer.writeHeader();
    await writer.writeTensorData("sync", [expected.subarray(0, 1000), new Uint8Array(0), expected.subarray(1000)]);
    await writer.writeTensorData("async", asyncChunks());
    await writer.close();

    const gguf = await readGguf(path);
    for (const tensor of gguf.tensors)
        t.same([...await readTensorData(path, tensor)], [...expected], `${tensor.name} reads back`);
});

t.test("a refused write or close leaves the writer usable", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "recover.gguf");
    const writer = await GgufWriter.create(path);
    t.throws(() => writer.addUint8("bad", 300));
    writer.addUint8("good", 3);
    await twoTensorsHeaderWritten(writer);
    await t.rejects(writer.writeTensorData("a", new Uint8Array(3)));
    await writer.writeTensorData("a", new Uint8Array(16).fill(1));
    await t.rejects(writer.close());
    await writer.writeTensorData("b", new Uint8Array(4).fill(2));
    await writer.close();

    const gguf = await readGguf(path);
    t.same([...gguf.metadata.entries.keys()], ["good"], "the refused entry left nothing behind");
    t.same([...await readTensorData(path, gguf.tensors[1])], [2, 2, 2, 2]);
});

t.test("abort deletes the partial file; after close it does nothing", async (t) => {
    const dir = await tempDir(t);
    const aborted = join(dir, "aborted.gguf");
    const writer = await GgufWriter.create(aborted);
    await twoTensorsHeaderWritten(writer);
    await writer.abort();
    await t.rejects(access(aborted), {code: "ENOENT"});
    await writer.abort();

    const closed = join(dir, "closed.gguf");
    const complete = await GgufWriter.create(closed);
    await everythingWritten(complete);
    await complete.close();
    await complete.abort();
    t.ok((await readFile(closed)).length > 0, "the closed file stays");
});
