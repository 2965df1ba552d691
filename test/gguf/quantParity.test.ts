import t from "tap";
import {GgmlType, quantizeQ8_0} from "../../gguf/index.js";
import {loadLlamaRuntime} from "../../src/index.js";

// The converter's q8_0 must be what ggml itself produces: compare with ggml_quantize_chunk through the addon.
t.test("quantizeQ8_0 is bit-exact with ggml's own q8_0 quantizer", async (t) => {
    const {addon} = await loadLlamaRuntime({gpu: false});
    let seed = 12345;
    const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const rows = 64, perRow = 256;
    const data = new Float32Array(rows * perRow);
    for (let i = 0; i < data.length; i++) {
        const scale = 10 ** (Math.floor(random() * 12) - 6);
        data[i] = (random() - 0.5) * scale;
    }
    data.fill(0, 0, 32);                    // an all-zero block
    data.fill(1.5, 32, 64);                 // a constant block
    for (let i = 64; i < 96; i++)           // exact .5 ties after scaling
        data[i] = (i - 80) * 0.5;
    data[100] = 3.4028234663852886e38;      // float max
    data[101] = -3.4028234663852886e38;
    data[128] = 1e-40;                      // subnormal with normal neighbours

    const ours = quantizeQ8_0(data);
    const ggml = addon.quantizeRows(GgmlType.Q8_0, data, perRow);
    t.equal(ours.length, ggml.length, "same size");
    t.ok(Buffer.from(ours).equals(Buffer.from(ggml)), "same bytes");
});

t.test("the addon refuses what ggml cannot quantize this way", async (t) => {
    const {addon} = await loadLlamaRuntime({gpu: false});
    t.throws(() => addon.quantizeRows(GgmlType.Q8_0, new Float32Array(48), 48), {
        message: "quantizeRows: row length 48 is not a multiple of the block size 32 of q8_0"
    });
    t.throws(() => addon.quantizeRows(GgmlType.IQ2_XXS, new Float32Array(256), 256), {
        message: "quantizeRows: ggml type iq2_xxs needs an importance matrix"
    });
    t.throws(() => addon.quantizeRows(9999, new Float32Array(32), 32), {message: "quantizeRows: unknown ggml type 9999"});
    t.throws(() => (addon.quantizeRows as (...args: unknown[]) => unknown)("q8_0", new Float32Array(32), 32), {name: "TypeError"});
});
