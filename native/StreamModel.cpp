#include "StreamModel.h"

#include <cstring>

#include "AddonArgs.h"
#include "StreamContext.h"
#include "qg_stream_context.h"

//
// workers
//

class StreamModelLoadWorker : public Napi::AsyncWorker {
  public:
    StreamModelLoadWorker(Napi::Env env, qg_stream_model_params params)
        : Napi::AsyncWorker(env, "StreamModelLoadWorker"), deferred_(Napi::Promise::Deferred::New(env)),
          params_(std::move(params)) {}

    Napi::Promise promise() { return deferred_.Promise(); }

  protected:
    void Execute() override {
        std::string error;
        model_.reset(qg_stream_model_load(params_, error));
        if (!model_) {
            SetError(error);
        }
    }
    void OnOK() override {
        auto handle = std::make_shared<StreamModelHandle>();
        handle->model = std::move(model_);
        deferred_.Resolve(StreamModel::create(Env(), std::move(handle)));
    }
    void OnError(const Napi::Error & error) override { deferred_.Reject(error.Value()); }

  private:
    Napi::Promise::Deferred deferred_;
    qg_stream_model_params  params_;
    qg_stream_model_ptr     model_;
};

class StreamModelCreateContextWorker : public Napi::AsyncWorker {
  public:
    StreamModelCreateContextWorker(Napi::Env env, std::shared_ptr<StreamModelHandle> handle, Napi::Object model_object,
                                   qg_stream_context_params params)
        : Napi::AsyncWorker(env, "StreamModelCreateContextWorker"), deferred_(Napi::Promise::Deferred::New(env)),
          handle_(std::move(handle)), model_object_(Napi::Persistent(model_object)),
          model_(handle_->model.get()), params_(params) {}

    Napi::Promise promise() { return deferred_.Promise(); }

  protected:
    void Execute() override {
        std::string error;
        ctx_.reset(qg_stream_context_init(model_, params_, error));
        if (!ctx_) {
            SetError(error);
        }
    }
    void OnOK() override {
        deferred_.Resolve(StreamContext::create(Env(), handle_, model_object_.Value(), std::move(ctx_), params_.n_seq_max));
    }
    void OnError(const Napi::Error & error) override {
        handle_->n_contexts--;
        deferred_.Reject(error.Value());
    }

  private:
    Napi::Promise::Deferred            deferred_;
    std::shared_ptr<StreamModelHandle> handle_;
    Napi::ObjectReference              model_object_;
    const qg_stream_model *            model_;
    qg_stream_context_params           params_;
    qg_stream_context_ptr              ctx_;
};

class StreamModelDisposeWorker : public Napi::AsyncWorker {
  public:
    StreamModelDisposeWorker(Napi::Env env, qg_stream_model_ptr model)
        : Napi::AsyncWorker(env, "StreamModelDisposeWorker"), deferred_(Napi::Promise::Deferred::New(env)),
          model_(std::move(model)) {}

    Napi::Promise promise() { return deferred_.Promise(); }

  protected:
    void Execute() override { model_.reset(); }
    void OnOK() override { deferred_.Resolve(Env().Undefined()); }
    void OnError(const Napi::Error & error) override { deferred_.Reject(error.Value()); }

  private:
    Napi::Promise::Deferred deferred_;
    qg_stream_model_ptr     model_;
};

//
// class
//

Napi::Function StreamModel::init(Napi::Env env, AddonState & state) {
    Napi::Function constructor = DefineClass(env, "StreamModel", {
        StaticMethod<&StreamModel::load>("load"),
        InstanceMethod<&StreamModel::info>("info"),
        InstanceMethod<&StreamModel::tokenize>("tokenize"),
        InstanceMethod<&StreamModel::token_bytes>("tokenBytes"),
        InstanceMethod<&StreamModel::create_context>("createContext"),
        InstanceMethod<&StreamModel::dispose>("dispose"),
    });
    state.stream_model_constructor = Napi::Persistent(constructor);
    return constructor;
}

Napi::Object StreamModel::create(Napi::Env env, std::shared_ptr<StreamModelHandle> handle) {
    AddonState * state = env.GetInstanceData<AddonState>();
    Napi::Object object = state->stream_model_constructor.New({ Napi::External<std::shared_ptr<StreamModelHandle>>::New(env, &handle) });
    return object;
}

StreamModel::StreamModel(const Napi::CallbackInfo & info) : Napi::ObjectWrap<StreamModel>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
        throw Napi::TypeError::New(info.Env(), "StreamModel cannot be constructed directly: use StreamModel.load(options)");
    }
    handle_ = *info[0].As<Napi::External<std::shared_ptr<StreamModelHandle>>>().Data();
}

