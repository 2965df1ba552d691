// The Qwen3 backbone as config.json describes it: validated hyperparameters, the Hugging Face tensor names and the
// shapes they must have, and their llama.cpp (`qwen3` architecture) names.

import {CheckpointConfigError} from "./errors.js";

/** A parsed config.json: the raw JSON object. */
export type HfConfig = Readonly<Record<string, unknown>>;

/** The hyperparameters of a Qwen3 backbone, read from config.json. */
export interface Qwen3Hparams {
    readonly hiddenSize: number;
    readonly numHiddenLayers: number;
    readonly numAttentionHeads: number;
    readonly numKeyValueHeads: number;
    /** `head_dim`, or hidden_size / num_attention_heads when config.json has none. */
    readonly headDim: number;
    readonly intermediateSize: number;
    readonly vocabSize: number;
    readonly maxPositionEmbeddings: number;
    readonly rmsNormEps: number;
    readonly ropeTheta: number;
    readonly tieWordEmbeddings: boolean;
}

/** llama.cpp's own bound (llama-model.cpp 1226, GGML_ASSERT(n_layer > 0 && n_layer <= 512)). */
const MAX_LAYERS = {value: 512, why: "llama.cpp's limit on layers"};

/**
 * Read a positive integer field of config.json.
 * @param config - the parsed config.json
 * @param key - the field name
 * @throws {CheckpointConfigError} when the field is absent or not a positive integer
 */
export function configInteger(config: HfConfig, key: string, max?: {value: number, why: string}): number {
    const value = config[key];
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0)
        throw new CheckpointConfigError(`Expected a positive integer for "${key}" in config.json but got ${JSON.stringify(value)}`);
    if (max !== undefined && value > max.value)
        throw new CheckpointConfigError(`Expected at most ${max.value} (${max.why}) for "${key}" in config.json but got ${value}`);

    return value;
}

/**
 * Read a positive number field of config.json.
 * @param config - the parsed config.json
 * @param key - the field name
 * @throws {CheckpointConfigError} when the field is absent or not a positive finite number
 */
export function configNumber(config: HfConfig, key: string): number {
    const value = config[key];
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0)
        throw new CheckpointConfigError(`Expected a positive number for "${key}" in config.json but got ${JSON.stringify(value)}`);

    return value;
}

/**
 * The Qwen3 hyperparameters of a config.json.
 * @param config - the parsed config.json
 * @throws {CheckpointConfigError} naming the first field that is absent or invalid, or when the head counts do not
 *   divide (num_attention_heads must be a multiple of num_key_value_heads)
 */
export function readQwen3Hparams(config: HfConfig): Qwen3Hparams {
    const hiddenSize = configInteger(config, "hidden_size");
    const numAttentionHeads = configInteger(config, "num_attention_heads");
    const numKeyValueHeads = configInteger(config, "num_key_value_heads");
    if (numAttentionHeads % numKeyValueHeads !== 0) {
        throw new CheckpointConfigError(
            `Expected "num_attention_heads" (${numAttentionHeads}) in config.json to be a multiple of "num_key_value_heads" but got ${numKeyValueHeads}`
        );
    }
    const tie = config.tie_word_embeddings ?? false;
    if (typeof tie !== "boolean")
        throw new CheckpointConfigError(`Expected a boolean for "tie_word_embeddings" in config.json but got ${JSON.stringify(tie)}`);

    return {
        hiddenSize,
        // the tensor list is built from it before any shape is checked: a hostile 1e9 ran the converter out of memory
        numHiddenLayers: configInteger(config, "num_hidden_layers", MAX_LAYERS),
        numAttentionHeads,
        numKeyValueHeads,
        headDim: config.head_dim === undefined ? hiddenSize / numAttentionHeads : configInteger(config, "head_dim"),
        intermediateSize: configInteger(config, "intermediate_size"),
        vocabSize: configInteger(config, "vocab_size"),
        maxPositionEmbeddings: configInteger(config, "max_position_embeddings"),
        rmsNormEps: configNumber(config, "rms_norm_eps"),
        ropeTheta: configNumber(config, "rope_theta"),
        tieWordEmbeddings: tie
    };
}

/** A backbone tensor: its Hugging Face name, llama.cpp name and PyTorch shape (outermost first). */
export interface BackboneTensor {
    readonly hfName: string;
    readonly ggufName: string;
    readonly shape: readonly number[];
}

/**
 * Every tensor of a Qwen3 backbone in llama.cpp's order (embedding, blocks, output norm, LM head), with the shape
 * config.json implies.
 * @param hparams - the backbone hyperparameters
 * @param includeLmHead - whether to list the LM head (`lm_head.weight` → `output.weight`): checkpoints with tied
 *   embeddings usually have none, and llama.cpp then reads the token embedding in its place
 */
export function qwen3BackboneTensors(hparams: Qwen3Hparams, includeLmHead: boolean): BackboneTensor[] {
    const {hiddenSize, headDim, intermediateSize, vocabSize} = hparams;
    const qSize = hparams.numAttentionHeads * headDim;
    const kvSize = hparams.numKeyValueHeads * headDim;
    const tensors: BackboneTensor[] = [{hfName: "model.embed_tokens.weight", ggufName: "token_embd.weight", shape: [vocabSize, hiddenSize]}];
    for (let i = 0; i < hparams.numHiddenLayers; i++) {
        const layer = (hfSuffix: string, ggufSuffix: string, shape: number[]): BackboneTensor => ({
            hfName: `model.layers.${i}.${hfSuffix}.weight`,
            ggufName: `blk.${i}.${ggufSuffix}.weight`,
            shape
        });
        tensors.push(
            layer("input_layernorm", "attn_norm", [hiddenSize]),
            layer("self_attn.q_proj", "attn_q", [qSize, hiddenSize]),
            layer("self_attn.q_norm", "attn_q_norm", [headDim]),
            layer("self_attn.k_proj", "attn_k", [kvSize, hiddenSize]),
            layer("self_attn.k_norm", "attn_k_norm", [headDim]),
            layer("self_attn.v_proj", "attn_v", [kvSize, hiddenSize]),
            layer("self_attn.o_proj", "attn_output", [hiddenSize, qSize]),
            layer("post_attention_layernorm", "ffn_norm", [hiddenSize]),
            layer("mlp.gate_proj", "ffn_gate", [intermediateSize, hiddenSize]),
            layer("mlp.up_proj", "ffn_up", [intermediateSize, hiddenSize]),
            layer("mlp.down_proj", "ffn_down", [hiddenSize, intermediateSize])
        );
    }
    tensors.push({hfName: "model.norm.weight", ggufName: "output_norm.weight", shape: [hiddenSize]});
    if (includeLmHead)
        tensors.push({hfName: "lm_head.weight", ggufName: "output.weight", shape: [vocabSize, hiddenSize]});

    return tensors;
}
