#include "qg_stream_context.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "llama-cpp.h"
#include "llama.h"

// Owns a llama_batch (llama_batch_init / llama_batch_free).
struct qg_llama_batch {
    llama_batch batch;

    explicit qg_llama_batch(int32_t n_tokens) : batch(llama_batch_init(n_tokens, 0, 1)) {}
    ~qg_llama_batch() { llama_batch_free(batch); }
    qg_llama_batch(const qg_llama_batch &) = delete;
    qg_llama_batch & operator=(const qg_llama_batch &) = delete;
};

struct qg_stream_seq {
    bool     acquired = false;
    int32_t  n_tokens = 0;
    uint32_t epoch    = 0;  // bumped by release and truncate: a running evaluate then leaves the length alone
    bool     in_evaluate = false;  // a request of the running evaluate appends to it
    // In the unified pool: the sequence this one was copied from, and how many of its first tokens' cells the two
    // still share (counted once by n_used).
    int32_t  shared_src = -1;
    int32_t  n_shared   = 0;
};

// A KV-cache change asked for while an evaluate was running: removing [p0, end) of `seq` (dst < 0), or copying all
// of `seq` into `dst`.
struct qg_stream_pending_op {
    int32_t seq;
    int32_t p0;
    int32_t dst;
};

struct qg_stream_context {
    const qg_stream_model *  model = nullptr;
    qg_stream_context_params params;
    llama_context_ptr        lctx;
    qg_stream_head_state_ptr head;       // a Stream model's
    qg_output_rows_ptr       rows_data;  // a Gen model's candidate rows
    qg_output_rows_state_ptr rows;
    int32_t                  n_candidates = 0;
    std::unique_ptr<qg_llama_batch> batch;
    int32_t                  n_hidden = 0;
    int32_t                  n_vocab  = 0;
    int32_t                  n_outputs_max = 0;     // output rows per llama_decode call
    int32_t                  seq_cells = 0;         // most tokens one sequence may hold
    bool                     embeddings_on = true;  // llama_set_embeddings state
    qg_stream_timings        running = {};          // of the evaluate in progress (its thread only)

    std::mutex                        mutex;       // guards what follows
    std::vector<qg_stream_seq>        seqs;
    std::vector<qg_stream_pending_op> pending;
    bool                              evaluating = false;
    qg_stream_timings                 last = {};  // of the last finished evaluate
};

static_assert(QG_KV_F16 == static_cast<int32_t>(GGML_TYPE_F16) && QG_KV_Q8_0 == static_cast<int32_t>(GGML_TYPE_Q8_0),
              "qg_kv_type mirrors ggml_type");

// The node that holds the final-norm hidden states while embeddings are on. llama.cpp's build_pooling names its
// result "result_embd_pooled"; with pooling NONE that result IS the final norm (result_norm, renamed), the last node
// the LM head (result_output) depends on. Graph nodes are in dependency order, so every node the hidden states need
// — and every KV-cache write, which the attention reading it needs — comes before it.
static const char * const QG_HIDDEN_NODE = "result_embd_pooled";

// ggml_backend_sched's eval callback (llama_context_params.cb_eval). Asked about every node before computing (`ask`),
// it wants only the hidden-state node: the scheduler then computes the split up to that node, synchronizes, and calls
// again (`!ask`); returning false there ends the split. The scheduler reports success either way, and llama_decode
// copies the embeddings out as usual. Graphs with embeddings off have no such node and run whole (they have no output
// rows, hence no LM-head work). On a GPU the LM head sits in the same split as the final norm (both on the output
// device); were it in a later split, that split would still run: correct, only not faster.
static bool stop_after_hidden_cb(ggml_tensor * t, bool ask, void * user_data) {
    if (ask) {
        return std::strcmp(t->name, QG_HIDDEN_NODE) == 0;
    }
    static_cast<qg_stream_context *>(user_data)->running.n_graphs_stopped++;
    return false;
}

// The width of one attention head's keys or values (`key` "key_length" or "value_length"): the model's
// `<arch>.attention.<key>`, else n_embd / n_head, as llama.cpp reads it.
static uint32_t attention_head_width(const llama_model * model, const char * key) {
    char arch[64];
    char value[32];
    if (llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch)) > 0 &&
        llama_model_meta_val_str(model, (std::string(arch) + ".attention." + key).c_str(), value, sizeof(value)) > 0) {
        return static_cast<uint32_t>(std::strtoul(value, nullptr, 10));
    }
    return static_cast<uint32_t>(llama_model_n_embd(model) / std::max(1, llama_model_n_head(model)));
}

