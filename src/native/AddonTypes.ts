/**
 * The hand-written contract of everything the native addon (build/Release/qwenguard.node) exports.
 * Keep it in step with native/addon.cpp. Options reaching the addon are validated and defaulted in TypeScript.
 */

export interface AddonBuildInfo {
    /** llama.cpp release the addon was compiled against (node-llama-cpp's bundled source), e.g. `v0.4.0`. */
    release: string,
    /** Commit of that release's source bundle. */
    commit: string,
    /** `llama_version()` of the library loaded in the process. */
    llamaVersion: string,
    /** The shared library the addon's llama_* symbols were bound to. */
    libraryPath: string,
    /** `llama_print_system_info()`. */
    systemInfo: string
}

export interface AddonDevice {
    name: string,
    description: string,
    type: "cpu" | "gpu" | "igpu" | "accel" | "unknown",
    /** Backend registry name, e.g. `CPU`, `CUDA`, `Vulkan`, `Metal`. */
    backend: string,
    /** Enabled backend features, e.g. `AVX2`, `FMA` for the CPU. */
    features: string[]
}

export interface AddonQuantizeModelOptions {
    inputPath: string,
    outputPath: string,
    /** A `llama_ftype` value. */
    ftype: number,
    /** 0: all hardware threads. */
    threads: number,
    /** Leave `output.weight` as it is (the placeholder of a Stream backbone). */
    keepOutputTensor: boolean
}

export interface Addon {
    getBuildInfo(): AddonBuildInfo,
    getDevices(): AddonDevice[],
    /** ggml's own quantizer over rows of `nPerRow` floats (`ggml_quantize_chunk`, no importance matrix). */
    quantizeRows(ggmlType: number, data: Float32Array, nPerRow: number): Uint8Array,
    /** `llama_model_quantize`, on a worker thread. */
    quantizeModel(options: AddonQuantizeModelOptions): Promise<void>,
    StreamModel: AddonStreamModelConstructor
}

// ---- Stream engine (native/StreamModel.*, native/StreamContext.*, core in native/core/qg_stream_*) ----
// Argument types are checked in C++ (TypeError naming the argument, e.g.
// `StreamContext.evaluate: Expected requests[0].tokens to be an Int32Array but received number`); values C++ can
// judge on the spot (sequence ids, token ids, output indices) are refused synchronously with a RangeError; everything
// else (option ranges, defaults) is TypeScript's job.

/** Options of {@link AddonStreamModelConstructor.load}, fully defaulted by TypeScript. */
export interface AddonStreamModelOptions {
    modelPath: string,
    /** `""`: the file named by the backbone's `qwen3guard.stream.head_file`, in the model's folder. */
    headPath: string,
    /** Layers to offload to the GPU (0: none; a large number: all). */
    gpuLayers: number,
    useMmap: boolean,
    /** True: the file is a Qwen3Guard-Gen model (any GGUF but a Stream backbone or head; `headPath` must be `""`):
     * no head, its contexts take `candidates`. */
    gen?: boolean
}

/** What the two files say about the model. Labels are in head order, from the head file. */
export interface AddonStreamModelInfo {
    hiddenSize: number,
    innerSize: number,
    rmsNormEps: number,
    /** Training context length of the backbone (`qwen3.context_length`). */
    trainContextSize: number,
    vocabSize: number,
    fingerprint: string,
    /** The head file that was loaded (resolved when `headPath` was `""`). */
    headPath: string,
    responseRiskLabels: string[],
    responseCategoryLabels: string[],
    queryRiskLabels: string[],
    queryCategoryLabels: string[],
    /** `"gen"` when loaded with `gen` (no head: the head fields are empty), else `"stream"`. */
    variant: "gen" | "stream"
}

/** A KV cache element type, as llama.cpp's `--cache-type-k` / `--cache-type-v` name it. */
export type KvCacheType = "f16" | "q8_0";
export const KV_CACHE_TYPES: readonly KvCacheType[] = ["f16", "q8_0"];

export interface AddonStreamContextOptions {
    /** KV cells of all sequences together: the hard limit on the tokens they hold (the guard's one KV budget). */
    contextSize: number,
    /** Most sequences (sessions) at once (at most 256, llama.cpp's limit). */
    maxSequences: number,
    /** Most tokens in one llama_decode call. */
    batchSize: number,
    /** Most tokens in one of llama.cpp's compute graphs (`n_ubatch`, capped at `batchSize`). */
    ubatchSize: number,
    /** Most output positions in one llama_decode call (capped at `batchSize`; at least `maxSequences` is kept).
     * llama.cpp keeps n_vocab logits floats per output row (600 KiB for Qwen3): this bounds that buffer. */
    outputBatchSize: number,
    /** Threads of the backbone and the head (0: all hardware threads). */
    threads: number,
    /** llama.cpp's flash attention (`flash_attn_type`): `"auto"` lets llama.cpp decide per device. */
    flashAttention: "auto" | "on" | "off",
    /** End every output graph at the final-norm hidden states, so llama.cpp's LM head never runs (true in the
     * library); false runs llama.cpp's whole graph, to compare the two. */
    stopAfterHidden: boolean,
    /** `"per-sequence"`: llama.cpp's non-unified KV cache, a stream of `contextSize / maxSequences` cells per sequence
     * (its limit), each token's attention over its own sequence's cells only. `"shared"`: one unified pool of
     * `contextSize` cells any sequence may fill, each token's attention over the cells of all sequences (masked). */
    kvLayout: "per-sequence" | "shared",
    /** The element type of the KV cache's keys and values (llama.cpp's `type_k` / `type_v`). q8_0 holds a cell's keys
     * or values in 34 bytes a block of 32 against f16's 64; llama.cpp quantizes values only with flash attention, so
     * `cacheTypeV` `"q8_0"` needs `flashAttention` `"on"`. */
    cacheTypeK: KvCacheType,
    cacheTypeV: KvCacheType,
    /** A Gen model's context (required there, refused for a Stream model): distinct tokens whose rows of the output
     * matrix (`output.weight`, or `token_embd.weight` when the embeddings are tied; any type ggml's CPU backend
     * multiplies) are read from the model file, so that requests can ask for their logits ({@link AddonStreamRequest.logits}). */
    candidates?: Int32Array
}

