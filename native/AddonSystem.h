// N-API glue for what the process's llama.cpp is, and for ggml's quantizers.
#pragma once

#include <napi.h>

// getBuildInfo(): {release, commit, llamaVersion, libraryPath, systemInfo}
Napi::Value addon_get_build_info(const Napi::CallbackInfo & info);
// getDevices(): [{name, description, type, backend, features}]
Napi::Value addon_get_devices(const Napi::CallbackInfo & info);
// quantizeRows(ggmlType, Float32Array, nPerRow): Uint8Array
Napi::Value addon_quantize_rows(const Napi::CallbackInfo & info);
// quantizeModel({inputPath, outputPath, ftype, threads, keepOutputTensor}): Promise<void>
Napi::Value addon_quantize_model(const Napi::CallbackInfo & info);
