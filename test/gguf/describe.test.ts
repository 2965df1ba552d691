import {writeFile} from "node:fs/promises";
import {join} from "node:path";
import t from "tap";
import {
    GgmlType, GgufMagicError, GgufMetadataTypeError, GgufMissingKeyError, GgufValueType, GgufWriter, LlamaFileType,
    describeGguf, formatDescription, tensorByteSize
} from "../../gguf/index.js";
import {expectError, tempDir} from "./ggufTestKit.js";

const FINGERPRINT = "sha256:0123abcd";
const LABELS = {
    response_risk_level: ["Safe", "Unsafe", "Controversial"],
    response_category: ["Violent", "Sexual Content or Sexual Acts", "PII"],
    query_risk_level: ["Safe", "Unsafe", "Controversial"],
    query_category: ["Violent", "Sexual Content or Sexual Acts", "PII", "Jailbreak"]
};

/** Writes a GGUF with the given metadata and zero-filled tensors. */
async function writeGguf(path: string, addMetadata: (writer: GgufWriter) => void, tensors: [string, number[], GgmlType][] = []): Promise<string> {
    const writer = await GgufWriter.create(path);
    addMetadata(writer);
    for (const [name, ne, type] of tensors)
        writer.addTensorInfo(name, ne, type);
    await writer.writeHeader();
    for (const [name, ne, type] of tensors)
        await writer.writeTensorData(name, new Uint8Array(tensorByteSize(type, ne)));
    await writer.close();
    return path;
}

function addQwen3(writer: GgufWriter, variant?: string, headFile?: string): void {
    writer.addString("general.architecture", "qwen3");
    writer.addString("general.name", "Tiny Guard");
    writer.addUint32("general.file_type", LlamaFileType.MOSTLY_Q8_0);
    writer.addUint32("qwen3.context_length", 8192);
    writer.addUint32("qwen3.embedding_length", 64);
    writer.addUint32("qwen3.block_count", 2);
    writer.addArray("tokenizer.ggml.tokens", GgufValueType.STRING, ["a", "b", "c", "<|im_start|>", "<|im_end|>"]);
    if (variant !== undefined) {
        writer.addString("qwen3guard.variant", variant);
        writer.addString("qwen3guard.fingerprint", FINGERPRINT);
    }
    if (headFile !== undefined)
        writer.addString("qwen3guard.stream.head_file", headFile);
}

const backboneTensors: [string, number[], GgmlType][] = [
    ["token_embd.weight", [64, 5], GgmlType.Q8_0], ["blk.0.attn_q.weight", [64, 64], GgmlType.Q8_0],
    ["blk.0.attn_norm.weight", [64], GgmlType.F32], ["output_norm.weight", [64], GgmlType.F32], ["output.weight", [64, 5], GgmlType.Q8_0]
];

function addHead(writer: GgufWriter, skip?: string): void {
    writer.addString("general.architecture", "qwen3guard-stream-head");
    writer.addString("qwen3guard.variant", "stream-head");
    writer.addString("qwen3guard.fingerprint", FINGERPRINT);
    if (skip !== "hidden_size")
        writer.addUint32("qwen3guard.head.hidden_size", 64);
    writer.addUint32("qwen3guard.head.guard_inner_size", 32);
    writer.addFloat32("qwen3guard.head.rms_norm_eps", 1e-6);
    for (const [which, labels] of Object.entries(LABELS))
        writer.addArray(`qwen3guard.head.${which}_labels`, GgufValueType.STRING, labels);
}

t.test("refuses files whose keys have the wrong type or that lack head keys", async (t) => {
    const dir = await tempDir(t);
    const notGguf = join(dir, "not.gguf");
    await writeFile(notGguf, "<html>not a model</html>");
    await expectError(t, describeGguf(notGguf), GgufMagicError, 'Expected the magic "GGUF" at the start of the file but got "<htm"');

    const headWithoutHidden = await writeGguf(join(dir, "partial.head.gguf"), (w) => addHead(w, "hidden_size"));
    await expectError(t, describeGguf(headWithoutHidden), GgufMissingKeyError,
        'Expected metadata key "qwen3guard.head.hidden_size" of type UINT32 but got no such key');

    const stringContext = await writeGguf(join(dir, "string-context.gguf"), (w) => {
        w.addString("general.architecture", "qwen3");
        w.addString("qwen3.context_length", "8192");
    });
    await expectError(t, describeGguf(stringContext), GgufMetadataTypeError,
        'Expected metadata key "qwen3.context_length" to be of an integer type but got STRING');

    const numericVariant = await writeGguf(join(dir, "numeric-variant.gguf"), (w) => w.addUint32("qwen3guard.variant", 1));
    await expectError(t, describeGguf(numericVariant), GgufMetadataTypeError,
        'Expected metadata key "qwen3guard.variant" to be of type STRING but got UINT32');
});

