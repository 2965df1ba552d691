#include "StreamContext.h"

#include <cstring>

#include "AddonArgs.h"

//
// workers
//

static Napi::Float32Array floats_to_js(Napi::Env env, const std::vector<float> & values) {
    Napi::Float32Array array = Napi::Float32Array::New(env, values.size());
    if (!values.empty()) {
        std::memcpy(array.Data(), values.data(), values.size() * sizeof(float));
    }
    return array;
}

class StreamContextEvaluateWorker : public Napi::AsyncWorker {
  public:
    StreamContextEvaluateWorker(Napi::Env env, StreamContext * owner, Napi::Object owner_object, qg_stream_context * ctx,
                                std::vector<qg_stream_request> requests)
        : Napi::AsyncWorker(env, "StreamContextEvaluateWorker"), deferred_(Napi::Promise::Deferred::New(env)),
          owner_(owner), owner_object_(Napi::Persistent(owner_object)), ctx_(ctx), requests_(std::move(requests)) {}

    Napi::Promise promise() { return deferred_.Promise(); }

  protected:
    void Execute() override {
        std::string error;
        if (!qg_stream_context_evaluate(ctx_, requests_, results_, error)) {
            SetError(error);
        }
    }
    void OnOK() override {
        Napi::Env env = Env();
        Napi::Array results = Napi::Array::New(env, results_.size());
        for (size_t r = 0; r < results_.size(); r++) {
            Napi::Object result = Napi::Object::New(env);
            if (requests_[r].heads & QG_STREAM_HEADS_QUERY) {
                result.Set("query", floats_to_js(env, results_[r].probs[QG_STREAM_PATH_QUERY]));
            }
            if (requests_[r].heads & QG_STREAM_HEADS_RESPONSE) {
                result.Set("response", floats_to_js(env, results_[r].probs[QG_STREAM_PATH_RESPONSE]));
            }
            if (requests_[r].logits) {
                result.Set("logits", floats_to_js(env, results_[r].logits));
            }
            if (requests_[r].hidden) {
                result.Set("hidden", floats_to_js(env, results_[r].hidden));
            }
            results.Set(static_cast<uint32_t>(r), result);
        }
        finish();
        deferred_.Resolve(results);
    }
    void OnError(const Napi::Error & error) override {
        finish();
        deferred_.Reject(error.Value());
    }

  private:
    void finish() {
        owner_->evaluate_done(requests_);
        owner_->job_done();
    }

    Napi::Promise::Deferred        deferred_;
    StreamContext *                owner_;
    Napi::ObjectReference          owner_object_;  // keeps the context alive while the job exists
    qg_stream_context *            ctx_;
    std::vector<qg_stream_request> requests_;
    std::vector<qg_stream_result>  results_;
};

class StreamContextDisposeWorker : public Napi::AsyncWorker {
  public:
    StreamContextDisposeWorker(Napi::Env env, StreamContext * owner, Napi::Object owner_object, qg_stream_context_ptr ctx)
        : Napi::AsyncWorker(env, "StreamContextDisposeWorker"), deferred_(Napi::Promise::Deferred::New(env)),
          owner_(owner), owner_object_(Napi::Persistent(owner_object)), ctx_(std::move(ctx)) {}

    Napi::Promise promise() { return deferred_.Promise(); }

  protected:
    void Execute() override { ctx_.reset(); }
    void OnOK() override {
        owner_->dispose_done();
        owner_->job_done();
        deferred_.Resolve(Env().Undefined());
    }
    void OnError(const Napi::Error & error) override {
        owner_->job_done();
        deferred_.Reject(error.Value());
    }

  private:
    Napi::Promise::Deferred deferred_;
    StreamContext *         owner_;
    Napi::ObjectReference   owner_object_;
    qg_stream_context_ptr   ctx_;  // null for a second dispose
};

//
// class
//

void StreamContext::init(Napi::Env env, AddonState & state) {
    Napi::Function constructor = DefineClass(env, "StreamContext", {
        InstanceMethod<&StreamContext::acquire_sequence>("acquireSequence"),
        InstanceMethod<&StreamContext::release_sequence>("releaseSequence"),
        InstanceMethod<&StreamContext::truncate_sequence>("truncateSequence"),
        InstanceMethod<&StreamContext::sequence_length>("sequenceLength"),
        InstanceMethod<&StreamContext::used_cells>("usedCells"),
        InstanceMethod<&StreamContext::sequence_cells>("sequenceCells"),
        InstanceMethod<&StreamContext::copy_sequence>("copySequence"),
        InstanceMethod<&StreamContext::last_timings>("lastTimings"),
        InstanceMethod<&StreamContext::evaluate>("evaluate"),
        InstanceMethod<&StreamContext::dispose>("dispose"),
    });
    state.stream_context_constructor = Napi::Persistent(constructor);
}

