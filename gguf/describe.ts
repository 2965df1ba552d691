import {access} from "node:fs/promises";
import {basename, dirname, join} from "node:path";
import {GgufMetadataTypeError} from "./errors.js";
import {GgmlType, GgufValueType, LlamaFileType, elementCount} from "./ggmlTypes.js";
import {describeGgufType} from "./GgufMetadata.js";
import type {GgufMetadata} from "./GgufMetadata.js";
import {readGguf} from "./readGguf.js";
import type {ReadGgufOptions} from "./readGguf.js";
import type {StreamHeadLabels} from "./convert/streamHead.js";

/** Which qwenguard file a GGUF is, from its `qwen3guard.variant` key (`unknown` without one: e.g. a plain qwen3 model). */
export type Qwen3GuardVariant = "gen" | "stream-backbone" | "stream-head" | "unknown";

/** The hyperparameters of a Stream head file. */
export interface StreamHeadDescription {
    readonly hiddenSize: number;
    readonly guardInnerSize: number;
    /** The stored float32, as the shortest decimal that rounds to it (1e-6, not 9.99999997e-7). */
    readonly rmsNormEps: number;
    readonly labels: StreamHeadLabels;
}

/** The file a Stream backbone names as its head (`qwen3guard.stream.head_file`), resolved beside it. */
export interface PairedFileDescription {
    readonly name: string;
    readonly path: string;
    readonly exists: boolean;
}

/** A plain summary of a GGUF file, as `qwenguard info` shows it. */
export interface GgufDescription {
    readonly path: string;
    readonly fileSize: number;
    readonly ggufVersion: number;
    readonly architecture?: string;
    readonly variant: Qwen3GuardVariant;
    readonly name?: string;
    readonly fingerprint?: string;
    readonly tensorCount: number;
    readonly parameterCount: number;
    /** Number of tensors per ggml type name, most frequent first, e.g. `{Q8_0: 197, F32: 113}`. */
    readonly tensorTypes: Readonly<Record<string, number>>;
    /** The ggml type holding the most parameters. */
    readonly dominantType?: string;
    /** `general.file_type` by name, e.g. `MOSTLY_Q8_0`. */
    readonly fileType?: string;
    readonly contextLength?: number;
    readonly hiddenSize?: number;
    readonly layers?: number;
    readonly vocabSize?: number;
    /** Present for a `stream-head` file. */
    readonly head?: StreamHeadDescription;
    /** Present for a file with `qwen3guard.stream.head_file`. */
    readonly pairedFile?: PairedFileDescription;
}

const VARIANTS: readonly Qwen3GuardVariant[] = ["gen", "stream-backbone", "stream-head"];

const INTEGER_TYPES = new Set([
    GgufValueType.UINT8, GgufValueType.INT8, GgufValueType.UINT16, GgufValueType.INT16, GgufValueType.UINT32,
    GgufValueType.INT32, GgufValueType.UINT64, GgufValueType.INT64
]);

/**
 * Reads the header of a GGUF file and summarises it: architecture, qwenguard variant, sizes, tensor types, the main
 * hyperparameters, a Stream head's labels and the head file a Stream backbone names (docs/FORMATS.md).
 * @param path - the GGUF file
 * @param options - reader limits, passed to {@link readGguf}
 * @returns the summary
 * @throws every error of {@link readGguf}, and {@link GgufMetadataTypeError} / {@link GgufMissingKeyError} when a
 *   key this summary reads has the wrong type or a Stream head lacks one
 * @example
 * console.log(formatDescription(await describeGguf("Qwen3Guard-Stream-0.6B-Q8_0.gguf")));
 */
export async function describeGguf(path: string, options: ReadGgufOptions = {}): Promise<GgufDescription> {
    const gguf = await readGguf(path, options);
    const {metadata} = gguf;
    const architecture = metadata.find("general.architecture", GgufValueType.STRING);
    const variantValue = metadata.find("qwen3guard.variant", GgufValueType.STRING);
    const variant = VARIANTS.find((known) => known === variantValue) ?? "unknown";

    const typeCounts = new Map<string, {tensors: number; parameters: number}>();
    for (const tensor of gguf.tensors) {
        const counts = typeCounts.get(GgmlType[tensor.type]) ?? {tensors: 0, parameters: 0};
        counts.tensors++;
        counts.parameters += elementCount(tensor.ne);
        typeCounts.set(GgmlType[tensor.type], counts);
    }
    const byTensors = [...typeCounts].sort(([, a], [, b]) => b.tensors - a.tensors);
    const byParameters = [...typeCounts].sort(([, a], [, b]) => b.parameters - a.parameters);
    const fileTypeId = findInteger(metadata, "general.file_type");
    const arch = (suffix: string): number | undefined => architecture === undefined ? undefined : findInteger(metadata, `${architecture}.${suffix}`);
    const headFile = metadata.find("qwen3guard.stream.head_file", GgufValueType.STRING);

    return {
        path,
        fileSize: gguf.fileSize,
        ggufVersion: gguf.version,
        architecture,
        variant,
        name: metadata.find("general.name", GgufValueType.STRING),
        fingerprint: metadata.find("qwen3guard.fingerprint", GgufValueType.STRING),
        tensorCount: gguf.tensors.length,
        parameterCount: byParameters.reduce((sum, [, counts]) => sum + counts.parameters, 0),
        tensorTypes: Object.fromEntries(byTensors.map(([type, counts]) => [type, counts.tensors])),
        dominantType: byParameters[0]?.[0],
        fileType: fileTypeId === undefined ? undefined : LlamaFileType[fileTypeId] ?? `file type ${fileTypeId}`,
        contextLength: arch("context_length"),
        hiddenSize: arch("embedding_length"),
        layers: arch("block_count"),
        vocabSize: metadata.find("tokenizer.ggml.tokens", GgufValueType.ARRAY)?.values.length ?? arch("vocab_size"),
        head: variant === "stream-head" ? describeHead(metadata) : undefined,
        pairedFile: headFile === undefined ? undefined : await describePairedFile(path, headFile)
    };
}