qg_stream_context * qg_stream_context_init(const qg_stream_model * model, const qg_stream_context_params & params,
                                           std::string & error) {
    if (params.n_seq_max == 0 || params.n_seq_max > llama_max_parallel_sequences()) {
        error = "Expected maxSequences between 1 and " + std::to_string(llama_max_parallel_sequences()) +
                " but received " + std::to_string(params.n_seq_max);
        return nullptr;
    }
    if (params.n_threads > QG_STREAM_MAX_THREADS) {
        error = "Expected at most " + std::to_string(QG_STREAM_MAX_THREADS) + " threads but received " +
                std::to_string(params.n_threads);
        return nullptr;
    }
    if (params.n_ctx == 0 || params.n_batch == 0) {
        error = "Expected a positive contextSize and batchSize";
        return nullptr;
    }
    if (params.kv_per_seq && params.n_ctx < params.n_seq_max) {
        error = "Expected a contextSize of at least maxSequences (" + std::to_string(params.n_seq_max) +
                ") for a KV stream per sequence but received " + std::to_string(params.n_ctx);
        return nullptr;
    }
    for (const qg_kv_type type : { params.type_k, params.type_v }) {
        if (type != QG_KV_F16 && type != QG_KV_Q8_0) {
            error = "Expected a KV cache type of f16 or q8_0 but received ggml type " + std::to_string(static_cast<int32_t>(type));
            return nullptr;
        }
    }
    // llama.cpp refuses a quantized V without flash attention (its attention without it reads V transposed, f16 or f32),
    // and with "auto" decides that only once the context exists: ask for it explicitly
    if (params.type_v != QG_KV_F16 && params.flash_attn != QG_FLASH_ATTN_ON) {
        error = "Expected flash attention on (not auto) for a q8_0 V cache (llama.cpp quantizes V only with flash attention)";
        return nullptr;
    }
    // A q8_0 row holds blocks of 32 values and llama.cpp views the cache one head wide, so a head narrower than a
    // block would split blocks between heads. llama.cpp checks that only with flash attention (without it, such a
    // context is created and evaluates): checked here for both.
    const llama_model * lmodel = qg_stream_model_get_llama(model);
    const struct { qg_kv_type type; const char * key; const char * what; } caches[] = {
        { params.type_k, "key_length", "keys" }, { params.type_v, "value_length", "values" } };
    for (const auto & cache : caches) {
        const uint32_t width = attention_head_width(lmodel, cache.key);
        if (cache.type == QG_KV_Q8_0 && (width == 0 || width % 32 != 0)) {
            error = std::string("Expected attention heads a multiple of 32 values wide for a q8_0 KV cache of ") + cache.what +
                    " (q8_0 stores blocks of 32) but this model's are " + std::to_string(width) + " wide: use f16";
            return nullptr;
        }
    }
    std::unique_ptr<qg_stream_context> ctx(new qg_stream_context());
    ctx->model  = model;
    ctx->seq_cells = static_cast<int32_t>(params.kv_per_seq ? params.n_ctx / params.n_seq_max : params.n_ctx);
    ctx->params = params;
    if (ctx->params.n_threads <= 0) {
        ctx->params.n_threads = static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
    }

    const uint32_t n_outputs = params.n_outputs_max == 0 ? params.n_batch : std::min(params.n_outputs_max, params.n_batch);

    llama_context_params cparams = llama_context_default_params();
    // per sequence: llama.cpp splits n_ctx evenly into n_seq_max streams (each padded up to a multiple of 256 cells)
    cparams.n_ctx                 = params.kv_per_seq ? static_cast<uint32_t>(ctx->seq_cells) * params.n_seq_max : params.n_ctx;
    cparams.n_batch               = params.n_batch;
    cparams.n_ubatch              = std::min(params.n_ubatch == 0 ? 512u : params.n_ubatch, params.n_batch);
    cparams.n_seq_max             = params.n_seq_max;
    // Sizes the logits buffer (n_vocab floats per row) and the LM-head tensor of the compute buffer. llama.cpp reserves
    // room for at least one output per sequence (and asserts it fits in n_outputs_max).
    cparams.n_outputs_max         = std::max(n_outputs, params.n_seq_max);
    cparams.n_outputs_max_per_seq = 0;  // = n_outputs_max: every position of a sequence may be an output
    cparams.n_threads             = ctx->params.n_threads;
    cparams.n_threads_batch       = ctx->params.n_threads;
    cparams.embeddings            = true;  // final-norm hidden states of the output rows
    cparams.pooling_type          = LLAMA_POOLING_TYPE_NONE;
    cparams.kv_unified            = !params.kv_per_seq;
    cparams.no_perf               = true;
    cparams.flash_attn_type       = static_cast<llama_flash_attn_type>(params.flash_attn);
    cparams.type_k                = static_cast<ggml_type>(params.type_k);
    cparams.type_v                = static_cast<ggml_type>(params.type_v);
    if (params.stop_after_hidden) {
        cparams.cb_eval           = stop_after_hidden_cb;
        cparams.cb_eval_user_data = ctx.get();
    }
    ctx->lctx.reset(llama_init_from_model(const_cast<llama_model *>(qg_stream_model_get_llama(model)), cparams));
    if (!ctx->lctx) {
        error = "llama.cpp could not create a context of " + std::to_string(params.n_ctx) + " cells for " +
                std::to_string(params.n_seq_max) + " sequences (see llama.cpp's log; out of memory?)";
        return nullptr;
    }
    if (const qg_stream_head * head = qg_stream_model_get_head(model)) {
        ctx->head.reset(qg_stream_head_state_init(head, ctx->params.n_threads, error));
        if (!ctx->head) {
            return nullptr;
        }
    }
    const qg_stream_model_info & info = qg_stream_model_get_info(model);
    if (info.gen != !params.candidates.empty()) {
        error = info.gen ? "Expected candidate tokens for a context of a Gen model" : "A Stream model's context takes no candidate tokens";
        return nullptr;
    }
    if (info.gen) {
        ctx->rows_data.reset(qg_output_rows_load(info.model_path, info.n_hidden, params.candidates, error));
        if (!ctx->rows_data) {
            return nullptr;
        }
        ctx->rows.reset(qg_output_rows_state_init(ctx->rows_data.get(), error));
        if (!ctx->rows) {
            return nullptr;
        }
        ctx->n_candidates = static_cast<int32_t>(params.candidates.size());
    }
    ctx->batch.reset(new qg_llama_batch(static_cast<int32_t>(llama_n_batch(ctx->lctx.get()))));
    ctx->n_hidden = static_cast<int32_t>(qg_stream_model_get_info(model).n_hidden);
    ctx->n_vocab  = qg_stream_model_get_info(model).n_vocab;
    ctx->n_outputs_max = static_cast<int32_t>(std::min(cparams.n_outputs_max, params.n_batch));
    ctx->seqs.resize(params.n_seq_max);
    return ctx.release();
}