const qg_stream_model * StreamModel::model_or_throw(Napi::Env env, const char * method) const {
    if (disposed_ || !handle_->model) {
        throw Napi::Error::New(env, std::string("StreamModel.") + method + ": the model is disposed");
    }
    return handle_->model.get();
}

Napi::Value StreamModel::load(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const char * where = "StreamModel.load";
    // The options object was validated and defaulted in TypeScript.
    Napi::Object options = addon_arg_object(env, where, "options", info[0]);
    qg_stream_model_params params;
    params.model_path   = addon_arg_string(env, where, "options.modelPath", options.Get("modelPath"));
    params.head_path    = addon_arg_string(env, where, "options.headPath", options.Get("headPath"));
    params.n_gpu_layers = addon_arg_int32(env, where, "options.gpuLayers", options.Get("gpuLayers"));
    params.use_mmap     = addon_arg_bool(env, where, "options.useMmap", options.Get("useMmap"));
    const Napi::Value gen = options.Get("gen");
    params.gen = gen.IsUndefined() ? false : addon_arg_bool(env, where, "options.gen", gen);
    auto * worker = new StreamModelLoadWorker(env, std::move(params));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

static Napi::Array labels_to_js(Napi::Env env, const std::vector<std::string> & labels) {
    Napi::Array array = Napi::Array::New(env, labels.size());
    for (size_t i = 0; i < labels.size(); i++) {
        array.Set(static_cast<uint32_t>(i), labels[i]);
    }
    return array;
}

Napi::Value StreamModel::info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const qg_stream_model_info & mi = qg_stream_model_get_info(model_or_throw(env, "info"));
    Napi::Object result = Napi::Object::New(env);
    result.Set("hiddenSize", mi.n_hidden);
    result.Set("innerSize", mi.n_inner);
    result.Set("rmsNormEps", static_cast<double>(mi.eps));
    result.Set("trainContextSize", mi.n_ctx_train);
    result.Set("vocabSize", mi.n_vocab);
    result.Set("fingerprint", mi.head.fingerprint);
    result.Set("headPath", mi.head_path);
    result.Set("responseRiskLabels", labels_to_js(env, mi.head.risk_labels[QG_STREAM_PATH_RESPONSE]));
    result.Set("responseCategoryLabels", labels_to_js(env, mi.head.category_labels[QG_STREAM_PATH_RESPONSE]));
    result.Set("queryRiskLabels", labels_to_js(env, mi.head.risk_labels[QG_STREAM_PATH_QUERY]));
    result.Set("queryCategoryLabels", labels_to_js(env, mi.head.category_labels[QG_STREAM_PATH_QUERY]));
    result.Set("variant", mi.gen ? "gen" : "stream");
    return result;
}

Napi::Value StreamModel::tokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const char * where = "StreamModel.tokenize";
    const std::string text    = addon_arg_string(env, where, "text", info[0]);
    const bool parse_special  = addon_arg_bool(env, where, "parseSpecial", info[1]);
    const qg_stream_model * model = model_or_throw(env, "tokenize");
    std::vector<int32_t> tokens;
    std::string error;
    if (!qg_stream_model_tokenize(model, text, parse_special, tokens, error)) {
        throw Napi::RangeError::New(env, std::string(where) + ": " + error);
    }
    Napi::Int32Array result = Napi::Int32Array::New(env, tokens.size());
    if (!tokens.empty()) {
        std::memcpy(result.Data(), tokens.data(), tokens.size() * sizeof(int32_t));
    }
    return result;
}

Napi::Value StreamModel::token_bytes(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const char * where = "StreamModel.tokenBytes";
    const int32_t token = addon_arg_int32(env, where, "token", info[0]);
    const qg_stream_model * model = model_or_throw(env, "tokenBytes");
    std::string bytes;
    std::string error;
    if (!qg_stream_model_token_bytes(model, token, bytes, error)) {
        throw Napi::RangeError::New(env, std::string(where) + ": " + error);
    }
    Napi::Uint8Array result = Napi::Uint8Array::New(env, bytes.size());
    if (!bytes.empty()) {
        std::memcpy(result.Data(), bytes.data(), bytes.size());
    }
    return result;
}

// A KV cache element type named as llama.cpp's --cache-type-k/-v do (the ones the core accepts).
static qg_kv_type kv_type_arg(Napi::Env env, const char * where, const char * name, const Napi::Value & value) {
    const std::string type = addon_arg_string(env, where, name, value);
    if (type == "f16") {
        return QG_KV_F16;
    }
    if (type == "q8_0") {
        return QG_KV_Q8_0;
    }
    throw Napi::RangeError::New(env, std::string(where) + ": Expected " + name + " to be \"f16\" or \"q8_0\" but received \"" +
                                     type + "\"");
}

