#include "qg_cpu_graph.h"

ggml_backend_dev_t qg_cpu_device(std::string & error) {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu == nullptr) {
        error = "ggml has no CPU backend loaded (was llama.cpp's backend library found?)";
    }
    return cpu;
}

bool qg_cpu_graph_init(qg_cpu_graph & g, size_t n_nodes, const char * what, std::string & error) {
    g.backend.reset(ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr));
    if (!g.backend) {
        error = std::string("could not initialize ggml's CPU backend for ") + what;
        return false;
    }
    ggml_backend_dev_t dev = ggml_backend_get_device(g.backend.get());
    ggml_backend_reg_t reg = dev != nullptr ? ggml_backend_dev_backend_reg(dev) : nullptr;
    g.set_n_threads = reg != nullptr
        ? reinterpret_cast<ggml_backend_set_n_threads_t>(ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads"))
        : nullptr;
    g.galloc.reset(ggml_gallocr_new(ggml_backend_get_default_buffer_type(g.backend.get())));
    g.n_nodes = n_nodes;
    g.meta.resize(ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false));
    return true;
}

ggml_context_ptr qg_cpu_graph_context(qg_cpu_graph & g) {
    ggml_init_params params = { g.meta.size(), g.meta.data(), /*.no_alloc =*/ true };
    return ggml_context_ptr(ggml_init(params));
}

bool qg_cpu_graph_alloc(qg_cpu_graph & g, ggml_cgraph * gf, const char * what, std::string & error) {
    if (!ggml_gallocr_alloc_graph(g.galloc.get(), gf)) {
        error = std::string("could not allocate the compute buffer of ") + what;
        return false;
    }
    return true;
}

bool qg_cpu_graph_compute(qg_cpu_graph & g, ggml_cgraph * gf, int32_t n_threads, const char * what, std::string & error) {
    if (g.set_n_threads != nullptr && n_threads != g.n_threads) {
        g.set_n_threads(g.backend.get(), n_threads);
        g.n_threads = n_threads;
    }
    const enum ggml_status status = ggml_backend_graph_compute(g.backend.get(), gf);
    if (status != GGML_STATUS_SUCCESS) {
        error = std::string("the graph of ") + what + " failed to compute: " + ggml_status_to_string(status);
        return false;
    }
    return true;
}
