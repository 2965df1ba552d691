#include "qg_output_rows.h"

#include <fstream>
#include <set>

#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "ggml.h"
#include "gguf.h"
#include "qg_cpu_graph.h"

static const char * const QG_ROWS_WHAT = "the Gen candidate logits";
static const size_t       QG_ROWS_GRAPH_NODES = 8;

struct qg_output_rows {
    std::vector<int32_t>    tokens;
    std::string             tensor;  // the file's tensor the rows come from
    ggml_context_ptr        ctx;     // metadata of `rows`
    ggml_backend_buffer_ptr buffer;  // its data, in a CPU buffer
    ggml_tensor *           rows = nullptr;  // [n_embd, tokens], the file's type
};

struct qg_output_rows_state {
    const qg_output_rows * rows = nullptr;
    qg_cpu_graph           graph;
};

// Whether ggml's CPU backend multiplies a matrix of `type` by F32 hidden states.
static bool cpu_multiplies(ggml_backend_dev_t cpu, enum ggml_type type, int64_t n_embd) {
    ggml_init_params params = { 4 * ggml_tensor_overhead(), nullptr, /*.no_alloc =*/ true };
    ggml_context_ptr ctx(ggml_init(params));
    ggml_tensor * a = ggml_new_tensor_2d(ctx.get(), type, n_embd, 1);
    ggml_tensor * b = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, n_embd, 1);
    return ggml_backend_dev_supports_op(cpu, ggml_mul_mat(ctx.get(), a, b));
}

qg_output_rows * qg_output_rows_load(const std::string & path, int64_t n_embd, const std::vector<int32_t> & tokens,
                                     std::string & error) {
    if (tokens.empty()) {
        error = "Expected at least one candidate token";
        return nullptr;
    }
    if (std::set<int32_t>(tokens.begin(), tokens.end()).size() != tokens.size()) {
        error = "Expected distinct candidate tokens, but one appears twice";
        return nullptr;
    }
    ggml_context * file_ctx_raw = nullptr;
    gguf_init_params params = { /*.no_alloc =*/ true, /*.ctx =*/ &file_ctx_raw };
    gguf_context_ptr gctx(gguf_init_from_file(path.c_str(), params));
    ggml_context_ptr file_ctx(file_ctx_raw);
    if (!gctx) {
        error = "model file " + path + " could not be read as GGUF (missing, unreadable or corrupt)";
        return nullptr;
    }
    std::unique_ptr<qg_output_rows> rows(new qg_output_rows());
    // llama.cpp's own rule: the LM head is output.weight, else (tied embeddings) the token embeddings
    rows->tensor = gguf_find_tensor(gctx.get(), "output.weight") >= 0 ? "output.weight" : "token_embd.weight";
    const ggml_tensor * src = ggml_get_tensor(file_ctx.get(), rows->tensor.c_str());
    if (src == nullptr || gguf_find_tensor(gctx.get(), rows->tensor.c_str()) < 0) {
        error = "model file " + path + " has neither an output.weight nor a token_embd.weight tensor";
        return nullptr;
    }
    const std::string where = "model file " + path + ": tensor \"" + rows->tensor + "\"";
    if (ggml_n_dims(src) != 2 || src->ne[0] != n_embd) {
        error = where + ": expected shape [" + std::to_string(n_embd) + ", vocabulary] but found [" +
                std::to_string(src->ne[0]) + ", " + std::to_string(src->ne[1]) + ", " + std::to_string(src->ne[2]) + ", " +
                std::to_string(src->ne[3]) + "]";
        return nullptr;
    }
    for (const int32_t token : tokens) {
        if (token < 0 || token >= src->ne[1]) {
            error = where + " has " + std::to_string(src->ne[1]) + " rows: candidate token " + std::to_string(token) +
                    " has none";
            return nullptr;
        }
    }
    ggml_backend_dev_t cpu = qg_cpu_device(error);
    if (cpu == nullptr) {
        return nullptr;
    }
    if (!cpu_multiplies(cpu, src->type, n_embd)) {
        error = where + " is of type " + ggml_type_name(src->type) + ", which ggml's CPU backend cannot multiply";
        return nullptr;
    }

    rows->tokens = tokens;
    ggml_init_params ctx_params = { 2 * ggml_tensor_overhead(), nullptr, /*.no_alloc =*/ true };
    rows->ctx.reset(ggml_init(ctx_params));
    rows->rows = ggml_new_tensor_2d(rows->ctx.get(), src->type, n_embd, static_cast<int64_t>(tokens.size()));
    rows->buffer.reset(ggml_backend_alloc_ctx_tensors_from_buft(rows->ctx.get(), ggml_backend_dev_buffer_type(cpu)));
    if (!rows->buffer) {
        error = "could not allocate the CPU buffer for the candidate rows of " + path;
        return nullptr;
    }
    std::ifstream file(path, std::ios::binary);
    const size_t row_bytes = src->nb[1];
    const size_t base = gguf_get_data_offset(gctx.get()) + gguf_get_tensor_offset(gctx.get(), gguf_find_tensor(gctx.get(), rows->tensor.c_str()));
    std::vector<char> raw(row_bytes);
    for (size_t i = 0; i < tokens.size(); i++) {
        file.seekg(static_cast<std::streamoff>(base + static_cast<size_t>(tokens[i]) * row_bytes));
        file.read(raw.data(), static_cast<std::streamsize>(row_bytes));
        if (!file) {
            error = where + ": could not read the row of token " + std::to_string(tokens[i]) + " (file truncated?)";
            return nullptr;
        }
        ggml_backend_tensor_set(rows->rows, raw.data(), i * row_bytes, row_bytes);
    }
    return rows.release();
}

