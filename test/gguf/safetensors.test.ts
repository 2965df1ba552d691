import {access, mkdir, readFile, readdir, writeFile} from "node:fs/promises";
import {join} from "node:path";
import t from "tap";
import type {Test} from "tap";
import {
    GgufOptionError, SafetensorsCheckpointError, SafetensorsDataSizeError, SafetensorsDtypeError,
    SafetensorsDuplicateTensorError, SafetensorsHeaderJsonError, SafetensorsHeaderLengthError,
    SafetensorsMissingTensorError, SafetensorsOffsetsError, SafetensorsOverlapError, SafetensorsReader,
    SafetensorsShapeError, SafetensorsWriter, SafetensorsWriterStateError, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16,
    writeSafetensors, writeShardedSafetensors
} from "../../gguf/index.js";
import type {SafetensorsTensorData} from "../../gguf/index.js";
import {expectError, tempDir} from "./ggufTestKit.js";

/** A safetensors file by hand: an 8-byte header length (declared or actual), the header text, `dataLength` bytes. */
function safetensorsBytes(header: unknown, dataLength: number, declaredLength?: bigint): Buffer {
    const text = Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(declaredLength ?? BigInt(text.length));
    return Buffer.concat([prefix, text, Buffer.alloc(dataLength)]);
}

function jsonParseMessage(text: string): string {
    try {
        JSON.parse(text);
    } catch (error) {
        return (error as Error).message;
    }
    throw new Error(`${text} parses`);
}

interface HostileHeader {
    readonly name: string;
    readonly bytes: Buffer;
    readonly maxHeaderLength?: number;
    readonly error: abstract new (...args: never[]) => Error;
    /** The message, given the path of the file. */
    readonly message: (path: string) => string;
}

const w = (entry: unknown): Record<string, unknown> => ({w: entry});

