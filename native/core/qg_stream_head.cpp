#include "qg_stream_head.h"

#include <algorithm>
#include <fstream>

#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "ggml.h"
#include "gguf.h"
#include "qg_cpu_graph.h"

static const char * const QG_HEAD_ARCH    = "qwen3guard-stream-head";
static const char * const QG_HEAD_VARIANT = "stream-head";

static const char * const PATH_PREFIX[QG_STREAM_PATH_COUNT] = { "query_", "" };
static const char * const PATH_LABEL_PREFIX[QG_STREAM_PATH_COUNT] = { "query", "response" };

// The four matrices of one path, widened to F32, ggml shapes [in, out].
struct qg_stream_head_path_weights {
    ggml_tensor * pre  = nullptr;  // [hidden, inner]
    ggml_tensor * norm = nullptr;  // [inner]
    ggml_tensor * risk = nullptr;  // [inner, n_risk]
    ggml_tensor * cat  = nullptr;  // [inner, n_category]
};

struct qg_stream_head {
    qg_stream_head_meta         meta;
    ggml_context_ptr            ctx;     // tensor metadata of the weights
    ggml_backend_buffer_ptr     buffer;  // the weights' data, in a CPU buffer
    qg_stream_head_path_weights paths[QG_STREAM_PATH_COUNT];
};

struct qg_stream_head_state {
    const qg_stream_head * head = nullptr;
    qg_cpu_graph           graph;
    int32_t                n_threads_max = 1;
    std::vector<float>     scratch;
};

static const char * const QG_HEAD_WHAT = "the Stream head";

//
// metadata
//

static std::string kv_where(const std::string & path, const char * key) {
    return "head file " + path + ": key \"" + key + "\"";
}

static bool kv_find(const gguf_context * ctx, const std::string & path, const char * key, enum gguf_type type,
                    int64_t & id, std::string & error) {
    id = gguf_find_key(ctx, key);
    if (id < 0) {
        error = kv_where(path, key) + " is missing";
        return false;
    }
    if (gguf_get_kv_type(ctx, id) != type) {
        error = kv_where(path, key) + ": expected type " + gguf_type_name(type) + " but found " +
                gguf_type_name(gguf_get_kv_type(ctx, id));
        return false;
    }
    return true;
}

static bool kv_get_str(const gguf_context * ctx, const std::string & path, const char * key, std::string & out,
                       std::string & error) {
    int64_t id;
    if (!kv_find(ctx, path, key, GGUF_TYPE_STRING, id, error)) {
        return false;
    }
    out = gguf_get_val_str(ctx, id);
    return true;
}

static bool kv_get_u32(const gguf_context * ctx, const std::string & path, const char * key, uint32_t & out,
                       std::string & error) {
    int64_t id;
    if (!kv_find(ctx, path, key, GGUF_TYPE_UINT32, id, error)) {
        return false;
    }
    out = gguf_get_val_u32(ctx, id);
    return true;
}

static bool kv_get_f32(const gguf_context * ctx, const std::string & path, const char * key, float & out,
                       std::string & error) {
    int64_t id;
    if (!kv_find(ctx, path, key, GGUF_TYPE_FLOAT32, id, error)) {
        return false;
    }
    out = gguf_get_val_f32(ctx, id);
    return true;
}

static bool kv_get_labels(const gguf_context * ctx, const std::string & path, const std::string & key,
                          std::vector<std::string> & out, std::string & error) {
    int64_t id;
    if (!kv_find(ctx, path, key.c_str(), GGUF_TYPE_ARRAY, id, error)) {
        return false;
    }
    if (gguf_get_arr_type(ctx, id) != GGUF_TYPE_STRING) {
        error = kv_where(path, key.c_str()) + ": expected an array of string but found an array of " +
                gguf_type_name(gguf_get_arr_type(ctx, id));
        return false;
    }
    const size_t n = gguf_get_arr_n(ctx, id);
    if (n == 0) {
        error = kv_where(path, key.c_str()) + ": expected at least one label but the array is empty";
        return false;
    }
    out.clear();
    for (size_t i = 0; i < n; i++) {
        out.emplace_back(gguf_get_arr_str(ctx, id, i));
    }
    return true;
}