void qg_stream_context_free(qg_stream_context * ctx) {
    delete ctx;
}

qg_stream_timings qg_stream_context_last_timings(qg_stream_context * ctx) {
    std::lock_guard<std::mutex> lock(ctx->mutex);
    return ctx->last;
}

//
// sequences (callers hold ctx->mutex)
//

static bool seq_check_acquired(const qg_stream_context * ctx, int32_t seq, std::string & error) {
    if (seq < 0 || seq >= static_cast<int32_t>(ctx->seqs.size()) || !ctx->seqs[seq].acquired) {
        error = "Expected an acquired sequence id but received " + std::to_string(seq);
        return false;
    }
    return true;
}

static void apply_op(qg_stream_context * ctx, const qg_stream_pending_op & op) {
    llama_memory_t mem = llama_get_memory(ctx->lctx.get());
    if (op.dst < 0) {
        llama_memory_seq_rm(mem, op.seq, op.p0, -1);
    } else {
        llama_memory_seq_cp(mem, op.seq, op.dst, -1, -1);
    }
}

// Applies a KV-cache change now, or after the running evaluate.
static void kv_op_locked(qg_stream_context * ctx, const qg_stream_pending_op & op) {
    if (ctx->evaluating) {
        ctx->pending.push_back(op);
        return;
    }
    apply_op(ctx, op);
}

// Removes [p0, end) of the sequence from the KV cache now, or after the running evaluate.
static void seq_rm_locked(qg_stream_context * ctx, int32_t seq, int32_t p0) {
    kv_op_locked(ctx, { seq, p0, -1 });
}

static int32_t n_used_locked(const qg_stream_context * ctx) {
    int32_t n = 0;
    for (const qg_stream_seq & s : ctx->seqs) {
        n += s.n_tokens - s.n_shared;
    }
    return n;
}

// The sequence keeps only its first `n_keep` tokens: it shares at most those with its source, and sequences copied
// from it share at most those with it.
static void shares_cut_locked(qg_stream_context * ctx, int32_t seq, int32_t n_keep) {
    for (qg_stream_seq & s : ctx->seqs) {
        if (s.shared_src == seq) {
            s.n_shared = std::min(s.n_shared, n_keep);
        }
    }
    qg_stream_seq & self = ctx->seqs[seq];
    self.n_shared = std::min(self.n_shared, n_keep);
    if (self.n_shared == 0) {
        self.shared_src = -1;
    }
}

