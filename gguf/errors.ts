// One error class per failure of the GGUF toolkit. Messages read "Expected … but got …" and name the key or tensor.

/** Base class of every error thrown by the GGUF toolkit; `name` is the concrete class name. */
export class GgufError extends Error {
    constructor(message: string) {
        super(message);
        this.name = new.target.name;
    }
}

/** An id that is not a ggml tensor type, or a ggml type an operation does not support. */
export class GgmlTypeError extends GgufError {}

/** A tensor shape that is invalid for its type (negative or fractional dimension, partial quantization block). */
export class GgmlShapeError extends GgufError {}

/** An option that is not valid (e.g. a limit that is not a positive integer). */
export class GgufOptionError extends GgufError {}

/** The file does not start with the bytes `GGUF`. */
export class GgufMagicError extends GgufError {}

/** A GGUF version this reader does not read (1, big-endian files, future versions). */
export class GgufVersionError extends GgufError {}

/** The file ends before a field it declares. */
export class GgufTruncatedError extends GgufError {}

/** A string longer than the `maxStringLength` limit. */
export class GgufStringLengthError extends GgufError {}

/** More metadata entries than the `maxKvCount` limit. */
export class GgufKvCountError extends GgufError {}

/** More tensors than the `maxTensorCount` limit. */
export class GgufTensorCountError extends GgufError {}

/** An array longer than the `maxArrayLength` limit. */
export class GgufArrayLengthError extends GgufError {}

/** Arrays nested deeper than the `maxArrayDepth` limit. */
export class GgufArrayDepthError extends GgufError {}

/** A tensor with more dimensions than the `maxTensorDims` limit (ggml's 4), or none where one is required. */
export class GgufTensorDimsError extends GgufError {}

/** A tensor name longer than the `maxTensorNameLength` limit (ggml's 63 bytes), or empty. */
export class GgufTensorNameError extends GgufError {}

/** A metadata value type id that is not a GGUF value type. */
export class GgufValueTypeError extends GgufError {}

/** An empty metadata key. */
export class GgufKeyError extends GgufError {}

/** The same metadata key twice. */
export class GgufDuplicateKeyError extends GgufError {}

/** The same tensor name twice. */
export class GgufDuplicateTensorError extends GgufError {}

/** A `general.alignment` that is not a power of two. */
export class GgufAlignmentError extends GgufError {}

/** A tensor whose element count or byte size is not representable. */
export class GgufElementCountError extends GgufError {}

/** A tensor data offset that is not a multiple of the file's alignment. */
export class GgufTensorOffsetError extends GgufError {}

/** A tensor whose data extends past the end of the file. */
export class GgufTensorBoundsError extends GgufError {}

/** Two tensors whose data ranges overlap. */
export class GgufTensorOverlapError extends GgufError {}

/** A metadata key that is absent. */
export class GgufMissingKeyError extends GgufError {}

/** A metadata value of another type than the one asked for. */
export class GgufMetadataTypeError extends GgufError {}

/** A writer call made in the wrong state (e.g. a key added after the header was written). */
export class GgufWriterStateError extends GgufError {}

/** A value that its declared GGUF value type cannot hold (wrong JS type, not an integer, out of range). */
export class GgufValueError extends GgufError {}

/** Tensor data of another byte size than the tensor's type and shape require. */
export class GgufTensorDataSizeError extends GgufError {}

/** Tensor data written out of the order in which the tensor infos were added. */
export class GgufTensorOrderError extends GgufError {}

/** A writer closed before the data of every tensor was written. */
export class GgufMissingTensorDataError extends GgufError {}

/** A NaN or infinity given to a quantizer. */
export class QuantNonFiniteError extends GgufError {}

/** Base class of the errors about safetensors checkpoints. */
export class SafetensorsError extends GgufError {}

/** A checkpoint whose file layout is invalid: no safetensors file, or an index.json that does not match its shards. */
export class SafetensorsCheckpointError extends SafetensorsError {}

/** A header length that is not sane (beyond the `maxHeaderLength` limit or the end of the file). */
export class SafetensorsHeaderLengthError extends SafetensorsError {}

/** A header that is not valid JSON, or JSON that is not a safetensors header. */
export class SafetensorsHeaderJsonError extends SafetensorsError {}

/** A dtype other than BF16, F16 and F32. */
export class SafetensorsDtypeError extends SafetensorsError {}

/** A shape that is not a list of non-negative integers, or that does not match the tensor's byte length. */
export class SafetensorsShapeError extends SafetensorsError {}

/** `data_offsets` that are not `[begin, end]` with begin ≤ end inside the data area. */
export class SafetensorsOffsetsError extends SafetensorsError {}

/** Two tensors whose data ranges overlap. */
export class SafetensorsOverlapError extends SafetensorsError {}

/** The same tensor name twice. */
export class SafetensorsDuplicateTensorError extends SafetensorsError {}

/** A tensor name the checkpoint does not have. */
export class SafetensorsMissingTensorError extends SafetensorsError {}

/** A safetensors writer call made out of order (wrong tensor, missing data at close, after close). */
export class SafetensorsWriterStateError extends SafetensorsError {}

/** Tensor data of another byte size than the tensor's dtype and shape require. */
export class SafetensorsDataSizeError extends SafetensorsError {}

/** A vocabulary llama.cpp's loader would abort on (repeated or empty token strings, token types out of range). */
export class GgufVocabularyError extends GgufError {}

/** Hyperparameters llama.cpp would abort on (a zero dimension, heads that do not divide, unknown or inconsistent keys). */
export class GgufHyperparameterError extends GgufError {}

/** A model tensor that is missing, unexpected, of the wrong shape or of a type llama.cpp cannot run. */
export class GgufModelTensorError extends GgufError {}

/** A Stream head file that does not belong to its backbone (another checkpoint's fingerprint, another hidden size). */
export class GgufStreamHeadError extends GgufError {}
