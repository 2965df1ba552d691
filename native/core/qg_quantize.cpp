#include "qg_quantize.h"

#include "llama.h"

bool qg_model_quantize(const qg_quantize_params & params, std::string & error) {
    llama_model_quantize_params qparams = llama_model_quantize_default_params();
    qparams.nthread = params.threads;
    qparams.ftype   = static_cast<llama_ftype>(params.ftype);
    if (params.keep_output_tensor) {
        qparams.quantize_output_tensor = false;
    }
    const uint32_t rc = llama_model_quantize(params.input_path.c_str(), params.output_path.c_str(), &qparams);
    if (rc != 0) {
        error = "llama_model_quantize failed for " + params.input_path + " (code " + std::to_string(rc) +
                "; see llama.cpp's log above)";
        return false;
    }
    return true;
}
