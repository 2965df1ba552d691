import {copyFileSync, existsSync, readFileSync, renameSync, rmSync, statSync} from "node:fs";
import os from "node:os";
import path from "node:path";
import {GgmlType, GgufValueType, LlamaFileType, checkLoadable, ggmlTypeName, readGguf} from "../../gguf/index.js";
import {describeValue} from "../conversation/messages.js";
import {loadLlamaRuntime} from "../native/loadAddon.js";
import {integerOption, stringOption} from "../options.js";

/** The quantization types llama.cpp produces without an importance matrix, by their usual names. */
export const quantizationTypes = {
    F32: LlamaFileType.ALL_F32,
    F16: LlamaFileType.MOSTLY_F16,
    BF16: LlamaFileType.MOSTLY_BF16,
    Q8_0: LlamaFileType.MOSTLY_Q8_0,
    Q6_K: LlamaFileType.MOSTLY_Q6_K,
    Q5_K_M: LlamaFileType.MOSTLY_Q5_K_M,
    Q5_K_S: LlamaFileType.MOSTLY_Q5_K_S,
    Q5_1: LlamaFileType.MOSTLY_Q5_1,
    Q5_0: LlamaFileType.MOSTLY_Q5_0,
    Q4_K_M: LlamaFileType.MOSTLY_Q4_K_M,
    Q4_K_S: LlamaFileType.MOSTLY_Q4_K_S,
    Q4_1: LlamaFileType.MOSTLY_Q4_1,
    Q4_0: LlamaFileType.MOSTLY_Q4_0,
    IQ4_NL: LlamaFileType.MOSTLY_IQ4_NL,
    IQ4_XS: LlamaFileType.MOSTLY_IQ4_XS,
    Q3_K_L: LlamaFileType.MOSTLY_Q3_K_L,
    Q3_K_M: LlamaFileType.MOSTLY_Q3_K_M,
    Q3_K_S: LlamaFileType.MOSTLY_Q3_K_S,
    Q2_K: LlamaFileType.MOSTLY_Q2_K
} as const;

export type QuantizationType = keyof typeof quantizationTypes;

export interface QuantizeModelOptions {
    /** CPU threads; default: all cores. */
    threads?: number,
    /** Called about 4 times a second with the bytes written so far. */
    onProgress?: (progress: {bytesWritten: number, elapsedMs: number}) => void
}

export interface QuantizeModelResult {
    outputPath: string,
    type: QuantizationType,
    bytes: number,
    /** The Stream head copied beside the output, when the input is a Stream backbone in another folder. */
    headPath: string | null,
    elapsedMs: number
}

/** Weight types llama.cpp quantizes from (it refuses to requantize anything else). */
const UNQUANTIZED: ReadonlySet<GgmlType> = new Set([GgmlType.F32, GgmlType.F16, GgmlType.BF16]);

/**
 * Quantizes a GGUF model with llama.cpp's own `llama_model_quantize` (on a worker thread).
 * For a Stream backbone the placeholder LM head is left as it is and the head file is untouched (copied beside the
 * output when that is another folder, since the backbone names it). The output is written under a temporary name
 * and renamed into place once complete; the head is copied after that.
 * @param type one of {@link quantizationTypes} (case-insensitive)
 * @throws TypeError for an unknown type or bad option; Error when the input is missing or already quantized, the output
 *   is the input (also through a link), a folder or in a missing folder, another head is in the way, or llama.cpp fails
 * @example
 * await quantizeModel("guard-f16.gguf", "guard-Q4_K_M.gguf", "Q4_K_M");
 */
