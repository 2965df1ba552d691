// The Qwen3Guard Stream head: its config.json fields and label maps, its eight tensors, and the head GGUF
// (`<name>.head.gguf`, docs/FORMATS.md) that carries them beside the backbone.

import {GgmlType, GgufValueType} from "../ggmlTypes.js";
import {GgufWriter} from "../GgufWriter.js";
import {quantize} from "../quant.js";
import {SAFETENSORS_DTYPES} from "../SafetensorsReader.js";
import {CheckpointConfigError} from "./errors.js";
import type {SafetensorsCheckpoint} from "./hfCheckpoint.js";
import {configInteger, configNumber} from "./qwen3Hparams.js";
import type {HfConfig} from "./qwen3Hparams.js";

/** `general.architecture` of a head GGUF. */
export const STREAM_HEAD_ARCHITECTURE = "qwen3guard-stream-head";

/** The Stream head's label lists, in head index order, normalised. */
export interface StreamHeadLabels {
    readonly responseRiskLevels: readonly string[];
    readonly responseCategories: readonly string[];
    readonly queryRiskLevels: readonly string[];
    readonly queryCategories: readonly string[];
}

/** The Stream head as config.json describes it. */
export interface StreamHeadConfig {
    readonly hiddenSize: number;
    readonly guardInnerSize: number;
    readonly rmsNormEps: number;
    readonly labels: StreamHeadLabels;
}

/** A head tensor: its state-dict name and PyTorch shape (outermost first). */
export interface StreamHeadTensor {
    readonly name: string;
    readonly shape: readonly number[];
}

// Each label list: its config.json map, the count field it must agree with, and the GGUF key it is written to.
const LABEL_FIELDS = [
    {property: "responseRiskLevels", map: "response_risk_level_map", count: "num_risk_level", key: "qwen3guard.head.response_risk_level_labels"},
    {property: "responseCategories", map: "response_category_map", count: "num_category", key: "qwen3guard.head.response_category_labels"},
    {property: "queryRiskLevels", map: "query_risk_level_map", count: "num_query_risk_level", key: "qwen3guard.head.query_risk_level_labels"},
    {property: "queryCategories", map: "query_category_map", count: "num_query_category", key: "qwen3guard.head.query_category_labels"}
] as const;