bool qg_stream_context_seq_acquire(qg_stream_context * ctx, int32_t & seq, std::string & error) {
    std::lock_guard<std::mutex> lock(ctx->mutex);
    for (size_t i = 0; i < ctx->seqs.size(); i++) {
        if (!ctx->seqs[i].acquired) {
            ctx->seqs[i].acquired = true;
            ctx->seqs[i].n_tokens = 0;
            seq = static_cast<int32_t>(i);
            return true;
        }
    }
    error = "All " + std::to_string(ctx->seqs.size()) + " sequences of this context are in use (maxSequences " +
            std::to_string(ctx->seqs.size()) + "): release one first, or create the context with a larger maxSequences";
    return false;
}

bool qg_stream_context_seq_release(qg_stream_context * ctx, int32_t seq, std::string & error) {
    std::lock_guard<std::mutex> lock(ctx->mutex);
    if (!seq_check_acquired(ctx, seq, error)) {
        return false;
    }
    seq_rm_locked(ctx, seq, 0);
    shares_cut_locked(ctx, seq, 0);
    for (qg_stream_seq & other : ctx->seqs) {
        if (other.shared_src == seq) {
            other.shared_src = -1;
        }
    }
    qg_stream_seq & s = ctx->seqs[seq];
    s.acquired = false;
    s.n_tokens = 0;
    s.epoch++;
    return true;
}

bool qg_stream_context_seq_truncate(qg_stream_context * ctx, int32_t seq, int32_t n_keep, std::string & error) {
    std::lock_guard<std::mutex> lock(ctx->mutex);
    if (!seq_check_acquired(ctx, seq, error)) {
        return false;
    }
    qg_stream_seq & s = ctx->seqs[seq];
    if (n_keep < 0 || n_keep > s.n_tokens) {
        error = "Expected a length between 0 and " + std::to_string(s.n_tokens) + " (the tokens sequence " +
                std::to_string(seq) + " holds) but received " + std::to_string(n_keep);
        return false;
    }
    if (n_keep < s.n_tokens) {
        seq_rm_locked(ctx, seq, n_keep);
        s.n_tokens = n_keep;
        shares_cut_locked(ctx, seq, n_keep);
    }
    s.epoch++;
    return true;
}

bool qg_stream_context_seq_copy(qg_stream_context * ctx, int32_t src, int32_t dst, std::string & error) {
    std::lock_guard<std::mutex> lock(ctx->mutex);
    if (!seq_check_acquired(ctx, src, error) || !seq_check_acquired(ctx, dst, error)) {
        return false;
    }
    if (src == dst) {
        error = "Expected a target sequence other than the source, but both are " + std::to_string(src);
        return false;
    }
    if (ctx->seqs[dst].n_tokens != 0) {
        error = "Expected an empty target sequence, but sequence " + std::to_string(dst) + " holds " +
                std::to_string(ctx->seqs[dst].n_tokens) + " tokens; truncate it to 0 first";
        return false;
    }
    // the copy takes effect after the running evaluate, when a source it appends to would hold more than it says now
    for (const int32_t seq : { src, dst }) {
        if (ctx->seqs[seq].in_evaluate) {
            error = "sequence " + std::to_string(seq) + " is being evaluated; copy it once that evaluate has finished";
            return false;
        }
    }
    const int32_t n_tokens = ctx->seqs[src].n_tokens;
    if (n_tokens > 0) {
        kv_op_locked(ctx, { src, 0, dst });
    }
    ctx->seqs[dst].n_tokens = n_tokens;
    if (!ctx->params.kv_per_seq && n_tokens > 0) {
        // the unified pool's copy shares the cells
        ctx->seqs[dst].shared_src = src;
        ctx->seqs[dst].n_shared   = n_tokens;
    }
    ctx->seqs[dst].epoch++;
    return true;
}

bool qg_stream_context_seq_length(qg_stream_context * ctx, int32_t seq, int32_t & n_tokens, std::string & error) {
    std::lock_guard<std::mutex> lock(ctx->mutex);
    if (!seq_check_acquired(ctx, seq, error)) {
        return false;
    }
    n_tokens = ctx->seqs[seq].n_tokens;
    return true;
}

int32_t qg_stream_context_n_used(qg_stream_context * ctx) {
    std::lock_guard<std::mutex> lock(ctx->mutex);
    return n_used_locked(ctx);
}

int32_t qg_stream_context_seq_cells(const qg_stream_context * ctx) {
    return ctx->seq_cells;
}

