import t from "tap";
import {GgufMetadata, GgufMetadataTypeError, GgufMissingKeyError, GgufValueType} from "../../gguf/index.js";
import type {GgufKv} from "../../gguf/index.js";
import {expectError} from "./ggufTestKit.js";

const T = GgufValueType;
const metadata = new GgufMetadata(new Map<string, GgufKv>([
    ["general.name", {type: T.STRING, value: "Qwen3Guard"}],
    ["qwen3.context_length", {type: T.UINT32, value: 32768}],
    ["general.size", {type: T.UINT64, value: 600n}],
    ["eps", {type: T.FLOAT32, value: Math.fround(1e-6)}],
    ["flag", {type: T.BOOL, value: true}],
    ["labels", {type: T.ARRAY, value: {elementType: T.STRING, values: ["Safe", "Unsafe"]}}],
    ["ids", {type: T.ARRAY, value: {elementType: T.INT32, values: [1, 2]}}]
]));

t.test("refuses missing keys and other types, naming key and types", async (t) => {
    await expectError(t, () => metadata.getString("general.missing"), GgufMissingKeyError,
        'Expected metadata key "general.missing" of type STRING but got no such key');
    await expectError(t, () => metadata.getString("qwen3.context_length"), GgufMetadataTypeError,
        'Expected metadata key "qwen3.context_length" to be of type STRING but got UINT32');
    await expectError(t, () => metadata.getUint64("qwen3.context_length"), GgufMetadataTypeError,
        'Expected metadata key "qwen3.context_length" to be of type UINT64 but got UINT32');
    await expectError(t, () => metadata.getUint32("labels"), GgufMetadataTypeError,
        'Expected metadata key "labels" to be of type UINT32 but got ARRAY of STRING');
    await expectError(t, () => metadata.getStringArray("ids"), GgufMetadataTypeError,
        'Expected metadata key "ids" to be of type ARRAY of STRING but got ARRAY of INT32');
    await expectError(t, () => metadata.find("flag", T.FLOAT32), GgufMetadataTypeError,
        'Expected metadata key "flag" to be of type FLOAT32 but got BOOL');
});

t.test("typed getters return the values", async (t) => {
    t.equal(metadata.getString("general.name"), "Qwen3Guard");
    t.equal(metadata.getUint32("qwen3.context_length"), 32768);
    t.equal(metadata.getUint64("general.size"), 600n);
    t.equal(metadata.getFloat32("eps"), Math.fround(1e-6));
    t.equal(metadata.getBool("flag"), true);
    t.same(metadata.getStringArray("labels"), ["Safe", "Unsafe"]);
    t.same(metadata.getArray("ids").values, [1, 2]);
    t.equal(metadata.get("general.name", T.STRING), "Qwen3Guard");
    t.equal(metadata.find("general.missing", T.STRING), undefined, "find returns undefined for an absent key");
    t.equal(metadata.has("flag"), true);
    t.equal(metadata.has("general.missing"), false);
});