static bool meta_read(const gguf_context * ctx, const std::string & path, qg_stream_head_meta & meta,
                      std::string & error) {
    std::string arch;
    if (!kv_get_str(ctx, path, "general.architecture", arch, error)) {
        return false;
    }
    std::string variant;
    const int64_t variant_id = gguf_find_key(ctx, "qwen3guard.variant");
    if (variant_id >= 0 && gguf_get_kv_type(ctx, variant_id) == GGUF_TYPE_STRING) {
        variant = gguf_get_val_str(ctx, variant_id);
    }
    if (arch != QG_HEAD_ARCH || variant != QG_HEAD_VARIANT) {
        error = "head file " + path + " is not a Qwen3Guard-Stream head: expected general.architecture \"" +
                QG_HEAD_ARCH + "\" and qwen3guard.variant \"" + QG_HEAD_VARIANT + "\" but found \"" + arch +
                "\" and \"" + variant + "\"";
        if (variant == "stream-backbone") {
            error += " (that is the backbone: pass it as the model and its .head.gguf as the head)";
        }
        return false;
    }
    if (!kv_get_str(ctx, path, "qwen3guard.fingerprint", meta.fingerprint, error) ||
        !kv_get_u32(ctx, path, "qwen3guard.head.hidden_size", meta.n_hidden, error) ||
        !kv_get_u32(ctx, path, "qwen3guard.head.guard_inner_size", meta.n_inner, error) ||
        !kv_get_f32(ctx, path, "qwen3guard.head.rms_norm_eps", meta.eps, error)) {
        return false;
    }
    if (meta.n_hidden == 0 || meta.n_inner == 0 || !(meta.eps > 0.0f)) {
        error = "head file " + path + ": expected a positive hidden_size, guard_inner_size and rms_norm_eps but found " +
                std::to_string(meta.n_hidden) + ", " + std::to_string(meta.n_inner) + " and " + std::to_string(meta.eps);
        return false;
    }
    for (int p = 0; p < QG_STREAM_PATH_COUNT; p++) {
        const std::string prefix = std::string("qwen3guard.head.") + PATH_LABEL_PREFIX[p];
        if (!kv_get_labels(ctx, path, prefix + "_risk_level_labels", meta.risk_labels[p], error) ||
            !kv_get_labels(ctx, path, prefix + "_category_labels", meta.category_labels[p], error)) {
            return false;
        }
    }
    return true;
}

bool qg_stream_head_meta_read(const std::string & path, qg_stream_head_meta & meta, std::string & error) {
    gguf_init_params params = { /*.no_alloc =*/ true, /*.ctx =*/ nullptr };
    gguf_context_ptr gctx(gguf_init_from_file(path.c_str(), params));
    if (!gctx) {
        error = "head file " + path + " could not be read as GGUF (missing, unreadable or corrupt)";
        return false;
    }
    return meta_read(gctx.get(), path, meta, error);
}

//
// weights
//

// Finds `name` in the file, checks its type and shape, and creates its F32 twin in `ctx`.
static ggml_tensor * weight_declare(const gguf_context * gctx, ggml_context * file_ctx, ggml_context * ctx,
                                    const std::string & path, const std::string & name, int64_t ne0, int64_t ne1,
                                    std::string & error) {
    ggml_tensor * src = ggml_get_tensor(file_ctx, name.c_str());
    if (src == nullptr || gguf_find_tensor(gctx, name.c_str()) < 0) {
        error = "head file " + path + ": tensor \"" + name + "\" is missing";
        return nullptr;
    }
    if (src->type != GGML_TYPE_F32 && src->type != GGML_TYPE_F16 && src->type != GGML_TYPE_BF16) {
        error = "head file " + path + ": tensor \"" + name + "\": expected type F32, F16 or BF16 but found " +
                ggml_type_name(src->type);
        return nullptr;
    }
    const int n_dims = ne1 > 0 ? 2 : 1;
    const bool shape_ok = ggml_n_dims(src) == n_dims && src->ne[0] == ne0 && (n_dims == 1 || src->ne[1] == ne1);
    if (!shape_ok) {
        error = "head file " + path + ": tensor \"" + name + "\": expected shape [" + std::to_string(ne0) +
                (n_dims == 2 ? ", " + std::to_string(ne1) : std::string()) + "] but found [" +
                std::to_string(src->ne[0]) + ", " + std::to_string(src->ne[1]) + ", " + std::to_string(src->ne[2]) +
                ", " + std::to_string(src->ne[3]) + "]";
        return nullptr;
    }
    ggml_tensor * dst = n_dims == 2 ? ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ne0, ne1)
                                    : ggml_new_tensor_1d(ctx, GGML_TYPE_F32, ne0);
    ggml_set_name(dst, name.c_str());
    return dst;
}

