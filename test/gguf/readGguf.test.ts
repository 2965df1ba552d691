import {open, readFile, writeFile} from "node:fs/promises";
import {join} from "node:path";
import t from "tap";
import {
    DEFAULT_GGUF_LIMITS, GgmlShapeError, GgmlType, GgmlTypeError, GgufAlignmentError, GgufArrayDepthError,
    GgufArrayLengthError, GgufDuplicateKeyError, GgufDuplicateTensorError, GgufElementCountError, GgufKeyError,
    GgufKvCountError, GgufMagicError, GgufMetadataTypeError, GgufOptionError, GgufStringLengthError,
    GgufTensorBoundsError, GgufTensorCountError, GgufTensorDimsError, GgufTensorNameError, GgufTensorOffsetError,
    GgufTensorOverlapError, GgufTruncatedError, GgufValueType, GgufValueTypeError, GgufVersionError, GgufWriter,
    readGguf, readTensorData
} from "../../gguf/index.js";
import type {GgufLimits} from "../../gguf/index.js";
import {GgufBytes, expectError, tempDir} from "./ggufTestKit.js";

const U64_MAX = 2n ** 64n - 1n;
const header = (tensorCount: number | bigint, kvCount: number | bigint, version?: number, magic?: string): GgufBytes =>
    new GgufBytes().header(tensorCount, kvCount, version, magic);

interface HostileCase {
    readonly name: string;
    readonly bytes: Buffer;
    readonly limits?: Partial<GgufLimits>;
    readonly error: abstract new (...args: never[]) => Error;
    readonly message: string;
}

