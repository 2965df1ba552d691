// N-API glue for a Qwen3Guard-Stream model (JS: AddonStreamModel in src/native/AddonTypes.ts).
#pragma once

#include <napi.h>

#include <memory>

#include "AddonState.h"
#include "qg_stream_model.h"

// The core model, shared by the StreamModel and its StreamContexts so that neither the order of dispose calls nor
// the order of garbage collection can free it under a context.
struct StreamModelHandle {
    qg_stream_model_ptr model;
    int32_t             n_contexts = 0;  // open or being created (JS thread only)
};

class StreamModel : public Napi::ObjectWrap<StreamModel> {
  public:
    // Defines the JS class (with its static `load`) and keeps its constructor in `state`.
    static Napi::Function init(Napi::Env env, AddonState & state);

    // Wraps a loaded model; the only way instances come to exist.
    static Napi::Object create(Napi::Env env, std::shared_ptr<StreamModelHandle> handle);

    explicit StreamModel(const Napi::CallbackInfo & info);

  private:
    // load({modelPath, headPath, gpuLayers, useMmap}): Promise<StreamModel>
    static Napi::Value load(const Napi::CallbackInfo & info);

    Napi::Value info(const Napi::CallbackInfo & info);
    // tokenize(text, parseSpecial): Int32Array
    Napi::Value tokenize(const Napi::CallbackInfo & info);
    // tokenBytes(token): Uint8Array
    Napi::Value token_bytes(const Napi::CallbackInfo & info);
    // createContext({contextSize, maxSequences, batchSize, threads}): Promise<StreamContext>
    Napi::Value create_context(const Napi::CallbackInfo & info);
    // dispose(): Promise<void>
    Napi::Value dispose(const Napi::CallbackInfo & info);

    const qg_stream_model * model_or_throw(Napi::Env env, const char * method) const;

    std::shared_ptr<StreamModelHandle> handle_;
    bool                               disposed_ = false;
};
