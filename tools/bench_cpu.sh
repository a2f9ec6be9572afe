#!/usr/bin/env bash
# CPU decode benchmark, batch 1: the C++ engine vs the PyTorch reference, side
# by side on the same machine and checkpoints. Writes docs/perf/cpu.md.
#   tools/bench_cpu.sh [WORKDIR]   (default /tmp/memserve-bench)
# Makes two checkpoints in WORKDIR (kept for reruns): "small" (the demo shape)
# and "373m" (the 373M pkplus shapes: dim 1024, 24 layers, memory at 4,12,20,
# 1024^2 = 1M-row table, 4 memory heads, knn 32, k_dim 512; ~3.3 GB served).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/tmp/memserve-bench}"
mkdir -p "$work" docs/perf
bazel build //tests/bench:decode_bench >&2
bench=bazel-bin/tests/bench/decode_bench
py=/usr/bin/python3

make() {  # name, make_test_model flags...
  local name=$1; shift
  if [ ! -f "$work/$name/serve/config.json" ]; then
    $py tools/make_test_model.py "$work/$name/ckpt" "$@" >&2
    $py tools/convert_lingua.py "$work/$name/ckpt" "$work/$name/serve" >&2
    $py tools/convert_lingua.py "$work/$name/ckpt" "$work/$name/serve_bf16" --dtype bfloat16 >&2
  fi
}
make small --dim 128 --n_layers 4 --mem_layers 1,3 --mem_n_keys 64 --mem_heads 4 \
    --mem_knn 16 --mem_k_dim 64
make 373m --dim 1024 --n_layers 24 --n_heads 16 --n_kv_heads 16 --multiple_of 256 \
    --mem_layers 4,12,20 --mem_n_keys 1024 --mem_heads 4 --mem_knn 32 --mem_k_dim 512 \
    --max_seqlen 1024 --rope_theta 500000

out=docs/perf/cpu.md
raw=$(mktemp)
{
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "commit: $(git rev-parse --short HEAD)"
  echo "## torch linear bandwidth"
  echo "\$ $py tests/bench/torch_linear_bandwidth.py"
  $py tests/bench/torch_linear_bandwidth.py
  echo "blas: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)"
  for m in small 373m; do
    for variant in serve serve_bf16; do
      echo "## $m cpp $variant"
      echo "\$ $bench --model $work/$m/$variant --prompt_tokens 16 --decode_tokens 64 --runs 3"
      $bench --model "$work/$m/$variant" --prompt_tokens 16 --decode_tokens 64 --runs 3
    done
    echo "## $m pytorch_reference"
    echo "\$ $py tests/bench/reference_decode_bench.py $work/$m/ckpt --prompt_tokens 16 --decode_tokens 64 --runs 3"
    $py tests/bench/reference_decode_bench.py "$work/$m/ckpt" --prompt_tokens 16 --decode_tokens 64 --runs 3
  done
} | tee "$raw"

median() { grep -A100 "^## $1" "$raw" | grep -m1 median_decode_tok_s | sed 's/.*: \([0-9.]*\)}/\1/'; }
{
  echo "# CPU decode throughput, batch 1: C++ engine vs PyTorch reference"
  echo
  echo "Command: \`tools/bench_cpu.sh\` (this file is its output). Protocol: random 16-token"
  echo "prompt, 64 greedy decode steps through the KV cache, one warm-up run, median of 3."
  echo "The reference is tests/reference/reference_model.py (fp32 PyTorch $($py -c 'import torch; print(torch.__version__)'), all cores)."
  echo "\`serve\` = dense weights fp32, \`serve_bf16\` = dense weights bf16 (converter --dtype bfloat16);"
  echo "the memory value table is bf16 in every variant. Compute is fp32 everywhere."
  echo
  echo "| model | C++ fp32 tok/s | C++ bf16 tok/s | reference tok/s | C++ fp32 / ref | C++ bf16 / ref |"
  echo "|---|---|---|---|---|---|"
  for m in small 373m; do
    a=$(median "$m cpp serve$"); b=$(median "$m cpp serve_bf16"); r=$(median "$m pytorch_reference")
    echo "| $m | $a | $b | $r | $(echo "scale=2; $a / $r" | bc) | $(echo "scale=2; $b / $r" | bc) |"
  done
  echo
  echo "## Raw output"
  echo
  echo '```'
  cat "$raw"
  echo '```'
} > "$out"
rm -f "$raw"
echo "wrote $out" >&2