const hostileFiles: HostileCase[] = [
    {
        name: "empty file", bytes: Buffer.alloc(0), error: GgufTruncatedError,
        message: "Expected 4 bytes for the magic at offset 0 but got 0 before the end of the file"
    },
    {
        name: "wrong magic", bytes: header(0, 0, 3, "GGML").build(), error: GgufMagicError,
        message: 'Expected the magic "GGUF" at the start of the file but got "GGML"'
    },
    {
        name: "binary magic", bytes: header(0, 0, 3, "\x00\x01\x02\x03").build(), error: GgufMagicError,
        message: 'Expected the magic "GGUF" at the start of the file but got bytes 0x00010203'
    },
    {
        name: "version 1", bytes: header(0, 0, 1).build(), error: GgufVersionError,
        message: "Expected GGUF version 2 or 3 but got version 1, which is no longer supported: re-convert the model"
    },
    {
        name: "big-endian version 3", bytes: header(0, 0, 0x03000000).build(), error: GgufVersionError,
        message: "Expected GGUF version 2 or 3 but got 50331648 (0x3000000): a big-endian file, which is not supported"
    },
    {
        name: "future version", bytes: header(0, 0, 4).build(), error: GgufVersionError,
        message: "Expected GGUF version 2 or 3 but got version 4"
    },
    {
        name: "version 0", bytes: header(0, 0, 0).build(), error: GgufVersionError,
        message: "Expected GGUF version 2 or 3 but got version 0"
    },
    {
        name: "file ends inside the tensor count", bytes: header(0, 0).build().subarray(0, 12), error: GgufTruncatedError,
        message: "Expected 8 bytes for the tensor count at offset 8 but got 4 before the end of the file"
    },
    {
        name: "tensor count beyond the limit", bytes: header(U64_MAX, 0).build(), error: GgufTensorCountError,
        message: "Expected at most 1048576 tensors (limit maxTensorCount) but got 18446744073709551615"
    },
    {
        name: "metadata count beyond an overridden limit", bytes: header(0, 3).build(), limits: {maxKvCount: 2},
        error: GgufKvCountError, message: "Expected at most 2 metadata entries (limit maxKvCount) but got 3"
    },
    {
        name: "key length beyond the limit", bytes: header(0, 1).u64(U64_MAX).build(), error: GgufStringLengthError,
        message: "Expected a string of at most 16777216 bytes (limit maxStringLength) for the key of metadata entry 0 but got 18446744073709551615 bytes"
    },
    {
        name: "string value beyond an overridden limit", bytes: header(0, 1).kvString("general.name", "qwen3guard-gen").build(),
        limits: {maxStringLength: 12}, error: GgufStringLengthError,
        message: 'Expected a string of at most 12 bytes (limit maxStringLength) for the value of key "general.name" but got 14 bytes'
    },
    {
        name: "string value longer than the file", bytes: header(0, 1).str("general.name").u32(GgufValueType.STRING).str("abc", 100).build(),
        error: GgufTruncatedError,
        message: 'Expected 100 bytes for the value of key "general.name" at offset 56 but got 3 before the end of the file'
    },
    {
        name: "empty key", bytes: header(0, 1).kvUint32("", 1).build(), error: GgufKeyError,
        message: 'Expected a non-empty key for metadata entry 0 but got ""'
    },
    {
        name: "key with a NUL byte", bytes: header(0, 1).kvUint32("\0\0quantization_version", 1).build(), error: GgufKeyError,
        message: 'Expected a key without NUL bytes for metadata entry 0 but got "\\u0000\\u0000quantization_version"'
    },
    {
        name: "unknown value type", bytes: header(0, 1).str("k").u32(13).build(), error: GgufValueTypeError,
        message: 'Expected a GGUF value type (0 to 12) for the value of key "k" but got 13'
    },
    {
        name: "unknown array element type", bytes: header(0, 1).str("k").u32(GgufValueType.ARRAY).u32(99).u64(0).build(),
        error: GgufValueTypeError, message: 'Expected a GGUF value type (0 to 12) for the elements of the value of key "k" but got 99'
    },
    {
        name: "array length beyond the limit", bytes: header(0, 1).str("k").u32(GgufValueType.ARRAY).u32(GgufValueType.UINT32).u64(2 ** 32).build(),
        error: GgufArrayLengthError,
        message: 'Expected at most 16777216 elements in the value of key "k" (limit maxArrayLength) but got 4294967296'
    },
    {
        name: "array longer than the file", bytes: header(0, 1).str("k").u32(GgufValueType.ARRAY).u32(GgufValueType.UINT32).u64(1000).u32(1).u32(2).build(),
        error: GgufTruncatedError,
        message: 'Expected at least 4000 bytes for the 1000 elements of the value of key "k" at offset 49 but got 8 before the end of the file'
    },
    {
        name: "arrays nested beyond an overridden limit",
        bytes: header(0, 1).str("k").u32(GgufValueType.ARRAY).u32(GgufValueType.ARRAY).u64(1).u32(GgufValueType.ARRAY).u64(1).u32(GgufValueType.UINT32).u64(0).build(),
        limits: {maxArrayDepth: 2}, error: GgufArrayDepthError,
        message: 'Expected arrays nested at most 2 deep (limit maxArrayDepth) in the value of key "k" but got depth 3'
    },
    {
        name: "duplicate key", bytes: header(0, 2).kvUint32("a", 1).kvUint32("a", 2).build(), error: GgufDuplicateKeyError,
        message: 'Expected unique metadata keys but got "a" twice'
    },
    {
        name: "alignment of the wrong type", bytes: header(0, 1).kvString("general.alignment", "32").build(), error: GgufMetadataTypeError,
        message: 'Expected metadata key "general.alignment" to be of type UINT32 but got STRING'
    },
    {
        name: "alignment not a power of two", bytes: header(0, 1).kvUint32("general.alignment", 48).build(), error: GgufAlignmentError,
        message: 'Expected "general.alignment" to be a power of two but got 48'
    },
    {
        name: "alignment 0", bytes: header(0, 1).kvUint32("general.alignment", 0).build(), error: GgufAlignmentError,
        message: 'Expected "general.alignment" to be a power of two but got 0'
    },
    {
        name: "tensor name longer than ggml allows", bytes: header(1, 0).tensorInfo("x".repeat(64), [32], GgmlType.F32, 0).build(),
        error: GgufTensorNameError,
        message: `Expected a tensor name of at most 63 bytes (limit maxTensorNameLength) for tensor 0 but got 64 bytes ("${"x".repeat(64)}")`
    },
    {
        name: "tensor name with a NUL byte", bytes: header(1, 0).tensorInfo("blk.0\0x", [32], GgmlType.F32, 0).build(),
        error: GgufTensorNameError, message: 'Expected a tensor name without NUL bytes for tensor 0 but got "blk.0\\u0000x"'
    },
    {
        name: "duplicate tensor name", bytes: header(2, 0).tensorInfo("t", [4], GgmlType.F32, 0).tensorInfo("t", [4], GgmlType.F32, 32).data(32, 64).build(),
        error: GgufDuplicateTensorError, message: 'Expected unique tensor names but got "t" twice'
    },
    {
        name: "five dimensions", bytes: header(1, 0).tensorInfo("t", [1, 1, 1, 1, 1], GgmlType.F32, 0).build(), error: GgufTensorDimsError,
        message: 'Expected at most 4 dimensions (limit maxTensorDims) for tensor "t" but got 5'
    },
    {
        name: "dimension beyond 2^53", bytes: header(1, 0).tensorInfo("t", [U64_MAX], GgmlType.F32, 0).build(), error: GgufElementCountError,
        message: 'Expected dimension 0 of tensor "t" to be at most 9007199254740991 but got 18446744073709551615'
    },
    {
        name: "element count overflow", bytes: header(1, 0).tensorInfo("t", [2 ** 30, 2 ** 30, 2 ** 30], GgmlType.F32, 0).build(),
        error: GgufElementCountError,
        message: 'Expected the element count of tensor "t" (shape [1073741824, 1073741824, 1073741824]) to be at most 9007199254740991 but got 1237940039285380274899124224'
    },
    {
        name: "removed ggml type", bytes: header(1, 0).tensorInfo("t", [4], 4, 0).build(), error: GgmlTypeError,
        message: 'Expected a ggml type id for tensor "t" but got 4'
    },
    {
        name: "partial quantization block", bytes: header(1, 0).tensorInfo("t", [33], GgmlType.Q8_0, 0).build(), error: GgmlShapeError,
        message: 'Expected the row length (ne[0]) of tensor "t" to be a multiple of 32 (the block size of Q8_0) but got 33'
    },
    {
        name: "misaligned data offset", bytes: header(1, 0).tensorInfo("t", [4], GgmlType.F32, 16).data(32, 32).build(), error: GgufTensorOffsetError,
        message: 'Expected the data offset of tensor "t" to be a multiple of the alignment 32 but got 16'
    },
    {
        name: "tensor data past the end of the file", bytes: header(1, 0).tensorInfo("t", [1024], GgmlType.F32, 0).data(32, 100).build(),
        error: GgufTensorBoundsError,
        message: 'Expected the data of tensor "t" (4096 bytes at data offset 0) to end within the file of 164 bytes but got an end at 4160'
    },
    {
        name: "data offset beyond 2^53", bytes: header(1, 0).tensorInfo("t", [4], GgmlType.F32, 2n ** 60n).build(), error: GgufTensorBoundsError,
        message: 'Expected the data of tensor "t" to lie within the file but got data offset 1152921504606846976'
    },
    {
        name: "overlapping tensor data", bytes: header(2, 0).tensorInfo("a", [16], GgmlType.F32, 0).tensorInfo("b", [16], GgmlType.F32, 32).data(32, 128).build(),
        error: GgufTensorOverlapError,
        message: 'Expected the data of tensor "b" to start at or after the end of tensor "a" (data offset 64) but got data offset 32'
    },
    {
        name: "file ends inside a tensor info", bytes: header(1, 0).str("t").u32(2).u64(4).build(), error: GgufTruncatedError,
        message: 'Expected 8 bytes for the info of tensor "t" at offset 45 but got 0 before the end of the file'
    }
];

