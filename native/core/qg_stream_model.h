// A model of the core: a Qwen3Guard-Stream backbone GGUF loaded by llama.cpp with its head GGUF (docs/FORMATS.md),
// checked to belong together; or a Qwen3Guard-Gen GGUF, whose contexts read the logits of chosen candidate tokens
// from rows of its output matrix (qg_output_rows.h). No N-API types.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qg_stream_head.h"

struct llama_model;

struct qg_stream_model_params {
    std::string model_path;
    std::string head_path;     // empty: the file named by qwen3guard.stream.head_file, beside the model
    int32_t     n_gpu_layers;  // layers to offload (0: none)
    bool        use_mmap;
    bool        gen = false;   // a Gen model (any GGUF but a Stream backbone or head): no head
};

struct qg_stream_model_info {
    uint32_t            n_hidden;
    uint32_t            n_inner;
    float               eps;
    int32_t             n_ctx_train;
    int32_t             n_vocab;
    std::string         head_path;  // the head file that was loaded ("" for a Gen model)
    qg_stream_head_meta head;       // fingerprint and labels (empty for a Gen model)
    bool                gen;
    std::string         model_path;
};

struct qg_stream_model;

// Loads and checks the pair. Returns nullptr with `error` saying what is wrong and what to pass instead.
qg_stream_model * qg_stream_model_load(const qg_stream_model_params & params, std::string & error);

void qg_stream_model_free(qg_stream_model * model);

const qg_stream_model_info & qg_stream_model_get_info(const qg_stream_model * model);

const llama_model * qg_stream_model_get_llama(const qg_stream_model * model);

// nullptr for a Gen model.
const qg_stream_head * qg_stream_model_get_head(const qg_stream_model * model);


// Tokenizes with the backbone's vocabulary, adding no BOS/EOS; `parse_special` false reads special-token text
// such as <|im_end|> as plain text. Returns false with `error` set when the text is too long for llama.cpp.
bool qg_stream_model_tokenize(const qg_stream_model * model, const std::string & text, bool parse_special,
                              std::vector<int32_t> & tokens, std::string & error);

// The bytes of a token's text, special tokens rendered. Returns false with `error` set for an unknown token.
bool qg_stream_model_token_bytes(const qg_stream_model * model, int32_t token, std::string & bytes, std::string & error);

struct qg_stream_model_deleter {
    void operator()(qg_stream_model * model) const { qg_stream_model_free(model); }
};
using qg_stream_model_ptr = std::unique_ptr<qg_stream_model, qg_stream_model_deleter>;