static bool check_locked(const qg_stream_context * ctx, const std::vector<qg_stream_request> & requests,
                         std::string & error) {
    std::vector<bool> seen(ctx->seqs.size(), false);
    for (size_t r = 0; r < requests.size(); r++) {
        const qg_stream_request & req = requests[r];
        const std::string where = "request " + std::to_string(r) + ": ";
        if (!seq_check_acquired(ctx, req.seq, error)) {
            error = where + error;
            return false;
        }
        if (seen[req.seq]) {
            error = where + "sequence " + std::to_string(req.seq) +
                    " appears in an earlier request of the same evaluate; put all its tokens in one request";
            return false;
        }
        seen[req.seq] = true;
        if ((req.heads & ~static_cast<uint32_t>(QG_STREAM_HEADS_ALL)) != 0) {
            error = where + "Expected heads to be a bit set of 1 (query) and 2 (response) but received " +
                    std::to_string(req.heads);
            return false;
        }
        if (req.heads != 0 && !ctx->head) {
            error = where + "this is a Gen model, which has no Stream head: ask for the candidates' logits instead of heads";
            return false;
        }
        if (req.logits && !ctx->rows) {
            error = where + "this is a Stream model, which has no candidate tokens: ask for heads instead of logits";
            return false;
        }
        for (size_t i = 0; i < req.tokens.size(); i++) {
            if (req.tokens[i] < 0 || req.tokens[i] >= ctx->n_vocab) {
                error = where + "Expected token ids between 0 and " + std::to_string(ctx->n_vocab - 1) +
                        " but tokens[" + std::to_string(i) + "] is " + std::to_string(req.tokens[i]);
                return false;
            }
        }
        int32_t prev = -1;
        for (size_t i = 0; i < req.outputs.size(); i++) {
            const int32_t o = req.outputs[i];
            if (o <= prev || o >= static_cast<int32_t>(req.tokens.size())) {
                error = where + "Expected outputs to be strictly ascending indices below " +
                        std::to_string(req.tokens.size()) + " (the number of tokens) but outputs[" + std::to_string(i) +
                        "] is " + std::to_string(o);
                return false;
            }
            prev = o;
        }
    }
    return true;
}

bool qg_stream_context_check(qg_stream_context * ctx, const std::vector<qg_stream_request> & requests, std::string & error) {
    std::lock_guard<std::mutex> lock(ctx->mutex);
    return check_locked(ctx, requests, error);
}

//
// evaluate
//

// A run of a request's tokens that are all outputs, or all not.
struct qg_stream_segment {
    int32_t req;
    int32_t begin;
    int32_t end;
    bool    output;
};

struct qg_stream_plan_req {
    int32_t seq;
    int32_t pos0;           // tokens the sequence held before this evaluate
    int32_t out_row0;       // first row of this request in the evaluate's hidden-state rows
    std::vector<qg_stream_segment> segments;
    size_t  next = 0;       // next segment to decode
};

static std::string decode_error_text(int32_t rc, int32_t n_tokens, int32_t n_used, uint32_t n_ctx) {
    switch (rc) {
        case 1:
            return "llama_decode found no KV-cache slot for a batch of " + std::to_string(n_tokens) + " tokens (" +
                   std::to_string(n_used) + " of " + std::to_string(n_ctx) + " cells in use): release or truncate "
                   "sequences, or create the context with a larger contextSize";
        case 2:
            return "llama_decode was aborted";
        case -1:
            return "llama_decode rejected the batch of " + std::to_string(n_tokens) + " tokens as invalid (see llama.cpp's log)";
        default:
            return "llama_decode failed with code " + std::to_string(rc) + " on a batch of " + std::to_string(n_tokens) +
                   " tokens (see llama.cpp's log)";
    }
}

