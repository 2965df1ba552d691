// Qwen3ForCausalLM (Qwen3Guard-Gen) → the standard llama.cpp `qwen3` GGUF, as llama.cpp's own converter writes it.

import type {GgufWriter} from "../GgufWriter.js";
import {addBpeVocab, readBpeVocab} from "./bpeVocab.js";
import type {BpeVocab} from "./bpeVocab.js";
import {CheckpointConfigError} from "./errors.js";
import {ModelConverter} from "./ModelConverter.js";
import type {CheckpointSource, ExpectedTensor, PlannedTensor, ResolvedConvertOptions} from "./ModelConverter.js";
import {qwen3BackboneTensors, readQwen3Hparams} from "./qwen3Hparams.js";
import type {BackboneTensor, Qwen3Hparams} from "./qwen3Hparams.js";

/** `tokenizer.ggml.pre` of Qwen2/Qwen3 tokenizers (llama.cpp's pre-tokenizer hash table maps Qwen3 to it). */
const QWEN_PRE_TOKENIZER = "qwen2";

/** Converter for `Qwen3ForCausalLM` checkpoints (Qwen3Guard-Gen). */
export class Qwen3Converter extends ModelConverter {
    public static readonly architecture: string = "Qwen3ForCausalLM";
    protected override readonly ggufArchitecture = "qwen3";
    protected override readonly variant: string = "gen";
    protected readonly hparams: Qwen3Hparams;
    private vocab: BpeVocab | undefined;

    public constructor(source: CheckpointSource, options: ResolvedConvertOptions) {
        super(source, options);
        this.hparams = readQwen3Hparams(source.config);
        const ropeScaling = source.config.rope_scaling;
        if (ropeScaling !== undefined && ropeScaling !== null)
            throw new CheckpointConfigError(`Expected "rope_scaling" in config.json to be null but got ${JSON.stringify(ropeScaling)}`);
    }

    protected override expectedTensors(): ExpectedTensor[] {
        return this.backboneTensors().map(({hfName, shape}) => ({name: hfName, shape}));
    }

    protected override planTensors(): PlannedTensor[] {
        return this.backboneTensors().map(({hfName, ggufName, shape}) => {
            const ne = [...shape].reverse();
            return {name: ggufName, ne, type: this.weightType(ggufName, ne), source: hfName};
        });
    }

    protected override async loadVocab(): Promise<void> {
        this.vocab = await readBpeVocab(this.source.dir, this.source.config, this.hparams.vocabSize);
    }

    protected override setHyperparameters(writer: GgufWriter): void {
        const arch = this.ggufArchitecture;
        const h = this.hparams;
        writer.addUint32(`${arch}.block_count`, h.numHiddenLayers);
        writer.addUint32(`${arch}.context_length`, h.maxPositionEmbeddings);
        writer.addUint32(`${arch}.embedding_length`, h.hiddenSize);
        writer.addUint32(`${arch}.feed_forward_length`, h.intermediateSize);
        writer.addUint32(`${arch}.attention.head_count`, h.numAttentionHeads);
        writer.addUint32(`${arch}.attention.head_count_kv`, h.numKeyValueHeads);
        writer.addFloat32(`${arch}.rope.freq_base`, h.ropeTheta);
        writer.addFloat32(`${arch}.attention.layer_norm_rms_epsilon`, h.rmsNormEps);
        writer.addUint32(`${arch}.attention.key_length`, h.headDim);
        writer.addUint32(`${arch}.attention.value_length`, h.headDim);
    }

    protected override setVocab(writer: GgufWriter): void {
        addBpeVocab(writer, this.vocab!, QWEN_PRE_TOKENIZER);
    }

    /**
     * The backbone tensors this conversion writes; the LM head is included when the embeddings are untied or the
     * checkpoint has one anyway.
     */
    protected backboneTensors(): BackboneTensor[] {
        const hasLmHead = !this.hparams.tieWordEmbeddings || this.source.checkpoint.hasTensor("lm_head.weight");
        return qwen3BackboneTensors(this.hparams, hasLmHead);
    }
}
