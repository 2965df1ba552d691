// One error class per way a Hugging Face checkpoint can fail to convert. Messages name the file, key or tensor.

import {GgufError} from "../errors.js";

/** Base class of every error the converter throws about its input. */
export class ConversionError extends GgufError {}

/** config.json names a model class no converter is registered for. */
export class UnsupportedArchitectureError extends ConversionError {}

/** A file the conversion needs (config.json, tokenizer files, safetensors) is absent. */
export class MissingCheckpointFileError extends ConversionError {}

/** A config.json, tokenizer.json or tokenizer_config.json field that is absent or has the wrong type or value. */
export class CheckpointConfigError extends ConversionError {}

/** A tensor the architecture needs is in none of the checkpoint's safetensors files. */
export class MissingTensorError extends ConversionError {}

/** A tensor that the architecture does not have. */
export class UnexpectedTensorError extends ConversionError {}

/** A tensor whose shape differs from the one config.json implies. */
export class TensorShapeError extends ConversionError {}

/** An output path the conversion must not or cannot write: one of the checkpoint's files, a folder, a missing folder. */
export class ConversionOutputError extends ConversionError {}