void qg_output_rows_free(qg_output_rows * rows) {
    delete rows;
}

const std::vector<int32_t> & qg_output_rows_tokens(const qg_output_rows * rows) {
    return rows->tokens;
}

const std::string & qg_output_rows_tensor(const qg_output_rows * rows) {
    return rows->tensor;
}

const char * qg_output_rows_type(const qg_output_rows * rows) {
    return ggml_type_name(rows->rows->type);
}

qg_output_rows_state * qg_output_rows_state_init(const qg_output_rows * rows, std::string & error) {
    std::unique_ptr<qg_output_rows_state> state(new qg_output_rows_state());
    state->rows = rows;
    if (!qg_cpu_graph_init(state->graph, QG_ROWS_GRAPH_NODES, QG_ROWS_WHAT, error)) {
        return nullptr;
    }
    return state.release();
}

void qg_output_rows_state_free(qg_output_rows_state * state) {
    delete state;
}

bool qg_output_rows_eval(qg_output_rows_state * state, const float * hidden, int64_t n_hidden_rows, float * out,
                         std::string & error) {
    if (n_hidden_rows == 0) {
        return true;
    }
    ggml_tensor * rows = state->rows->rows;
    ggml_context_ptr ctx = qg_cpu_graph_context(state->graph);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx.get(), QG_ROWS_GRAPH_NODES, false);
    ggml_tensor * inp = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, rows->ne[0], n_hidden_rows);
    ggml_set_input(inp);
    ggml_tensor * logits = ggml_mul_mat(ctx.get(), rows, inp);  // [tokens, n_hidden_rows]
    ggml_set_output(logits);
    ggml_build_forward_expand(gf, logits);
    if (!qg_cpu_graph_alloc(state->graph, gf, QG_ROWS_WHAT, error)) {
        return false;
    }
    ggml_backend_tensor_set(inp, hidden, 0, ggml_nbytes(inp));
    // a few dozen rows of a few thousand values: one thread does it faster than waking others
    if (!qg_cpu_graph_compute(state->graph, gf, 1, QG_ROWS_WHAT, error)) {
        return false;
    }
    ggml_backend_tensor_get(logits, out, 0, ggml_nbytes(logits));
    return true;
}
