import t from "tap";
import {
    GGML_TYPE_LAYOUTS, GgmlShapeError, GgmlType, GgmlTypeError, GgufValueType, LlamaFileType, ggmlTypeLayout,
    ggmlTypeName, isGgmlType, isGgufValueType, tensorByteSize
} from "../../gguf/index.js";
import {expectError} from "./ggufTestKit.js";

t.test("refuses unknown types and shapes that do not fit the type", async (t) => {
    await expectError(t, () => tensorByteSize(4 as GgmlType, [32]), GgmlTypeError, "Expected a ggml type id for a tensor but got 4");
    await expectError(t, () => ggmlTypeLayout(43, 'tensor "x"'), GgmlTypeError, 'Expected a ggml type id for tensor "x" but got 43');
    await expectError(t, () => tensorByteSize(GgmlType.Q4_K, [255, 2]), GgmlShapeError,
        "Expected the row length (ne[0]) of a tensor to be a multiple of 256 (the block size of Q4_K) but got 255");
    await expectError(t, () => tensorByteSize(GgmlType.F32, [4, -1]), GgmlShapeError,
        "Expected dimension 1 of a tensor to be a non-negative integer but got -1");
    await expectError(t, () => tensorByteSize(GgmlType.F32, [2 ** 30, 2 ** 30, 2 ** 30]), GgmlShapeError,
        "Expected the element count of a tensor to be at most 9007199254740991 but got 1.2379400392853803e+27");
});

t.test("type ids and block layouts are ggml's", async (t) => {
    // [id, block size, type size] of every type, as ggml_blck_size / ggml_type_size of libggml-base report them.
    const fromLibggml = [
        [0, 1, 4], [1, 1, 2], [2, 32, 18], [3, 32, 20], [6, 32, 22], [7, 32, 24], [8, 32, 34], [9, 32, 36], [10, 256, 84],
        [11, 256, 110], [12, 256, 144], [13, 256, 176], [14, 256, 210], [15, 256, 292], [16, 256, 66], [17, 256, 74],
        [18, 256, 98], [19, 256, 50], [20, 32, 18], [21, 256, 110], [22, 256, 82], [23, 256, 136], [24, 1, 1], [25, 1, 2],
        [26, 1, 4], [27, 1, 8], [28, 1, 8], [29, 256, 56], [30, 1, 2], [34, 256, 54], [35, 256, 66], [39, 32, 17],
        [40, 64, 36], [41, 128, 18], [42, 64, 18]
    ];
    t.same(Object.entries(GGML_TYPE_LAYOUTS).map(([id, {blockSize, typeSize}]) => [Number(id), blockSize, typeSize]), fromLibggml);
    t.same([GgmlType.F32, GgmlType.F16, GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q6_K, GgmlType.I32, GgmlType.BF16, GgmlType.Q2_0], [0, 1, 2, 8, 14, 26, 30, 42]);
    t.same([4, 5, 31, 32, 33, 36, 37, 38, 43, -1, 1.5].filter(isGgmlType), [], "removed and out-of-range ids are not types");
    t.equal(ggmlTypeName(GgmlType.Q8_0), "Q8_0");
    t.equal(ggmlTypeName(31), "type 31");
});

t.test("tensor byte sizes", async (t) => {
    t.equal(tensorByteSize(GgmlType.F32, [1024, 3]), 12288);
    t.equal(tensorByteSize(GgmlType.BF16, [1024, 151936]), 311164928);
    t.equal(tensorByteSize(GgmlType.Q8_0, [1024, 3]), 3 * 32 * 34);
    t.equal(tensorByteSize(GgmlType.Q4_K, [4096, 2]), 2 * 16 * 144);
    t.equal(tensorByteSize(GgmlType.F16, [0, 5]), 0, "an empty tensor takes no bytes");
    t.equal(tensorByteSize(GgmlType.F32, []), 4, "a scalar has one element");
});

t.test("metadata value types and llama.cpp file types", async (t) => {
    t.same([GgufValueType.UINT8, GgufValueType.FLOAT32, GgufValueType.BOOL, GgufValueType.STRING, GgufValueType.ARRAY, GgufValueType.UINT64, GgufValueType.FLOAT64],
        [0, 6, 7, 8, 9, 10, 12]);
    t.same([-1, 0, 12, 13, 2.5].map(isGgufValueType), [false, true, true, false, false]);
    t.same([LlamaFileType.ALL_F32, LlamaFileType.MOSTLY_F16, LlamaFileType.MOSTLY_Q8_0, LlamaFileType.MOSTLY_BF16], [0, 1, 7, 32]);
});