t.test("describes a Stream backbone and finds its head file", async (t) => {
    const dir = await tempDir(t);
    const headPath = await writeGguf(join(dir, "tiny.head.gguf"), addHead, [["risk_level_head.weight", [32, 3], GgmlType.F32]]);
    const path = await writeGguf(join(dir, "tiny.gguf"), (w) => addQwen3(w, "stream-backbone", "tiny.head.gguf"), backboneTensors);
    const description = await describeGguf(path);
    t.same(description, {
        path,
        fileSize: 6400,
        ggufVersion: 3,
        architecture: "qwen3",
        variant: "stream-backbone",
        name: "Tiny Guard",
        fingerprint: FINGERPRINT,
        tensorCount: 5,
        parameterCount: 64 * 5 + 64 * 64 + 64 + 64 + 64 * 5,
        tensorTypes: {Q8_0: 3, F32: 2},
        dominantType: "Q8_0",
        fileType: "MOSTLY_Q8_0",
        contextLength: 8192,
        hiddenSize: 64,
        layers: 2,
        vocabSize: 5,
        head: undefined,
        pairedFile: {name: "tiny.head.gguf", path: headPath, exists: true}
    });
    t.equal(formatDescription(description), [
        `File            ${path}`,
        "Size            6.3 KiB (6,400 bytes)",
        "GGUF version    3",
        "Architecture    qwen3",
        "Variant         stream-backbone",
        "Name            Tiny Guard",
        "Tensors         5 (Q8_0: 3, F32: 2)",
        "Parameters      4,864",
        "File type       MOSTLY_Q8_0",
        "Dominant type   Q8_0",
        "Context length  8192",
        "Hidden size     64",
        "Layers          2",
        "Vocabulary      5",
        `Fingerprint     ${FINGERPRINT}`,
        `Head file       ${headPath} (found)`
    ].join("\n"));

    const orphan = await writeGguf(join(dir, "orphan.gguf"), (w) => addQwen3(w, "stream-backbone", "gone.head.gguf"));
    t.same((await describeGguf(orphan)).pairedFile, {name: "gone.head.gguf", path: join(dir, "gone.head.gguf"), exists: false});
});

t.test("describes a Stream head with its labels", async (t) => {
    const dir = await tempDir(t);
    const path = await writeGguf(join(dir, "tiny.head.gguf"), addHead,
        [["risk_level_category_pre.weight", [64, 32], GgmlType.BF16], ["risk_level_head.weight", [32, 3], GgmlType.F32]]);
    const description = await describeGguf(path);
    t.equal(description.variant, "stream-head");
    t.equal(description.architecture, "qwen3guard-stream-head");
    t.same(description.head, {
        hiddenSize: 64,
        guardInnerSize: 32,
        rmsNormEps: 1e-6,
        labels: {
            responseRiskLevels: LABELS.response_risk_level,
            responseCategories: LABELS.response_category,
            queryRiskLevels: LABELS.query_risk_level,
            queryCategories: LABELS.query_category
        }
    });
    t.equal(description.dominantType, "BF16", "BF16 holds 2048 of the 2144 parameters");
    t.same(description.tensorTypes, {BF16: 1, F32: 1});
    t.equal(description.contextLength, undefined, "a head has no context length");
    const text = formatDescription(description);
    t.match(text, /^Head RMS norm eps     0\.000001$/m);
    t.match(text, /^Query categories      Violent, Sexual Content or Sexual Acts, PII, Jailbreak$/m);
    t.notMatch(text, /Context length/);
});

t.test("tells Gen conversions from plain qwen3 models", async (t) => {
    const dir = await tempDir(t);
    const gen = await describeGguf(await writeGguf(join(dir, "gen.gguf"), (w) => addQwen3(w, "gen")));
    t.equal(gen.variant, "gen");
    t.equal(gen.pairedFile, undefined);
    t.match(formatDescription(gen), /^Variant +gen$/m);

    const plain = await describeGguf(await writeGguf(join(dir, "plain.gguf"), (w) => addQwen3(w)));
    t.equal(plain.variant, "unknown");
    t.equal(plain.fingerprint, undefined);
    t.match(formatDescription(plain), /^Variant +unknown \(no qwen3guard\.variant key: a plain qwen3 model\)$/m);

    const large = await writeGguf(join(dir, "large.gguf"), (w) => w.addUint64("general.file_type", 32n), [["t", [1024, 1024], GgmlType.BF16]]);
    const described = await describeGguf(large);
    t.equal(described.fileType, "MOSTLY_BF16", "an integer key of any width is read");
    t.match(formatDescription(described), /^Size +2\.0 MiB \(2,097,\d{3} bytes\)$/m);
    t.match(formatDescription(described), /^Parameters +1\.05 M \(1,048,576\)$/m);
});
