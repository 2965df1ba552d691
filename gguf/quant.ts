// Float conversions and Q8_0 quantization, bit-exact with ggml (ggml-impl.h and quantize_row_q8_0_ref in
// ggml-quants.c). Float32 arithmetic is mimicked with Math.fround at every step; float16/bfloat16 values travel as
// their uint16 bit patterns.

import {GgmlShapeError, GgmlTypeError, QuantNonFiniteError} from "./errors.js";
import {GgmlType, ggmlTypeName} from "./ggmlTypes.js";

/** Elements per Q8_0 block. */
export const Q8_0_BLOCK_SIZE = 32;

/** Bytes per Q8_0 block: a float16 scale and 32 int8 quants. */
export const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK_SIZE;

const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

function float32Bits(value: number): number {
    scratchFloat[0] = value;
    return scratchBits[0];
}

function roundHalfToEven(value: number): number {
    const floor = Math.floor(value);
    const fraction = value - floor;
    return fraction > 0.5 || (fraction === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
}

/**
 * Converts a number to float16 as ggml's `GGML_FP32_TO_FP16` does: first to float32, then round to nearest even;
 * magnitudes from 65520 up become infinity; NaN becomes the quiet NaN 0x7E00 with the input's sign.
 * @param value - the number to convert
 * @returns the float16 bit pattern (0 to 0xFFFF)
 */
export function f32ToF16(value: number): number {
    const bits = float32Bits(value);
    const sign = (bits >>> 16) & 0x8000;
    const magnitude = bits & 0x7fffffff;
    if (magnitude > 0x7f800000)
        return sign | 0x7e00;
    // 0x477ff000 is 65520, half-way between 65504 (the largest float16) and 65536: it and anything above round to infinity.
    if (magnitude >= 0x477ff000)
        return sign | 0x7c00;
    // Below 2^-14 (0x38800000) the result is subnormal: a count of 2^-24 units, computed exactly in float64.
    if (magnitude < 0x38800000)
        return sign | roundHalfToEven(Math.abs(scratchFloat[0]) * 2 ** 24);

    // Normal: move the exponent bias from 127 to 15 (112 << 23 = 0x38000000) and round the 13 dropped mantissa bits.
    let half = (magnitude - 0x38000000) >>> 13;
    const dropped = magnitude & 0x1fff;
    if (dropped > 0x1000 || (dropped === 0x1000 && (half & 1) === 1))
        half++;

    return sign | half;
}

/**
 * Converts a float16 bit pattern to its value (exact: every float16 is a float32 and a float64).
 * @param half - float16 bits (0 to 0xFFFF)
 */
export function f16ToF32(half: number): number {
    const sign = half & 0x8000 ? -1 : 1;
    const exponent = (half >>> 10) & 0x1f;
    const mantissa = half & 0x3ff;
    if (exponent === 0)
        return sign * mantissa * 2 ** -24;
    if (exponent === 0x1f)
        return mantissa === 0 ? sign * Infinity : NaN;

    return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

/**
 * Converts a number to bfloat16 as ggml's `ggml_compute_fp32_to_bf16` does: first to float32, then round to nearest
 * even on the upper 16 bits (overflowing to infinity); NaN keeps its upper bits and is forced quiet (bit 6 set).
 * @param value - the number to convert
 * @returns the bfloat16 bit pattern (0 to 0xFFFF)
 */
export function f32ToBf16(value: number): number {
    const bits = float32Bits(value);
    if ((bits & 0x7fffffff) > 0x7f800000)
        return (bits >>> 16) | 0x40;

    const lowestKeptBit = (bits >>> 16) & 1;
    return Math.floor((bits + 0x7fff + lowestKeptBit) / 0x10000);
}

/**
 * Converts a bfloat16 bit pattern to its value (exact: the bits are the upper half of a float32).
 * @param bf16 - bfloat16 bits (0 to 0xFFFF)
 */
export function bf16ToF32(bf16: number): number {
    scratchBits[0] = bf16 << 16;
    return scratchFloat[0];
}

let f16Table: Uint32Array | undefined;

/** float32 bits of every float16; a NaN keeps its payload (moved up 13 bits) and becomes quiet, as in ggml. */
function float16ToFloat32BitsTable(): Uint32Array {
    if (f16Table === undefined) {
        f16Table = new Uint32Array(0x10000);
        for (let half = 0; half < 0x10000; half++) {
            const isNaN = (half & 0x7c00) === 0x7c00 && (half & 0x3ff) !== 0;
            f16Table[half] = isNaN ? (((half & 0x8000) << 16) | 0x7fc00000 | ((half & 0x3ff) << 13)) >>> 0 : float32Bits(f16ToF32(half));
        }
    }

    return f16Table;
}

/** A view of `bytes` as elements of `Type`, copying only when the bytes are not aligned for it. */
function viewAs<T extends Uint16Array | Uint32Array>(bytes: Uint8Array, Type: {new (buffer: ArrayBufferLike, offset: number, length: number): T; BYTES_PER_ELEMENT: number}): T {
    const size = Type.BYTES_PER_ELEMENT;
    const aligned = bytes.byteOffset % size === 0 ? bytes : Uint8Array.prototype.slice.call(bytes);
    return new Type(aligned.buffer, aligned.byteOffset, aligned.length / size);
}

function checkWholeElements(bytes: Uint8Array, unitBytes: number, unitName: string): void {
    if (bytes.length % unitBytes !== 0)
        throw new GgmlShapeError(`Expected a multiple of ${unitBytes} bytes of ${unitName} data but got ${bytes.length}`);
}

/**
 * Quantizes float32 values to Q8_0 exactly as ggml's `quantize_row_q8_0_ref`: per block of 32, d = amax / 127 in
 * float32, id = 1/d (0 when d is 0), each quant = roundf(x · id) (half away from zero), d stored as float16.
 * @param values - a multiple of 32 finite values
 * @returns the Q8_0 blocks, 34 bytes per 32 values
 * @throws {GgmlShapeError} when the count is not a multiple of 32
 * @throws {QuantNonFiniteError} for a NaN or infinity (ggml's result for those is undefined behaviour in C)
 */
export function quantizeQ8_0(values: Float32Array): Buffer {
    if (values.length % Q8_0_BLOCK_SIZE !== 0)
        throw new GgmlShapeError(`Expected a multiple of ${Q8_0_BLOCK_SIZE} values to quantize to Q8_0 but got ${values.length}`);

    const out = Buffer.alloc((values.length / Q8_0_BLOCK_SIZE) * Q8_0_BLOCK_BYTES);
    for (let start = 0, at = 0; start < values.length; start += Q8_0_BLOCK_SIZE, at += Q8_0_BLOCK_BYTES) {
        let amax = 0;
        for (let index = start; index < start + Q8_0_BLOCK_SIZE; index++) {
            const value = values[index];
            if (!Number.isFinite(value))
                throw new QuantNonFiniteError(`Expected finite values to quantize to Q8_0 but got ${value} at index ${index}`);

            amax = Math.max(amax, Math.abs(value));
        }
        const d = Math.fround(amax / 127);
        const id = d === 0 ? 0 : Math.fround(1 / d);
        out.writeUInt16LE(f32ToF16(d), at);
        for (let j = 0; j < Q8_0_BLOCK_SIZE; j++) {
            const scaled = Math.fround(values[start + j] * id);
            const rounded = Math.floor(Math.abs(scaled) + 0.5);
            out[at + 2 + j] = (scaled < 0 ? -rounded : rounded) & 0xff;
        }
    }

    return out;
}

/**
 * Dequantizes Q8_0 blocks as ggml does: each value = float32(d) · quant, in float32.
 * @param bytes - whole Q8_0 blocks of 34 bytes
 * @throws {GgmlShapeError} when the byte count is not a multiple of 34
 */
export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
    checkWholeElements(bytes, Q8_0_BLOCK_BYTES, "Q8_0");
    const out = new Float32Array((bytes.length / Q8_0_BLOCK_BYTES) * Q8_0_BLOCK_SIZE);
    for (let at = 0, index = 0; at < bytes.length; at += Q8_0_BLOCK_BYTES) {
        const d = f16ToF32(bytes[at] | (bytes[at + 1] << 8));
        for (let j = 0; j < Q8_0_BLOCK_SIZE; j++)
            out[index++] = d * ((bytes[at + 2 + j] << 24) >> 24);
    }

    return out;
}

/**
 * Converts float32 values to the bytes of a ggml tensor of type `type` (little-endian).
 * @param values - the values, in ggml element order
 * @param type - F32, F16, BF16 or Q8_0
 * @returns the tensor data (for F32, a view of the memory of `values`)
 * @throws {GgmlTypeError} for another type
 * @throws {GgmlShapeError | QuantNonFiniteError} from {@link quantizeQ8_0}
 * @example
 * const data = quantize(weights, GgmlType.Q8_0);
 * await writer.writeTensorData("blk.0.attn_q.weight", data);
 */
export function quantize(values: Float32Array, type: GgmlType): Buffer {
    switch (type) {
        case GgmlType.F32:
            return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
        case GgmlType.F16:
        case GgmlType.BF16: {
            const convert = type === GgmlType.F16 ? f32ToF16 : f32ToBf16;
            const out = new Uint16Array(values.length);
            for (let index = 0; index < values.length; index++)
                out[index] = convert(values[index]);

            return Buffer.from(out.buffer);
        }
        case GgmlType.Q8_0:
            return quantizeQ8_0(values);
        default:
            throw new GgmlTypeError(`Expected F32, F16, BF16 or Q8_0 to quantize to but got ${ggmlTypeName(type)}`);
    }
}

/**
 * Converts the bytes of a ggml tensor of type `type` to float32 values, bit for bit as ggml does (exact for F32, F16
 * and BF16; an F16 NaN keeps its payload and becomes quiet).
 * @param bytes - the tensor data (any alignment)
 * @param type - F32, F16, BF16 or Q8_0
 * @throws {GgmlTypeError} for another type
 * @throws {GgmlShapeError} when the byte count is not a whole number of elements or blocks
 */
export function dequantize(bytes: Uint8Array, type: GgmlType): Float32Array {
    switch (type) {
        case GgmlType.F32:
            checkWholeElements(bytes, 4, "F32");
            return new Float32Array(viewAs(bytes, Uint32Array).slice().buffer);
        case GgmlType.F16: {
            checkWholeElements(bytes, 2, "F16");
            const table = float16ToFloat32BitsTable();
            const halves = viewAs(bytes, Uint16Array);
            const out = new Uint32Array(halves.length);
            for (let index = 0; index < halves.length; index++)
                out[index] = table[halves[index]];

            return new Float32Array(out.buffer);
        }
        case GgmlType.BF16: {
            checkWholeElements(bytes, 2, "BF16");
            const halves = viewAs(bytes, Uint16Array);
            const out = new Uint32Array(halves.length);
            for (let index = 0; index < halves.length; index++)
                out[index] = halves[index] << 16;

            return new Float32Array(out.buffer);
        }
        case GgmlType.Q8_0:
            return dequantizeQ8_0(bytes);
        default:
            throw new GgmlTypeError(`Expected F32, F16, BF16 or Q8_0 to dequantize from but got ${ggmlTypeName(type)}`);
    }
}
