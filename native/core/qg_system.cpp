#include "qg_system.h"

#include <dlfcn.h>

#include <cstring>

#include "ggml-backend.h"
#include "llama.h"

qg_build_info qg_build_info_get() {
    qg_build_info info;
    info.release       = QG_LLAMA_CPP_RELEASE;
    info.commit        = QG_LLAMA_CPP_COMMIT;
    info.llama_version = llama_version();
    info.system_info   = llama_print_system_info();

    Dl_info dl = {};
    if (dladdr(reinterpret_cast<void *>(&llama_model_load_from_file), &dl) != 0 && dl.dli_fname != nullptr) {
        info.library_path = dl.dli_fname;
    }
    return info;
}

static const char * device_type_name(enum ggml_backend_dev_type type) {
    switch (type) {
        case GGML_BACKEND_DEVICE_TYPE_CPU:   return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU:   return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU:  return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
    }
    return "unknown";
}

std::vector<qg_device_info> qg_devices_get() {
    std::vector<qg_device_info> devices;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);

        qg_device_info info;
        info.name        = ggml_backend_dev_name(dev);
        info.description = ggml_backend_dev_description(dev);
        info.type        = device_type_name(ggml_backend_dev_type(dev));
        info.backend     = reg != nullptr ? ggml_backend_reg_name(reg) : "";

        auto get_features = reg != nullptr
            ? reinterpret_cast<ggml_backend_get_features_t>(ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"))
            : nullptr;
        if (get_features != nullptr) {
            for (ggml_backend_feature * f = get_features(reg); f->name != nullptr; f++) {
                if (std::strcmp(f->value, "1") == 0) {
                    info.features.emplace_back(f->name);
                }
            }
        }
        devices.push_back(std::move(info));
    }
    return devices;
}

bool qg_quantize_rows(enum ggml_type type, const float * data, int64_t n_rows, int64_t n_per_row,
                      std::vector<uint8_t> & out, std::string & error) {
    if (type < 0 || type >= GGML_TYPE_COUNT || ggml_blck_size(type) == 0) {
        error = "unknown ggml type " + std::to_string(static_cast<int>(type));
        return false;
    }
    if (ggml_quantize_requires_imatrix(type)) {
        error = std::string("ggml type ") + ggml_type_name(type) + " needs an importance matrix";
        return false;
    }
    if (n_per_row % ggml_blck_size(type) != 0) {
        error = "row length " + std::to_string(n_per_row) + " is not a multiple of the block size " +
                std::to_string(ggml_blck_size(type)) + " of " + ggml_type_name(type);
        return false;
    }
    out.resize(ggml_row_size(type, n_per_row) * static_cast<size_t>(n_rows));
    ggml_quantize_init(type);
    ggml_quantize_chunk(type, data, out.data(), 0, n_rows, n_per_row, nullptr);
    return true;
}
