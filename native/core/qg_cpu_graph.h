// A small ggml graph computed on the CPU backend, outside llama.cpp's own scheduler: what the Stream head and the
// Gen candidate logits run on. No N-API types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpp.h"

// Per-user compute state: a CPU backend with its thread count and a graph allocator. Not shared between threads.
struct qg_cpu_graph {
    ggml_backend_ptr             backend;
    ggml_backend_set_n_threads_t set_n_threads = nullptr;
    int32_t                      n_threads     = 0;  // as last set on the backend
    ggml_gallocr_ptr             galloc;
    std::vector<uint8_t>         meta;  // room for the graph's tensor and node metadata (no data)
    size_t                       n_nodes = 0;
};

// The CPU backend device, or nullptr (with `error` set) when ggml has none loaded.
ggml_backend_dev_t qg_cpu_device(std::string & error);

// Creates the backend (reached through ggml's registry: the CPU backend is a variant library loaded at run time).
// `what` names the user in errors ("the Stream head").
bool qg_cpu_graph_init(qg_cpu_graph & g, size_t n_nodes, const char * what, std::string & error);

// A metadata-only context over `g.meta`, to build one graph in.
ggml_context_ptr qg_cpu_graph_context(qg_cpu_graph & g);

// Allocates the graph's tensors (after which its inputs may be set) and, with `compute`, runs it on `n_threads`.
bool qg_cpu_graph_alloc(qg_cpu_graph & g, ggml_cgraph * gf, const char * what, std::string & error);
bool qg_cpu_graph_compute(qg_cpu_graph & g, ggml_cgraph * gf, int32_t n_threads, const char * what, std::string & error);
