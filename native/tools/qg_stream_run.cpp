// qg_stream_run: runs the Stream engine's native core on a text, without Node (e.g. to check the CUDA path on a GPU
// machine). Tokenizes with special tokens parsed (a rendered ChatML prompt works), evaluates every position, and
// prints per token the response head's risk probabilities, then the query head at the last token, and the time of
// that evaluation against the same tokens evaluated with no output at all (a plain prompt evaluation, the baseline).
//
//   qg_stream_run <model.gguf> <head.gguf> [--gpu-layers N] [--threads N] [--ctx N] [--batch N] [--ubatch N]
//                 [--outputs N] [--quiet] [--flash-attn auto|on|off] [--full-graph] [--bench N] [--sessions S]
//                 [--cache-type-k f16|q8_0] [--cache-type-v f16|q8_0] <text...>
//
// --batch, --ubatch and --outputs are the tokens per llama_decode call, per compute graph and the output rows per call
// (defaults 512, 512 and --batch; StreamGuard uses 512, 128 on a CPU / 512 offloaded, and 64).
//
// --flash-attn defaults as StreamGuard does: off without GPU layers, llama.cpp's auto with them (Gen: auto, as GenGuard). --full-graph runs
// llama.cpp's whole graph (LM head included) instead of stopping at the hidden states.
//
// --bench N then feeds N more tokens one at a time (response head at each) and prints the mean time per token and the
// head's share of it; then N more with no output at all (the backbone floor) and the ratio of the two.
//
// --sessions S (with --bench N) first times S concurrent sessions, as a server monitoring S generations runs them:
// the context gets S sequences, each a KV stream of its own of --ctx cells (the library's per-session layout), every
// one holding the text's tokens; then N steps of one token for every session in one evaluate (response head at each),
// each step paired with the same step of one session alone, and prints the tokens/s of both and their ratio.
//
// Gen score mode: pass --gen in place of the head, and the candidate token ids:
//
//   qg_stream_run <gen.gguf> --gen --candidates ID,ID,... [--parallel P] [options as above] <text...>
//
// The first half of the text's tokens plays the template prefix: evaluated once into a sequence of its own and shared
// (seq_copy, the unified KV cache) with P request sequences, which then evaluate the rest together in one evaluate,
// the last token of each with the candidates' logits. Prints the first request's logits and their softmax; with
// --bench N, the mean time of a round of P requests over N rounds against the same rounds with no output at all.
//
// It links the prebuilt llama.cpp libraries of LLAMA_LIB_DIR (node-llama-cpp's CPU flavour by default; rpath). The
// flavours' sonames differ (libllama.v0.4.0.so vs libllama.cuda.v0.4.0.so), so LD_LIBRARY_PATH cannot swap a CUDA
// build in: configure a build against that flavour instead, passing its LLAMA_LIB_DIR and, since find_library looks
// for the CPU flavour's names, the two renamed libraries (headers: build/llama.cpp, from `npm run build:addon`):
//   F=node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda
//   cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DLLAMA_INCLUDE_DIR=$PWD/build/llama.cpp
//         -DLLAMA_LIB_DIR=$PWD/$F -DQG_LIB_LLAMA=$PWD/$F/libllama.cuda.v0.4.0.so -DQG_LIB_GGML=$PWD/$F/libggml.cuda.v0.4.0.so
//         -DNODE_ADDON_API_DIR=$PWD/node_modules/node-addon-api -DLLAMA_CPP_RELEASE=v0.4.0 -DLLAMA_CPP_COMMIT=unknown
//   (one command line)
//   cmake --build build-cuda --target qg_stream_run
//   build-cuda/qg_stream_run model.gguf model.head.gguf --gpu-layers 99 "<|im_start|>user ..."
// The GPU backend library (libggml-cuda.so, which needs the CUDA runtime and cuBLAS) is loaded at run time from the
// folder of the libggml that was linked. scripts/gpu-check.sh instead builds llama.cpp with CUDA from source and this
// tool against it, then checks and times the GPU path (README, "On a GPU").
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "llama.h"
#include "qg_stream_context.h"
#include "qg_stream_model.h"

