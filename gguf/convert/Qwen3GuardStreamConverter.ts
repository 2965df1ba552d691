// Qwen3ForGuardModel (Qwen3Guard-Stream) → a `qwen3` backbone GGUF with a placeholder LM head, plus the head GGUF
// beside it (docs/FORMATS.md).

import path from "node:path";
import {GgmlType} from "../ggmlTypes.js";
import type {GgufWriter} from "../GgufWriter.js";
import {checkpointFingerprint} from "./fingerprint.js";
import {besideOutFile, rowFitsType} from "./ModelConverter.js";
import type {CheckpointSource, ExpectedTensor, PlannedTensor, ResolvedConvertOptions} from "./ModelConverter.js";
import {Qwen3Converter} from "./Qwen3Converter.js";
import type {BackboneTensor} from "./qwen3Hparams.js";
import {readStreamHeadConfig, streamHeadTensors, writeStreamHeadFile} from "./streamHead.js";
import type {StreamHeadConfig} from "./streamHead.js";

/**
 * The ggml type of the Stream backbone's placeholder `output.weight` [hidden, vocab]. llama.cpp still multiplies the
 * final hidden states by it for every output row, but its values are never read, so it only has to be cheap and to
 * run on every backend: Q1_0 is the smallest type (1.125 bits per weight: 18 bytes per 128) with an AVX2/NEON dot
 * product against Q8_0 activations on the CPU and kernels on CUDA, Metal and Vulkan. Rows that do not split into its
 * 128-wide blocks (hidden sizes of tiny test models) fall back to F16, as quantized conversions do.
 */
export const STREAM_PLACEHOLDER_OUTPUT_TYPE = GgmlType.Q1_0;

/** Suffix of the head GGUF written beside the backbone GGUF (`model.gguf` → `model.head.gguf`). */
export const STREAM_HEAD_FILE_SUFFIX = ".head.gguf";

/** Converter for `Qwen3ForGuardModel` checkpoints (Qwen3Guard-Stream). */
export class Qwen3GuardStreamConverter extends Qwen3Converter {
    public static override readonly architecture: string = "Qwen3ForGuardModel";
    protected override readonly variant: string = "stream-backbone";
    private readonly head: StreamHeadConfig;
    private readonly headFile: string;
    private readonly checkpointFingerprint: string;

    public constructor(source: CheckpointSource, options: ResolvedConvertOptions) {
        super(source, options);
        this.head = readStreamHeadConfig(source.config);
        this.headFile = besideOutFile(options.outFile, STREAM_HEAD_FILE_SUFFIX);
        const headNames = new Set(streamHeadTensors(this.head).map((tensor) => tensor.name));
        const backbone = source.checkpoint.tensorNames().filter((name) => !headNames.has(name)).map((name) => source.checkpoint.tensor(name));
        this.checkpointFingerprint = checkpointFingerprint(source.configBytes, backbone);
    }

    protected override expectedTensors(): ExpectedTensor[] {
        return [
            ...super.expectedTensors(),
            {name: "lm_head.weight", shape: [this.hparams.vocabSize, this.hparams.hiddenSize], optional: true},
            ...streamHeadTensors(this.head)
        ];
    }

    protected override planTensors(): PlannedTensor[] {
        const ne = [this.hparams.hiddenSize, this.hparams.vocabSize];
        return [...super.planTensors(), {name: "output.weight", ne, type: rowFitsType(ne, STREAM_PLACEHOLDER_OUTPUT_TYPE), source: undefined}];
    }

    protected override setGuardMetadata(writer: GgufWriter): void {
        writer.addString("qwen3guard.fingerprint", this.checkpointFingerprint);
        writer.addString("qwen3guard.stream.head_file", path.basename(this.headFile));
    }

    protected override companionFiles(): string[] {
        return [this.headFile];
    }

    protected override async writeCompanionFiles(staged: (file: string) => string): Promise<void> {
        await writeStreamHeadFile(staged(this.headFile), this.source.checkpoint, this.head, this.checkpointFingerprint);
    }

    protected override fingerprint(): string {
        return this.checkpointFingerprint;
    }

    // The backbone never has an LM head here: the placeholder takes its place.
    protected override backboneTensors(): BackboneTensor[] {
        return super.backboneTensors().filter((tensor) => tensor.hfName !== "lm_head.weight");
    }
}
