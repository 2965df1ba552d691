#include "qg_stream_model.h"

#include <climits>
#include <filesystem>

#include "ggml-cpp.h"
#include "gguf.h"
#include "llama-cpp.h"
#include "llama.h"

static const char * const QG_BACKBONE_VARIANT = "stream-backbone";

struct qg_stream_model {
    llama_model_ptr      model;
    qg_stream_head_ptr   head;
    qg_stream_model_info info;
};

// The qwen3guard.* keys of the backbone, read with ggml's gguf API before llama.cpp loads anything.
struct backbone_keys {
    std::string variant;      // "" when the key is absent
    std::string fingerprint;
    std::string head_file;
};

static std::string kv_str_or_empty(const gguf_context * ctx, const char * key) {
    const int64_t id = gguf_find_key(ctx, key);
    if (id < 0 || gguf_get_kv_type(ctx, id) != GGUF_TYPE_STRING) {
        return "";
    }
    return gguf_get_val_str(ctx, id);
}

static bool backbone_keys_read(const std::string & path, backbone_keys & keys, std::string & error) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
        error = "model file " + path + " does not exist";
        return false;
    }
    gguf_init_params params = { /*.no_alloc =*/ true, /*.ctx =*/ nullptr };
    gguf_context_ptr gctx(gguf_init_from_file(path.c_str(), params));
    if (!gctx) {
        error = "model file " + path + " could not be read as GGUF (not a GGUF file, or corrupt)";
        return false;
    }
    keys.variant     = kv_str_or_empty(gctx.get(), "qwen3guard.variant");
    keys.fingerprint = kv_str_or_empty(gctx.get(), "qwen3guard.fingerprint");
    keys.head_file   = kv_str_or_empty(gctx.get(), "qwen3guard.stream.head_file");

    if (keys.variant == QG_BACKBONE_VARIANT) {
        if (keys.fingerprint.empty()) {
            error = "model " + path + " is a Qwen3Guard-Stream backbone without a qwen3guard.fingerprint key; "
                    "convert the checkpoint again with qwenguard's converter";
            return false;
        }
        return true;
    }
    if (keys.variant.empty()) {
        error = "model " + path + " is not a Qwen3Guard-Stream backbone (it has no qwen3guard.variant key): "
                "convert the Hugging Face Qwen3Guard-Stream checkpoint with qwenguard's converter";
    } else if (keys.variant == "stream-head") {
        error = path + " is a Qwen3Guard-Stream head file, not a backbone: pass the backbone GGUF as the model "
                "and this file as the head";
    } else if (keys.variant == "gen") {
        error = "model " + path + " is a Qwen3Guard-Gen model (qwen3guard.variant \"gen\"), not a Stream backbone: "
                "use it with the Gen judge, or pass a Qwen3Guard-Stream conversion";
    } else {
        error = "model " + path + ": expected qwen3guard.variant \"" + QG_BACKBONE_VARIANT + "\" but found \"" +
                keys.variant + "\"";
    }
    return false;
}

// Picks the head file: the one passed, or the one the backbone names, beside it.
static bool head_path_resolve(const std::string & model_path, const std::string & head_path, const backbone_keys & keys,
                              std::string & resolved, std::string & error) {
    std::error_code ec;
    if (!head_path.empty()) {
        if (!std::filesystem::is_regular_file(head_path, ec)) {
            error = "head file " + head_path + " does not exist";
            return false;
        }
        resolved = head_path;
        return true;
    }
    if (keys.head_file.empty()) {
        error = "model " + model_path + " is a Qwen3Guard-Stream backbone but names no head file "
                "(qwen3guard.stream.head_file is missing): pass head: <path of its .head.gguf>";
        return false;
    }
    const std::filesystem::path beside = std::filesystem::path(model_path).parent_path() / keys.head_file;
    if (!std::filesystem::is_regular_file(beside, ec)) {
        error = "model " + model_path + " is a Qwen3Guard-Stream backbone; its head file " + beside.string() +
                " (named in qwen3guard.stream.head_file) was not found: pass head: <path of the .head.gguf the "
                "converter wrote with it>";
        return false;
    }
    resolved = beside.string();
    return true;
}

// A new model with llama.cpp's model loaded and the info llama.cpp gives filled in; nullptr with `error` set.
static std::unique_ptr<qg_stream_model> model_load_llama(const qg_stream_model_params & params, std::string & error) {
    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = params.n_gpu_layers;
    mparams.load_mode    = params.use_mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
    std::unique_ptr<qg_stream_model> model(new qg_stream_model());
    model->model.reset(llama_model_load_from_file(params.model_path.c_str(), mparams));
    if (!model->model) {
        error = "llama.cpp could not load model " + params.model_path + " (see llama.cpp's log for the reason)";
        return nullptr;
    }
    const llama_model * lmodel = model->model.get();
    model->info.n_ctx_train = llama_model_n_ctx_train(lmodel);
    model->info.n_vocab     = llama_vocab_n_tokens(llama_model_get_vocab(lmodel));
    model->info.model_path  = params.model_path;
    return model;
}