static void print_usage(const char * argv0) {
    fprintf(stderr,
            "usage: %s <model.gguf> <head.gguf> [--gpu-layers N] [--threads N] [--ctx N] [--batch N] [--ubatch N] "
            "[--outputs N] [--quiet] [--flash-attn auto|on|off] [--full-graph] [--bench N] [--sessions S] "
            "[--cache-type-k f16|q8_0] [--cache-type-v f16|q8_0] <text...>\n"
            "       %s <gen.gguf> --gen --candidates ID,ID,... [--parallel P] [the same options] <text...>\n",
            argv0, argv0);
}

// The backends (CPU variants, CUDA ...) are libraries beside the libggml this program linked: load them from there.
static void backends_load() {
    Dl_info dl = {};
    if (dladdr(reinterpret_cast<void *>(&ggml_backend_load_all_from_path), &dl) != 0 && dl.dli_fname != nullptr) {
        std::string dir = dl.dli_fname;
        const size_t slash = dir.find_last_of('/');
        dir = slash == std::string::npos ? "." : dir.substr(0, slash);
        ggml_backend_load_all_from_path(dir.c_str());
    } else {
        ggml_backend_load_all();
    }
}

static std::string piece_escape(const std::string & piece) {
    std::string out;
    for (unsigned char c : piece) {
        if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20) {
            char buf[8];
            snprintf(buf, sizeof(buf), "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

static bool parse_ids(const char * s, std::vector<int32_t> & out) {
    out.clear();
    std::string item;
    for (const char * c = s;; c++) {
        if (*c == ',' || *c == '\0') {
            char * end = nullptr;
            const long v = strtol(item.c_str(), &end, 10);
            if (item.empty() || *end != '\0' || v < 0 || v > INT32_MAX) {
                return false;
            }
            out.push_back(static_cast<int32_t>(v));
            item.clear();
            if (*c == '\0') {
                return true;
            }
        } else {
            item += *c;
        }
    }
}

// Gen score mode (see the header): returns the exit code.
static int run_gen(qg_stream_context * ctx, const qg_stream_model * model, const std::vector<int32_t> & candidates,
                   const std::vector<int32_t> & tokens, int32_t n_parallel, int32_t n_bench) {
    std::string error;
    const auto fail = [&error]() {
        fprintf(stderr, "error: %s\n", error.c_str());
        return 1;
    };
    if (tokens.size() < 2) {
        error = "the text must be at least 2 tokens";
        return fail();
    }
    const size_t half = tokens.size() / 2;
    qg_stream_request prefix;
    if (!qg_stream_context_seq_acquire(ctx, prefix.seq, error)) {
        return fail();
    }
    prefix.tokens.assign(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(half));
    prefix.heads  = 0;
    prefix.hidden = false;
    std::vector<qg_stream_result> results;
    if (!qg_stream_context_evaluate(ctx, { prefix }, results, error)) {
        return fail();
    }
    std::vector<qg_stream_request> requests(static_cast<size_t>(n_parallel));
    for (qg_stream_request & req : requests) {
        if (!qg_stream_context_seq_acquire(ctx, req.seq, error)) {
            return fail();
        }
        req.tokens.assign(tokens.begin() + static_cast<std::ptrdiff_t>(half), tokens.end());
        req.outputs = { static_cast<int32_t>(req.tokens.size()) - 1 };
        req.heads   = 0;
        req.hidden  = false;
        req.logits  = true;
    }
    std::vector<qg_stream_request> plain = requests;
    for (qg_stream_request & req : plain) {
        req.outputs.clear();
        req.logits = false;
    }
    // one round: every request gets the prefix, evaluates the rest, and is emptied again
    const auto round = [&](const std::vector<qg_stream_request> & batch, double & ms) {
        const auto t0 = std::chrono::steady_clock::now();
        for (const qg_stream_request & req : batch) {
            if (!qg_stream_context_seq_copy(ctx, prefix.seq, req.seq, error)) {
                return false;
            }
        }
        if (!qg_stream_context_evaluate(ctx, batch, results, error)) {
            return false;
        }
        ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        for (const qg_stream_request & req : batch) {
            if (!qg_stream_context_seq_truncate(ctx, req.seq, 0, error)) {
                return false;
            }
        }
        return true;
    };
    double ms = 0;
    if (!round(requests, ms)) {
        return fail();
    }
    const std::vector<float> & logits = results[0].logits;
    float max = logits[0];
    for (float l : logits) {
        max = std::max(max, l);
    }
    double sum = 0;
    for (float l : logits) {
        sum += std::exp(static_cast<double>(l - max));
    }
    printf("candidates after %zu tokens (%zu shared from the prefix):", tokens.size(), half);
    for (size_t i = 0; i < candidates.size(); i++) {
        std::string piece;
        qg_stream_model_token_bytes(model, candidates[i], piece, error);
        printf(" %d '%s' %.6f %.6f", candidates[i], piece_escape(piece).c_str(), logits[i],
               std::exp(static_cast<double>(logits[i] - max)) / sum);
    }
    printf("\n");
    if (n_bench > 0) {
        double total = 0;
        double total_plain = 0;
        for (int32_t i = 0; i < n_bench; i++) {
            double ms_plain = 0;
            if (!round(requests, ms) || !round(plain, ms_plain)) {
                return fail();
            }
            total += ms;
            total_plain += ms_plain;
        }
        printf("gen: %d requests of %zu tokens at once (after a shared prefix of %zu): %.1f ms a round, %.1f ms a request\n",
               n_parallel, tokens.size() - half, half, total / n_bench, total / n_bench / n_parallel);
        printf("gen plain: the same rounds with no output: %.1f ms; candidates / plain %.3f\n", total_plain / n_bench,
               total / total_plain);
    }
    return 0;
}

// One token appended to `seq`, with the response head at it when `scored` (else no output at all): a decode step of
// the --bench and --sessions measurements.
static qg_stream_request response_step(int32_t seq, int32_t token, bool scored) {
    qg_stream_request step;
    step.seq    = seq;
    step.tokens = { token };
    step.heads  = QG_STREAM_HEADS_RESPONSE;
    step.hidden = false;
    if (scored) {
        step.outputs = { 0 };
    }
    return step;
}

// --sessions (see the header): `first` holds the text's `n_tokens` tokens; every other session gets a copy of them.
// Each of the n_bench steps times one token for `first` alone (cut again afterwards), then one token for every session
// in one evaluate, at the same context. Leaves `first` as it found it and releases the others. Returns false with
// `error` set on a failure.
static bool run_sessions(qg_stream_context * ctx, int32_t first, const std::vector<int32_t> & text, int32_t n_sessions,
                         int32_t n_bench, std::string & error) {
    const int32_t n_tokens = static_cast<int32_t>(text.size());
    std::vector<int32_t> seqs = { first };
    bool ok = true;
    for (int32_t i = 1; i < n_sessions && ok; i++) {
        int32_t seq = -1;
        ok = qg_stream_context_seq_acquire(ctx, seq, error) && qg_stream_context_seq_copy(ctx, first, seq, error);
        if (seq >= 0) {
            seqs.push_back(seq);
        }
    }
    std::vector<qg_stream_result> results;
    const auto step = [&](size_t n, int32_t i, double & ms) {
        std::vector<qg_stream_request> requests;
        for (size_t s = 0; s < n; s++) {
            requests.push_back(response_step(seqs[s], text[static_cast<size_t>(i) % text.size()], true));
        }
        const auto t0 = std::chrono::steady_clock::now();
        const bool stepped = qg_stream_context_evaluate(ctx, requests, results, error);
        ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        return stepped;
    };
    double ms_alone = 0;
    double ms_all   = 0;
    // a warm-up step of each kind (the copies are made at the first evaluate; on a GPU each graph shape is set up on
    // its first use), cut again
    ok = ok && step(1, 0, ms_alone) && step(seqs.size(), 0, ms_all);
    for (int32_t seq : seqs) {
        ok = ok && qg_stream_context_seq_truncate(ctx, seq, n_tokens, error);
    }
    ms_alone = 0;
    ms_all   = 0;
    for (int32_t i = 0; i < n_bench && ok; i++) {
        double ms = 0;
        ok = step(1, i, ms) && qg_stream_context_seq_truncate(ctx, first, n_tokens + i, error);
        ms_alone += ms;
        ok = ok && step(seqs.size(), i, ms);
        ms_all += ms;
    }
    if (ok) {
        const double alone = 1000.0 * n_bench / ms_alone;
        const double all   = 1000.0 * n_bench * static_cast<double>(seqs.size()) / ms_all;
        printf("sessions: %zu at once, one token each a step after a context of %d: %.1f tokens/s (%.2f ms a step); one "
               "alone %.1f tokens/s; together / alone %.3f\n", seqs.size(), n_tokens, all, ms_all / n_bench, alone,
               all / alone);
    }
    std::string cleanup_error;
    for (size_t s = 1; s < seqs.size(); s++) {
        qg_stream_context_seq_release(ctx, seqs[s], cleanup_error);
    }
    return qg_stream_context_seq_truncate(ctx, first, n_tokens, ok ? error : cleanup_error) && ok;
}

static size_t argmax(const float * v, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++) {
        if (v[i] > v[best]) {
            best = i;
        }
    }
    return best;
}

static bool parse_int(const char * s, int32_t & out) {
    char * end = nullptr;
    const long v = strtol(s, &end, 10);
    if (end == s || *end != '\0') {
        return false;
    }
    out = static_cast<int32_t>(v);
    return true;
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        print_usage(argv[0]);
        return 2;
    }
    qg_stream_model_params mparams;
    mparams.model_path   = argv[1];
    mparams.gen          = strcmp(argv[2], "--gen") == 0;
    mparams.head_path    = mparams.gen ? "" : argv[2];
    std::vector<int32_t> candidates;
    int32_t n_parallel = 1;
    int32_t n_sessions = 1;
    mparams.n_gpu_layers = 0;
    mparams.use_mmap     = true;
    int32_t n_threads = 0;
    int32_t n_ctx     = 4096;
    int32_t n_batch   = 512;
    int32_t n_ubatch  = 0;
    int32_t n_outputs = 0;
    int32_t n_bench   = 0;
    bool    quiet     = false;
    bool    full_graph = false;
    std::string flash_attn;
    qg_kv_type  type_k = QG_KV_F16;
    qg_kv_type  type_v = QG_KV_F16;
    std::string text;
    for (int i = 3; i < argc; i++) {
        const std::string arg = argv[i];
        int32_t * target = nullptr;
        if (arg == "--gpu-layers") {
            target = &mparams.n_gpu_layers;
        } else if (arg == "--threads") {
            target = &n_threads;
        } else if (arg == "--ctx") {
            target = &n_ctx;
        } else if (arg == "--batch") {
            target = &n_batch;
        } else if (arg == "--ubatch") {
            target = &n_ubatch;
        } else if (arg == "--outputs") {
            target = &n_outputs;
        } else if (arg == "--bench") {
            target = &n_bench;
        } else if (arg == "--parallel") {
            target = &n_parallel;
        } else if (arg == "--sessions") {
            target = &n_sessions;
        } else if (arg == "--candidates") {
            if (i + 1 >= argc || !parse_ids(argv[i + 1], candidates)) {
                fprintf(stderr, "error: --candidates expects token ids separated by commas\n");
                return 2;
            }
            i++;
            continue;
        } else if (arg == "--quiet") {
            quiet = true;
            continue;
        } else if (arg == "--full-graph") {
            full_graph = true;
            continue;
        } else if (arg == "--cache-type-k" || arg == "--cache-type-v") {
            if (i + 1 >= argc || (strcmp(argv[i + 1], "f16") != 0 && strcmp(argv[i + 1], "q8_0") != 0)) {
                fprintf(stderr, "error: %s expects f16 or q8_0\n", arg.c_str());
                return 2;
            }
            (arg == "--cache-type-k" ? type_k : type_v) = strcmp(argv[++i], "q8_0") == 0 ? QG_KV_Q8_0 : QG_KV_F16;
            continue;
        } else if (arg == "--flash-attn") {
            if (i + 1 >= argc || (strcmp(argv[i + 1], "auto") != 0 && strcmp(argv[i + 1], "on") != 0 &&
                                  strcmp(argv[i + 1], "off") != 0)) {
                fprintf(stderr, "error: --flash-attn expects auto, on or off\n");
                return 2;
            }
            flash_attn = argv[++i];
            continue;
        }
        if (target != nullptr) {
            if (i + 1 >= argc || !parse_int(argv[i + 1], *target) || *target < 0) {
                fprintf(stderr, "error: %s expects a non-negative integer\n", arg.c_str());
                return 2;
            }
            i++;
            continue;
        }
        text += text.empty() ? arg : " " + arg;
    }
    if (text.empty()) {
        print_usage(argv[0]);
        return 2;
    }
    if (mparams.gen != !candidates.empty() || n_parallel < 1) {
        fprintf(stderr, "error: --gen needs --candidates (and a Stream model takes none); --parallel at least 1\n");
        return 2;
    }
    if (n_sessions < 1) {
        fprintf(stderr, "error: --sessions expects at least 1 but received %d\n", n_sessions);
        return 2;
    }
    if (n_sessions > 1 && (mparams.gen || n_bench == 0)) {
        fprintf(stderr, "error: --sessions %d times sessions of a Stream model: it needs a head file (not --gen) and --bench N\n",
                n_sessions);
        return 2;
    }
    if (static_cast<int64_t>(n_ctx) * n_sessions > INT32_MAX) {
        fprintf(stderr, "error: --ctx %d × --sessions %d cells do not fit in 32 bits\n", n_ctx, n_sessions);
        return 2;
    }

    llama_backend_init();
    backends_load();

    std::string error;
    const auto t_load = std::chrono::steady_clock::now();
    qg_stream_model_ptr model(qg_stream_model_load(mparams, error));
    if (!model) {
        fprintf(stderr, "error: %s\n", error.c_str());
        return 1;
    }
    const qg_stream_model_info & info = qg_stream_model_get_info(model.get());
    fprintf(stderr, "loaded %s + %s in %.0f ms: hidden %u, inner %u, vocab %d\n", mparams.model_path.c_str(),
            info.gen ? "no head (Gen)" : info.head_path.c_str(),
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_load).count(), info.n_hidden,
            info.n_inner, info.n_vocab);

    if (flash_attn.empty()) {
        flash_attn = mparams.n_gpu_layers > 0 || mparams.gen ? "auto" : "off";
    }
    const qg_flash_attn fa = flash_attn == "on" ? QG_FLASH_ATTN_ON : flash_attn == "off" ? QG_FLASH_ATTN_OFF : QG_FLASH_ATTN_AUTO;
    // Stream: every session (one unless --sessions) in a stream of its own of --ctx cells; Gen: the prefix and the
    // requests sharing one unified pool
    const uint32_t n_seq = info.gen ? 1u + static_cast<uint32_t>(n_parallel) : static_cast<uint32_t>(n_sessions);
    qg_stream_context_params cparams = { static_cast<uint32_t>(n_ctx) * (info.gen ? 1u : n_seq), n_seq,
                                         static_cast<uint32_t>(n_batch), static_cast<uint32_t>(n_ubatch),
                                         static_cast<uint32_t>(n_outputs), n_threads, fa, !full_graph, !info.gen,
                                         candidates, type_k, type_v };
    qg_stream_context_ptr ctx(qg_stream_context_init(model.get(), cparams, error));
    if (!ctx) {
        fprintf(stderr, "error: %s\n", error.c_str());
        return 1;
    }
    if (info.gen) {
        std::vector<int32_t> tokens;
        if (!qg_stream_model_tokenize(model.get(), text, /*parse_special =*/ true, tokens, error)) {
            fprintf(stderr, "error: %s\n", error.c_str());
            return 1;
        }
        return run_gen(ctx.get(), model.get(), candidates, tokens, n_parallel, n_bench);
    }

    std::vector<qg_stream_request> requests(1);
    qg_stream_request & req = requests[0];
    if (!qg_stream_model_tokenize(model.get(), text, /*parse_special =*/ true, req.tokens, error) ||
        !qg_stream_context_seq_acquire(ctx.get(), req.seq, error)) {
        fprintf(stderr, "error: %s\n", error.c_str());
        return 1;
    }
    for (int32_t i = 0; i < static_cast<int32_t>(req.tokens.size()); i++) {
        req.outputs.push_back(i);
    }
    req.heads  = QG_STREAM_HEADS_ALL;
    req.hidden = false;

    std::vector<qg_stream_result> results;
    // The same tokens with no output at all (KV cache only, as a plain prompt evaluation), from an empty sequence:
    // the baseline of scoring every position.
    qg_stream_request plain = req;
    plain.outputs.clear();
    const auto eval_plain = [&](double & ms) {
        if (!qg_stream_context_seq_truncate(ctx.get(), req.seq, 0, error)) {
            return false;
        }
        const auto t0 = std::chrono::steady_clock::now();
        const bool ok = qg_stream_context_evaluate(ctx.get(), std::vector<qg_stream_request>(1, plain), results, error);
        ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        return ok;
    };
    // Warm-up: both kinds of evaluation once (first-touch page faults of llama.cpp's output buffer, GPU kernels).
    double ms_plain = 0;
    if (!eval_plain(ms_plain) || !qg_stream_context_seq_truncate(ctx.get(), req.seq, 0, error) ||
        !qg_stream_context_evaluate(ctx.get(), requests, results, error) ||
        !qg_stream_context_seq_truncate(ctx.get(), req.seq, 0, error)) {
        fprintf(stderr, "error: %s\n", error.c_str());
        return 1;
    }
    const auto t_eval = std::chrono::steady_clock::now();
    if (!qg_stream_context_evaluate(ctx.get(), requests, results, error)) {
        fprintf(stderr, "error: %s\n", error.c_str());
        return 1;
    }
    const double ms_eval = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_eval).count();
    const qg_stream_timings timings = qg_stream_context_last_timings(ctx.get());
    std::vector<qg_stream_result> scored = std::move(results);
    // the sequence then holds the same tokens again, for --bench
    if (!eval_plain(ms_plain)) {
        fprintf(stderr, "error: %s\n", error.c_str());
        return 1;
    }
    results = std::move(scored);

    const std::vector<std::string> & r_risk = info.head.risk_labels[QG_STREAM_PATH_RESPONSE];
    const std::vector<std::string> & q_risk = info.head.risk_labels[QG_STREAM_PATH_QUERY];
    const std::vector<std::string> & q_cat  = info.head.category_labels[QG_STREAM_PATH_QUERY];
    const size_t r_out = static_cast<size_t>(qg_stream_head_n_out(qg_stream_model_get_head(model.get()), QG_STREAM_PATH_RESPONSE));
    const size_t q_out = static_cast<size_t>(qg_stream_head_n_out(qg_stream_model_get_head(model.get()), QG_STREAM_PATH_QUERY));
    const size_t n_tokens = req.tokens.size();
    for (size_t i = 0; i < n_tokens && !quiet; i++) {
        std::string piece;
        qg_stream_model_token_bytes(model.get(), req.tokens[i], piece, error);
        const float * probs = results[0].probs[QG_STREAM_PATH_RESPONSE].data() + i * r_out;
        printf("%5zu %7d %-24s", i, req.tokens[i], ("'" + piece_escape(piece) + "'").c_str());
        for (size_t j = 0; j < r_risk.size(); j++) {
            printf(" %.6f", probs[j]);
        }
        printf("  %s\n", r_risk[argmax(probs, r_risk.size())].c_str());
    }
    const float * q = results[0].probs[QG_STREAM_PATH_QUERY].data() + (n_tokens - 1) * q_out;
    printf("query head at the last token:");
    for (size_t j = 0; j < q_risk.size(); j++) {
        printf(" %s %.6f", q_risk[j].c_str(), q[j]);
    }
    printf("  -> %s / %s\n", q_risk[argmax(q, q_risk.size())].c_str(),
           q_cat[argmax(q + q_risk.size(), q_cat.size())].c_str());
    printf("evaluate: %zu tokens in %.1f ms (%d llama_decode calls, %d graphs stopped at the hidden states, %.1f ms decode, "
           "%.3f ms head)\n", n_tokens, ms_eval, timings.n_decode, timings.n_graphs_stopped, timings.t_decode_us / 1000.0,
           timings.t_head_us / 1000.0);
    printf("plain: the same %zu tokens with no output: %.1f ms; scoring every position / plain %.3f\n", n_tokens,
           ms_plain, ms_eval / ms_plain);

    if (n_sessions > 1 && !run_sessions(ctx.get(), req.seq, req.tokens, n_sessions, n_bench, error)) {
        fprintf(stderr, "error: %s\n", error.c_str());
        return 1;
    }
    if (n_bench > 0) {
        // n_bench single tokens, each scored (response head) or not (no output at all: KV cache only, no hidden
        // state, no head); returns the wall time and adds up the engine's own decode and head times
        int64_t    t_decode_us = 0;
        int64_t    t_head_us   = 0;
        const auto feed_singles = [&](bool scored, double & ms) {
            const auto t0 = std::chrono::steady_clock::now();
            for (int32_t i = 0; i < n_bench; i++) {
                const qg_stream_request step = response_step(req.seq, req.tokens[static_cast<size_t>(i) % n_tokens], scored);
                if (!qg_stream_context_evaluate(ctx.get(), std::vector<qg_stream_request>(1, step), results, error)) {
                    return false;
                }
                const qg_stream_timings t = qg_stream_context_last_timings(ctx.get());
                t_decode_us += scored ? t.t_decode_us : 0;
                t_head_us += scored ? t.t_head_us : 0;
            }
            ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            return true;
        };
        // The floor runs a few positions further on; the ratio is the Stream engine's price over feeding the backbone.
        double ms_total = 0;
        double ms_floor = 0;
        if (!feed_singles(true, ms_total) || !feed_singles(false, ms_floor)) {
            fprintf(stderr, "error: %s\n", error.c_str());
            return 1;
        }
        printf("bench: %d single tokens after a context of %zu: %.3f ms/token (decode %.3f ms, head %.4f ms = %.2f%%)\n",
               n_bench, n_tokens, ms_total / n_bench, t_decode_us / 1000.0 / n_bench, t_head_us / 1000.0 / n_bench,
               100.0 * static_cast<double>(t_head_us) / static_cast<double>(t_decode_us + t_head_us));
        printf("floor: %d single tokens with no output: %.3f ms/token; scored/floor %.3f\n", n_bench, ms_floor / n_bench,
               ms_total / ms_floor);
    }
    return 0;
}