// What create() hands to the constructor through an External.
struct StreamContextInit {
    std::shared_ptr<StreamModelHandle> handle;
    Napi::Object                       model_object;
    qg_stream_context_ptr              ctx;
    uint32_t                           n_seq_max;
};

Napi::Object StreamContext::create(Napi::Env env, std::shared_ptr<StreamModelHandle> handle, Napi::Object model_object,
                                   qg_stream_context_ptr ctx, uint32_t n_seq_max) {
    StreamContextInit init = { std::move(handle), model_object, std::move(ctx), n_seq_max };
    AddonState * state = env.GetInstanceData<AddonState>();
    return state->stream_context_constructor.New({ Napi::External<StreamContextInit>::New(env, &init) });
}

StreamContext::StreamContext(const Napi::CallbackInfo & info) : Napi::ObjectWrap<StreamContext>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
        throw Napi::TypeError::New(info.Env(), "StreamContext cannot be constructed directly: use StreamModel.createContext(options)");
    }
    StreamContextInit * init = info[0].As<Napi::External<StreamContextInit>>().Data();
    handle_       = init->handle;
    model_object_ = Napi::Persistent(init->model_object);
    ctx_          = std::move(init->ctx);
    core_         = ctx_.get();
    counted_      = true;  // StreamModel::createContext counted this context
    seq_jobs_.assign(init->n_seq_max, 0);
}

StreamContext::~StreamContext() {
    // Garbage-collected without dispose(): no job can be pending (each keeps this object alive), free it here.
    ctx_.reset();
    if (counted_) {
        handle_->n_contexts--;
    }
}

void StreamContext::job_push(Napi::AsyncWorker * worker) {
    if (running_) {
        jobs_.push_back(worker);
        return;
    }
    running_ = true;
    worker->Queue();
}

void StreamContext::job_done() {
    running_ = false;
    if (!jobs_.empty()) {
        Napi::AsyncWorker * next = jobs_.front();
        jobs_.pop_front();
        running_ = true;
        next->Queue();
    }
}

void StreamContext::evaluate_done(const std::vector<qg_stream_request> & requests) {
    for (const qg_stream_request & req : requests) {
        seq_jobs_[static_cast<size_t>(req.seq)]--;
    }
}

void StreamContext::dispose_done() {
    core_ = nullptr;
    if (counted_) {
        counted_ = false;
        handle_->n_contexts--;
    }
}

qg_stream_context * StreamContext::core_or_throw(Napi::Env env, const char * method) const {
    if (disposed_) {
        throw Napi::Error::New(env, std::string("StreamContext.") + method + ": the context is disposed");
    }
    return core_;
}

// The sequence id argument `what` at `index`. With `idle`, refuses a sequence that a queued or running evaluate uses.
int32_t StreamContext::sequence_arg(const Napi::CallbackInfo & info, const char * method, bool idle, size_t index,
                                    const char * what) const {
    const std::string where = std::string("StreamContext.") + method;
    const int32_t seq = addon_arg_int32(info.Env(), where, what, info[index]);
    if (idle && seq >= 0 && seq < static_cast<int32_t>(seq_jobs_.size()) && seq_jobs_[static_cast<size_t>(seq)] > 0) {
        throw Napi::Error::New(info.Env(), where + ": sequence " + std::to_string(seq) +
                                               " has an evaluate in flight; await it first");
    }
    return seq;
}

Napi::Value StreamContext::acquire_sequence(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    qg_stream_context * core = core_or_throw(env, "acquireSequence");
    int32_t seq = -1;
    std::string error;
    if (!qg_stream_context_seq_acquire(core, seq, error)) {
        throw Napi::Error::New(env, "StreamContext.acquireSequence: " + error);
    }
    return Napi::Number::New(env, seq);
}

Napi::Value StreamContext::release_sequence(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    qg_stream_context * core = core_or_throw(env, "releaseSequence");
    const int32_t seq = sequence_arg(info, "releaseSequence", true);
    std::string error;
    if (!qg_stream_context_seq_release(core, seq, error)) {
        throw Napi::RangeError::New(env, "StreamContext.releaseSequence: " + error);
    }
    return env.Undefined();
}

Napi::Value StreamContext::truncate_sequence(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    qg_stream_context * core = core_or_throw(env, "truncateSequence");
    const int32_t seq    = sequence_arg(info, "truncateSequence", true);
    const int32_t length = addon_arg_int32(env, "StreamContext.truncateSequence", "length", info[1]);
    std::string error;
    if (!qg_stream_context_seq_truncate(core, seq, length, error)) {
        throw Napi::RangeError::New(env, "StreamContext.truncateSequence: " + error);
    }
    return env.Undefined();
}