static qg_stream_model * gen_model_load(const qg_stream_model_params & params, std::string & error) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(params.model_path, ec)) {
        error = "model file " + params.model_path + " does not exist";
        return nullptr;
    }
    backbone_keys keys;
    backbone_keys_read(params.model_path, keys, error);  // only its variant key matters here
    const bool is_backbone = keys.variant == QG_BACKBONE_VARIANT;
    if (is_backbone || keys.variant == "stream-head") {
        error = "model " + params.model_path + " is a Qwen3Guard-Stream " + (is_backbone ? "backbone" : "head") +
                ", not a Gen model: load it as a Stream model";
        return nullptr;
    }
    if (!params.head_path.empty()) {
        error = "a Gen model has no head file, but head " + params.head_path + " was passed";
        return nullptr;
    }
    std::unique_ptr<qg_stream_model> model = model_load_llama(params, error);
    if (!model) {
        return nullptr;
    }
    qg_stream_model_info & info = model->info;
    info.n_hidden = static_cast<uint32_t>(llama_model_n_embd(model->model.get()));
    info.n_inner  = 0;
    info.eps      = 0.0f;
    info.gen      = true;
    return model.release();
}

qg_stream_model * qg_stream_model_load(const qg_stream_model_params & params, std::string & error) {
    if (params.gen) {
        return gen_model_load(params, error);
    }
    backbone_keys keys;
    if (!backbone_keys_read(params.model_path, keys, error)) {
        return nullptr;
    }
    std::string head_path;
    if (!head_path_resolve(params.model_path, params.head_path, keys, head_path, error)) {
        return nullptr;
    }
    qg_stream_head_meta meta;
    if (!qg_stream_head_meta_read(head_path, meta, error)) {
        return nullptr;
    }
    if (meta.fingerprint != keys.fingerprint) {
        error = "head file " + head_path + " does not belong to model " + params.model_path +
                ": their qwen3guard.fingerprint keys differ (model " + keys.fingerprint + ", head " + meta.fingerprint +
                "); pass the head converted from the same checkpoint";
        return nullptr;
    }

    std::unique_ptr<qg_stream_model> model = model_load_llama(params, error);
    if (!model) {
        return nullptr;
    }
    const llama_model * lmodel = model->model.get();
    const int32_t n_embd = llama_model_n_embd(lmodel);
    if (static_cast<int64_t>(meta.n_hidden) != n_embd || llama_model_n_embd_out(lmodel) != n_embd) {
        error = "head file " + head_path + " expects hidden size " + std::to_string(meta.n_hidden) + " but model " +
                params.model_path + " has " + std::to_string(n_embd) + "; pass the head converted with this model";
        return nullptr;
    }

    model->head.reset(qg_stream_head_load(head_path, error));
    if (!model->head) {
        return nullptr;
    }

    qg_stream_model_info & info = model->info;
    info.n_hidden    = meta.n_hidden;
    info.n_inner     = meta.n_inner;
    info.eps         = meta.eps;
    info.gen         = false;
    info.head_path   = head_path;
    info.head        = meta;
    return model.release();
}

void qg_stream_model_free(qg_stream_model * model) {
    delete model;
}

const qg_stream_model_info & qg_stream_model_get_info(const qg_stream_model * model) {
    return model->info;
}

const llama_model * qg_stream_model_get_llama(const qg_stream_model * model) {
    return model->model.get();
}

const qg_stream_head * qg_stream_model_get_head(const qg_stream_model * model) {
    return model->head.get();
}


bool qg_stream_model_tokenize(const qg_stream_model * model, const std::string & text, bool parse_special,
                              std::vector<int32_t> & tokens, std::string & error) {
    if (text.size() > static_cast<size_t>(INT32_MAX / 2)) {
        error = "text of " + std::to_string(text.size()) + " bytes is too long to tokenize at once";
        return false;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model->model.get());
    const int32_t text_len = static_cast<int32_t>(text.size());
    // Byte-level BPE never makes more tokens than bytes; +1 for an empty text.
    tokens.resize(static_cast<size_t>(text_len) + 1);
    int32_t n = llama_tokenize(vocab, text.data(), text_len, tokens.data(), static_cast<int32_t>(tokens.size()),
                               /*add_special =*/ false, parse_special);
    if (n < 0 && n != INT32_MIN) {
        tokens.resize(static_cast<size_t>(-n));
        n = llama_tokenize(vocab, text.data(), text_len, tokens.data(), static_cast<int32_t>(tokens.size()), false,
                           parse_special);
    }
    if (n < 0) {
        error = "llama_tokenize failed on a text of " + std::to_string(text.size()) + " bytes";
        return false;
    }
    tokens.resize(static_cast<size_t>(n));
    return true;
}

bool qg_stream_model_token_bytes(const qg_stream_model * model, int32_t token, std::string & bytes, std::string & error) {
    if (token < 0 || token >= model->info.n_vocab) {
        error = "Expected a token id between 0 and " + std::to_string(model->info.n_vocab - 1) + " but received " +
                std::to_string(token);
        return false;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model->model.get());
    bytes.resize(32);
    int32_t n = llama_token_to_piece(vocab, token, &bytes[0], static_cast<int32_t>(bytes.size()), 0, /*special =*/ true);
    if (n < 0) {
        bytes.resize(static_cast<size_t>(-n));
        n = llama_token_to_piece(vocab, token, &bytes[0], static_cast<int32_t>(bytes.size()), 0, true);
    }
    bytes.resize(static_cast<size_t>(n < 0 ? 0 : n));
    return true;
}