// Reads every weight's bytes from the file and stores it widened to F32 in its backend tensor.
static bool weights_read(const gguf_context * gctx, ggml_context * file_ctx, const qg_stream_head & head,
                         const std::string & path, std::string & error) {
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        error = "head file " + path + " could not be opened";
        return false;
    }
    std::vector<uint8_t> raw;
    std::vector<float>   f32;
    for (ggml_tensor * dst = ggml_get_first_tensor(head.ctx.get()); dst != nullptr;
         dst = ggml_get_next_tensor(head.ctx.get(), dst)) {
        const ggml_tensor * src = ggml_get_tensor(file_ctx, dst->name);
        const int64_t id = gguf_find_tensor(gctx, dst->name);
        const size_t offset = gguf_get_data_offset(gctx) + gguf_get_tensor_offset(gctx, id);
        raw.resize(ggml_nbytes(src));
        file.seekg(static_cast<std::streamoff>(offset));
        file.read(reinterpret_cast<char *>(raw.data()), static_cast<std::streamsize>(raw.size()));
        if (!file) {
            error = "head file " + path + ": could not read the data of tensor \"" + dst->name + "\" (file truncated?)";
            return false;
        }
        const int64_t n = ggml_nelements(src);
        f32.resize(static_cast<size_t>(n));
        switch (src->type) {
            case GGML_TYPE_F32:  std::copy_n(reinterpret_cast<const float *>(raw.data()), n, f32.data()); break;
            case GGML_TYPE_F16:  ggml_fp16_to_fp32_row(reinterpret_cast<const ggml_fp16_t *>(raw.data()), f32.data(), n); break;
            case GGML_TYPE_BF16: ggml_bf16_to_fp32_row(reinterpret_cast<const ggml_bf16_t *>(raw.data()), f32.data(), n); break;
            default:             error = "unreachable tensor type"; return false;
        }
        ggml_backend_tensor_set(dst, f32.data(), 0, ggml_nbytes(dst));
    }
    return true;
}

qg_stream_head * qg_stream_head_load(const std::string & path, std::string & error) {
    ggml_context * file_ctx_raw = nullptr;
    gguf_init_params params = { /*.no_alloc =*/ true, /*.ctx =*/ &file_ctx_raw };
    gguf_context_ptr gctx(gguf_init_from_file(path.c_str(), params));
    ggml_context_ptr file_ctx(file_ctx_raw);
    if (!gctx) {
        error = "head file " + path + " could not be read as GGUF (missing, unreadable or corrupt)";
        return nullptr;
    }

    std::unique_ptr<qg_stream_head> head(new qg_stream_head());
    if (!meta_read(gctx.get(), path, head->meta, error)) {
        return nullptr;
    }
    const qg_stream_head_meta & meta = head->meta;

    ggml_init_params ctx_params = { /*.mem_size =*/ 8 * ggml_tensor_overhead(), /*.mem_buffer =*/ nullptr, /*.no_alloc =*/ true };
    head->ctx.reset(ggml_init(ctx_params));
    for (int p = 0; p < QG_STREAM_PATH_COUNT; p++) {
        const std::string prefix = PATH_PREFIX[p];
        const int64_t n_risk = static_cast<int64_t>(meta.risk_labels[p].size());
        const int64_t n_cat  = static_cast<int64_t>(meta.category_labels[p].size());
        qg_stream_head_path_weights & w = head->paths[p];
        w.pre  = weight_declare(gctx.get(), file_ctx.get(), head->ctx.get(), path, prefix + "risk_level_category_pre.weight", meta.n_hidden, meta.n_inner, error);
        if (!w.pre) { return nullptr; }
        w.norm = weight_declare(gctx.get(), file_ctx.get(), head->ctx.get(), path, prefix + "risk_level_category_layernorm.weight", meta.n_inner, 0, error);
        if (!w.norm) { return nullptr; }
        w.risk = weight_declare(gctx.get(), file_ctx.get(), head->ctx.get(), path, prefix + "risk_level_head.weight", meta.n_inner, n_risk, error);
        if (!w.risk) { return nullptr; }
        w.cat  = weight_declare(gctx.get(), file_ctx.get(), head->ctx.get(), path, prefix + "category_head.weight", meta.n_inner, n_cat, error);
        if (!w.cat) { return nullptr; }
    }

    ggml_backend_dev_t cpu = qg_cpu_device(error);
    if (cpu == nullptr) {
        return nullptr;
    }
    head->buffer.reset(ggml_backend_alloc_ctx_tensors_from_buft(head->ctx.get(), ggml_backend_dev_buffer_type(cpu)));
    if (!head->buffer) {
        error = "could not allocate the CPU buffer for the head weights of " + path;
        return nullptr;
    }
    if (!weights_read(gctx.get(), file_ctx.get(), *head, path, error)) {
        return nullptr;
    }
    return head.release();
}

void qg_stream_head_free(qg_stream_head * head) {
    delete head;
}

const qg_stream_head_meta & qg_stream_head_get_meta(const qg_stream_head * head) {
    return head->meta;
}

int32_t qg_stream_head_n_out(const qg_stream_head * head, enum qg_stream_path path) {
    return static_cast<int32_t>(head->meta.risk_labels[path].size() + head->meta.category_labels[path].size());
}

//
// compute
//

