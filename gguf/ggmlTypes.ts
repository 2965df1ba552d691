// The type catalogues of the GGUF format: ggml tensor types (ids as in ggml.h), their block layout, llama.cpp's
// file types (`general.file_type`) and GGUF metadata value types.

import {GgmlShapeError, GgmlTypeError} from "./errors.js";

/** ggml tensor element types, with the ids of `enum ggml_type` in ggml.h (gaps are ids removed from ggml). */
export enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42
}

/** Block layout of a ggml type: `blockSize` elements are stored in `typeSize` bytes. */
export interface GgmlTypeLayout {
    readonly blockSize: number;
    readonly typeSize: number;
}

const QK_K = 256;

/** Block layout of every ggml type (ggml.c `type_traits`). */
export const GGML_TYPE_LAYOUTS: Readonly<Record<GgmlType, GgmlTypeLayout>> = {
    [GgmlType.F32]: {blockSize: 1, typeSize: 4},
    [GgmlType.F16]: {blockSize: 1, typeSize: 2},
    [GgmlType.Q4_0]: {blockSize: 32, typeSize: 2 + 16},
    [GgmlType.Q4_1]: {blockSize: 32, typeSize: 2 + 2 + 16},
    [GgmlType.Q5_0]: {blockSize: 32, typeSize: 2 + 4 + 16},
    [GgmlType.Q5_1]: {blockSize: 32, typeSize: 2 + 2 + 4 + 16},
    [GgmlType.Q8_0]: {blockSize: 32, typeSize: 2 + 32},
    [GgmlType.Q8_1]: {blockSize: 32, typeSize: 2 + 2 + 32},
    [GgmlType.Q2_K]: {blockSize: QK_K, typeSize: 2 + 2 + QK_K / 16 + QK_K / 4},
    [GgmlType.Q3_K]: {blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 8 + 12},
    [GgmlType.Q4_K]: {blockSize: QK_K, typeSize: 2 + 2 + QK_K / 2 + 12},
    [GgmlType.Q5_K]: {blockSize: QK_K, typeSize: 2 + 2 + QK_K / 2 + QK_K / 8 + 12},
    [GgmlType.Q6_K]: {blockSize: QK_K, typeSize: 2 + QK_K / 2 + QK_K / 4 + QK_K / 16},
    [GgmlType.Q8_K]: {blockSize: QK_K, typeSize: 4 + QK_K + QK_K / 8},
    [GgmlType.IQ2_XXS]: {blockSize: QK_K, typeSize: 2 + QK_K / 4},
    [GgmlType.IQ2_XS]: {blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 32},
    [GgmlType.IQ3_XXS]: {blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 8},
    [GgmlType.IQ1_S]: {blockSize: QK_K, typeSize: 2 + QK_K / 8 + QK_K / 16},
    [GgmlType.IQ4_NL]: {blockSize: 32, typeSize: 2 + 16},
    [GgmlType.IQ3_S]: {blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4},
    [GgmlType.IQ2_S]: {blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 16},
    [GgmlType.IQ4_XS]: {blockSize: QK_K, typeSize: 2 + 2 + QK_K / 2 + QK_K / 64},
    [GgmlType.I8]: {blockSize: 1, typeSize: 1},
    [GgmlType.I16]: {blockSize: 1, typeSize: 2},
    [GgmlType.I32]: {blockSize: 1, typeSize: 4},
    [GgmlType.I64]: {blockSize: 1, typeSize: 8},
    [GgmlType.F64]: {blockSize: 1, typeSize: 8},
    [GgmlType.IQ1_M]: {blockSize: QK_K, typeSize: QK_K / 8 + QK_K / 16 + QK_K / 32},
    [GgmlType.BF16]: {blockSize: 1, typeSize: 2},
    [GgmlType.TQ1_0]: {blockSize: QK_K, typeSize: 2 + 4 * 13},
    [GgmlType.TQ2_0]: {blockSize: QK_K, typeSize: 2 + 64},
    [GgmlType.MXFP4]: {blockSize: 32, typeSize: 1 + 16},
    [GgmlType.NVFP4]: {blockSize: 64, typeSize: 4 + 32},
    [GgmlType.Q1_0]: {blockSize: 128, typeSize: 2 + 16},
    [GgmlType.Q2_0]: {blockSize: 64, typeSize: 2 + 16}
};

/**
 * Whether `id` is the id of a ggml type this file format can hold.
 * @param id - a candidate type id, e.g. read from a file
 * @returns true for the ids of {@link GgmlType}
 */
export function isGgmlType(id: number): id is GgmlType {
    return Object.hasOwn(GGML_TYPE_LAYOUTS, id);
}

/**
 * The name of a ggml type as used in this codebase and by gguf-py (`Q8_0`, `BF16`), or `type <id>` for an unknown id.
 * @param type - a ggml type id
 */
export function ggmlTypeName(type: number): string {
    return isGgmlType(type) ? GgmlType[type] : `type ${type}`;
}

/**
 * The block layout of a ggml type.
 * @param type - a ggml type id
 * @param subject - what has this type, for the error message (e.g. `tensor "output.weight"`)
 * @throws {GgmlTypeError} when `type` is not a ggml type id
 */
