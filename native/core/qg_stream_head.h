// The Qwen3Guard-Stream classification head: its GGUF file (docs/FORMATS.md) and its math, run as a ggml graph
// on the CPU backend. No N-API types.
//
// For every hidden state h (the backbone's final-norm output) and each of the two paths (query, response):
//     z = RMSNorm(W_pre · h) ⊙ w_norm;  risk = softmax(W_risk · z);  category = softmax(W_cat · z)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

enum qg_stream_path : int32_t {
    QG_STREAM_PATH_QUERY    = 0,
    QG_STREAM_PATH_RESPONSE = 1,
    QG_STREAM_PATH_COUNT    = 2,
};

// Bit set of paths, as in the JS contract (AddonHead): 1 = query, 2 = response.
enum qg_stream_heads : uint32_t {
    QG_STREAM_HEADS_QUERY    = 1u << QG_STREAM_PATH_QUERY,
    QG_STREAM_HEADS_RESPONSE = 1u << QG_STREAM_PATH_RESPONSE,
    QG_STREAM_HEADS_ALL      = QG_STREAM_HEADS_QUERY | QG_STREAM_HEADS_RESPONSE,
};

// What the head file says, before any weight is read.
struct qg_stream_head_meta {
    std::string fingerprint;
    uint32_t    n_hidden = 0;
    uint32_t    n_inner  = 0;
    float       eps      = 0.0f;
    // per path: risk-level labels and category labels, in head order
    std::vector<std::string> risk_labels[QG_STREAM_PATH_COUNT];
    std::vector<std::string> category_labels[QG_STREAM_PATH_COUNT];
};

struct qg_stream_head;

// Reads the head file's metadata only (fast). Returns false with `error` naming the file and the key or tensor
// at fault when it is not a Qwen3Guard-Stream head.
bool qg_stream_head_meta_read(const std::string & path, qg_stream_head_meta & meta, std::string & error);

// Loads the head: checks every tensor's shape and type (F32, F16 or BF16), widens the weights to F32 and keeps
// them in a CPU backend buffer. Returns nullptr with `error` set on failure.
qg_stream_head * qg_stream_head_load(const std::string & path, std::string & error);

void qg_stream_head_free(qg_stream_head * head);

const qg_stream_head_meta & qg_stream_head_get_meta(const qg_stream_head * head);

// Outputs per row of a path: risk-level labels + category labels.
int32_t qg_stream_head_n_out(const qg_stream_head * head, enum qg_stream_path path);

// Per-user compute state: a CPU backend with its thread count and a graph allocator. One per stream context;
// states of one head may compute on different threads at the same time.
struct qg_stream_head_state;

qg_stream_head_state * qg_stream_head_state_init(const qg_stream_head * head, int32_t n_threads, std::string & error);

void qg_stream_head_state_free(qg_stream_head_state * state);

// Applies the head to rows of hidden states in ONE graph. For each path p in `heads`, `hidden[p]` holds `n_rows[p]`
// rows of n_hidden floats and `out[p]` receives n_rows[p] × qg_stream_head_n_out(p) probabilities, row-major:
// the risk-level softmax, then the category softmax. Paths not in `heads` (or with no rows) are skipped.
bool qg_stream_head_eval(qg_stream_head_state * state, uint32_t heads,
                         const float * const hidden[QG_STREAM_PATH_COUNT], const int64_t n_rows[QG_STREAM_PATH_COUNT],
                         float * const out[QG_STREAM_PATH_COUNT], std::string & error);

struct qg_stream_head_deleter {
    void operator()(qg_stream_head * head) const { qg_stream_head_free(head); }
};
struct qg_stream_head_state_deleter {
    void operator()(qg_stream_head_state * state) const { qg_stream_head_state_free(state); }
};
using qg_stream_head_ptr       = std::unique_ptr<qg_stream_head, qg_stream_head_deleter>;
using qg_stream_head_state_ptr = std::unique_ptr<qg_stream_head_state, qg_stream_head_state_deleter>;