/** Where the last finished evaluate's time went; all zero before the first. */
export interface AddonStreamTimings {
    /** llama_decode calls, reading the hidden states included. */
    decodeMs: number,
    /** The head graph. */
    headMs: number,
    decodeCalls: number,
    /** Tokens decoded. */
    tokens: number,
    /** Positions the head was applied to. */
    outputs: number,
    /** Graphs (one per llama.cpp ubatch with outputs) ended at the hidden states, their LM head skipped
     * (`stopAfterHidden`). */
    stoppedGraphs: number
}

/** Head selection bits for {@link AddonStreamRequest.heads}. */
export const enum AddonHead {
    query = 1,
    response = 2
}

/** Tokens to append to one sequence, and the positions whose head outputs are wanted. */
export interface AddonStreamRequest {
    /** An acquired sequence; at most one request per sequence in one evaluate. */
    sequence: number,
    /** Appended after the tokens the sequence already holds. */
    tokens: Int32Array,
    /** Strictly ascending indices into `tokens` whose outputs are returned. Only these positions run the final layer's
     * output rows (and, with `stopAfterHidden` false, llama.cpp's LM head): the others are only added to the KV cache. */
    outputs: Int32Array,
    /** Bit set of {@link AddonHead} (a Stream model; 0 for a Gen model). */
    heads: number,
    /** Also return the final-norm hidden states of the output positions (tests, debugging). */
    hidden?: boolean,
    /** Return the logits of the model's candidate tokens at the output positions (a Gen model). */
    logits?: boolean
}

/** Per request, row-major over its `outputs`. A field is present exactly when it was asked for. */
export interface AddonStreamResult {
    /** outputs × (queryRiskLabels + queryCategoryLabels) probabilities: risk softmax, then category softmax. */
    query?: Float32Array,
    /** outputs × (responseRiskLabels + responseCategoryLabels) probabilities, the same layout. */
    response?: Float32Array,
    /** outputs × hiddenSize. */
    hidden?: Float32Array,
    /** outputs × candidates (in the order of the load's `candidates`): ggml's CPU product of those output-matrix rows
     * and the hidden state, as llama.cpp's LM head computes them on the CPU. */
    logits?: Float32Array
}

/**
 * One llama_context shared by up to `maxSequences` sequences (KV layout: {@link AddonStreamContextOptions.kvLayout}). `evaluate` and `dispose` run on
 * worker threads, one at a time in call order; the sequence methods are synchronous and may be called meanwhile.
 */
export interface AddonStreamContext {
    /** A free sequence id; throws when all `maxSequences` are taken. */
    acquireSequence(): number,
    /** Clears the sequence's KV cells and frees its id. Throws while an evaluate using the sequence is in flight. */
    releaseSequence(sequence: number): void,
    /** Keeps the first `length` tokens of the sequence and drops the rest from the KV cache. Throws while an evaluate
     * using the sequence is in flight. */
    truncateSequence(sequence: number, length: number): void,
    /** Makes the empty sequence `target` hold what `source` holds, without decoding it again (llama.cpp's
     * `llama_memory_seq_cp`): per sequence the cells are copied into the target's stream at the next evaluate; in the
     * shared pool both sequences point at the same cells (`usedCells` counts them once while the source holds them; cells
     * two copies still share after their source is released or truncated count twice, refusing early, never late). Throws while an
     * evaluate using either is in flight. */
    copySequence(source: number, target: number): void,
    /** Tokens the sequence holds (an evaluate's tokens count from when it has finished). */
    sequenceLength(sequence: number): number,
    /** KV cells used by all sequences together. */
    usedCells(): number,
    /** Most tokens one sequence may hold: `contextSize / maxSequences` (rounded down) per sequence, else `contextSize`. */
    sequenceCells(): number,
    /** Timings of the last finished evaluate (callable while another runs). */
    lastTimings(): AddonStreamTimings,
    /**
     * Decodes all requests in as few llama_decode calls as the batch size allows, then applies the head to the output
     * positions in one graph. All or nothing: when it rejects (the context would overflow, llama_decode failed), no
     * sequence has changed. Throws synchronously for bad arguments.
     */
    evaluate(requests: AddonStreamRequest[]): Promise<AddonStreamResult[]>,
    /** Frees the context once the evaluates queued before it have finished; later calls throw "disposed". */
    dispose(): Promise<void>
}

export interface AddonStreamModel {
    info(): AddonStreamModelInfo,
    /** Tokenizes with the model's vocabulary (no BOS/EOS added); `parseSpecial` false treats `<|im_end|>` etc. as
     * plain text. */
    tokenize(text: string, parseSpecial: boolean): Int32Array,
    /** The bytes of a token's text (special tokens rendered). */
    tokenBytes(token: number): Uint8Array,
    createContext(options: AddonStreamContextOptions): Promise<AddonStreamContext>,
    /** Frees the model; rejects while any of its contexts is open (or being created). */
    dispose(): Promise<void>
}

export interface AddonStreamModelConstructor {
    /** Loads the backbone through llama.cpp and the head through ggml's gguf API, on a worker thread, after checking
     * that they belong together (variant keys, fingerprint, hidden size). */
    load(options: AddonStreamModelOptions): Promise<AddonStreamModel>
}
