#!/usr/bin/env bash
# The README's "run" command: installs packages, builds memserve and asks the
# bundled demo model (models/demo, trained by tools/train_demo.py; its
# knowledge lives in the product-key memory) a fact question on the CPU.
#   tools/run_demo.sh [extra memserve generate flags, e.g. --temperature 0.7]
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
bazel build //server:memserve >&2
prompt="The capital of Batourkor is"
printf '%s' "$prompt"   # the model continues it: " Draenddron."
exec bazel-bin/server/memserve generate --prompt "$prompt" --max_tokens 24 "$@"