export function ggmlTypeLayout(type: number, subject = "a tensor"): GgmlTypeLayout {
    if (!isGgmlType(type))
        throw new GgmlTypeError(`Expected a ggml type id for ${subject} but got ${type}`);

    return GGML_TYPE_LAYOUTS[type];
}

/**
 * The number of elements of a tensor shape (the product of `ne`; 1 for a scalar `[]`).
 * @param ne - ggml dimensions, innermost first
 */
export function elementCount(ne: readonly number[]): number {
    return ne.reduce((product, n) => product * n, 1);
}

/**
 * The number of bytes a tensor of `type` and shape `ne` takes in a GGUF file (without alignment padding).
 * @param type - the ggml type of the tensor
 * @param ne - ggml dimensions, innermost (row) first, as non-negative safe integers
 * @param subject - what has this shape, for error messages (e.g. `tensor "output.weight"`)
 * @returns the byte size
 * @throws {GgmlTypeError} when `type` is not a ggml type id
 * @throws {GgmlShapeError} when a dimension is not a non-negative integer, the element count is not a safe integer,
 *   or `ne[0]` is not a multiple of the type's block size (a quantized row consists of whole blocks)
 * @example
 * tensorByteSize(GgmlType.Q8_0, [1024, 3]); // 3 rows of 32 blocks of 34 bytes = 3264
 */
export function tensorByteSize(type: GgmlType, ne: readonly number[], subject = "a tensor"): number {
    const {blockSize, typeSize} = ggmlTypeLayout(type, subject);
    for (const [index, n] of ne.entries()) {
        if (!Number.isSafeInteger(n) || n < 0)
            throw new GgmlShapeError(`Expected dimension ${index} of ${subject} to be a non-negative integer but got ${n}`);
    }
    const elements = elementCount(ne);
    if (!Number.isSafeInteger(elements))
        throw new GgmlShapeError(`Expected the element count of ${subject} to be at most ${Number.MAX_SAFE_INTEGER} but got ${elements}`);

    const rowLength = ne.length === 0 ? 1 : ne[0];
    if (rowLength % blockSize !== 0)
        throw new GgmlShapeError(
            `Expected the row length (ne[0]) of ${subject} to be a multiple of ${blockSize} (the block size of ${GgmlType[type]}) but got ${rowLength}`
        );

    return (elements / blockSize) * typeSize;
}

/** llama.cpp model file types (`general.file_type`, `enum llama_ftype` in llama.h). */
export enum LlamaFileType {
    ALL_F32 = 0,
    MOSTLY_F16 = 1,
    MOSTLY_Q4_0 = 2,
    MOSTLY_Q4_1 = 3,
    MOSTLY_Q8_0 = 7,
    MOSTLY_Q5_0 = 8,
    MOSTLY_Q5_1 = 9,
    MOSTLY_Q2_K = 10,
    MOSTLY_Q3_K_S = 11,
    MOSTLY_Q3_K_M = 12,
    MOSTLY_Q3_K_L = 13,
    MOSTLY_Q4_K_S = 14,
    MOSTLY_Q4_K_M = 15,
    MOSTLY_Q5_K_S = 16,
    MOSTLY_Q5_K_M = 17,
    MOSTLY_Q6_K = 18,
    MOSTLY_IQ2_XXS = 19,
    MOSTLY_IQ2_XS = 20,
    MOSTLY_Q2_K_S = 21,
    MOSTLY_IQ3_XS = 22,
    MOSTLY_IQ3_XXS = 23,
    MOSTLY_IQ1_S = 24,
    MOSTLY_IQ4_NL = 25,
    MOSTLY_IQ3_S = 26,
    MOSTLY_IQ3_M = 27,
    MOSTLY_IQ2_S = 28,
    MOSTLY_IQ2_M = 29,
    MOSTLY_IQ4_XS = 30,
    MOSTLY_IQ1_M = 31,
    MOSTLY_BF16 = 32,
    MOSTLY_TQ1_0 = 36,
    MOSTLY_TQ2_0 = 37,
    MOSTLY_MXFP4_MOE = 38,
    MOSTLY_NVFP4 = 39,
    MOSTLY_Q1_0 = 40,
    MOSTLY_Q2_0 = 41,
    GUESSED = 1024
}

/** GGUF metadata value types (`enum gguf_type` in gguf.h). */
export enum GgufValueType {
    UINT8 = 0,
    INT8 = 1,
    UINT16 = 2,
    INT16 = 3,
    UINT32 = 4,
    INT32 = 5,
    FLOAT32 = 6,
    BOOL = 7,
    STRING = 8,
    ARRAY = 9,
    UINT64 = 10,
    INT64 = 11,
    FLOAT64 = 12
}

/**
 * Whether `id` is a GGUF metadata value type id.
 * @param id - a candidate value type id, e.g. read from a file
 */
export function isGgufValueType(id: number): id is GgufValueType {
    return Number.isInteger(id) && id >= GgufValueType.UINT8 && id <= GgufValueType.FLOAT64;
}
