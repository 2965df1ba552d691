// The public surface of the Hugging Face → GGUF converter.

export {convert, SUPPORTED_ARCHITECTURES} from "./convert.js";
export type {ConvertOptions} from "./convert.js";
export {ModelConverter} from "./ModelConverter.js";
export type {ConversionResult, OutType, WrittenTensor} from "./ModelConverter.js";
export {Qwen3Converter} from "./Qwen3Converter.js";
export {Qwen3GuardStreamConverter, STREAM_HEAD_FILE_SUFFIX, STREAM_PLACEHOLDER_OUTPUT_TYPE} from "./Qwen3GuardStreamConverter.js";
export {STREAM_HEAD_ARCHITECTURE, normaliseLabel, readStreamHeadLabels} from "./streamHead.js";
export type {StreamHeadLabels} from "./streamHead.js";
export {LlamaTokenType} from "./bpeVocab.js";
export {checkpointFingerprint} from "./fingerprint.js";
export type {TensorDescription} from "./fingerprint.js";
export * from "./errors.js";