Napi::Value StreamContext::copy_sequence(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    qg_stream_context * core = core_or_throw(env, "copySequence");
    const int32_t src = sequence_arg(info, "copySequence", true, 0, "source");
    const int32_t dst = sequence_arg(info, "copySequence", true, 1, "target");
    std::string error;
    if (!qg_stream_context_seq_copy(core, src, dst, error)) {
        throw Napi::RangeError::New(env, "StreamContext.copySequence: " + error);
    }
    return env.Undefined();
}

Napi::Value StreamContext::sequence_length(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    qg_stream_context * core = core_or_throw(env, "sequenceLength");
    const int32_t seq = sequence_arg(info, "sequenceLength", false);
    int32_t n_tokens = 0;
    std::string error;
    if (!qg_stream_context_seq_length(core, seq, n_tokens, error)) {
        throw Napi::RangeError::New(env, "StreamContext.sequenceLength: " + error);
    }
    return Napi::Number::New(env, n_tokens);
}

Napi::Value StreamContext::used_cells(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    return Napi::Number::New(env, qg_stream_context_n_used(core_or_throw(env, "usedCells")));
}

Napi::Value StreamContext::sequence_cells(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    return Napi::Number::New(env, qg_stream_context_seq_cells(core_or_throw(env, "sequenceCells")));
}

Napi::Value StreamContext::last_timings(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const qg_stream_timings t = qg_stream_context_last_timings(core_or_throw(env, "lastTimings"));
    Napi::Object result = Napi::Object::New(env);
    result.Set("decodeMs", Napi::Number::New(env, static_cast<double>(t.t_decode_us) / 1000.0));
    result.Set("headMs", Napi::Number::New(env, static_cast<double>(t.t_head_us) / 1000.0));
    result.Set("decodeCalls", Napi::Number::New(env, t.n_decode));
    result.Set("tokens", Napi::Number::New(env, t.n_tokens));
    result.Set("outputs", Napi::Number::New(env, t.n_outputs));
    result.Set("stoppedGraphs", Napi::Number::New(env, t.n_graphs_stopped));
    return result;
}

static std::vector<int32_t> int32_array_copy(const Napi::Int32Array & array) {
    return std::vector<int32_t>(array.Data(), array.Data() + array.ElementLength());
}

Napi::Value StreamContext::evaluate(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const char * where = "StreamContext.evaluate";
    if (!info[0].IsArray()) {
        addon_throw_type(env, where, "requests", "an array", info[0]);
    }
    qg_stream_context * core = core_or_throw(env, "evaluate");
    Napi::Array array = info[0].As<Napi::Array>();
    std::vector<qg_stream_request> requests(array.Length());
    for (uint32_t r = 0; r < array.Length(); r++) {
        const std::string name = "requests[" + std::to_string(r) + "]";
        Napi::Object item = addon_arg_object(env, where, name, array.Get(r));
        qg_stream_request & req = requests[r];
        req.seq     = addon_arg_int32(env, where, name + ".sequence", item.Get("sequence"));
        req.tokens  = int32_array_copy(addon_arg_int32_array(env, where, name + ".tokens", item.Get("tokens")));
        req.outputs = int32_array_copy(addon_arg_int32_array(env, where, name + ".outputs", item.Get("outputs")));
        const int32_t heads = addon_arg_int32(env, where, name + ".heads", item.Get("heads"));
        req.heads = static_cast<uint32_t>(heads);
        if (heads < 0 || heads > static_cast<int32_t>(QG_STREAM_HEADS_ALL)) {
            throw Napi::RangeError::New(env, std::string(where) + ": Expected " + name +
                                             ".heads to be a bit set of 1 (query) and 2 (response) but received " +
                                             std::to_string(heads));
        }
        const Napi::Value hidden = item.Get("hidden");
        req.hidden = hidden.IsUndefined() ? false : addon_arg_bool(env, where, name + ".hidden", hidden);
        const Napi::Value logits = item.Get("logits");
        req.logits = logits.IsUndefined() ? false : addon_arg_bool(env, where, name + ".logits", logits);
    }
    std::string error;
    if (!qg_stream_context_check(core, requests, error)) {
        throw Napi::RangeError::New(env, std::string(where) + ": " + error);
    }
    for (const qg_stream_request & req : requests) {
        seq_jobs_[static_cast<size_t>(req.seq)]++;
    }
    auto * worker = new StreamContextEvaluateWorker(env, this, Value(), core, std::move(requests));
    Napi::Promise promise = worker->promise();
    job_push(worker);
    return promise;
}

Napi::Value StreamContext::dispose(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    disposed_ = true;
    // Queued after every job already waiting: the context is freed once they have finished.
    auto * worker = new StreamContextDisposeWorker(env, this, Value(), std::move(ctx_));
    Napi::Promise promise = worker->promise();
    job_push(worker);
    return promise;
}
