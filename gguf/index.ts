// The public surface of the GGUF toolkit: GGUF reading and writing, safetensors checkpoints, float conversions and
// quantization, and the summary behind `qwenguard info`.

export * from "./errors.js";
export {
    GGML_TYPE_LAYOUTS, GgmlType, GgufValueType, LlamaFileType, elementCount, ggmlTypeLayout, ggmlTypeName, isGgmlType,
    isGgufValueType, tensorByteSize
} from "./ggmlTypes.js";
export type {GgmlTypeLayout} from "./ggmlTypes.js";
export {GgufMetadata, describeGgufType} from "./GgufMetadata.js";
export type {GgufArray, GgufKv, GgufValue, GgufValueOf} from "./GgufMetadata.js";
export {
    DEFAULT_GGUF_LIMITS, GGUF_ALIGNMENT_KEY, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, alignUp, isPowerOfTwo,
    readGguf, readTensorData
} from "./readGguf.js";
export type {GgufFile, GgufLimits, GgufTensorInfo, ReadGgufOptions} from "./readGguf.js";
export {GgufWriter} from "./GgufWriter.js";
export type {TensorDataSource} from "./GgufWriter.js";
export {ByteReader} from "./ByteReader.js";
export {FileByteReader} from "./FileByteReader.js";
export {
    DEFAULT_SAFETENSORS_MAX_HEADER_LENGTH, SAFETENSORS_DTYPES, SAFETENSORS_INDEX_FILE, SAFETENSORS_SINGLE_FILE,
    SafetensorsReader, shapeByteLength
} from "./SafetensorsReader.js";
export type {SafetensorsDtype, SafetensorsReaderOptions, SafetensorsTensorInfo} from "./SafetensorsReader.js";
export {SafetensorsWriter, writeSafetensors, writeShardedSafetensors} from "./SafetensorsWriter.js";
export type {SafetensorsTensorData, SafetensorsTensorSpec, ShardedSafetensorsOptions} from "./SafetensorsWriter.js";
export {
    Q8_0_BLOCK_BYTES, Q8_0_BLOCK_SIZE, bf16ToF32, dequantize, dequantizeQ8_0, f16ToF32, f32ToBf16, f32ToF16, quantize,
    quantizeQ8_0
} from "./quant.js";
export {describeGguf, formatDescription} from "./describe.js";
export type {
    GgufDescription, PairedFileDescription, Qwen3GuardVariant, StreamHeadDescription
} from "./describe.js";
export type {StreamHeadLabels} from "./convert/streamHead.js";
export {checkLoadable, checkStreamHead, LOADABLE_ARCHITECTURES} from "./checkLoadable.js";
