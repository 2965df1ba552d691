// An independent float64 forward pass of Qwen3 and of the Qwen3Guard Stream head, read straight from a Hugging Face
// checkpoint: the yardstick for converted models. Written from the model definition (HF Qwen3), not from llama.cpp;
// plain loops, only meant for tiny models.

import fs from "node:fs/promises";
import path from "node:path";
import {SafetensorsCheckpoint} from "../../gguf/convert/hfCheckpoint.js";
import {readStreamHeadLabels} from "../../gguf/convert/streamHead.js";
import type {StreamHeadLabels} from "../../gguf/convert/streamHead.js";

/** The logits and probabilities of one classification head at one position. */
export interface HeadScores {
    readonly logits: Float64Array;
    readonly probabilities: Float64Array;
    /** Index of the largest logit. */
    readonly argmax: number;
    /** The label of `argmax` (normalised, from config.json). */
    readonly label: string;
}

/** The Stream head's four outputs at one position. */
export interface StreamScores {
    readonly responseRisk: HeadScores;
    readonly responseCategory: HeadScores;
    readonly queryRisk: HeadScores;
    readonly queryCategory: HeadScores;
}

interface Matrix {
    readonly rows: number;
    readonly cols: number;
    readonly data: Float32Array;
}

interface LayerWeights {
    readonly inputNorm: Float32Array;
    readonly q: Matrix;
    readonly k: Matrix;
    readonly v: Matrix;
    readonly o: Matrix;
    readonly qNorm: Float32Array;
    readonly kNorm: Float32Array;
    readonly postAttentionNorm: Float32Array;
    readonly gate: Matrix;
    readonly up: Matrix;
    readonly down: Matrix;
}

interface HeadPath {
    readonly pre: Matrix;
    readonly norm: Float32Array;
    readonly risk: Matrix;
    readonly category: Matrix;
    readonly riskLabels: readonly string[];
    readonly categoryLabels: readonly string[];
}

/**
 * A Qwen3 / Qwen3Guard checkpoint held in memory, evaluated in float64.
 * @example
 * const model = await ReferenceModel.load(dir);
 * const hidden = model.hiddenStates([151644, 872, 198]);
 * const logits = model.lmLogits(hidden.at(-1)!);
 */
export class ReferenceModel {
    private constructor(
        private readonly config: {
            readonly numHeads: number;
            readonly numKvHeads: number;
            readonly headDim: number;
            readonly rmsNormEps: number;
            readonly ropeTheta: number;
        },
        private readonly embed: Matrix,
        private readonly layers: readonly LayerWeights[],
        private readonly finalNorm: Float32Array,
        private readonly lmHead: Matrix,
        private readonly response: HeadPath | undefined,
        private readonly query: HeadPath | undefined
    ) {}

    /**
     * Read a checkpoint directory (config.json + safetensors, single or sharded) into memory.
     * @param dir - the Hugging Face checkpoint directory
     * @returns the model; Stream checkpoints (`Qwen3ForGuardModel`) also get their head
     */
    public static async load(dir: string): Promise<ReferenceModel> {
        const config = JSON.parse(await fs.readFile(path.join(dir, "config.json"), "utf8")) as Record<string, number | boolean | string[]>;
        const checkpoint = await SafetensorsCheckpoint.open(dir);
        const vector = async (name: string) => checkpoint.readTensorAsFloat32(name);
        const matrix = async (name: string): Promise<Matrix> => {
            const shape = checkpoint.tensorShape(name);
            return {rows: shape[0], cols: shape[1], data: await checkpoint.readTensorAsFloat32(name)};
        };
        const hiddenSize = config.hidden_size as number;
        const numHeads = config.num_attention_heads as number;
        const layers: LayerWeights[] = [];
        for (let i = 0; i < (config.num_hidden_layers as number); i++) {
            const prefix = `model.layers.${i}.`;
            layers.push({
                inputNorm: await vector(prefix + "input_layernorm.weight"),
                q: await matrix(prefix + "self_attn.q_proj.weight"),
                k: await matrix(prefix + "self_attn.k_proj.weight"),
                v: await matrix(prefix + "self_attn.v_proj.weight"),
                o: await matrix(prefix + "self_attn.o_proj.weight"),
                qNorm: await vector(prefix + "self_attn.q_norm.weight"),
                kNorm: await vector(prefix + "self_attn.k_norm.weight"),
                postAttentionNorm: await vector(prefix + "post_attention_layernorm.weight"),
                gate: await matrix(prefix + "mlp.gate_proj.weight"),
                up: await matrix(prefix + "mlp.up_proj.weight"),
                down: await matrix(prefix + "mlp.down_proj.weight")
            });
        }
        const embed = await matrix("model.embed_tokens.weight");
        const lmHead = checkpoint.hasTensor("lm_head.weight") ? await matrix("lm_head.weight") : embed;

        let response: HeadPath | undefined;
        let query: HeadPath | undefined;
        if ((config.architectures as string[])[0] === "Qwen3ForGuardModel") {
            const labels: StreamHeadLabels = readStreamHeadLabels(config);
            response = {
                pre: await matrix("risk_level_category_pre.weight"),
                norm: await vector("risk_level_category_layernorm.weight"),
                risk: await matrix("risk_level_head.weight"),
                category: await matrix("category_head.weight"),
                riskLabels: labels.responseRiskLevels,
                categoryLabels: labels.responseCategories
            };
            query = {
                pre: await matrix("query_risk_level_category_pre.weight"),
                norm: await vector("query_risk_level_category_layernorm.weight"),
                risk: await matrix("query_risk_level_head.weight"),
                category: await matrix("query_category_head.weight"),
                riskLabels: labels.queryRiskLevels,
                categoryLabels: labels.queryCategories
            };
        }

        return new ReferenceModel({
            numHeads,
            numKvHeads: config.num_key_value_heads as number,
            headDim: (config.head_dim as number | undefined) ?? hiddenSize / numHeads,
            rmsNormEps: config.rms_norm_eps as number,
            ropeTheta: config.rope_theta as number
        }, embed, layers, await vector("model.norm.weight"), lmHead, response, query);
    }

