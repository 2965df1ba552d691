// Rows of a model's output matrix (its LM head: `output.weight`, or `token_embd.weight` when the embeddings are tied)
// for a chosen set of tokens, and their logits for final-norm hidden states: what Gen score mode reads instead of
// llama.cpp's whole LM head. No N-API types.
//
// The rows keep their GGUF type (any type ggml's CPU backend multiplies) and the logits come from ggml's CPU matrix
// product, the one llama.cpp's LM head runs on the CPU (for a quantized matrix it quantizes the hidden state the same
// way), so they equal llama.cpp's logits of those tokens up to the order of summation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct qg_output_rows;

// Reads the rows of `tokens` (distinct ids below the matrix's row count) from the GGUF file. `n_embd` is the model's
// hidden size. Returns nullptr with `error` naming the file and what is wrong.
qg_output_rows * qg_output_rows_load(const std::string & path, int64_t n_embd, const std::vector<int32_t> & tokens,
                                     std::string & error);

void qg_output_rows_free(qg_output_rows * rows);

// The tokens whose rows were read, in the order their logits come out.
const std::vector<int32_t> & qg_output_rows_tokens(const qg_output_rows * rows);

// `output.weight` or `token_embd.weight`, and its ggml type name.
const std::string & qg_output_rows_tensor(const qg_output_rows * rows);
const char * qg_output_rows_type(const qg_output_rows * rows);

// Per-user compute state (a CPU backend and its graph allocator); one per context.
struct qg_output_rows_state;

qg_output_rows_state * qg_output_rows_state_init(const qg_output_rows * rows, std::string & error);

void qg_output_rows_state_free(qg_output_rows_state * state);

// `out` receives n_hidden_rows × (number of tokens) logits, row-major, for `n_hidden_rows` rows of n_embd floats.
bool qg_output_rows_eval(qg_output_rows_state * state, const float * hidden, int64_t n_hidden_rows, float * out,
                         std::string & error);

struct qg_output_rows_deleter {
    void operator()(qg_output_rows * rows) const { qg_output_rows_free(rows); }
};
struct qg_output_rows_state_deleter {
    void operator()(qg_output_rows_state * state) const { qg_output_rows_state_free(state); }
};
using qg_output_rows_ptr       = std::unique_ptr<qg_output_rows, qg_output_rows_deleter>;
using qg_output_rows_state_ptr = std::unique_ptr<qg_output_rows_state, qg_output_rows_state_deleter>;
