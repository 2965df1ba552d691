import {createHash} from "node:crypto";
import t from "tap";
import {
    GgmlShapeError, GgmlType, GgmlTypeError, QuantNonFiniteError, bf16ToF32, dequantize, dequantizeQ8_0, f16ToF32,
    f32ToBf16, f32ToF16, quantize, quantizeQ8_0
} from "../../gguf/index.js";
import {expectError} from "./ggufTestKit.js";

// The expected hashes and blocks below were computed by ggml itself (quantize_row_q8_0_ref through
// ggml_quantize_chunk, ggml_fp32_to_fp16_row, ggml_fp32_to_bf16_row, dequantize_row_q8_0 of node-llama-cpp's
// libggml-base.so, called through Python ctypes) on the same deterministic inputs, and agree with gguf-py's numpy
// implementation (gguf/quants.py) wherever that one is defined.

t.test("refuses what cannot be converted", async (t) => {
    await expectError(t, () => quantizeQ8_0(new Float32Array(33)), GgmlShapeError, "Expected a multiple of 32 values to quantize to Q8_0 but got 33");
    await expectError(t, () => quantizeQ8_0(new Float32Array(32).fill(NaN, 5, 6)), QuantNonFiniteError,
        "Expected finite values to quantize to Q8_0 but got NaN at index 5");
    await expectError(t, () => quantizeQ8_0(new Float32Array(64).fill(-Infinity, 40, 41)), QuantNonFiniteError,
        "Expected finite values to quantize to Q8_0 but got -Infinity at index 40");
    await expectError(t, () => dequantizeQ8_0(new Uint8Array(35)), GgmlShapeError, "Expected a multiple of 34 bytes of Q8_0 data but got 35");
    await expectError(t, () => quantize(new Float32Array(256), GgmlType.Q4_K), GgmlTypeError, "Expected F32, F16, BF16 or Q8_0 to quantize to but got Q4_K");
    await expectError(t, () => dequantize(new Uint8Array(4), 99 as GgmlType), GgmlTypeError, "Expected F32, F16, BF16 or Q8_0 to dequantize from but got type 99");
    await expectError(t, () => dequantize(new Uint8Array(3), GgmlType.F16), GgmlShapeError, "Expected a multiple of 2 bytes of F16 data but got 3");
    await expectError(t, () => dequantize(new Uint8Array(6), GgmlType.F32), GgmlShapeError, "Expected a multiple of 4 bytes of F32 data but got 6");
});

const float32FromBits = (bits: number): number => new Float32Array(new Uint32Array([bits]).buffer)[0];

t.test("f32 → f16 rounds to nearest even like ggml", async (t) => {
    const cases: [string, number, number][] = [
        ["one", 1, 0x3c00], ["minus two", -2, 0xc000], ["zero", 0, 0x0000], ["negative zero", -0, 0x8000],
        ["largest finite", 65504, 0x7bff], ["just below the overflow tie", 65519.99609375, 0x7bff],
        ["overflow tie 65520 → infinity", 65520, 0x7c00], ["huge → infinity", 1e30, 0x7c00], ["-infinity", -Infinity, 0xfc00],
        ["NaN → quiet NaN", NaN, 0x7e00], ["negative NaN keeps its sign", float32FromBits(0xffc00001), 0xfe00],
        ["signalling NaN → quiet NaN", float32FromBits(0x7f800001), 0x7e00],
        ["tie 1 + 2^-11 → even 1", 1 + 2 ** -11, 0x3c00], ["tie 1 + 3·2^-11 → even 1 + 2^-9", 1 + 3 * 2 ** -11, 0x3c02],
        ["above the tie rounds up", 1 + 2 ** -11 + 2 ** -20, 0x3c01],
        ["smallest normal 2^-14", 2 ** -14, 0x0400], ["smallest subnormal 2^-24", 2 ** -24, 0x0001],
        ["tie 2^-25 → even 0", 2 ** -25, 0x0000], ["3·2^-25 → 2 units (tie to even)", 3 * 2 ** -25, 0x0002],
        ["above half a unit → 1 unit", 2 ** -25 + 2 ** -40, 0x0001], ["largest subnormal rounds up to normal", 2 ** -14 - 2 ** -30, 0x0400],
        ["a float32 subnormal → 0", 1e-40, 0x0000]
    ];
    for (const [name, value, half] of cases)
        t.equal(f32ToF16(value), half, `${name}: 0x${half.toString(16)}`);
});