t.test("refuses hostile and corrupt files, each with its own error", async (t) => {
    const dir = await tempDir(t);
    for (const [index, {name, bytes, limits, error, message}] of hostileFiles.entries()) {
        const path = join(dir, `hostile-${index}.gguf`);
        await writeFile(path, bytes);
        await t.test(name, (t) => expectError(t, readGguf(path, {limits}), error, message));
    }
});

t.test("refuses invalid limit options", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "empty.gguf");
    await writeFile(path, header(0, 0).build());
    await expectError(t, readGguf(path, {limits: {maxStringLength: 0}}), GgufOptionError,
        'Expected a positive integer for "limits.maxStringLength" but received 0');
    await expectError(t, readGguf(path, {limits: {maxArrayDepth: 1.5}}), GgufOptionError,
        'Expected a positive integer for "limits.maxArrayDepth" but received 1.5');
    await expectError(t, readGguf(path, {limits: {maxFoo: 1} as Partial<GgufLimits>}), GgufOptionError,
        `Expected a limit among ${Object.keys(DEFAULT_GGUF_LIMITS).join(", ")} but received "maxFoo"`);
});

t.test("refuses to read tensor data past the end of the file", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "short.gguf");
    await writeFile(path, Buffer.alloc(100));
    const tensor = {name: "t", ne: [32], type: GgmlType.F32, offset: 64, byteSize: 128};
    await expectError(t, readTensorData(path, tensor), GgufTruncatedError,
        'Expected 128 bytes of data for tensor "t" at offset 64 but got 36 before the end of the file');
});