// Decodes the given segments in order, in chunks of at most n_batch tokens (n_outputs_max with `output`). With
// `output`, every token is an output and its hidden state is copied to `hidden` at its request's next row.
static bool decode_group(qg_stream_context * ctx, std::vector<qg_stream_plan_req> & plan,
                         const std::vector<qg_stream_request> & requests, const std::vector<qg_stream_segment> & group,
                         bool output, std::vector<int32_t> & out_next, std::vector<float> & hidden, int32_t n_used,
                         std::string & error) {
    llama_context * lctx = ctx->lctx.get();
    if (ctx->embeddings_on != output) {
        // With embeddings on, llama.cpp outputs every token of a batch (and runs the LM head on each): only batches
        // made of output positions run with it on.
        llama_set_embeddings(lctx, output);
        ctx->embeddings_on = output;
    }
    llama_batch & batch = ctx->batch->batch;
    const int32_t n_batch = output ? ctx->n_outputs_max : static_cast<int32_t>(llama_n_batch(lctx));
    const size_t  row_size = static_cast<size_t>(ctx->n_hidden);

    // (request, token index) of each batch row, to route the hidden states
    std::vector<std::pair<int32_t, int32_t>> rows;
    rows.reserve(static_cast<size_t>(n_batch));

    size_t  seg = 0;
    int32_t tok = group.empty() ? 0 : group[0].begin;
    while (seg < group.size()) {
        batch.n_tokens = 0;
        rows.clear();
        while (seg < group.size() && batch.n_tokens < n_batch) {
            const qg_stream_segment & s = group[seg];
            const qg_stream_plan_req & p = plan[s.req];
            const int32_t i = batch.n_tokens++;
            batch.token[i]     = requests[s.req].tokens[tok];
            batch.pos[i]       = p.pos0 + tok;
            batch.n_seq_id[i]  = 1;
            batch.seq_id[i][0] = p.seq;
            batch.logits[i]    = output ? 1 : 0;
            rows.emplace_back(s.req, tok);
            if (++tok == s.end) {
                if (++seg < group.size()) {
                    tok = group[seg].begin;
                }
            }
        }
        const int32_t rc = llama_decode(lctx, batch);
        ctx->running.n_decode++;
        ctx->running.n_tokens += batch.n_tokens;
        if (rc != 0) {
            error = decode_error_text(rc, batch.n_tokens, n_used, ctx->params.n_ctx);
            return false;
        }
        n_used += batch.n_tokens;
        if (!output) {
            continue;
        }
        for (int32_t i = 0; i < batch.n_tokens; i++) {
            const float * h = llama_get_embeddings_ith(lctx, i);
            if (h == nullptr) {
                error = "llama.cpp returned no hidden state for batch row " + std::to_string(i);
                return false;
            }
            const int32_t req = rows[static_cast<size_t>(i)].first;
            const size_t  row = static_cast<size_t>(plan[req].out_row0 + out_next[req]++);
            std::copy_n(h, row_size, hidden.data() + row * row_size);
        }
    }
    return true;
}

// Splits each request into output / non-output runs and decodes them: while any sequence's next run holds no
// output, those runs go first (embeddings off); otherwise the next output runs of all sequences go together.
// A sequence contributes at most one run per group, so its tokens stay in order.
//
// A group's runs go in ascending sequence order: with a KV stream per sequence, llama.cpp splits a batch into
// ubatches of CONSECUTIVE sequence ids, taken in the order the batch meets them (llama_batch_allocr::split_equal,
// sequential), so sequences 0..7 in order share one graph where 7, 6, … 0 would each get one of their own. Gaps in
// the ids (a session released between two others) still split a step into one graph per run of consecutive ids.
static bool decode_all(qg_stream_context * ctx, std::vector<qg_stream_plan_req> & plan,
                       const std::vector<qg_stream_request> & requests, std::vector<float> & hidden, int32_t n_used,
                       std::string & error) {
    std::vector<int32_t> out_next(plan.size(), 0);
    std::vector<qg_stream_segment> group;
    std::vector<size_t> order(plan.size());
    for (size_t i = 0; i < order.size(); i++) {
        order[i] = i;
    }
    std::sort(order.begin(), order.end(), [&plan](size_t a, size_t b) { return plan[a].seq < plan[b].seq; });
    while (true) {
        bool any_left  = false;
        bool any_plain = false;
        for (const qg_stream_plan_req & p : plan) {
            if (p.next < p.segments.size()) {
                any_left = true;
                any_plain = any_plain || !p.segments[p.next].output;
            }
        }
        if (!any_left) {
            return true;
        }
        const bool output = !any_plain;
        group.clear();
        int32_t n_group = 0;
        for (size_t i : order) {
            qg_stream_plan_req & p = plan[i];
            if (p.next < p.segments.size() && p.segments[p.next].output == output) {
                group.push_back(p.segments[p.next]);
                n_group += p.segments[p.next].end - p.segments[p.next].begin;
                p.next++;
            }
        }
        if (!decode_group(ctx, plan, requests, group, output, out_next, hidden, n_used, error)) {
            return false;
        }
        n_used += n_group;
    }
}

static void plan_segments(const qg_stream_request & req, int32_t r, std::vector<qg_stream_segment> & segments) {
    const int32_t n = static_cast<int32_t>(req.tokens.size());
    size_t  o = 0;  // next entry of req.outputs
    int32_t i = 0;
    while (i < n) {
        const bool output = o < req.outputs.size() && req.outputs[o] == i;
        int32_t j = i;
        if (output) {
            while (j < n && o < req.outputs.size() && req.outputs[o] == j) {
                j++;
                o++;
            }
        } else {
            j = o < req.outputs.size() ? req.outputs[o] : n;
        }
        segments.push_back({ r, i, j, output });
        i = j;
    }
}