const hostileHeaders: HostileHeader[] = [
    {
        name: "file shorter than the header length", bytes: Buffer.alloc(3), error: SafetensorsHeaderLengthError,
        message: (path) => `Expected an 8-byte header length at the start of ${path} but got a file of 3 bytes`
    },
    {
        name: "header length beyond the limit", bytes: safetensorsBytes("{}", 0, 2n ** 64n - 1n), error: SafetensorsHeaderLengthError,
        message: (path) => `Expected a header of at most 100000000 bytes (limit maxHeaderLength) in ${path} but got 18446744073709551615`
    },
    {
        name: "header length beyond an overridden limit", bytes: safetensorsBytes({__metadata__: {format: "pt"}}, 0), maxHeaderLength: 10,
        error: SafetensorsHeaderLengthError, message: (path) => `Expected a header of at most 10 bytes (limit maxHeaderLength) in ${path} but got 32`
    },
    {
        name: "header length beyond the end of the file", bytes: safetensorsBytes("{}", 8, 1000n), error: SafetensorsHeaderLengthError,
        message: (path) => `Expected a header of at most 10 bytes (the rest of the file) in ${path} but got 1000`
    },
    {
        name: "invalid JSON", bytes: safetensorsBytes("{not json", 0), error: SafetensorsHeaderJsonError,
        message: (path) => `Expected a JSON header in ${path} but got invalid JSON (${jsonParseMessage("{not json")})`
    },
    {
        name: "JSON that is not an object", bytes: safetensorsBytes([1, 2], 0), error: SafetensorsHeaderJsonError,
        message: (path) => `Expected a JSON object as the header of ${path} but got [1,2]`
    },
    {
        name: "tensor entry that is not an object", bytes: safetensorsBytes(w(5), 0), error: SafetensorsHeaderJsonError,
        message: (path) => `Expected an object for tensor "w" in ${path} but got 5`
    },
    {
        name: "metadata that is not strings", bytes: safetensorsBytes({__metadata__: {format: 1}}, 0), error: SafetensorsHeaderJsonError,
        message: (path) => `Expected "__metadata__" in ${path} to map strings to strings but got {"format":1}`
    },
    {
        name: "unsupported dtype", bytes: safetensorsBytes(w({dtype: "I64", shape: [2], data_offsets: [0, 16]}), 16), error: SafetensorsDtypeError,
        message: (path) => `Expected dtype BF16, F16 or F32 for tensor "w" in ${path} but got "I64"`
    },
    {
        name: "missing dtype", bytes: safetensorsBytes(w({shape: [2], data_offsets: [0, 8]}), 8), error: SafetensorsDtypeError,
        message: (path) => `Expected dtype BF16, F16 or F32 for tensor "w" in ${path} but got nothing`
    },
    {
        name: "negative dimension", bytes: safetensorsBytes(w({dtype: "F32", shape: [2, -1], data_offsets: [0, 8]}), 8), error: SafetensorsShapeError,
        message: (path) => `Expected a shape of non-negative integers for tensor "w" in ${path} but got [2,-1]`
    },
    {
        name: "begin after end", bytes: safetensorsBytes(w({dtype: "F32", shape: [1], data_offsets: [8, 4]}), 16), error: SafetensorsOffsetsError,
        message: (path) => `Expected data_offsets [begin, end] with 0 ≤ begin ≤ end ≤ 16 (the data area) for tensor "w" in ${path} but got [8,4]`
    },
    {
        name: "end beyond the data area", bytes: safetensorsBytes(w({dtype: "F32", shape: [8], data_offsets: [0, 32]}), 16), error: SafetensorsOffsetsError,
        message: (path) => `Expected data_offsets [begin, end] with 0 ≤ begin ≤ end ≤ 16 (the data area) for tensor "w" in ${path} but got [0,32]`
    },
    {
        name: "offsets that are not a pair", bytes: safetensorsBytes(w({dtype: "F32", shape: [1], data_offsets: ["0", 4]}), 4), error: SafetensorsOffsetsError,
        message: (path) => `Expected data_offsets [begin, end] with 0 ≤ begin ≤ end ≤ 4 (the data area) for tensor "w" in ${path} but got ["0",4]`
    },
    {
        name: "shape that does not match the byte length", bytes: safetensorsBytes(w({dtype: "F32", shape: [2, 2], data_offsets: [0, 12]}), 16),
        error: SafetensorsShapeError,
        message: (path) => `Expected data_offsets spanning 16 bytes (F32 [2, 2]) for tensor "w" in ${path} but got 12 bytes (0 to 12)`
    },
    {
        name: "overlapping tensors",
        bytes: safetensorsBytes({a: {dtype: "BF16", shape: [4], data_offsets: [0, 8]}, b: {dtype: "F32", shape: [2], data_offsets: [4, 12]}}, 12),
        error: SafetensorsOverlapError,
        message: (path) => `Expected the data of tensor "b" in ${path} to start at or after the end of tensor "a" (offset 8) but got offset 4`
    }
];

t.test("refuses hostile and corrupt headers, naming the file and tensor", async (t) => {
    const dir = await tempDir(t);
    for (const [index, {name, bytes, maxHeaderLength, error, message}] of hostileHeaders.entries()) {
        const path = join(dir, `hostile-${index}.safetensors`);
        await writeFile(path, bytes);
        await t.test(name, (t) => expectError(t, SafetensorsReader.open(path, {maxHeaderLength}), error, message(path)));
    }
    const valid = join(dir, "valid.safetensors");
    await writeFile(valid, safetensorsBytes({}, 0));
    await expectError(t, SafetensorsReader.open(valid, {maxHeaderLength: 0}), GgufOptionError,
        'Expected a positive integer for "maxHeaderLength" but received 0');
    await expectError(t, (await SafetensorsReader.open(valid)).readTensor("nope"), SafetensorsMissingTensorError,
        'Expected a tensor of the checkpoint but got unknown tensor "nope"');
});