// Quote characters trimmed from both ends of a label: ASCII double and single quotes and their curly forms.
const LABEL_QUOTES = /^["'\u201c\u201d\u2018\u2019]+|["'\u201c\u201d\u2018\u2019]+$/g;

/**
 * A label as config.json spells it, with stray quote characters (`"`, `'`, curly quotes) trimmed from both ends
 * (the official eval script writes `"Violent"` with literal quotes).
 * @param label - the raw label
 * @example
 * normaliseLabel("\"Violent\""); // "Violent"
 */
export function normaliseLabel(label: string): string {
    return label.replace(LABEL_QUOTES, "");
}

/**
 * The four label lists of a Stream config.json: each map's values in index order (keys "0" … "n-1"), normalised.
 * @param config - the parsed config.json of a `Qwen3ForGuardModel` checkpoint
 * @throws {CheckpointConfigError} when a map is absent, its keys are not exactly "0" … "n-1", a label is not a
 *   non-empty string, or its size differs from the matching count field (e.g. `num_category`)
 */
export function readStreamHeadLabels(config: HfConfig): StreamHeadLabels {
    const entries = LABEL_FIELDS.map(({property, map, count}) => {
        const size = configInteger(config, count);
        const value = config[map];
        if (typeof value !== "object" || value === null || Array.isArray(value))
            throw new CheckpointConfigError(`Expected "${map}" in config.json to be an object of labels but got ${JSON.stringify(value)}`);

        const labelMap = value as Record<string, unknown>;
        // the count is compared before a list of that size is made: the fuzz's num_category = 1e9 ran out of memory
        const keys = Object.keys(labelMap);
        const labels = keys.length === size ? Array.from({length: size}, (_, index) => labelMap[String(index)]) : [];
        if (keys.length !== size || labels.some((label) => typeof label !== "string" || normaliseLabel(label).length === 0)) {
            throw new CheckpointConfigError(
                `Expected "${map}" in config.json to map "0" … "${size - 1}" ("${count}" is ${size}) to labels but got ${JSON.stringify(labelMap)}`
            );
        }
        return [property, (labels as string[]).map(normaliseLabel)] as const;
    });
    return Object.fromEntries(entries) as unknown as StreamHeadLabels;
}

/**
 * The head fields of a Stream config.json.
 * @param config - the parsed config.json of a `Qwen3ForGuardModel` checkpoint
 * @throws {CheckpointConfigError} naming the first absent or invalid field
 */
export function readStreamHeadConfig(config: HfConfig): StreamHeadConfig {
    return {
        hiddenSize: configInteger(config, "hidden_size"),
        guardInnerSize: configInteger(config, "guard_inner_size"),
        rmsNormEps: configNumber(config, "rms_norm_eps"),
        labels: readStreamHeadLabels(config)
    };
}

/**
 * The eight head tensors in the order of docs/FORMATS.md, with the shapes config.json implies.
 * @param head - the head configuration
 */
export function streamHeadTensors(head: StreamHeadConfig): StreamHeadTensor[] {
    const {hiddenSize, guardInnerSize, labels} = head;
    return [
        {name: "risk_level_category_pre.weight", shape: [guardInnerSize, hiddenSize]},
        {name: "risk_level_category_layernorm.weight", shape: [guardInnerSize]},
        {name: "risk_level_head.weight", shape: [labels.responseRiskLevels.length, guardInnerSize]},
        {name: "category_head.weight", shape: [labels.responseCategories.length, guardInnerSize]},
        {name: "query_risk_level_category_pre.weight", shape: [guardInnerSize, hiddenSize]},
        {name: "query_risk_level_category_layernorm.weight", shape: [guardInnerSize]},
        {name: "query_risk_level_head.weight", shape: [labels.queryRiskLevels.length, guardInnerSize]},
        {name: "query_category_head.weight", shape: [labels.queryCategories.length, guardInnerSize]}
    ];
}

/**
 * Write the head GGUF of a Stream checkpoint (docs/FORMATS.md): the head keys, labels and the eight tensors, bit-exact
 * from the checkpoint when stored as F32 or BF16, widened to F32 when stored as F16.
 * @param file - the head GGUF path (`<name>.head.gguf`)
 * @param checkpoint - the open checkpoint; its head tensors must already be checked against `head`
 * @param head - the head configuration
 * @param fingerprint - the fingerprint shared with the backbone GGUF
 */
export async function writeStreamHeadFile(file: string, checkpoint: SafetensorsCheckpoint, head: StreamHeadConfig, fingerprint: string): Promise<void> {
    const writer = await GgufWriter.create(file);
    try {
        writer.addString("general.architecture", STREAM_HEAD_ARCHITECTURE);
        writer.addString("qwen3guard.variant", "stream-head");
        writer.addString("qwen3guard.fingerprint", fingerprint);
        writer.addUint32("qwen3guard.head.hidden_size", head.hiddenSize);
        writer.addUint32("qwen3guard.head.guard_inner_size", head.guardInnerSize);
        writer.addFloat32("qwen3guard.head.rms_norm_eps", head.rmsNormEps);
        for (const {property, key} of LABEL_FIELDS)
            writer.addArray(key, GgufValueType.STRING, head.labels[property]);

        // F32 and BF16 data are copied byte for byte; F16 is widened to F32.
        const tensors = streamHeadTensors(head).map(({name, shape}) => ({name, shape, widen: checkpoint.tensor(name).dtype === "F16"}));
        for (const {name, shape, widen} of tensors)
            writer.addTensorInfo(name, [...shape].reverse(), widen ? GgmlType.F32 : SAFETENSORS_DTYPES[checkpoint.tensor(name).dtype].ggmlType);
        await writer.writeHeader();
        for (const {name, widen} of tensors)
            await writer.writeTensorData(name, widen ? quantize(await checkpoint.readTensorAsFloat32(name), GgmlType.F32) : await checkpoint.readTensorBytes(name));
        await writer.close();
    } catch (error) {
        await writer.abort();
        throw error;
    }
}
