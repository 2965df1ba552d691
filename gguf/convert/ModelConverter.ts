// The base of every Hugging Face → GGUF converter, after llama.cpp's `ModelBase`: one subclass per Hugging Face
// architecture, a fixed conversion flow (check the checkpoint, write metadata, stream the tensors one at a time) and a
// few hooks for what differs (hyperparameters, vocabulary, tensor mapping, extra files).

import fs from "node:fs/promises";
import path from "node:path";
import {GgmlType, GGML_TYPE_LAYOUTS, LlamaFileType, elementCount, tensorByteSize} from "../ggmlTypes.js";
import {GgufWriter} from "../GgufWriter.js";
import {quantize} from "../quant.js";
import {ConversionOutputError, TensorShapeError, UnexpectedTensorError} from "./errors.js";
import type {SafetensorsCheckpoint} from "./hfCheckpoint.js";
import type {HfConfig} from "./qwen3Hparams.js";

/** The tensor types a conversion can produce (llama.cpp's `--outtype`). */
export type OutType = "f32" | "f16" | "bf16" | "q8_0";

/** Options of a conversion, every one defaulted. */
export interface ResolvedConvertOptions {
    /** The GGUF file to write. */
    readonly outFile: string;
    /** The type of the 2-D weights; 1-D tensors (norms) are always F32. */
    readonly outType: OutType;
    /** `general.name`. */
    readonly name: string;
}

/** A tensor of a written GGUF. */
export interface WrittenTensor {
    readonly name: string;
    /** ggml dimensions, innermost first. */
    readonly ne: readonly number[];
    readonly type: GgmlType;
}

/** What a conversion wrote. */
export interface ConversionResult {
    /** The Hugging Face architecture of the checkpoint (`Qwen3ForCausalLM`, `Qwen3ForGuardModel`). */
    readonly architecture: string;
    /** `qwen3guard.variant` of the main file: `gen` or `stream-backbone`. */
    readonly variant: string;
    readonly outType: OutType;
    readonly outFile: string;
    /** The tensors of `outFile`, in file order. */
    readonly tensors: readonly WrittenTensor[];
    /** Further files written beside `outFile` (the Stream head GGUF). */
    readonly companionFiles: readonly string[];
    /** The checkpoint fingerprint, when the variant records one (Stream). */
    readonly fingerprint: string | undefined;
}

/** A checkpoint tensor the architecture reads: its name, required PyTorch shape, and whether it may be absent. */
export interface ExpectedTensor {
    readonly name: string;
    readonly shape: readonly number[];
    readonly optional?: boolean;
}

/** A tensor of the output GGUF: its name and type, and either the checkpoint tensor it comes from or zeros. */
export interface PlannedTensor {
    readonly name: string;
    readonly ne: readonly number[];
    readonly type: GgmlType;
    /** The checkpoint tensor whose values it holds; `undefined` for an all-zero placeholder. */
    readonly source: string | undefined;
}

/** The checkpoint a converter works on. */
export interface CheckpointSource {
    readonly dir: string;
    readonly config: HfConfig;
    /** config.json as stored (for the fingerprint). */
    readonly configBytes: Uint8Array;
    readonly checkpoint: SafetensorsCheckpoint;
}

const OUT_TYPE_FORMATS: Readonly<Record<OutType, {readonly type: GgmlType; readonly fileType: LlamaFileType}>> = {
    f32: {type: GgmlType.F32, fileType: LlamaFileType.ALL_F32},
    f16: {type: GgmlType.F16, fileType: LlamaFileType.MOSTLY_F16},
    bf16: {type: GgmlType.BF16, fileType: LlamaFileType.MOSTLY_BF16},
    q8_0: {type: GgmlType.Q8_0, fileType: LlamaFileType.MOSTLY_Q8_0}
};

/** The out types, in order of size. */
export const OUT_TYPES = Object.keys(OUT_TYPE_FORMATS) as readonly OutType[];

/** `general.quantization_version` (ggml's `GGML_QNT_VERSION`). */
const GGML_QUANTIZATION_VERSION = 2;

/** Upper bound of the values converted at once: tensors are read, converted and written in chunks of rows. */
const CHUNK_ELEMENTS = 1 << 22;

/** The constructor of a converter class, with the Hugging Face architecture it is registered for. */
export interface ModelConverterClass {
    readonly architecture: string;
    new (source: CheckpointSource, options: ResolvedConvertOptions): ModelConverter;
}

/**
 * One Hugging Face architecture's conversion to GGUF. Subclasses name their architecture in a static
 * `architecture` field and implement the hooks; {@link ModelConverter.convert} does the rest.
 */
export abstract class ModelConverter {
    /** The llama.cpp architecture written to `general.architecture` and used as the prefix of its keys. */
    protected abstract readonly ggufArchitecture: string;

    /** `qwen3guard.variant` of the output GGUF. */
    protected abstract readonly variant: string;

    public constructor(protected readonly source: CheckpointSource, protected readonly options: ResolvedConvertOptions) {}

