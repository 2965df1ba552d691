// Sequences of ONE llama_context shared by all of them, fed in batches: the sessions of a Qwen3Guard-Stream model,
// with the head applied to the positions asked for, or the requests of a Qwen3Guard-Gen model, with the logits of
// its candidate tokens read at the positions asked for (never llama.cpp's whole LM head). No N-API types.
//
// KV layout (kv_per_seq): llama.cpp's non-unified cache gives every sequence a stream of its own, n_ctx / n_seq_max
// cells, and a token's attention runs over its own stream only. In the unified cache all sequences share one pool of
// n_ctx cells and every token's attention runs over the cells of ALL sequences (masked), so at S sessions of L tokens
// a step costs S × L attention per token instead of L: 8 sessions at 800 tokens stepped slower together than one
// alone. Per-sequence streams are the default of the library; the unified pool remains for one long sequence or
// sequences of very different lengths, where a fixed share would refuse what the pool could hold.
//
// Threading: one qg_stream_context_evaluate() at a time (a second concurrent call fails). While it runs on one
// thread, the sequence functions (acquire, release, truncate, copy, length, n_used) may be called from another; a
// release, truncate or copy then takes effect in the KV cache when the evaluate finishes (a copy from or into a
// sequence that the running evaluate appends to is refused).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qg_output_rows.h"
#include "qg_stream_head.h"
#include "qg_stream_model.h"

// Most threads a context may use (ggml's own limit is GGML_MAX_N_THREADS).
static const int32_t QG_STREAM_MAX_THREADS = 256;

// llama.cpp's flash attention setting (the values of llama_flash_attn_type).
enum qg_flash_attn : int32_t {
    QG_FLASH_ATTN_AUTO = -1,  // llama.cpp decides per device (on wherever the backend supports it, the CPU included)
    QG_FLASH_ATTN_OFF  = 0,
    QG_FLASH_ATTN_ON   = 1,
};

// The element type of the KV cache's K or V tensors (the values of the ggml_type llama.cpp stores them as). q8_0 holds
// 32 values in 34 bytes against f16's 64, so one KV budget holds more cells (on a CPU a step does not get faster: its
// attention is bound by llama.cpp's per-row dot products, not by the bytes). llama.cpp quantizes V only with flash
// attention, and a head must hold whole blocks (a multiple of 32 values).
enum qg_kv_type : int32_t {
    QG_KV_F16  = 1,  // GGML_TYPE_F16 (llama.cpp's default)
    QG_KV_Q8_0 = 8,  // GGML_TYPE_Q8_0
};

struct qg_stream_context_params {
    uint32_t      n_ctx;          // KV cells of all sequences together (the guard's one KV budget: never exceeded,
                                  // except that llama.cpp pads a per-sequence stream to at least 256 cells)
    uint32_t      n_seq_max;      // most sequences at once
    uint32_t      n_batch;        // most tokens in one llama_decode call
    uint32_t      n_ubatch;       // most tokens in one of llama.cpp's compute graphs (<= n_batch; 0: min(n_batch, 512))
    uint32_t      n_outputs_max;  // most output positions in one llama_decode call (<= n_batch; 0: n_batch). llama.cpp
                                  // keeps n_vocab floats of logits per output row: this bounds that buffer
    int32_t       n_threads;      // threads for the backbone and the head (<= 0: all hardware threads; at most QG_STREAM_MAX_THREADS)
    qg_flash_attn flash_attn;
    bool          stop_after_hidden;  // end every graph at the final-norm hidden states, skipping llama.cpp's LM head
                                      // (false: the whole graph runs, as stock llama.cpp does; for comparisons)
    bool          kv_per_seq;     // a KV stream per sequence of n_ctx / n_seq_max cells (each sequence's limit);
                                  // false: one unified pool of n_ctx cells that any sequence may fill
    std::vector<int32_t> candidates;  // a Gen model: the distinct tokens whose logits requests may ask for (their
                                      // output-matrix rows are read from the model file)
    qg_kv_type    type_k = QG_KV_F16;  // the KV cache's K and V element types (a quantized V needs flash_attn ON)
    qg_kv_type    type_v = QG_KV_F16;
};

