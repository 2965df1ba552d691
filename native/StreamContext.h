// N-API glue for the sessions of a Stream model (JS: AddonStreamContext in src/native/AddonTypes.ts).
//
// Blocking work (evaluate, dispose) runs in AsyncWorkers, one at a time and in call order (a FIFO of jobs), so a
// dispose waits for the evaluates queued before it and no worker ever sees freed memory. Every job keeps the JS
// object alive until it has finished. Sequence calls are synchronous; releasing or truncating a sequence that a
// queued or running evaluate uses is refused.
#pragma once

#include <napi.h>

#include <deque>
#include <memory>
#include <vector>

#include "AddonState.h"
#include "StreamModel.h"
#include "qg_stream_context.h"

class StreamContext : public Napi::ObjectWrap<StreamContext> {
  public:
    static void init(Napi::Env env, AddonState & state);

    // Wraps a created context; the only way instances come to exist. `model_object` is kept alive with it.
    static Napi::Object create(Napi::Env env, std::shared_ptr<StreamModelHandle> handle, Napi::Object model_object,
                               qg_stream_context_ptr ctx, uint32_t n_seq_max);

    explicit StreamContext(const Napi::CallbackInfo & info);
    ~StreamContext() override;

    // Called by a finished job (JS thread): starts the next one.
    void job_done();
    // Called by a finished evaluate (JS thread).
    void evaluate_done(const std::vector<qg_stream_request> & requests);
    // Called by the finished dispose job (JS thread).
    void dispose_done();

  private:
    Napi::Value acquire_sequence(const Napi::CallbackInfo & info);
    Napi::Value release_sequence(const Napi::CallbackInfo & info);
    Napi::Value truncate_sequence(const Napi::CallbackInfo & info);
    Napi::Value sequence_length(const Napi::CallbackInfo & info);
    Napi::Value used_cells(const Napi::CallbackInfo & info);
    Napi::Value copy_sequence(const Napi::CallbackInfo & info);
    Napi::Value sequence_cells(const Napi::CallbackInfo & info);
    Napi::Value last_timings(const Napi::CallbackInfo & info);
    // evaluate(requests): Promise<results>
    Napi::Value evaluate(const Napi::CallbackInfo & info);
    // dispose(): Promise<void>
    Napi::Value dispose(const Napi::CallbackInfo & info);

    qg_stream_context * core_or_throw(Napi::Env env, const char * method) const;
    int32_t sequence_arg(const Napi::CallbackInfo & info, const char * method, bool idle, size_t index = 0,
                         const char * what = "sequence") const;
    void job_push(Napi::AsyncWorker * worker);

    std::shared_ptr<StreamModelHandle> handle_;
    Napi::ObjectReference              model_object_;
    qg_stream_context_ptr              ctx_;             // moved to the dispose job by dispose()
    qg_stream_context *                core_ = nullptr;  // what queued jobs use; valid until the dispose job runs
    bool                               disposed_ = false;
    bool                               counted_  = false;  // counts in handle_->n_contexts
    bool                               running_  = false;  // a job is queued on libuv or running
    std::deque<Napi::AsyncWorker *>    jobs_;              // waiting for the running job
    std::vector<int32_t>               seq_jobs_;          // evaluates queued or running, per sequence
};