    /**
     * Hook: every checkpoint tensor the conversion reads. Checked before anything is written: absent required tensors,
     * tensors not listed and wrong shapes are refused.
     */
    protected abstract expectedTensors(): ExpectedTensor[];

    /** Hook (tensor mapping): the tensors of the output GGUF, in file order. */
    protected abstract planTensors(): PlannedTensor[];

    /** Hook: read what {@link ModelConverter.setVocab} writes (after the tensors are checked, before anything is written). */
    protected abstract loadVocab(): Promise<void>;

    /** Hook: add the architecture's hyperparameter keys (`<arch>.*`). */
    protected abstract setHyperparameters(writer: GgufWriter): void;

    /** Hook: add the `tokenizer.*` keys. */
    protected abstract setVocab(writer: GgufWriter): void;

    /** Hook: add `qwen3guard.*` keys after `qwen3guard.variant`. */
    protected setGuardMetadata(_writer: GgufWriter): void {}

    /** Hook: the files written beside the output GGUF (their final paths). */
    protected companionFiles(): string[] {
        return [];
    }

    /**
     * Hook: write the {@link ModelConverter.companionFiles} once the output GGUF is complete, each to `staged(file)`;
     * the conversion renames them into place with the GGUF.
     */
    protected async writeCompanionFiles(_staged: (file: string) => string): Promise<void> {}

    /** Hook: the fingerprint recorded in the output, if any. */
    protected fingerprint(): string | undefined {
        return undefined;
    }

    /**
     * Convert: check the checkpoint, then write the GGUF streaming one tensor at a time (read, convert, write, in chunks
     * of rows), then the companion files. Everything is written under temporary names beside the outputs and renamed
     * into place at the end: on failure nothing is left behind, and files already at the output paths stay as they were.
     * @returns what was written
     * @throws {MissingTensorError | UnexpectedTensorError | TensorShapeError} before writing anything
     * @throws {ConversionOutputError} for an output that is one of the checkpoint's files, a folder, or in a missing folder
     */
    public async convert(): Promise<ConversionResult> {
        const outputs = [this.options.outFile, ...this.companionFiles()];
        await checkOutputPaths(outputs, this.source.dir);
        this.checkTensors();
        await this.loadVocab();
        const plan = this.planTensors();

        const staged = (file: string) => `${file}.staged-${process.pid}`;
        const removeStaged = () => Promise.all(outputs.map((file) => fs.rm(staged(file), {force: true})));
        try {
            const writer = await GgufWriter.create(staged(this.options.outFile));
            try {
                writer.addString("general.architecture", this.ggufArchitecture);
                writer.addString("general.type", "model");
                writer.addString("general.name", this.options.name);
                writer.addString("general.size_label", sizeLabel(plan.reduce((sum, tensor) => sum + elementCount(tensor.ne), 0)));
                this.setHyperparameters(writer);
                writer.addUint32("general.file_type", OUT_TYPE_FORMATS[this.options.outType].fileType);
                writer.addUint32("general.quantization_version", GGML_QUANTIZATION_VERSION);
                this.setVocab(writer);
                writer.addString("qwen3guard.variant", this.variant);
                this.setGuardMetadata(writer);

                for (const tensor of plan)
                    writer.addTensorInfo(tensor.name, tensor.ne, tensor.type);
                await writer.writeHeader();
                for (const tensor of plan)
                    await writer.writeTensorData(tensor.name, this.tensorData(tensor));
                await writer.close();
            } catch (error) {
                await writer.abort();
                throw error;
            }
            await this.writeCompanionFiles(staged);
            for (const file of outputs)
                await fs.rename(staged(file), file);
        } catch (error) {
            await removeStaged();
            throw error;
        }
        const companionFiles = outputs.slice(1);
        return {
            architecture: this.architecture,
            variant: this.variant,
            outType: this.options.outType,
            outFile: this.options.outFile,
            tensors: plan.map(({name, ne, type}) => ({name, ne, type})),
            companionFiles,
            fingerprint: this.fingerprint()
        };
    }

    /** The Hugging Face architecture this converter is registered for. */
    protected get architecture(): string {
        return (this.constructor as ModelConverterClass).architecture;
    }

    /**
     * The output type of a weight, as llama.cpp's converter chooses it: F32 for 1-D tensors and norms, else the
     * out type, falling back to F16 when a row does not split into whole quantization blocks.
     * @param ggufName - the tensor's GGUF name
     * @param ne - its ggml dimensions
     */
    protected weightType(ggufName: string, ne: readonly number[]): GgmlType {
        if (ne.length <= 1 || ggufName.endsWith("_norm.weight"))
            return GgmlType.F32;

        return rowFitsType(ne, OUT_TYPE_FORMATS[this.options.outType].type);
    }