/** Writes a shard `file` holding the named F32 scalars. */
async function writeScalars(dir: string, file: string, names: readonly string[]): Promise<void> {
    await writeSafetensors(join(dir, file), names.map((name) => ({name, dtype: "F32", shape: [], data: new Uint8Array(4)})));
}

async function writeIndex(dir: string, index: unknown): Promise<string> {
    const path = join(dir, "model.safetensors.index.json");
    await writeFile(path, typeof index === "string" ? index : JSON.stringify(index));
    return path;
}

t.test("refuses checkpoints whose files do not match", async (t) => {
    const root = await tempDir(t);
    let count = 0;
    const checkpoint = async (): Promise<string> => {
        const dir = join(root, `checkpoint-${count++}`);
        await mkdir(dir);
        return dir;
    };

    const empty = await checkpoint();
    await expectError(t, SafetensorsReader.open(empty), SafetensorsCheckpointError,
        `Expected "model.safetensors.index.json" or "model.safetensors" in directory ${empty} but got neither`);

    const badJson = await checkpoint();
    const badJsonIndex = await writeIndex(badJson, "{");
    await expectError(t, SafetensorsReader.open(badJson), SafetensorsCheckpointError,
        `Expected a JSON index in ${badJsonIndex} but got ${jsonParseMessage("{")}`);

    const noMap = await checkpoint();
    const noMapIndex = await writeIndex(noMap, {metadata: {}});
    await expectError(t, SafetensorsReader.open(noMap), SafetensorsCheckpointError, `Expected a "weight_map" object in ${noMapIndex} but got nothing`);

    const escaping = await checkpoint();
    const escapingIndex = await writeIndex(escaping, {weight_map: {w: "../x.safetensors"}});
    await expectError(t, SafetensorsReader.open(escaping), SafetensorsCheckpointError,
        `Expected a file name beside ${escapingIndex} for tensor "w" in its weight_map but got "../x.safetensors"`);

    const missingShard = await checkpoint();
    await writeScalars(missingShard, "s1.safetensors", ["a"]);
    const missingShardIndex = await writeIndex(missingShard, {weight_map: {a: "s1.safetensors", b: "s2.safetensors"}});
    await expectError(t, SafetensorsReader.open(missingShard), SafetensorsCheckpointError,
        `Expected shard "s2.safetensors" named by ${missingShardIndex} to exist but got no such file`);

    const unlisted = await checkpoint();
    await writeScalars(unlisted, "s1.safetensors", ["a", "extra"]);
    const unlistedIndex = await writeIndex(unlisted, {weight_map: {a: "s1.safetensors"}});
    await expectError(t, SafetensorsReader.open(unlisted), SafetensorsCheckpointError,
        `Expected tensor "extra" of shard "s1.safetensors" to be listed for that shard in the weight_map of ${unlistedIndex} but got no entry`);

    const ghost = await checkpoint();
    await writeScalars(ghost, "s1.safetensors", ["a"]);
    const ghostIndex = await writeIndex(ghost, {weight_map: {a: "s1.safetensors", ghost: "s1.safetensors"}});
    await expectError(t, SafetensorsReader.open(ghost), SafetensorsCheckpointError,
        `Expected tensor "ghost" in shard "s1.safetensors", as the weight_map of ${ghostIndex} says, but got no such tensor`);

    const misplaced = await checkpoint();
    await writeScalars(misplaced, "s1.safetensors", ["a"]);
    await writeScalars(misplaced, "s2.safetensors", ["b", "c"]);
    const misplacedIndex = await writeIndex(misplaced, {weight_map: {b: "s2.safetensors", c: "s1.safetensors", a: "s1.safetensors"}});
    await expectError(t, SafetensorsReader.open(misplaced), SafetensorsCheckpointError,
        `Expected tensor "c" of shard "s2.safetensors" to be listed for that shard in the weight_map of ${misplacedIndex} but got "s1.safetensors"`);
});

