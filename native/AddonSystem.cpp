#include "AddonSystem.h"

#include "qg_quantize.h"
#include "qg_system.h"

Napi::Value addon_get_build_info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const qg_build_info build = qg_build_info_get();
    Napi::Object result = Napi::Object::New(env);
    result.Set("release", build.release);
    result.Set("commit", build.commit);
    result.Set("llamaVersion", build.llama_version);
    result.Set("libraryPath", build.library_path);
    result.Set("systemInfo", build.system_info);
    return result;
}

Napi::Value addon_get_devices(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const std::vector<qg_device_info> devices = qg_devices_get();
    Napi::Array result = Napi::Array::New(env, devices.size());
    for (size_t i = 0; i < devices.size(); i++) {
        Napi::Object device = Napi::Object::New(env);
        device.Set("name", devices[i].name);
        device.Set("description", devices[i].description);
        device.Set("type", devices[i].type);
        device.Set("backend", devices[i].backend);
        Napi::Array features = Napi::Array::New(env, devices[i].features.size());
        for (size_t j = 0; j < devices[i].features.size(); j++) {
            features.Set(static_cast<uint32_t>(j), devices[i].features[j]);
        }
        device.Set("features", features);
        result.Set(static_cast<uint32_t>(i), device);
    }
    return result;
}

Napi::Value addon_quantize_rows(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsTypedArray() || !info[2].IsNumber()) {
        throw Napi::TypeError::New(env, "quantizeRows(ggmlType: number, data: Float32Array, nPerRow: number)");
    }
    Napi::TypedArray typed = info[1].As<Napi::TypedArray>();
    if (typed.TypedArrayType() != napi_float32_array) {
        throw Napi::TypeError::New(env, "quantizeRows: data must be a Float32Array");
    }
    Napi::Float32Array data = typed.As<Napi::Float32Array>();
    const int64_t n_per_row = info[2].As<Napi::Number>().Int64Value();
    if (n_per_row <= 0 || static_cast<int64_t>(data.ElementLength()) % n_per_row != 0) {
        throw Napi::RangeError::New(env, "quantizeRows: data length must be a positive multiple of nPerRow");
    }
    std::vector<uint8_t> out;
    std::string error;
    const auto type = static_cast<enum ggml_type>(info[0].As<Napi::Number>().Int32Value());
    if (!qg_quantize_rows(type, data.Data(), static_cast<int64_t>(data.ElementLength()) / n_per_row, n_per_row, out, error)) {
        throw Napi::Error::New(env, "quantizeRows: " + error);
    }
    Napi::Uint8Array result = Napi::Uint8Array::New(env, out.size());
    std::copy(out.begin(), out.end(), result.Data());
    return result;
}

class ModelQuantizeWorker : public Napi::AsyncWorker {
  public:
    ModelQuantizeWorker(Napi::Env env, qg_quantize_params params)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), params_(std::move(params)) {}

    Napi::Promise promise() { return deferred_.Promise(); }

  protected:
    void Execute() override {
        std::string error;
        if (!qg_model_quantize(params_, error)) {
            SetError(error);
        }
    }
    void OnOK() override { deferred_.Resolve(Env().Undefined()); }
    void OnError(const Napi::Error & error) override { deferred_.Reject(error.Value()); }

  private:
    Napi::Promise::Deferred deferred_;
    qg_quantize_params      params_;
};

Napi::Value addon_quantize_model(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() != 1 || !info[0].IsObject()) {
        throw Napi::TypeError::New(env, "quantizeModel(options: object)");
    }
    // The options object was validated and defaulted in TypeScript (src/native/quantizeModel.ts).
    Napi::Object options = info[0].As<Napi::Object>();
    qg_quantize_params params;
    params.input_path         = options.Get("inputPath").As<Napi::String>().Utf8Value();
    params.output_path        = options.Get("outputPath").As<Napi::String>().Utf8Value();
    params.ftype              = options.Get("ftype").As<Napi::Number>().Int32Value();
    params.threads            = options.Get("threads").As<Napi::Number>().Int32Value();
    params.keep_output_tensor = options.Get("keepOutputTensor").As<Napi::Boolean>().Value();
    auto * worker = new ModelQuantizeWorker(env, std::move(params));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}
