// The config.json of generated Hugging Face checkpoints: Qwen3 backbone sizes (tiny test models and the real 0.6B / 4B
// shapes) and the two Qwen3Guard architectures, with the field names and label-map format of the published checkpoints.

/** The sizes of a Qwen3 backbone, in the config.json field names' meaning. */
export interface Qwen3Dimensions {
    readonly hiddenSize: number;
    readonly numHiddenLayers: number;
    readonly numAttentionHeads: number;
    readonly numKeyValueHeads: number;
    readonly headDim: number;
    readonly intermediateSize: number;
    readonly vocabSize: number;
    readonly tieWordEmbeddings: boolean;
    /** `guard_inner_size` of the Stream head (ignored for Gen). */
    readonly guardInnerSize: number;
}

/** The tiny test backbone: 151936 tokens so that the real Qwen3 tokenizer fits. */
export const TINY_DIMENSIONS: Qwen3Dimensions = {
    hiddenSize: 64,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 16,
    intermediateSize: 128,
    vocabSize: 151936,
    tieWordEmbeddings: true,
    guardInnerSize: 32
};

/** Qwen3Guard 0.6B (QWEN3GUARD.md size table; guard_inner_size 512 as published). */
export const QWEN3_0_6B_DIMENSIONS: Qwen3Dimensions = {
    hiddenSize: 1024,
    numHiddenLayers: 28,
    numAttentionHeads: 16,
    numKeyValueHeads: 8,
    headDim: 128,
    intermediateSize: 3072,
    vocabSize: 151936,
    tieWordEmbeddings: true,
    guardInnerSize: 512
};

/** Qwen3Guard 4B. Its guard_inner_size is not published; 512 (as for 0.6B) stands in. */
export const QWEN3_4B_DIMENSIONS: Qwen3Dimensions = {
    hiddenSize: 2560,
    numHiddenLayers: 36,
    numAttentionHeads: 32,
    numKeyValueHeads: 8,
    headDim: 128,
    intermediateSize: 9728,
    vocabSize: 151936,
    tieWordEmbeddings: true,
    guardInnerSize: 512
};

/** Which of the two Qwen3Guard models a checkpoint is. */
export type GuardVariant = "gen" | "stream";

/** The `architectures` entry of each variant's config.json. */
export const HF_ARCHITECTURES: Readonly<Record<GuardVariant, string>> = {
    gen: "Qwen3ForCausalLM",
    stream: "Qwen3ForGuardModel"
};

/** Stream risk levels in head order (QWEN3GUARD.md §1). */
export const STREAM_RISK_LEVELS = ["Safe", "Unsafe", "Controversial"] as const;

/**
 * Stream response categories in head order, spelled as the official eval script does: the first carries literal
 * quote characters, which the converter must trim.
 */
export const STREAM_RESPONSE_CATEGORIES_RAW = [
    "\"Violent\"",
    "Sexual Content or Sexual Acts",
    "Suicide & Self-Harm",
    "Politically Sensitive Topics",
    "PII",
    "Copyright Violation",
    "Non-violent Illegal Acts",
    "Unethical Acts"
] as const;

/** Stream query categories in head order: the response categories plus Jailbreak. */
export const STREAM_QUERY_CATEGORIES_RAW = [...STREAM_RESPONSE_CATEGORIES_RAW, "Jailbreak"] as const;

/**
 * A config.json label map: `{"0": label0, "1": label1, ...}`.
 * @param labels - the labels in index order
 */
function labelMap(labels: readonly string[]): Record<string, string> {
    return Object.fromEntries(labels.map((label, index) => [String(index), label]));
}

/**
 * The config.json of a generated checkpoint, with the fields of the published Qwen3 / Qwen3Guard configs.
 * @param variant - `gen` (Qwen3ForCausalLM) or `stream` (Qwen3ForGuardModel with the head fields and label maps)
 * @param dimensions - the backbone (and Stream head) sizes
 * @param torchDtype - the `torch_dtype` field: the dtype the safetensors are stored in
 * @returns a JSON-serialisable object
 */
export function createHfConfig(variant: GuardVariant, dimensions: Qwen3Dimensions, torchDtype: "bfloat16" | "float16" | "float32"): Record<string, unknown> {
    const backbone = {
        architectures: [HF_ARCHITECTURES[variant]],
        attention_bias: false,
        attention_dropout: 0.0,
        bos_token_id: 151643,
        eos_token_id: 151645,
        head_dim: dimensions.headDim,
        hidden_act: "silu",
        hidden_size: dimensions.hiddenSize,
        initializer_range: 0.02,
        intermediate_size: dimensions.intermediateSize,
        max_position_embeddings: variant === "stream" ? 8192 : 32768,
        max_window_layers: dimensions.numHiddenLayers,
        model_type: "qwen3",
        num_attention_heads: dimensions.numAttentionHeads,
        num_hidden_layers: dimensions.numHiddenLayers,
        num_key_value_heads: dimensions.numKeyValueHeads,
        rms_norm_eps: 1e-6,
        rope_scaling: null,
        rope_theta: 1000000,
        sliding_window: null,
        tie_word_embeddings: dimensions.tieWordEmbeddings,
        torch_dtype: torchDtype,
        transformers_version: "4.55.0",
        use_cache: true,
        use_sliding_window: false,
        vocab_size: dimensions.vocabSize
    };
    if (variant === "gen")
        return backbone;

    return {
        ...backbone,
        auto_map: {AutoModel: "modeling_qwen3_guard.Qwen3ForGuardModel"},
        guard_inner_size: dimensions.guardInnerSize,
        num_risk_level: STREAM_RISK_LEVELS.length,
        num_category: STREAM_RESPONSE_CATEGORIES_RAW.length,
        num_query_risk_level: STREAM_RISK_LEVELS.length,
        num_query_category: STREAM_QUERY_CATEGORIES_RAW.length,
        response_risk_level_map: labelMap(STREAM_RISK_LEVELS),
        response_category_map: labelMap(STREAM_RESPONSE_CATEGORIES_RAW),
        query_risk_level_map: labelMap(STREAM_RISK_LEVELS),
        query_category_map: labelMap(STREAM_QUERY_CATEGORIES_RAW)
    };
}