t.test("the writer refuses invalid specs, calls out of order and data of the wrong size", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "refused.safetensors");
    const spec = (name: string, dtype: string, shape: number[]): SafetensorsTensorData =>
        ({name, dtype, shape, data: new Uint8Array(0)} as unknown as SafetensorsTensorData);
    await expectError(t, SafetensorsWriter.create(path, [spec("w", "F64", [1])]), SafetensorsDtypeError, 'Expected dtype BF16, F16 or F32 for tensor "w" but got "F64"');
    await expectError(t, SafetensorsWriter.create(path, [spec("w", "F32", [-1])]), SafetensorsShapeError,
        'Expected a shape of non-negative integers for tensor "w" but got [-1]');
    await expectError(t, SafetensorsWriter.create(path, [spec("w", "F32", [1]), spec("w", "BF16", [1])]), SafetensorsDuplicateTensorError,
        'Expected unique tensor names but got "w" twice');
    await expectError(t, SafetensorsWriter.create(path, [spec("__metadata__", "F32", [1])]), SafetensorsHeaderJsonError,
        'Expected a tensor name other than the reserved "__metadata__" but got it');
    await t.rejects(access(path), {code: "ENOENT"}, "an invalid spec creates no file");

    const writer = await SafetensorsWriter.create(path, [{name: "a", dtype: "F32", shape: [2, 2]}, {name: "b", dtype: "BF16", shape: [3]}]);
    await expectError(t, writer.writeTensor("b", new Uint8Array(6)), SafetensorsWriterStateError, 'Expected data for tensor "a" (next in order) but got data for "b"');
    await expectError(t, writer.writeTensor("a", new Uint8Array(12)), SafetensorsDataSizeError, 'Expected 16 bytes of data for tensor "a" (F32 [2, 2]) but got 12');
    await writer.writeTensor("a", new Uint8Array(16));
    await expectError(t, writer.close(), SafetensorsWriterStateError, 'Expected data for every tensor before close but got none for "b"');
    await writer.writeTensor("b", new Uint8Array(6));
    await expectError(t, writer.writeTensor("c", new Uint8Array(0)), SafetensorsWriterStateError, 'Expected no more tensor data but got data for "c"');
    await writer.close();
    await expectError(t, writer.writeTensor("a", new Uint8Array(16)), SafetensorsWriterStateError, "Expected writeTensor on an open writer but the writer is closed");

    const partial = join(dir, "partial.safetensors");
    await expectError(t, writeSafetensors(partial, [{name: "a", dtype: "F16", shape: [2], data: new Uint8Array(3)}]), SafetensorsDataSizeError,
        'Expected 4 bytes of data for tensor "a" (F16 [2]) but got 3');
    await t.rejects(access(partial), {code: "ENOENT"}, "a failed write deletes the partial file");
    await expectError(t, writeShardedSafetensors(join(dir, "sharded"), [], {maxShardBytes: 0}), GgufOptionError,
        'Expected a positive integer for "maxShardBytes" but received 0');
});

const floats = [0, -0, 1, -2.5, 0.1, 65504, 1e-7, 3.14159];

/** Tensors of each dtype, whose values are known exactly in float32. */
function sampleTensors(): SafetensorsTensorData[] {
    const f32 = new Float32Array([...floats, ...floats.map((value) => value * 3)]);
    const bf16 = new Uint16Array(floats.map(f32ToBf16));
    const f16 = new Uint16Array(floats.map(f32ToF16));
    return [
        {name: "model.embed_tokens.weight", dtype: "BF16", shape: [2, 4], data: new Uint8Array(bf16.buffer)},
        {name: "model.layers.0.mlp.down_proj.weight", dtype: "F32", shape: [4, 4], data: new Uint8Array(f32.buffer)},
        {name: "model.norm.weight", dtype: "F16", shape: [8], data: new Uint8Array(f16.buffer)},
        {name: "scalar", dtype: "F32", shape: [], data: new Uint8Array(new Float32Array([42]).buffer)},
        {name: "empty", dtype: "BF16", shape: [0, 3], data: new Uint8Array(0)}
    ];
}

