// A Stream checkpoint whose verdicts are known in advance, token by token.
//
// Design (hidden 128, so that the converter's Q1_0 placeholder LM head applies). Residual dimensions:
//   0 BIAS       1 in every token's embedding
//   1 UNSAFE     3 in the embedding of the response-unsafe triggers
//   2 CONTRO     3 in the embedding of the response-controversial triggers
//   3 QUERY      1 in the embedding of the query triggers
//   4 MEMORY     written by layer 0's attention: ≈ 3 at every position at or after a query trigger, else exactly 0
//   5…127        noise (uniform, standard deviation 0.25) in the embedding of every non-trigger token, read by nothing
// Every MLP down-projection and layer 1's output projection are zero, so the final hidden state is
// RMSNorm(embedding + memory). Layer 0, attention head 0 only: every query is the constant direction (q_proj reads
// BIAS into head dimension 7), keys and values are non-zero only for query triggers (k_proj and v_proj read QUERY),
// and k_norm scales dimension 7 by 7.5, so a query trigger's key scores 30 against any query and every other key 0:
// the softmax puts weight ≈ 1 (within e^-30 per token) on the triggers at or before the position. Dimension 7 pairs
// with dimension 15 in NEOX RoPE at the lowest frequency (θ^-14/16 ≈ 5.6e-6 rad per position), so the score does not
// depend on positions. o_proj writes the value (RMSNorm(trigger)[3] = 8) × 0.375 = 3 into MEMORY.
// The head reads only BIAS, UNSAFE and CONTRO (response path) or BIAS and MEMORY (query path), and since it applies
// RMSNorm after its pre-projection, only the ratios matter: a trigger's indicator is 3 × BIAS, far past the decision
// boundary (ratio 1), in every output type from f32 to q8_0.

import {createHfConfig, STREAM_QUERY_CATEGORIES_RAW, STREAM_RESPONSE_CATEGORIES_RAW, TINY_DIMENSIONS} from "./hfConfig.js";
import type {Qwen3Dimensions} from "./hfConfig.js";
import {normaliseLabel} from "../../gguf/convert/streamHead.js";
import {checkpointTensorShapes, randomTensorSpecs} from "./checkpointTensors.js";
import type {TensorSpec} from "./checkpointTensors.js";

/** The sizes of the planted Stream model. */
export const PLANTED_DIMENSIONS: Qwen3Dimensions = {...TINY_DIMENSIONS, hiddenSize: 128};

/** A trigger token: its text (as it appears mid-sentence, with the leading space) and its Qwen3 token id. */
export interface TriggerToken {
    readonly text: string;
    readonly id: number;
}

/** Tokens that the response head scores Unsafe, category {@link PLANTED_RESPONSE_UNSAFE_CATEGORY}. */
export const RESPONSE_UNSAFE_TRIGGERS: readonly TriggerToken[] = [{text: " bomb", id: 12764}, {text: " poison", id: 20476}];

/** Tokens that the response head scores Controversial, category {@link PLANTED_RESPONSE_CONTROVERSIAL_CATEGORY}. */
export const RESPONSE_CONTROVERSIAL_TRIGGERS: readonly TriggerToken[] = [{text: " protest", id: 8665}, {text: " election", id: 6223}];

/**
 * Tokens after which (themselves included) the query head scores Unsafe, category {@link PLANTED_QUERY_CATEGORY}: so the
 * `<|im_end|>` closing a user turn that contains one gets that prompt verdict.
 */
export const QUERY_TRIGGERS: readonly TriggerToken[] = [{text: " bypass", id: 30718}, {text: " DAN", id: 83410}];

const RESPONSE_UNSAFE_CATEGORY_INDEX = 0;
const RESPONSE_CONTROVERSIAL_CATEGORY_INDEX = 3;
const QUERY_CATEGORY_INDEX = 8;

/** The response category of the Unsafe triggers: "Violent", index 0, which config.json spells with quotes. */
export const PLANTED_RESPONSE_UNSAFE_CATEGORY = normaliseLabel(STREAM_RESPONSE_CATEGORIES_RAW[RESPONSE_UNSAFE_CATEGORY_INDEX]);

/** The response category of the Controversial triggers: "Politically Sensitive Topics". */
export const PLANTED_RESPONSE_CONTROVERSIAL_CATEGORY = STREAM_RESPONSE_CATEGORIES_RAW[RESPONSE_CONTROVERSIAL_CATEGORY_INDEX];

/** The query category after a query trigger: "Jailbreak". */
export const PLANTED_QUERY_CATEGORY = STREAM_QUERY_CATEGORIES_RAW[QUERY_CATEGORY_INDEX];

/** A head's verdict at one position; `category` is null when the risk is Safe (the category head is then meaningless). */
export interface PlantedHeadVerdict {
    readonly risk: "Safe" | "Unsafe" | "Controversial";
    readonly category: string | null;
}

/** Both heads' verdicts at one position. */
export interface PlantedVerdict {
    readonly response: PlantedHeadVerdict;
    readonly query: PlantedHeadVerdict;
}

/**
 * What the planted model answers at every position of a token sequence fed from position 0: the response head from
 * the token itself, the query head from whether a query trigger occurred at or before the position.
 * @param tokenIds - the token ids, in order
 */