/** An integer-typed key of any width as a number; undefined when absent. */
function findInteger(metadata: GgufMetadata, key: string): number | undefined {
    const kv = metadata.entries.get(key);
    if (kv === undefined)
        return undefined;
    if (!INTEGER_TYPES.has(kv.type))
        throw new GgufMetadataTypeError(`Expected metadata key "${key}" to be of an integer type but got ${describeGgufType(kv)}`);

    return Number(kv.value);
}

function describeHead(metadata: GgufMetadata): StreamHeadDescription {
    const labels = (which: string): string[] => metadata.getStringArray(`qwen3guard.head.${which}_labels`);
    return {
        hiddenSize: metadata.getUint32("qwen3guard.head.hidden_size"),
        guardInnerSize: metadata.getUint32("qwen3guard.head.guard_inner_size"),
        rmsNormEps: shortestFloat32(metadata.getFloat32("qwen3guard.head.rms_norm_eps")),
        labels: {
            responseRiskLevels: labels("response_risk_level"),
            responseCategories: labels("response_category"),
            queryRiskLevels: labels("query_risk_level"),
            queryCategories: labels("query_category")
        }
    };
}

/** The shortest decimal that reads back as the same float32 (a stored 1e-6 reads as 9.99999997e-7). */
function shortestFloat32(value: number): number {
    for (let digits = 1; digits < 9; digits++) {
        const candidate = Number(value.toPrecision(digits));
        if (Math.fround(candidate) === value)
            return candidate;
    }

    return value;
}

async function describePairedFile(path: string, name: string): Promise<PairedFileDescription> {
    const pairedPath = join(dirname(path), basename(name));
    const exists = await access(pairedPath).then(() => true, () => false);
    return {name, path: pairedPath, exists};
}

function formatBytes(bytes: number): string {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
        value /= 1024;
        unit++;
    }

    return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit]} (${bytes.toLocaleString("en-US")} bytes)`;
}

function formatCount(count: number): string {
    if (count >= 1e9)
        return `${(count / 1e9).toFixed(2)} B (${count.toLocaleString("en-US")})`;
    if (count >= 1e6)
        return `${(count / 1e6).toFixed(2)} M (${count.toLocaleString("en-US")})`;

    return count.toLocaleString("en-US");
}

/**
 * Renders a {@link GgufDescription} as an aligned two-column table, one property per line, leaving out what the file
 * does not have.
 * @param description - a summary from {@link describeGguf}
 * @returns the table, without a trailing newline
 */
export function formatDescription(description: GgufDescription): string {
    const d = description;
    const types = Object.entries(d.tensorTypes).map(([type, count]) => `${type}: ${count}`).join(", ");
    const variant = d.variant === "unknown" ? `unknown (no qwen3guard.variant key${d.architecture === "qwen3" ? ": a plain qwen3 model" : ""})` : d.variant;
    const rows: [string, string | number | undefined][] = [
        ["File", d.path],
        ["Size", formatBytes(d.fileSize)],
        ["GGUF version", d.ggufVersion],
        ["Architecture", d.architecture],
        ["Variant", variant],
        ["Name", d.name],
        ["Tensors", `${d.tensorCount}${types === "" ? "" : ` (${types})`}`],
        ["Parameters", formatCount(d.parameterCount)],
        ["File type", d.fileType],
        ["Dominant type", d.dominantType],
        ["Context length", d.contextLength],
        ["Hidden size", d.hiddenSize],
        ["Layers", d.layers],
        ["Vocabulary", d.vocabSize],
        ["Fingerprint", d.fingerprint]
    ];
    if (d.head !== undefined) {
        const {hiddenSize, guardInnerSize, rmsNormEps, labels} = d.head;
        rows.push(
            ["Head hidden size", hiddenSize],
            ["Guard inner size", guardInnerSize],
            ["Head RMS norm eps", rmsNormEps],
            ["Response risk levels", labels.responseRiskLevels.join(", ")],
            ["Response categories", labels.responseCategories.join(", ")],
            ["Query risk levels", labels.queryRiskLevels.join(", ")],
            ["Query categories", labels.queryCategories.join(", ")]
        );
    }
    if (d.pairedFile !== undefined)
        rows.push(["Head file", `${d.pairedFile.path} (${d.pairedFile.exists ? "found" : "missing"})`]);

    const present = rows.filter(([, value]) => value !== undefined);
    const width = Math.max(...present.map(([label]) => label.length));
    return present.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join("\n");
}