    /**
     * The backbone's last hidden state (after the final RMSNorm) at every position, for a causal pass over `tokenIds`
     * starting at position 0: what llama.cpp returns as per-token embeddings with pooling NONE.
     * @param tokenIds - the token ids, in order
     * @returns one vector of `hidden_size` per token
     */
    public hiddenStates(tokenIds: readonly number[]): Float64Array[] {
        const {numHeads, numKvHeads, headDim, rmsNormEps} = this.config;
        const residual = tokenIds.map((id) => Float64Array.from(row(this.embed, id)));
        const headsPerKv = numHeads / numKvHeads;

        for (const layer of this.layers) {
            const keys: Float64Array[][] = [];
            const values: Float64Array[][] = [];
            const queries: Float64Array[][] = [];
            for (const [position, x] of residual.entries()) {
                const normed = rmsNorm(x, layer.inputNorm, rmsNormEps);
                queries.push(this.splitHeads(matVec(layer.q, normed), numHeads, layer.qNorm, position));
                keys.push(this.splitHeads(matVec(layer.k, normed), numKvHeads, layer.kNorm, position));
                values.push(splitHeads(matVec(layer.v, normed), numKvHeads, headDim));
            }
            const scale = 1 / Math.sqrt(headDim);
            for (const [position, x] of residual.entries()) {
                const attention = new Float64Array(numHeads * headDim);
                for (let head = 0; head < numHeads; head++) {
                    const kvHead = Math.floor(head / headsPerKv);
                    const scores = new Float64Array(position + 1);
                    for (let j = 0; j <= position; j++)
                        scores[j] = dot(queries[position][head], keys[j][kvHead]) * scale;
                    const weights = softmax(scores);
                    for (let j = 0; j <= position; j++) {
                        const value = values[j][kvHead];
                        for (let d = 0; d < headDim; d++)
                            attention[head * headDim + d] += weights[j] * value[d];
                    }
                }
                addInPlace(x, matVec(layer.o, attention));
                const normed = rmsNorm(x, layer.postAttentionNorm, rmsNormEps);
                const gate = matVec(layer.gate, normed);
                const up = matVec(layer.up, normed);
                for (let i = 0; i < gate.length; i++)
                    gate[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
                addInPlace(x, matVec(layer.down, gate));
            }
        }
        return residual.map((x) => rmsNorm(x, this.finalNorm, rmsNormEps));
    }

    /**
     * The LM head logits for one hidden state (`lm_head.weight`, or the tied token embedding).
     * @param hidden - a hidden state from {@link ReferenceModel.hiddenStates}
     * @returns one logit per vocabulary entry (`vocab_size` of them)
     */
    public lmLogits(hidden: Float64Array): Float64Array {
        return matVec(this.lmHead, hidden);
    }

    /**
     * The Stream head at one position: both paths (response, query), each RMSNorm(W_pre · h) ⊙ w, then the risk and
     * category heads and their softmax.
     * @param hidden - a hidden state from {@link ReferenceModel.hiddenStates}
     * @throws {Error} when the checkpoint is not a Stream (`Qwen3ForGuardModel`) checkpoint
     */
    public streamScores(hidden: Float64Array): StreamScores {
        if (this.response === undefined || this.query === undefined)
            throw new Error("Expected a Qwen3ForGuardModel checkpoint for streamScores but got one without a Stream head");

        const [responseRisk, responseCategory] = this.headPath(this.response, hidden);
        const [queryRisk, queryCategory] = this.headPath(this.query, hidden);
        return {responseRisk, responseCategory, queryRisk, queryCategory};
    }

    private headPath(head: HeadPath, hidden: Float64Array): [HeadScores, HeadScores] {
        const inner = rmsNorm(matVec(head.pre, hidden), head.norm, this.config.rmsNormEps);
        return [scores(matVec(head.risk, inner), head.riskLabels), scores(matVec(head.category, inner), head.categoryLabels)];
    }

    // Per-head RMSNorm, then NEOX RoPE (dimension i rotates with i + headDim/2) at `position`.
    private splitHeads(projected: Float64Array, count: number, normWeight: Float32Array, position: number): Float64Array[] {
        const {headDim, rmsNormEps, ropeTheta} = this.config;
        const half = headDim / 2;
        return splitHeads(projected, count, headDim).map((vector) => {
            const normed = rmsNorm(vector, normWeight, rmsNormEps);
            const rotated = new Float64Array(headDim);
            for (let i = 0; i < half; i++) {
                const angle = position * Math.pow(ropeTheta, (-2 * i) / headDim);
                const cos = Math.cos(angle);
                const sin = Math.sin(angle);
                rotated[i] = normed[i] * cos - normed[i + half] * sin;
                rotated[i + half] = normed[i + half] * cos + normed[i] * sin;
            }
            return rotated;
        });
    }
}

/**
 * Softmax in float64 (max-subtracted).
 * @param logits - any finite values
 */
function softmax(logits: Float64Array): Float64Array {
    let max = -Infinity;
    for (const value of logits)
        max = Math.max(max, value);
    const out = logits.map((value) => Math.exp(value - max));
    const sum = out.reduce((total, value) => total + value, 0);
    return out.map((value) => value / sum);
}

/**
 * The relative Frobenius error ‖actual − expected‖ / ‖expected‖.
 * @param actual - the values under test
 * @param expected - the reference values (same length)
 */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
    if (actual.length !== expected.length)
        throw new Error(`Expected ${expected.length} values but got ${actual.length}`);
    let difference = 0;
    let norm = 0;
    for (let i = 0; i < expected.length; i++) {
        difference += (actual[i] - expected[i]) ** 2;
        norm += expected[i] ** 2;
    }
    return Math.sqrt(difference / norm);
}