export function plantedVerdicts(tokenIds: readonly number[]): PlantedVerdict[] {
    const isIn = (triggers: readonly TriggerToken[], id: number) => triggers.some((trigger) => trigger.id === id);
    let querySeen = false;
    return tokenIds.map((id) => {
        querySeen ||= isIn(QUERY_TRIGGERS, id);
        const response: PlantedHeadVerdict = isIn(RESPONSE_UNSAFE_TRIGGERS, id) ?
            {risk: "Unsafe", category: PLANTED_RESPONSE_UNSAFE_CATEGORY} :
            isIn(RESPONSE_CONTROVERSIAL_TRIGGERS, id) ?
                {risk: "Controversial", category: PLANTED_RESPONSE_CONTROVERSIAL_CATEGORY} :
                {risk: "Safe", category: null};
        const query: PlantedHeadVerdict = querySeen ? {risk: "Unsafe", category: PLANTED_QUERY_CATEGORY} : {risk: "Safe", category: null};
        return {response, query};
    });
}

const BIAS = 0;
const UNSAFE = 1;
const CONTRO = 2;
const QUERY = 3;
const MEMORY = 4;
const FIRST_NOISE = 5;
const ATTENTION_DIM = 7;
const KEY_SCALE = 7.5;
const MEMORY_WRITE = 0.375;
const HEAD_GAIN = 2;
const RISK_SAFE = 0;
const RISK_UNSAFE = 1;
const RISK_CONTROVERSIAL = 2;

/**
 * The planted weights (see the design at the top of this file); the parts that do not matter are random.
 * @param seed - the seed of the random parts
 */
export function plantedStreamTensorSpecs(seed: number): TensorSpec[] {
    const {hiddenSize, headDim, guardInnerSize} = PLANTED_DIMENSIONS;
    const ids = (triggers: readonly TriggerToken[]) => new Set(triggers.map((trigger) => trigger.id));
    const unsafe = ids(RESPONSE_UNSAFE_TRIGGERS);
    const controversial = ids(RESPONSE_CONTROVERSIAL_TRIGGERS);
    const query = ids(QUERY_TRIGGERS);
    const shapes = checkpointTensorShapes(createHfConfig("stream", PLANTED_DIMENSIONS, "bfloat16"));
    const random = new Map(randomTensorSpecs(shapes, seed).map((spec) => [spec.name, spec]));
    const embeddingNoise = random.get("model.embed_tokens.weight")!;

    const planted = new Map<string, TensorSpec["fill"]>([
        ["model.embed_tokens.weight", (out, start) => {
            embeddingNoise.fill(out, start);
            for (let i = 0; i < out.length; i++) {
                const token = Math.floor((start + i) / hiddenSize);
                const dim = (start + i) % hiddenSize;
                const isTrigger = unsafe.has(token) || controversial.has(token) || query.has(token);
                out[i] = dim === BIAS ? 1 :
                    dim === UNSAFE && unsafe.has(token) ? 3 :
                        dim === CONTRO && controversial.has(token) ? 3 :
                            dim === QUERY && query.has(token) ? 1 :
                                dim >= FIRST_NOISE && !isTrigger ? out[i] : 0;
            }
        }],
        ["model.layers.0.self_attn.q_proj.weight", sparse(hiddenSize, [[ATTENTION_DIM, BIAS, 1]])],
        ["model.layers.0.self_attn.k_proj.weight", sparse(hiddenSize, [[ATTENTION_DIM, QUERY, 1]])],
        ["model.layers.0.self_attn.v_proj.weight", sparse(hiddenSize, [[0, QUERY, 1]])],
        ["model.layers.0.self_attn.k_norm.weight", (out, start) => fillVector(out, start, (i) => (i === ATTENTION_DIM ? KEY_SCALE : 1))],
        ["model.layers.0.self_attn.o_proj.weight", sparse(PLANTED_DIMENSIONS.numAttentionHeads * headDim, [[MEMORY, 0, MEMORY_WRITE]])],
        ["model.layers.0.mlp.down_proj.weight", sparse(1, [])],
        ["model.layers.1.self_attn.o_proj.weight", sparse(1, [])],
        ["model.layers.1.mlp.down_proj.weight", sparse(1, [])],
        ["risk_level_category_pre.weight", sparse(hiddenSize, [[0, BIAS, 1], [1, UNSAFE, 1], [2, CONTRO, 1]])],
        ["risk_level_head.weight", sparse(guardInnerSize, [[RISK_SAFE, 0, HEAD_GAIN], [RISK_UNSAFE, 1, HEAD_GAIN], [RISK_CONTROVERSIAL, 2, HEAD_GAIN]])],
        ["category_head.weight", sparse(guardInnerSize, [
            [RESPONSE_UNSAFE_CATEGORY_INDEX, 1, HEAD_GAIN],
            [RESPONSE_CONTROVERSIAL_CATEGORY_INDEX, 2, HEAD_GAIN]
        ])],
        ["query_risk_level_category_pre.weight", sparse(hiddenSize, [[0, BIAS, 1], [1, MEMORY, 1]])],
        ["query_risk_level_head.weight", sparse(guardInnerSize, [[RISK_SAFE, 0, HEAD_GAIN], [RISK_UNSAFE, 1, HEAD_GAIN]])],
        ["query_category_head.weight", sparse(guardInnerSize, [[QUERY_CATEGORY_INDEX, 1, HEAD_GAIN]])]
    ]);
    return [...random.values()].map((spec) => {
        const fill = planted.get(spec.name) ?? (spec.shape.length === 1 ? (out: Float32Array) => out.fill(1) : spec.fill);
        return {name: spec.name, shape: spec.shape, fill};
    });
}

// A matrix of `cols` columns that is zero but for the given [row, col, value] entries.
function sparse(cols: number, entries: readonly (readonly [number, number, number])[]): TensorSpec["fill"] {
    return (out, start) => {
        out.fill(0);
        for (const [row, col, value] of entries) {
            const index = row * cols + col - start;
            if (index >= 0 && index < out.length)
                out[index] = value;
        }
    };
}

function fillVector(out: Float32Array, start: number, value: (index: number) => number): void {
    for (let i = 0; i < out.length; i++)
        out[i] = value(start + i);
}