t.test("f32 → bf16 rounds to nearest even and forces NaN quiet like ggml", async (t) => {
    const cases: [string, number, number][] = [
        ["one", 1, 0x3f80], ["negative zero", -0, 0x8000], ["infinity", Infinity, 0x7f80],
        ["tie 1 + 2^-8 → even 1", 1 + 2 ** -8, 0x3f80], ["tie 1 + 3·2^-8 → even", 1 + 3 * 2 ** -8, 0x3f82],
        ["above the tie rounds up", 1 + 2 ** -8 + 2 ** -20, 0x3f81],
        ["largest float32 overflows to infinity", 3.4028234663852886e38, 0x7f80],
        ["quiet NaN", float32FromBits(0x7fc00000), 0x7fc0], ["signalling NaN is forced quiet", float32FromBits(0x7f800001), 0x7fc0],
        ["negative NaN payload is kept", float32FromBits(0xffa00000), 0xffe0], ["subnormal", float32FromBits(0x00018000), 0x0002]
    ];
    for (const [name, value, bf16] of cases)
        t.equal(f32ToBf16(value), bf16, `${name}: 0x${bf16.toString(16)}`);
});

t.test("every float16 and bfloat16 widens exactly and narrows back to itself", async (t) => {
    const halves = new Uint16Array(0x10000).map((_, index) => index);
    const widenedF16 = dequantize(new Uint8Array(halves.buffer), GgmlType.F16);
    const widenedBf16 = dequantize(new Uint8Array(halves.buffer), GgmlType.BF16);
    const bits = new Uint32Array(widenedF16.buffer);
    let f16Mismatches = 0;
    let bf16Mismatches = 0;
    for (let half = 0; half < 0x10000; half++) {
        const isF16NaN = (half & 0x7c00) === 0x7c00 && (half & 0x3ff) !== 0;
        const f16Back = isF16NaN ? ((half & 0x8000) | 0x7e00) : half;
        if (f32ToF16(widenedF16[half]) !== f16Back || (!isF16NaN && !Object.is(f16ToF32(half), widenedF16[half])))
            f16Mismatches++;
        if (isF16NaN && bits[half] !== ((((half & 0x8000) << 16) | 0x7fc00000 | ((half & 0x3ff) << 13)) >>> 0))
            f16Mismatches++;

        const isBf16NaN = (half & 0x7f80) === 0x7f80 && (half & 0x7f) !== 0;
        if (f32ToBf16(widenedBf16[half]) !== (isBf16NaN ? half | 0x40 : half) || (!isBf16NaN && !Object.is(bf16ToF32(half), widenedBf16[half])))
            bf16Mismatches++;
    }
    t.equal(f16Mismatches, 0, "f16: f16ToF32, dequantize and f32ToF16 agree on all 65536 patterns (NaN payloads kept, made quiet)");
    t.equal(bf16Mismatches, 0, "bf16: bf16ToF32, dequantize and f32ToBf16 agree on all 65536 patterns");
    t.equal(f16ToF32(0x0001), 2 ** -24);
    t.equal(f16ToF32(0xfbff), -65504);
});

/** xorshift32: the same sequence as the Python script that produced the reference hashes. */
function xorshift32(seed: number): () => number {
    let state = seed >>> 0;
    return () => {
        state = (state ^ (state << 13)) >>> 0;
        state = (state ^ (state >>> 17)) >>> 0;
        state = (state ^ (state << 5)) >>> 0;
        return state;
    };
}

const sha256 = (data: ArrayBufferView): string => createHash("sha256").update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)).digest("hex");

/** 2048 random blocks at scales 2^-40 … 2^20, then six edge-case blocks. */
function q8Input(): Float32Array {
    const next = xorshift32(0x9e3779b9);
    const values: number[] = [];
    for (let index = 0; index < 2048 * 32; index++)
        values.push((((next() % 200001) - 100000) / 1000) * 2 ** ((Math.floor(index / 32) % 61) - 40));

    const ties = [127, ...Array.from({length: 31}, (_, k) => k - 16 + 0.5)];
    values.push(...new Array(32).fill(0));
    values.push(...ties, ...ties.map((value) => -value));
    values.push(3.4028234663852886e38, -3.4028234663852886e38, 1, -1, ...new Array(28).fill(0));
    values.push(65520 * 127, ...Array.from({length: 31}, (_, k) => (k - 15) * 1000));
    values.push(...Array.from({length: 32}, (_, k) => (k - 16) * 2 ** -140));
    return new Float32Array(values);
}

const block = (quantized: Buffer, index: number): string => quantized.subarray(index * 34, (index + 1) * 34).toString("hex");

