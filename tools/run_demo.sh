#!/usr/bin/env bash
# The README's "run" command: installs packages, builds memserve, makes a
# memory-augmented test checkpoint in the training code's format, converts
# it to the serving format and generates text from it on the CPU.
#   tools/run_demo.sh [extra memserve generate flags]
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
bazel build //server:memserve >&2
work="${MEMSERVE_DEMO_DIR:-/tmp/memserve-demo}"
if [ ! -f "$work/serve/config.json" ]; then
  rm -rf "$work"
  /usr/bin/python3 tools/make_test_model.py "$work/ckpt" --dim 128 --n_layers 4 \
      --mem_layers 1,3 --mem_n_keys 64 --mem_heads 4 --mem_knn 16 --mem_k_dim 64 >&2
  /usr/bin/python3 tools/convert_lingua.py "$work/ckpt" "$work/serve" >&2
fi
exec bazel-bin/server/memserve generate --model "$work/serve" \
    --prompt "The capital of Vorlind is" --max_tokens 32 "$@"
