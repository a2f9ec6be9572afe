#!/usr/bin/env bash
# The README's "run" command: installs packages, builds the server and the
# CLI, starts `memserve serve` on the bundled demo model (models/demo; its
# knowledge lives in the product-key memory) on a free local port, streams a
# chat answer with memserve-cli, then stops the server with SIGTERM (drain).
#   tools/run_demo.sh ["your message"]
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
bazel build //server:memserve //clients/cli:memserve-cli >&2
message="${1:-The capital of Batourkor is}"
workdir="$(mktemp -d)"
bazel-bin/server/memserve serve --listen 127.0.0.1:0 --port_file "$workdir/port" \
  2>"$workdir/server.log" &
server_pid=$!
cleanup() { kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do [[ -s "$workdir/port" ]] && break; sleep 0.1; done
[[ -s "$workdir/port" ]] || { cat "$workdir/server.log" >&2; exit 1; }
server="127.0.0.1:$(cat "$workdir/port")"
for _ in $(seq 1 100); do
  bazel-bin/clients/cli/memserve-cli --server "$server" health >/dev/null 2>&1 && break
  sleep 0.1
done
echo "user> $message" >&2
printf '%s' "$message"   # the demo model continues it: " Draenddron."
bazel-bin/clients/cli/memserve-cli --server "$server" chat --message "$message" --temperature 0