function scores(logits: Float64Array, labels: readonly string[]): HeadScores {
    let argmax = 0;
    for (let i = 1; i < logits.length; i++) {
        if (logits[i] > logits[argmax])
            argmax = i;
    }
    return {logits, probabilities: softmax(logits), argmax, label: labels[argmax]};
}

function row(matrix: Matrix, index: number): Float32Array {
    if (!Number.isInteger(index) || index < 0 || index >= matrix.rows)
        throw new Error(`Expected a token id between 0 and ${matrix.rows - 1} but got ${index}`);
    return matrix.data.subarray(index * matrix.cols, (index + 1) * matrix.cols);
}

function matVec(matrix: Matrix, vector: Float64Array): Float64Array {
    const out = new Float64Array(matrix.rows);
    for (let r = 0; r < matrix.rows; r++) {
        const offset = r * matrix.cols;
        let sum = 0;
        for (let c = 0; c < matrix.cols; c++)
            sum += matrix.data[offset + c] * vector[c];
        out[r] = sum;
    }
    return out;
}

function rmsNorm(vector: Float64Array, weight: Float32Array, eps: number): Float64Array {
    const meanSquare = vector.reduce((total, value) => total + value * value, 0) / vector.length;
    const scale = 1 / Math.sqrt(meanSquare + eps);
    return vector.map((value, i) => value * scale * weight[i]);
}

function splitHeads(vector: Float64Array, count: number, headDim: number): Float64Array[] {
    return Array.from({length: count}, (_, head) => vector.slice(head * headDim, (head + 1) * headDim));
}

function dot(a: Float64Array, b: Float64Array): number {
    let sum = 0;
    for (let i = 0; i < a.length; i++)
        sum += a[i] * b[i];
    return sum;
}

function addInPlace(target: Float64Array, addend: Float64Array): void {
    for (let i = 0; i < target.length; i++)
        target[i] += addend[i];
}
