// Model file quantization through llama.cpp's own llama_model_quantize. No N-API types.
#pragma once

#include <cstdint>
#include <string>

struct qg_quantize_params {
    std::string input_path;
    std::string output_path;
    int32_t     ftype;               // a llama_ftype value (validated by the caller)
    int32_t     threads;             // <= 0: all hardware threads
    bool        keep_output_tensor;  // leave output.weight as it is (Stream backbones: a placeholder)
};

// Returns false with `error` set when llama.cpp reports a failure.
bool qg_model_quantize(const qg_quantize_params & params, std::string & error);