t.test("reads a hand-built file: header fields, absolute offsets, empty data section", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "hand.gguf");
    const bytes = header(2, 1).kvUint32("general.alignment", 64)
        .tensorInfo("a", [2, 3], GgmlType.F32, 0).tensorInfo("b", [64], GgmlType.Q8_0, 64).data(64, 64 + 68).build();
    await writeFile(path, bytes);
    const gguf = await readGguf(path);
    t.equal(gguf.version, 3);
    t.equal(gguf.alignment, 64);
    t.equal(gguf.dataOffset, 192, "the 131-byte header is padded to a multiple of 64");
    t.equal(gguf.fileSize, 324);
    t.same(gguf.tensors, [
        {name: "a", ne: [2, 3], type: GgmlType.F32, offset: 192, byteSize: 24},
        {name: "b", ne: [64], type: GgmlType.Q8_0, offset: 256, byteSize: 68}
    ]);

    const noTensors = join(dir, "no-tensors.gguf");
    await writeFile(noTensors, header(0, 1).kvString("general.architecture", "qwen3").build());
    const plain = await readGguf(noTensors);
    t.equal(plain.dataOffset, plain.fileSize, "no padding is needed without tensors");
    t.equal(plain.metadata.getString("general.architecture"), "qwen3");
});

t.test("reads version 2 files like version 3 ones", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "v2.gguf");
    const writer = await GgufWriter.create(path);
    writer.addString("general.architecture", "qwen3");
    writer.addTensorInfo("t", [8], GgmlType.F32);
    await writer.writeHeader();
    await writer.writeTensorData("t", new Uint8Array(32).fill(7));
    await writer.close();
    const bytes = await readFile(path);
    bytes.writeUInt32LE(2, 4);
    await writeFile(path, bytes);

    const gguf = await readGguf(path);
    t.equal(gguf.version, 2);
    t.equal(gguf.metadata.getString("general.architecture"), "qwen3");
    t.same([...await readTensorData(path, gguf.tensors[0])], new Array(32).fill(7));
});

t.test("reads headers larger than the read window, across chunk boundaries", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "vocab.gguf");
    const tokens = Array.from({length: 150_000}, (_, index) => `tok${index}${"é".repeat(index % 7)}`);
    const scores = tokens.map((_, index) => -index / 8);
    const longString = "long ☃ ".repeat(400_000);
    const writer = await GgufWriter.create(path);
    writer.addArray("tokenizer.ggml.tokens", GgufValueType.STRING, tokens);
    writer.addArray("tokenizer.ggml.scores", GgufValueType.FLOAT32, scores);
    writer.addString("tokenizer.chat_template", longString);
    writer.addTensorInfo("t", [4], GgmlType.F32);
    await writer.writeHeader();
    await writer.writeTensorData("t", new Uint8Array(16));
    await writer.close();

    const gguf = await readGguf(path);
    t.ok(gguf.dataOffset > 3 * 1024 * 1024, "the header spans several 1 MiB windows");
    const readTokens = gguf.metadata.getStringArray("tokenizer.ggml.tokens");
    const readScores = gguf.metadata.getArray("tokenizer.ggml.scores", GgufValueType.FLOAT32).values;
    t.equal(readTokens.length, tokens.length);
    t.ok(tokens.every((token, index) => readTokens[index] === token), "every token reads back");
    t.ok(scores.every((score, index) => readScores[index] === score), "every score reads back");
    t.equal(gguf.metadata.getString("tokenizer.chat_template"), longString, "a string larger than the window grows it");
});

t.test("reads one tensor's data through a path or an open handle", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "tensors.gguf");
    const writer = await GgufWriter.create(path);
    const first = new Uint8Array(40).map((_, index) => index);
    const second = new Uint8Array(6).map((_, index) => 200 + index);
    writer.addTensorInfo("first", [10], GgmlType.F32);
    writer.addTensorInfo("second", [3], GgmlType.BF16);
    await writer.writeHeader();
    await writer.writeTensorData("first", first);
    await writer.writeTensorData("second", second);
    await writer.close();

    const gguf = await readGguf(path);
    t.same([...await readTensorData(path, gguf.tensors[1])], [...second]);
    const handle = await open(path, "r");
    try {
        t.same([...await readTensorData(handle, gguf.tensors[0])], [...first]);
        t.same([...await readTensorData(handle, gguf.tensors[1])], [...second], "the handle stays usable");
    } finally {
        await handle.close();
    }
});