Napi::Value StreamModel::create_context(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const char * where = "StreamModel.createContext";
    // The options object was validated and defaulted in TypeScript.
    Napi::Object options = addon_arg_object(env, where, "options", info[0]);
    const int32_t context_size  = addon_arg_int32(env, where, "options.contextSize", options.Get("contextSize"));
    const int32_t max_sequences = addon_arg_int32(env, where, "options.maxSequences", options.Get("maxSequences"));
    const int32_t batch_size    = addon_arg_int32(env, where, "options.batchSize", options.Get("batchSize"));
    const int32_t threads       = addon_arg_int32(env, where, "options.threads", options.Get("threads"));
    const int32_t ubatch_size   = addon_arg_int32(env, where, "options.ubatchSize", options.Get("ubatchSize"));
    const int32_t output_batch  = addon_arg_int32(env, where, "options.outputBatchSize", options.Get("outputBatchSize"));
    const std::string flash     = addon_arg_string(env, where, "options.flashAttention", options.Get("flashAttention"));
    const bool stop_after_hidden = addon_arg_bool(env, where, "options.stopAfterHidden", options.Get("stopAfterHidden"));
    const std::string kv_layout = addon_arg_string(env, where, "options.kvLayout", options.Get("kvLayout"));
    if (kv_layout != "per-sequence" && kv_layout != "shared") {
        throw Napi::RangeError::New(env, std::string(where) + ": Expected options.kvLayout to be \"per-sequence\" or "
                                         "\"shared\" but received \"" + kv_layout + "\"");
    }
    if (context_size <= 0 || max_sequences <= 0 || batch_size <= 0 || ubatch_size <= 0 || output_batch <= 0) {
        throw Napi::RangeError::New(env, std::string(where) + ": Expected positive contextSize, maxSequences, batchSize, "
                                         "ubatchSize and outputBatchSize but received " + std::to_string(context_size) +
                                         ", " + std::to_string(max_sequences) + ", " + std::to_string(batch_size) + ", " +
                                         std::to_string(ubatch_size) + " and " + std::to_string(output_batch));
    }
    qg_flash_attn flash_attn = QG_FLASH_ATTN_AUTO;
    if (flash == "on") {
        flash_attn = QG_FLASH_ATTN_ON;
    } else if (flash == "off") {
        flash_attn = QG_FLASH_ATTN_OFF;
    } else if (flash != "auto") {
        throw Napi::RangeError::New(env, std::string(where) + ": Expected options.flashAttention to be \"auto\", \"on\" or "
                                         "\"off\" but received \"" + flash + "\"");
    }
    const qg_kv_type type_k = kv_type_arg(env, where, "options.cacheTypeK", options.Get("cacheTypeK"));
    const qg_kv_type type_v = kv_type_arg(env, where, "options.cacheTypeV", options.Get("cacheTypeV"));
    if (threads < 0 || threads > QG_STREAM_MAX_THREADS) {
        throw Napi::RangeError::New(env, std::string(where) + ": Expected options.threads between 0 and " +
                                         std::to_string(QG_STREAM_MAX_THREADS) + " but received " + std::to_string(threads));
    }
    model_or_throw(env, "createContext");
    qg_stream_context_params params = {
        static_cast<uint32_t>(context_size), static_cast<uint32_t>(max_sequences), static_cast<uint32_t>(batch_size),
        static_cast<uint32_t>(ubatch_size), static_cast<uint32_t>(output_batch), threads, flash_attn, stop_after_hidden,
        kv_layout == "per-sequence", {}, type_k, type_v };
    const Napi::Value candidates = options.Get("candidates");
    if (!candidates.IsUndefined()) {
        const Napi::Int32Array array = addon_arg_int32_array(env, where, "options.candidates", candidates);
        params.candidates.assign(array.Data(), array.Data() + array.ElementLength());
    }
    handle_->n_contexts++;
    auto * worker = new StreamModelCreateContextWorker(env, handle_, Value(), params);
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

Napi::Value StreamModel::dispose(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (handle_->n_contexts > 0) {
        auto deferred = Napi::Promise::Deferred::New(env);
        deferred.Reject(Napi::Error::New(env, "StreamModel.dispose: " + std::to_string(handle_->n_contexts) +
                                              " context(s) of this model are still open; dispose them first").Value());
        return deferred.Promise();
    }
    disposed_ = true;
    // A second dispose finds no model and resolves once the (empty) worker has run.
    auto * worker = new StreamModelDisposeWorker(env, std::move(handle_->model));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}
