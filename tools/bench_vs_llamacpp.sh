#!/usr/bin/env bash
# memserve vs llama.cpp on the CPU (issue 19): the same random dense Llama on both, greedy
# tokens and logprobs checked to agree, then 3+ alternating rounds of decode b=1, decode 16
# sequences and prefill 256 tokens at the same thread count. Fetches nothing.
#
#   tools/bench_vs_llamacpp.sh LLAMA_BUILD_DIR LLAMA_SRC_DIR [--shape 373m|small]
#       [--dtypes bf16,f32] [--precisions exact,bf16] [--rounds N] [--threads N]
#       [--llama_kv_type f32|f16]
#       [--llama_fa auto|on|off] [--tol_f32 X] [--tol_bf16 X] [--work DIR] [--out FILE]
#
# LLAMA_BUILD_DIR: a CPU-only CMake build of llama.cpp made beforehand by the reader, with
#   llama-batched-bench and the llama library (libllama.so, or libllama.a plus the ggml
#   libraries), e.g. from a llama.cpp source tree:
#     cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON   # CPU-only is the default
#     cmake --build build -j --target llama-batched-bench llama
# LLAMA_SRC_DIR: that llama.cpp source tree (include/llama.h, ggml/include, and gguf-py/ for the
#   GGUF writer).
# Defaults: --shape 373m (dim 1024 x 24 layers, vocab 32000; "small" is dim 256 x 4 layers,
#   vocab 258), --dtypes bf16,f32, --precisions exact (memserve's --cpu_matmul_precision values
#   to run side by side; bf16 applies to bf16 weights, on CPUs with AVX512-BF16), --rounds 3,
#   --threads 2, --llama_kv_type f16 and --llama_fa
#   auto (llama.cpp's own defaults, its fastest CPU setting; f32 K/V with flash attention on is a
#   slow path there, so pair f32 with --llama_fa off; the agreement check always runs f32 K/V
#   with flash attention off), --tol_f32 2e-5 and --tol_bf16 0.1 (max |logprob difference| of
#   the agreement check; a wrong layout or RoPE convention gives differences of order 1;
#   llama.cpp rounds activations to bf16 for bf16 weights), --work /tmp/memserve-vs-llamacpp
#   (models are kept there for reruns), --out docs/perf/cpu-vs-llamacpp-SHAPE.md.
# What runs on each side and how the numbers are taken: tools/bench_vs_llamacpp.py.
set -euo pipefail

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "bench_vs_llamacpp: error: $*" >&2; exit 2; }

[ $# -ge 2 ] || usage
invocation="tools/bench_vs_llamacpp.sh $*"
case "$1" in -h|--help) usage ;; esac
llama_build=$(cd "$1" 2>/dev/null && pwd) || die "LLAMA_BUILD_DIR '$1' is not a directory"
llama_src=$(cd "$2" 2>/dev/null && pwd) || die "LLAMA_SRC_DIR '$2' is not a directory"
shift 2
shape=373m dtypes=bf16,f32 precisions=exact rounds=3 threads=2 kv=f16 fa=auto tol_f32=2e-5 tol_bf16=0.1
work=/tmp/memserve-vs-llamacpp out=
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value"
  case "$1" in
    --shape) shape=$2 ;;
    --dtypes) dtypes=$2 ;;
    --precisions) precisions=$2 ;;
    --rounds) rounds=$2 ;;
    --threads) threads=$2 ;;
    --llama_kv_type) kv=$2 ;;
    --llama_fa) fa=$2 ;;
    --tol_f32) tol_f32=$2 ;;
    --tol_bf16) tol_bf16=$2 ;;
    --work) work=$2 ;;
    --out) out=$2 ;;
    *) die "unknown flag $1 (see --help)" ;;
  esac
  shift 2
done
case "$shape" in 373m|small) ;; *) die "--shape must be 373m or small, got '$shape'" ;; esac
cd "$(dirname "$0")/.."
repo=$(pwd)
[ -n "$out" ] || out="docs/perf/cpu-vs-llamacpp-$shape.md"

# llama.cpp side: the benchmark tool, headers, the library to link the logprob helper against.
bb=
for c in "$llama_build/bin/llama-batched-bench" "$llama_build/llama-batched-bench"; do
  [ -x "$c" ] && bb=$c && break
done
[ -n "$bb" ] || die "no llama-batched-bench in $llama_build/bin or $llama_build (build that target)"
[ -f "$llama_src/include/llama.h" ] || die "no include/llama.h in LLAMA_SRC_DIR $llama_src"
[ -f "$llama_src/gguf-py/gguf/__init__.py" ] || die "no gguf-py/gguf in LLAMA_SRC_DIR $llama_src"
libdir=$(dirname "$(find "$llama_build" -maxdepth 3 \( -name libllama.so -o -name libllama.a \) \
  -print -quit)")
[ "$libdir" != . ] || die "no libllama.so or libllama.a under $llama_build"

mkdir -p "$work"
helper="$work/llamacpp_logprobs"
link=(-L"$libdir" "-Wl,-rpath,$libdir" -lllama)
if [ ! -f "$libdir/libllama.so" ]; then  # static build: every ggml archive, OpenMP, threads
  while IFS= read -r lib; do
    link+=("$lib")
  done < <(find "$llama_build" -name 'libggml*.a' | sort -r)
  link+=(-fopenmp -lpthread -ldl)
fi
c++ -std=c++17 -O2 -I"$llama_src/include" -I"$llama_src/ggml/include" \
  tools/llamacpp_logprobs.cc "${link[@]}" -o "$helper" \
  || die "could not build tools/llamacpp_logprobs.cc against $llama_build"

# memserve side.
bazel build //server:memserve //tests/bench:decode_bench >&2

exec /usr/bin/python3 tools/bench_vs_llamacpp.py \
  --llama_build "$llama_build" --llama_src "$llama_src" --batched_bench "$bb" \
  --logprobs_bin "$helper" --memserve "$repo/bazel-bin/server/memserve" \
  --decode_bench "$repo/bazel-bin/tests/bench/decode_bench" --shape "$shape" \
  --dtypes "$dtypes" --precisions "$precisions" --rounds "$rounds" --threads "$threads" --llama_kv_type "$kv" \
  --llama_fa "$fa" --tol_f32 "$tol_f32" --tol_bf16 "$tol_bf16" \
  --work "$work" --out "$out" --command "$invocation"