    private checkTensors(): void {
        const {checkpoint} = this.source;
        const expected = new Map(this.expectedTensors().map((tensor) => [tensor.name, tensor]));
        for (const name of checkpoint.tensorNames()) {
            const info = checkpoint.tensor(name);
            const spec = expected.get(name);
            if (spec === undefined)
                throw new UnexpectedTensorError(`Expected only ${this.architecture} tensors but got "${name}" (${info.file})`);
            if (info.shape.length !== spec.shape.length || info.shape.some((n, i) => n !== spec.shape[i])) {
                throw new TensorShapeError(
                    `Expected tensor "${name}" (${info.file}) to have shape [${spec.shape.join(", ")}] (from config.json) but got [${info.shape.join(", ")}]`
                );
            }
        }
        for (const spec of expected.values()) {
            if (!spec.optional)
                checkpoint.tensor(spec.name); // throws MissingTensorError when absent
        }
    }

    // The tensor's bytes in chunks of whole rows: read, convert to float32, encode to the output type (placeholders:
    // zero bytes, which are zeros in every ggml type).
    private async *tensorData(tensor: PlannedTensor): AsyncGenerator<Uint8Array> {
        const rowLength = tensor.ne[0];
        const rows = elementCount(tensor.ne) / rowLength;
        const rowsPerChunk = Math.max(1, Math.floor(CHUNK_ELEMENTS / rowLength));
        for (let first = 0; first < rows; first += rowsPerChunk) {
            const count = Math.min(rowsPerChunk, rows - first);
            if (tensor.source === undefined) {
                yield new Uint8Array(tensorByteSize(tensor.type, [rowLength, count]));
                continue;
            }
            const values = await this.source.checkpoint.readRowsAsFloat32(tensor.source, first, count);
            try {
                yield quantize(values, tensor.type);
            } catch (error) {
                // say where: the checkpoint tensor, and the element (the encoder only knows its place in this chunk)
                if (error instanceof Error)
                    error.message = `Tensor "${tensor.source}" (rows ${first}–${first + count - 1} of ${rows}): ` +
                        error.message.replace(/at index (\d+)/, (_, index: string) => `at element ${first * rowLength + Number(index)}`);
                throw error;
            }
        }
    }
}

/**
 * `type` when a row of `ne` splits into whole blocks of it, else F16 (llama.cpp's converter falls back the same way).
 * @param ne - ggml dimensions, innermost first
 * @param type - the preferred type
 */
export function rowFitsType(ne: readonly number[], type: GgmlType): GgmlType {
    return ne[0] % GGML_TYPE_LAYOUTS[type].blockSize === 0 ? type : GgmlType.F16;
}

/**
 * `general.size_label` as gguf-py writes it for a dense model: the parameter count with K/M/B/T and at least two
 * significant digits (`9.8M`, `596M`, `4.0B`).
 * @param parameterCount - the number of weights written
 */
function sizeLabel(parameterCount: number): string {
    const [scale, suffix] = parameterCount > 1e12 ? [1e-12, "T"] : parameterCount > 1e9 ? [1e-9, "B"] : parameterCount > 1e6 ? [1e-6, "M"] : [1e-3, "K"];
    const scaled = parameterCount * scale;
    const digits = Math.max(2 - String(Math.round(scaled)).replace(/^0+/, "").length, 0);
    return scaled.toFixed(digits) + suffix;
}

/**
 * The path of a file written beside `outFile`: its `.gguf` extension (if any) replaced by `suffix`.
 * @param outFile - the main GGUF path
 * @param suffix - e.g. `.head.gguf`
 */
export function besideOutFile(outFile: string, suffix: string): string {
    const base = outFile.endsWith(".gguf") ? outFile.slice(0, -".gguf".length) : outFile;
    return path.join(path.dirname(base), path.basename(base) + suffix);
}

/**
 * Refuses output paths that would destroy the input or cannot be written: one of the files in the checkpoint folder
 * (also through a link), a folder, or a path whose folder does not exist.
 */
async function checkOutputPaths(outputs: readonly string[], checkpointDir: string): Promise<void> {
    const inputs: {name: string, dev: number, ino: number}[] = [];
    for (const entry of await fs.readdir(checkpointDir, {withFileTypes: true}).catch(() => [])) {
        const stat = await fs.stat(path.join(checkpointDir, entry.name)).catch(() => null);
        if (stat?.isFile() === true)
            inputs.push({name: entry.name, dev: stat.dev, ino: stat.ino});
    }
    for (const file of outputs) {
        const stat = await fs.stat(file).catch(() => null);
        if (stat?.isDirectory() === true)
            throw new ConversionOutputError(`Expected a file path for the output but ${file} is a folder`);
        const input = stat == null ? undefined : inputs.find(({dev, ino}) => dev === stat.dev && ino === stat.ino);
        if (input != null)
            throw new ConversionOutputError(`The output ${file} is the checkpoint's own ${input.name}: write the GGUF somewhere else`);
        const folder = path.dirname(path.resolve(file));
        if (!(await fs.stat(folder).catch(() => null))?.isDirectory())
            throw new ConversionOutputError(`The folder of the output ${file} (${folder}) does not exist`);
    }
}