export async function quantizeModel(input: string, output: string, type: string, options: QuantizeModelOptions = {}): Promise<QuantizeModelResult> {
    const inputPath = path.resolve(stringOption("input", input));
    const outputPath = path.resolve(stringOption("output", output));
    const typeName = String(type).toUpperCase() as QuantizationType;
    if (!(typeName in quantizationTypes))
        throw new TypeError(`Expected one of ${Object.keys(quantizationTypes).join(", ")} for "type" but received ${describeValue(type)}`);
    const threads = integerOption("threads", options.threads ?? os.availableParallelism(), 1, 1024);
    if (!existsSync(inputPath))
        throw new Error(`Input model ${inputPath} does not exist`);
    checkOutputPath(inputPath, outputPath);

    const gguf = await readGguf(inputPath);
    checkLoadable(gguf); // llama.cpp's quantizer loads the model's header as its loader does
    const {metadata, tensors} = gguf;
    const isStreamBackbone = metadata.find("qwen3guard.variant", GgufValueType.STRING) === "stream-backbone";
    // the Stream backbone's placeholder LM head stays as it is (keepOutputTensor)
    const quantized = tensors.find((tensor) => tensor.ne.length >= 2 && !UNQUANTIZED.has(tensor.type) && !(isStreamBackbone && tensor.name === "output.weight"));
    if (quantized != null)
        throw new Error(`${inputPath} is already quantized (${quantized.name} is ${ggmlTypeName(quantized.type)}), and llama.cpp quantizes only from ` +
            "F32, F16 or BF16 weights: convert the checkpoint with --outtype f16 (or bf16) and quantize that file");
    let head: {source: string, target: string} | null = null;
    if (isStreamBackbone) {
        const headFile = metadata.getString("qwen3guard.stream.head_file");
        const source = path.join(path.dirname(inputPath), headFile);
        const target = path.join(path.dirname(outputPath), headFile);
        if (!existsSync(source))
            throw new Error(`The Stream head ${source} named by ${inputPath} does not exist: convert the checkpoint again`);
        if (source !== target) {
            if (existsSync(target) && !sameFile(source, target) && !readFileSync(source).equals(readFileSync(target)))
                throw new Error(`${target} already exists and is another Stream head than ${source}, which ${inputPath} needs beside it: ` +
                    "quantize into another folder, or move that file away");
            head = {source, target};
        }
    }

    const {addon} = await loadLlamaRuntime();
    const started = performance.now();
    const partialPath = `${outputPath}.partial-${process.pid}`;
    const timer = options.onProgress != null
        ? setInterval(() => {
            const bytesWritten = existsSync(partialPath) ? statSync(partialPath).size : 0;
            options.onProgress!({bytesWritten, elapsedMs: performance.now() - started});
        }, 250)
        : undefined;
    try {
        await addon.quantizeModel({inputPath, outputPath: partialPath, ftype: quantizationTypes[typeName], threads, keepOutputTensor: isStreamBackbone});
        renameSync(partialPath, outputPath);
    } catch (error) {
        rmSync(partialPath, {force: true});
        throw error;
    } finally {
        clearInterval(timer);
    }
    if (head != null && !(existsSync(head.target) && sameFile(head.source, head.target))) {
        const partialHead = `${head.target}.partial-${process.pid}`;
        copyFileSync(head.source, partialHead);
        renameSync(partialHead, head.target);
    }
    return {outputPath, type: typeName, bytes: statSync(outputPath).size, headPath: head?.target ?? null, elapsedMs: performance.now() - started};
}

/** Refuses an output that is the input (also through a symbolic or hard link), a folder, or in a missing folder. */
function checkOutputPath(inputPath: string, outputPath: string): void {
    if (existsSync(outputPath)) {
        if (statSync(outputPath).isDirectory())
            throw new Error(`Expected a file path for the output but ${outputPath} is a folder`);
        if (sameFile(inputPath, outputPath))
            throw new Error(`The output ${outputPath} is the input ${inputPath}${outputPath === inputPath ? "" : " (a link to it)"}: write another file`);
    }
    const folder = path.dirname(outputPath);
    if (!existsSync(folder) || !statSync(folder).isDirectory())
        throw new Error(`The folder of the output ${outputPath} does not exist`);
}

/** Whether two existing paths are one file (same device and inode). */
function sameFile(a: string, b: string): boolean {
    const [first, second] = [statSync(a), statSync(b)];
    return first.dev === second.dev && first.ino === second.ino;
}