static const size_t  QG_HEAD_GRAPH_NODES        = 64;
static const int64_t QG_HEAD_SINGLE_THREAD_WORK = int64_t(1) << 23;  // multiply-adds of the pre-projections

qg_stream_head_state * qg_stream_head_state_init(const qg_stream_head * head, int32_t n_threads, std::string & error) {
    std::unique_ptr<qg_stream_head_state> state(new qg_stream_head_state());
    state->head = head;
    if (!qg_cpu_graph_init(state->graph, QG_HEAD_GRAPH_NODES, QG_HEAD_WHAT, error)) {
        return nullptr;
    }
    state->n_threads_max = std::max<int32_t>(1, n_threads);
    return state.release();
}

void qg_stream_head_state_free(qg_stream_head_state * state) {
    delete state;
}

bool qg_stream_head_eval(qg_stream_head_state * state, uint32_t heads,
                         const float * const hidden[QG_STREAM_PATH_COUNT], const int64_t n_rows[QG_STREAM_PATH_COUNT],
                         float * const out[QG_STREAM_PATH_COUNT], std::string & error) {
    const qg_stream_head & head = *state->head;

    ggml_context_ptr ctx = qg_cpu_graph_context(state->graph);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx.get(), QG_HEAD_GRAPH_NODES, false);

    ggml_tensor * inp[QG_STREAM_PATH_COUNT]  = {};
    ggml_tensor * risk[QG_STREAM_PATH_COUNT] = {};
    ggml_tensor * cat[QG_STREAM_PATH_COUNT]  = {};
    for (int p = 0; p < QG_STREAM_PATH_COUNT; p++) {
        if ((heads & (1u << p)) == 0 || n_rows[p] == 0) {
            continue;
        }
        const qg_stream_head_path_weights & w = head.paths[p];
        inp[p] = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, head.meta.n_hidden, n_rows[p]);
        ggml_set_input(inp[p]);

        ggml_tensor * z = ggml_mul_mat(ctx.get(), w.pre, inp[p]);  // [inner, n]
        z = ggml_rms_norm(ctx.get(), z, head.meta.eps);
        z = ggml_mul(ctx.get(), z, w.norm);
        risk[p] = ggml_soft_max(ctx.get(), ggml_mul_mat(ctx.get(), w.risk, z));  // [n_risk, n]
        cat[p]  = ggml_soft_max(ctx.get(), ggml_mul_mat(ctx.get(), w.cat, z));   // [n_cat, n]
        ggml_set_output(risk[p]);
        ggml_set_output(cat[p]);
        ggml_build_forward_expand(gf, risk[p]);
        ggml_build_forward_expand(gf, cat[p]);
    }
    if (ggml_graph_n_nodes(gf) == 0) {
        return true;
    }
    // A few rows are far cheaper on one thread than the cost of waking and joining more (a single row is ~1M
    // multiply-adds at 0.6B size); many rows (a whole prompt asked for) use them all.
    int64_t work = 0;
    for (int p = 0; p < QG_STREAM_PATH_COUNT; p++) {
        work += inp[p] != nullptr ? n_rows[p] * head.meta.n_hidden * head.meta.n_inner : 0;
    }
    const int32_t n_threads = work < QG_HEAD_SINGLE_THREAD_WORK ? 1 : state->n_threads_max;
    if (!qg_cpu_graph_alloc(state->graph, gf, QG_HEAD_WHAT, error)) {
        return false;
    }
    for (int p = 0; p < QG_STREAM_PATH_COUNT; p++) {
        if (inp[p] != nullptr) {
            ggml_backend_tensor_set(inp[p], hidden[p], 0, ggml_nbytes(inp[p]));
        }
    }
    if (!qg_cpu_graph_compute(state->graph, gf, n_threads, QG_HEAD_WHAT, error)) {
        return false;
    }
    for (int p = 0; p < QG_STREAM_PATH_COUNT; p++) {
        if (inp[p] == nullptr) {
            continue;
        }
        const int64_t n_risk = risk[p]->ne[0];
        const int64_t n_cat  = cat[p]->ne[0];
        const int64_t n_out  = n_risk + n_cat;
        std::vector<float> & scratch = state->scratch;
        scratch.resize(static_cast<size_t>(n_rows[p] * n_out));
        float * risk_data = scratch.data();
        float * cat_data  = scratch.data() + n_rows[p] * n_risk;
        ggml_backend_tensor_get(risk[p], risk_data, 0, ggml_nbytes(risk[p]));
        ggml_backend_tensor_get(cat[p], cat_data, 0, ggml_nbytes(cat[p]));
        for (int64_t r = 0; r < n_rows[p]; r++) {
            std::copy_n(risk_data + r * n_risk, n_risk, out[p] + r * n_out);
            std::copy_n(cat_data + r * n_cat, n_cat, out[p] + r * n_out + n_risk);
        }
    }
    return true;
}