// Tokens appended to one sequence, and the positions whose head outputs are wanted.
struct qg_stream_request {
    int32_t              seq;
    std::vector<int32_t> tokens;
    std::vector<int32_t> outputs;  // strictly ascending indices into tokens
    uint32_t             heads;    // qg_stream_heads bits (a Stream model)
    bool                 hidden;   // also return the final-norm hidden states of the output positions
    bool                 logits = false;  // the candidate tokens' logits at the output positions (a Gen model)
};

// Per request, row-major over its outputs.
struct qg_stream_result {
    // per path in `heads`: outputs × qg_stream_head_n_out(path) probabilities (risk softmax, then category softmax)
    std::vector<float> probs[QG_STREAM_PATH_COUNT];
    std::vector<float> hidden;  // outputs × n_hidden, when asked for
    std::vector<float> logits;  // outputs × candidate tokens (in the model's candidate order), when asked for
};

// Where the time of the last evaluate went (for measurements).
struct qg_stream_timings {
    int64_t t_decode_us;    // llama_decode calls, including reading the hidden states
    int64_t t_head_us;      // the head graph and the candidate logits
    int32_t n_decode;       // llama_decode calls
    int32_t n_tokens;       // tokens decoded
    int32_t n_outputs;      // output positions (head or candidate logits)
    int32_t n_graphs_stopped;  // graphs ended at the hidden states (stop_after_hidden): their LM head never ran
};

struct qg_stream_context;

qg_stream_context * qg_stream_context_init(const qg_stream_model * model, const qg_stream_context_params & params,
                                           std::string & error);

void qg_stream_context_free(qg_stream_context * ctx);

// A free sequence id in [0, n_seq_max). Returns false with `error` set when all are taken.
bool qg_stream_context_seq_acquire(qg_stream_context * ctx, int32_t & seq, std::string & error);

// Drops the sequence's KV cells and frees its id.
bool qg_stream_context_seq_release(qg_stream_context * ctx, int32_t seq, std::string & error);

// Keeps the first `n_keep` tokens of the sequence.
bool qg_stream_context_seq_truncate(qg_stream_context * ctx, int32_t seq, int32_t n_keep, std::string & error);

// Makes the empty sequence `dst` hold what `src` holds (its tokens' KV cells), without decoding them again. With
// kv_per_seq the cells are copied into dst's stream at the next evaluate; in the unified pool the two sequences share
// the cells, counted once by n_used while the copy and its source both hold them. Once the source is released or
// truncated, cells that two copies of it (or a copy of a copy) still share count twice: the pool then refuses early
// rather than late.
bool qg_stream_context_seq_copy(qg_stream_context * ctx, int32_t src, int32_t dst, std::string & error);

// Tokens the sequence holds (those of a running evaluate count once it has finished).
bool qg_stream_context_seq_length(qg_stream_context * ctx, int32_t seq, int32_t & n_tokens, std::string & error);

// KV cells held by all sequences together.
int32_t qg_stream_context_n_used(qg_stream_context * ctx);

// Most tokens one sequence may hold: n_ctx / n_seq_max with kv_per_seq, else n_ctx.
int32_t qg_stream_context_seq_cells(const qg_stream_context * ctx);

// Checks requests against the vocabulary and the acquired sequences without decoding anything (what can be told
// before an evaluate is queued). Returns false with `error` naming the request and the value at fault.
bool qg_stream_context_check(qg_stream_context * ctx, const std::vector<qg_stream_request> & requests, std::string & error);

// Appends every request's tokens to its sequence (several sequences packed into as few llama_decode calls as the
// batch size allows) and applies the head to the output positions. All or nothing: on any failure (context
// overflow, decode error) no sequence changes and `error` says why.
bool qg_stream_context_evaluate(qg_stream_context * ctx, const std::vector<qg_stream_request> & requests,
                                std::vector<qg_stream_result> & results, std::string & error);

// The timings of the last finished evaluate (all zero before the first). May be called while an evaluate runs.
qg_stream_timings qg_stream_context_last_timings(qg_stream_context * ctx);

struct qg_stream_context_deleter {
    void operator()(qg_stream_context * ctx) const { qg_stream_context_free(ctx); }
};
using qg_stream_context_ptr = std::unique_ptr<qg_stream_context, qg_stream_context_deleter>;