// The candidate logits of the output rows of the requests that ask for them, in request order, in one graph.
static bool logits_all(qg_stream_context * ctx, const std::vector<qg_stream_request> & requests,
                       const std::vector<qg_stream_plan_req> & plan, const std::vector<float> & hidden,
                       std::vector<float> & logits, std::string & error) {
    const size_t row_size = static_cast<size_t>(ctx->n_hidden);
    std::vector<float> gathered;
    for (size_t r = 0; r < requests.size(); r++) {
        if (requests[r].logits) {
            const float * first = hidden.data() + static_cast<size_t>(plan[r].out_row0) * row_size;
            gathered.insert(gathered.end(), first, first + requests[r].outputs.size() * row_size);
        }
    }
    const int64_t n_rows = static_cast<int64_t>(gathered.size() / row_size);
    logits.resize(static_cast<size_t>(n_rows) * static_cast<size_t>(ctx->n_candidates));
    return qg_output_rows_eval(ctx->rows.get(), gathered.data(), n_rows, logits.data(), error);
}

// Runs the head over the hidden rows, one graph for all requests and both paths; then the candidate logits.
static bool head_all(qg_stream_context * ctx, const std::vector<qg_stream_request> & requests,
                     const std::vector<qg_stream_plan_req> & plan, const std::vector<float> & hidden, int64_t n_rows_all,
                     std::vector<qg_stream_result> & results, std::string & error) {
    const qg_stream_head * head = qg_stream_model_get_head(ctx->model);
    const size_t row_size = static_cast<size_t>(ctx->n_hidden);

    std::vector<float> gathered[QG_STREAM_PATH_COUNT];
    std::vector<float> probs[QG_STREAM_PATH_COUNT];
    const float * in[QG_STREAM_PATH_COUNT] = {};
    float *       out[QG_STREAM_PATH_COUNT] = {};
    int64_t       n_rows[QG_STREAM_PATH_COUNT] = {};
    uint32_t      heads = 0;
    for (int p = 0; p < QG_STREAM_PATH_COUNT; p++) {
        bool all = true;
        for (size_t r = 0; r < requests.size(); r++) {
            if (requests[r].heads & (1u << p)) {
                n_rows[p] += static_cast<int64_t>(requests[r].outputs.size());
            } else if (!requests[r].outputs.empty()) {
                all = false;
            }
        }
        if (n_rows[p] == 0) {
            continue;
        }
        heads |= 1u << p;
        if (all && n_rows[p] == n_rows_all) {
            in[p] = hidden.data();
        } else {
            gathered[p].reserve(static_cast<size_t>(n_rows[p]) * row_size);
            for (size_t r = 0; r < requests.size(); r++) {
                if (requests[r].heads & (1u << p)) {
                    const float * first = hidden.data() + static_cast<size_t>(plan[r].out_row0) * row_size;
                    gathered[p].insert(gathered[p].end(), first, first + requests[r].outputs.size() * row_size);
                }
            }
            in[p] = gathered[p].data();
        }
        probs[p].resize(static_cast<size_t>(n_rows[p] * qg_stream_head_n_out(head, static_cast<qg_stream_path>(p))));
        out[p] = probs[p].data();
    }
    if (heads != 0 && !qg_stream_head_eval(ctx->head.get(), heads, in, n_rows, out, error)) {
        return false;
    }
    std::vector<float> logits;
    if (ctx->rows && !logits_all(ctx, requests, plan, hidden, logits, error)) {
        return false;
    }
    size_t next_logit = 0;

    results.assign(requests.size(), qg_stream_result());
    size_t next_row[QG_STREAM_PATH_COUNT] = {};
    for (size_t r = 0; r < requests.size(); r++) {
        const qg_stream_request & req = requests[r];
        const size_t n_out_rows = req.outputs.size();
        for (int p = 0; p < QG_STREAM_PATH_COUNT; p++) {
            if ((req.heads & (1u << p)) == 0) {
                continue;
            }
            const size_t n_out = static_cast<size_t>(qg_stream_head_n_out(head, static_cast<qg_stream_path>(p)));
            const float * first = probs[p].data() + next_row[p] * n_out;
            results[r].probs[p].assign(first, first + n_out_rows * n_out);
            next_row[p] += n_out_rows;
        }
        if (req.hidden) {
            const float * first = hidden.data() + static_cast<size_t>(plan[r].out_row0) * row_size;
            results[r].hidden.assign(first, first + n_out_rows * row_size);
        }
        if (req.logits) {
            const float * first = logits.data() + next_logit * static_cast<size_t>(ctx->n_candidates);
            results[r].logits.assign(first, first + n_out_rows * static_cast<size_t>(ctx->n_candidates));
            next_logit += n_out_rows;
        }
    }
    return true;
}

