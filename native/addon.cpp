// Registers the addon's exports. Each class or group of functions lives in its own .h/.cpp pair.
#include <napi.h>

#include "AddonState.h"
#include "AddonSystem.h"
#include "StreamContext.h"
#include "StreamModel.h"

static Napi::Object addon_init(Napi::Env env, Napi::Object exports) {
    auto * state = new AddonState();
    env.SetInstanceData(state);

    exports.Set("getBuildInfo", Napi::Function::New(env, addon_get_build_info, "getBuildInfo"));
    exports.Set("getDevices", Napi::Function::New(env, addon_get_devices, "getDevices"));
    exports.Set("quantizeRows", Napi::Function::New(env, addon_quantize_rows, "quantizeRows"));
    exports.Set("quantizeModel", Napi::Function::New(env, addon_quantize_model, "quantizeModel"));
    exports.Set("StreamModel", StreamModel::init(env, *state));
    StreamContext::init(env, *state);
    return exports;
}

NODE_API_MODULE(qwenguard, addon_init)
