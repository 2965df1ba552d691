// What the process's llama.cpp is: release, build, library file and compute devices. No N-API types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ggml.h"

struct qg_build_info {
    std::string release;        // llama.cpp release the addon was compiled against (e.g. "v0.4.0")
    std::string commit;         // commit of that release's source bundle
    std::string llama_version;  // llama_version() of the library loaded at run time
    std::string library_path;   // file the loaded llama_* symbols come from
    std::string system_info;    // llama_print_system_info()
};

struct qg_device_info {
    std::string name;
    std::string description;
    std::string type;                   // "cpu", "gpu", "igpu", "accel"
    std::string backend;                // backend registry name, e.g. "CPU", "CUDA"
    std::vector<std::string> features;  // enabled backend features, e.g. "AVX2"
};

qg_build_info qg_build_info_get();

std::vector<qg_device_info> qg_devices_get();

// Quantizes n_rows rows of n_per_row floats with ggml's own quantizer (no importance matrix).
// Returns false with `error` set when the type cannot be produced this way.
bool qg_quantize_rows(enum ggml_type type, const float * data, int64_t n_rows, int64_t n_per_row,
                      std::vector<uint8_t> & out, std::string & error);