bool qg_stream_context_evaluate(qg_stream_context * ctx, const std::vector<qg_stream_request> & requests,
                                std::vector<qg_stream_result> & results, std::string & error) {
    using clock = std::chrono::steady_clock;

    std::vector<qg_stream_plan_req> plan(requests.size());
    std::vector<uint32_t> epochs(requests.size());
    int32_t n_used = 0;
    int64_t n_rows_all = 0;
    {
        std::lock_guard<std::mutex> lock(ctx->mutex);
        if (ctx->evaluating) {
            error = "an evaluate is already running on this context";
            return false;
        }
        if (!check_locked(ctx, requests, error)) {
            return false;
        }
        int64_t n_new = 0;
        for (const qg_stream_request & req : requests) {
            n_new += static_cast<int64_t>(req.tokens.size());
        }
        n_used = n_used_locked(ctx);
        if (n_used + n_new > static_cast<int64_t>(ctx->params.n_ctx)) {
            error = "The context is full: the sequences hold " + std::to_string(n_used) + " tokens and this evaluate adds " +
                    std::to_string(n_new) + ", more than its contextSize of " + std::to_string(ctx->params.n_ctx) +
                    " cells; release or truncate sequences, or create the context with a larger contextSize";
            return false;
        }
        if (ctx->params.kv_per_seq) {
            for (size_t r = 0; r < requests.size(); r++) {
                const int32_t held = ctx->seqs[requests[r].seq].n_tokens;
                const int64_t n_req = static_cast<int64_t>(requests[r].tokens.size());
                if (held + n_req > ctx->seq_cells) {
                    error = "request " + std::to_string(r) + ": sequence " + std::to_string(requests[r].seq) + " holds " +
                            std::to_string(held) + " tokens and this evaluate adds " + std::to_string(n_req) +
                            ", more than the " + std::to_string(ctx->seq_cells) + " cells of its KV stream (contextSize " +
                            std::to_string(ctx->params.n_ctx) + " / maxSequences " + std::to_string(ctx->params.n_seq_max) +
                            "); truncate it, or create the context with a larger contextSize or fewer maxSequences";
                    return false;
                }
            }
        }
        for (size_t r = 0; r < requests.size(); r++) {
            plan[r].seq      = requests[r].seq;
            plan[r].pos0     = ctx->seqs[requests[r].seq].n_tokens;
            plan[r].out_row0 = static_cast<int32_t>(n_rows_all);
            epochs[r]        = ctx->seqs[requests[r].seq].epoch;
            n_rows_all      += static_cast<int64_t>(requests[r].outputs.size());
            ctx->seqs[requests[r].seq].in_evaluate = true;
        }
        ctx->evaluating = true;
    }
    ctx->running = {};

    for (size_t r = 0; r < requests.size(); r++) {
        plan_segments(requests[r], static_cast<int32_t>(r), plan[r].segments);
    }
    std::vector<float> hidden(static_cast<size_t>(n_rows_all) * static_cast<size_t>(ctx->n_hidden));

    const auto t0 = clock::now();
    bool ok = decode_all(ctx, plan, requests, hidden, n_used, error);
    const auto t1 = clock::now();
    ok = ok && head_all(ctx, requests, plan, hidden, n_rows_all, results, error);
    const auto t2 = clock::now();
    ctx->running.t_decode_us = std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count();
    ctx->running.t_head_us   = std::chrono::duration_cast<std::chrono::microseconds>(t2 - t1).count();
    ctx->running.n_outputs   = static_cast<int32_t>(n_rows_all);

    std::lock_guard<std::mutex> lock(ctx->mutex);
    ctx->last = ctx->running;
    llama_memory_t mem = llama_get_memory(ctx->lctx.get());
    for (size_t r = 0; r < requests.size(); r++) {
        if (!ok) {
            // all or nothing: drop whatever this evaluate put in the cache
            llama_memory_seq_rm(mem, plan[r].seq, plan[r].pos0, -1);
        } else if (ctx->seqs[plan[r].seq].epoch == epochs[r]) {
            ctx->seqs[plan[r].seq].n_tokens = plan[r].pos0 + static_cast<int32_t>(requests[r].tokens.size());
        }
    }
    for (const qg_stream_pending_op & op : ctx->pending) {
        apply_op(ctx, op);
    }
    ctx->pending.clear();
    for (const qg_stream_plan_req & p : plan) {
        ctx->seqs[p.seq].in_evaluate = false;
    }
    ctx->evaluating = false;
    if (!ok) {
        results.clear();
    }
    return ok;
}
