// Checks shared by the converter tests: a converted GGUF's tensors against the checkpoint they came from.

import type {Test} from "tap";
import {SafetensorsCheckpoint} from "../../gguf/convert/hfCheckpoint.js";
import {quantize} from "../../gguf/quant.js";
import {readTensorData} from "../../gguf/readGguf.js";
import type {GgufFile} from "../../gguf/readGguf.js";

/**
 * Assert that every tensor of `gguf` that comes from the checkpoint holds exactly the checkpoint's values encoded in the
 * tensor's type (bit for bit: for F32 and BF16 from a BF16 checkpoint this is the stored data itself), with the
 * PyTorch shape reversed.
 * @param t - the test
 * @param gguf - the converted file
 * @param hfDir - the checkpoint
 * @param sourceOf - the checkpoint tensor name of a GGUF tensor, or undefined for tensors with no source (placeholders)
 */
export async function assertTensorsFromCheckpoint(
    t: Test, gguf: GgufFile, hfDir: string, sourceOf: (ggufName: string) => string | undefined
): Promise<void> {
    const checkpoint = await SafetensorsCheckpoint.open(hfDir);
    let compared = 0;
    let mismatched: string[] = [];
    for (const tensor of gguf.tensors) {
        const source = sourceOf(tensor.name);
        if (source === undefined)
            continue;

        t.same(tensor.ne, [...checkpoint.tensorShape(source)].reverse(), `${tensor.name} has the reversed shape of ${source}`);
        const expected = quantize(await checkpoint.readTensorAsFloat32(source), tensor.type);
        if (!expected.equals(await readTensorData(gguf.path, tensor)))
            mismatched = [...mismatched, tensor.name];
        compared++;
    }
    t.same(mismatched, [], `${compared} tensors hold the checkpoint's values exactly`);
}

// llama.cpp's converter (gguf-py tensor_mapping.py) maps the Qwen3 names one to one.
const HF_NAMES: Readonly<Record<string, string>> = {
    "token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head", "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"
};

/**
 * The Hugging Face name of a llama.cpp `qwen3` tensor (written down independently of the converter's table).
 * @param ggufName - e.g. `blk.0.attn_q.weight`
 * @returns e.g. `model.layers.0.self_attn.q_proj.weight`
 */
export function hfTensorName(ggufName: string): string {
    const block = /^blk\.(\d+)\.(.+)\.weight$/.exec(ggufName);
    return block === null ?
        `${HF_NAMES[ggufName.replace(/\.weight$/, "")]}.weight` :
        `model.layers.${block[1]}.${HF_NAMES[block[2]]}.weight`;
}