function expectedFloat32(tensor: SafetensorsTensorData): number[] {
    const {data} = tensor;
    if (tensor.dtype === "F32")
        return [...new Float32Array(data.buffer, data.byteOffset, data.length / 4)];

    const halves = [...new Uint16Array(data.buffer, data.byteOffset, data.length / 2)];
    return halves.map(tensor.dtype === "BF16" ? bf16ToF32 : f16ToF32);
}

async function checkReadBack(t: Test, checkpoint: SafetensorsReader, tensors: readonly SafetensorsTensorData[]): Promise<void> {
    t.same(checkpoint.tensors.map(({name, dtype, shape, byteLength}) => ({name, dtype, shape, byteLength})),
        tensors.map(({name, dtype, shape, data}) => ({name, dtype, shape, byteLength: data.length})));
    for (const tensor of tensors) {
        t.same([...await checkpoint.readTensor(tensor.name)], [...tensor.data], `${tensor.name} bytes read back`);
        const widened = await checkpoint.readTensorAsFloat32(tensor.name);
        const expected = expectedFloat32(tensor);
        t.ok(widened.length === expected.length && expected.every((value, index) => Object.is(widened[index], value)),
            `${tensor.name} widens to float32 exactly`);
    }
}

t.test("round-trips a single file, opened by path or by directory", async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, "model.safetensors");
    const tensors = sampleTensors();
    await writeSafetensors(path, tensors, {format: "pt"});

    const bytes = await readFile(path);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    t.equal(headerLength % 8, 0, "the header is padded to a multiple of 8 bytes");
    t.match(bytes.subarray(8, 8 + headerLength).toString(), /^\{"__metadata__":\{"format":"pt"\},"model\.embed_tokens\.weight":\{"dtype":"BF16","shape":\[2,4\],"data_offsets":\[0,16\]\}/);

    for (const opened of [path, dir]) {
        const checkpoint = await SafetensorsReader.open(opened);
        t.same(checkpoint.metadata, {format: "pt"});
        t.equal(checkpoint.getTensor("scalar").file, path);
        t.equal(checkpoint.has("empty"), true);
        await checkReadBack(t, checkpoint, tensors);
    }
});

t.test("round-trips a sharded checkpoint with its index", async (t) => {
    const dir = join(await tempDir(t), "sharded");
    const tensors = sampleTensors();
    const files = await writeShardedSafetensors(dir, tensors, {maxShardBytes: 90, metadata: {format: "pt"}});
    t.same(files, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"],
        "16 + 64 bytes fit in 90; the next 16 do not, so the F16 tensor starts a second shard");
    t.same((await readdir(dir)).sort(), [...files].sort());
    const index = JSON.parse(await readFile(join(dir, "model.safetensors.index.json"), "utf8"));
    t.same(index, {
        metadata: {total_size: 16 + 64 + 16 + 4},
        weight_map: {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "model.layers.0.mlp.down_proj.weight": "model-00001-of-00002.safetensors",
            "model.norm.weight": "model-00002-of-00002.safetensors",
            "scalar": "model-00002-of-00002.safetensors",
            "empty": "model-00002-of-00002.safetensors"
        }
    });

    for (const opened of [dir, join(dir, "model.safetensors.index.json")]) {
        const checkpoint = await SafetensorsReader.open(opened);
        t.equal(checkpoint.getTensor("model.norm.weight").file, join(dir, "model-00002-of-00002.safetensors"));
        t.same(checkpoint.metadata, {format: "pt"});
        await checkReadBack(t, checkpoint, tensors);
    }

    const oneEach = await writeShardedSafetensors(join(dir, "tiny"), tensors.slice(0, 3), {maxShardBytes: 1});
    t.equal(oneEach.length, 4, "a tensor larger than the limit gets a shard of its own");
});