t.test("Q8_0 quantization is bit-exact with ggml's quantize_row_q8_0_ref", async (t) => {
    const input = q8Input();
    t.equal(sha256(input), "490bbdb7b30e42b06b48efd81459f892628e8d1c4423fde67a53f5a51415791b", "the input matches the reference script's");
    const quantized = quantizeQ8_0(input);
    t.equal(sha256(quantized), "4ebae08e6a08fac08323146df324893b6b6c84ae5f3d06b140b5daf23359b691", "all 2054 blocks match ggml");
    t.equal(sha256(dequantizeQ8_0(quantized)), "83e23c47b77fba5875126a07805d5c45e7b5d8e17e3a266e153172beb95648ec", "dequantization matches ggml");

    t.equal(block(quantized, 2048), "0".repeat(68), "all zeros: d = 0, quants 0");
    t.equal(block(quantized, 2049), "003c7ff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff0102030405060708090a0b0c0d0e0f",
        "d = 1 (0x3C00); ties k + 0.5 round away from zero (roundf), unlike numpy's round-half-even");
    t.equal(block(quantized, 2050), "003c81100f0e0d0c0b0a090807060504030201fffefdfcfbfaf9f8f7f6f5f4f3f2f1", "negated ties mirror");
    t.equal(block(quantized, 2051), `007c7f81${"0".repeat(60)}`, "±FLT_MAX: d overflows float16 to infinity, quants ±127");
    t.equal(block(quantized, 2052), `007c7f${"0".repeat(62)}`, "amax = 65520·127: d rounds to float16 infinity");
    t.equal(block(quantized, 2053), "0".repeat(68), "float32 subnormals: d is 0 in float16 and 1/d overflows; ggml stores 0 quants");
});

t.test("f32 → f16 and bf16 are bit-exact with ggml on random bit patterns, NaNs included", async (t) => {
    const next = xorshift32(12345);
    const bits = new Uint32Array(1 << 16).map(() => next());
    const floats = new Float32Array(bits.buffer);
    t.equal(sha256(bits), "53cd9bdb9c2e369c20ea8f4076bd2c3dfdbc68252b6218e315fe2afacff78196", "the input matches the reference script's");
    t.equal(sha256(quantize(floats, GgmlType.F16)), "c195903560c65956ae51cdd62e4b1f4e8b184685235293c9e2e5f0c872480dac", "F16 matches ggml_fp32_to_fp16_row");
    t.equal(sha256(quantize(floats, GgmlType.BF16)), "8131d4be1c88ea461b678221f068b26035f940b49836a650a64eb22b622d9978", "BF16 matches ggml_fp32_to_bf16_row");
});

t.test("Q8_0 dequantization error stays within half a quantization step", async (t) => {
    const input = q8Input().subarray(0, 2048 * 32);
    const output = dequantizeQ8_0(quantizeQ8_0(input));
    let worst = 0;
    let checked = 0;
    for (let start = 0; start < input.length; start += 32) {
        const values = input.subarray(start, start + 32);
        const amax = Math.max(...values.map(Math.abs));
        const d = Math.fround(amax / 127);
        const stored = f16ToF32(f32ToF16(d));
        if (stored === Infinity)
            continue; // amax beyond 65504 · 127: the scale does not fit float16, as in ggml

        checked++;
        // Half a step of the float32 scale, plus what rounding the scale to float16 moves the largest quant.
        const bound = 0.5 * d + 127 * Math.abs(d - stored) + 1e-6 * amax;
        for (let j = 0; j < 32; j++)
            worst = Math.max(worst, Math.abs(values[j] - output[start + j]) / bound);
    }
    t.ok(checked > 1900, `${checked} blocks have a float16 scale`);
    t.ok(worst <= 1, `worst error is ${worst.toFixed(3)} of the bound`);
});

t.test("F32, F16 and BF16 round-trip through quantize and dequantize, from unaligned bytes too", async (t) => {
    const values = new Float32Array([0, -0, 1, -2.5, 65504, 2 ** -24, 0.333251953125, 1e-3]);
    for (const type of [GgmlType.F32, GgmlType.F16, GgmlType.BF16]) {
        const data = quantize(values, type);
        const unaligned = new Uint8Array(data.length + 1);
        unaligned.set(data, 1);
        const back = dequantize(unaligned.subarray(1), type);
        const expected = type === GgmlType.F32 ? [...values]
            : [...values].map((value) => type === GgmlType.F16 ? f16ToF32(f32ToF16(value)) : bf16ToF32(f32ToBf16(value)));
        t.ok([...back].every((value, index) => Object.is(value, expected[index])), `${GgmlType[type]} reads back exactly`);
    }
    t.equal(quantize(values, GgmlType.F16).length, 16, "F16 takes 2 bytes per value");
    t.same([...dequantize(quantize(values, GgmlType.F16), GgmlType.F16)].slice(0, 6), [0, -0, 1, -2.5, 65504, 2 ** -24], "representable values are exact");
});
