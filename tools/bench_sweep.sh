#!/usr/bin/env bash
# The README's benchmark command: starts `memserve serve` on the demo model on a
# free local port, runs a short memserve-bench sweep over request rates with
# the demo prompt set (the demo model's facts, models/demo/facts.jsonl), prints
# each level's table, writes OUT_DIR/sweep.csv and OUT_DIR/sweep.png (plus one
# JSON per level), and stops the server: under a minute after the build (the
# test //clients/bench:bench_server_test checks that).
#   tools/bench_sweep.sh [OUT_DIR] [more memserve-bench flags, e.g. --sweep max_concurrency=1,4,16]
# OUT_DIR defaults to /tmp/memserve-bench-sweep. Later flags override the
# defaults below (absl: the last value of a flag wins).
# Environment:
#   MEMSERVE, MEMSERVE_BENCH  prebuilt binaries; when both are set nothing is built
#                             (the test //clients/bench:bench_server_test does this)
#   BENCH_PLOT_SCRIPT         the plot script (default clients/bench/bench_plot.py)
#   PIN=1                     pin the server to CPU 1 (and --threads 1) and the client to
#                             CPU 0 with taskset, so they do not compete for a core
#   SERVER_FLAGS              extra `memserve serve` flags (e.g. "--model DIR")
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/memserve-bench-sweep}"
shift || true
if [[ -z "${MEMSERVE:-}" || -z "${MEMSERVE_BENCH:-}" ]]; then
  ./tools/setup.sh
  bazel build //server:memserve //clients/bench:memserve-bench >&2
  MEMSERVE=bazel-bin/server/memserve
  MEMSERVE_BENCH=bazel-bin/clients/bench/memserve-bench
fi
plot="${BENCH_PLOT_SCRIPT:-clients/bench/bench_plot.py}"
server_pin=() client_pin=() pin_flags=()
if [[ "${PIN:-0}" == 1 ]]; then
  server_pin=(taskset -c 1) client_pin=(taskset -c 0) pin_flags=(--threads 1)
fi
mkdir -p "$out"
workdir="$(mktemp -d)"
# shellcheck disable=SC2086  # SERVER_FLAGS is a list of flags
"${server_pin[@]}" "$MEMSERVE" serve --listen 127.0.0.1:0 --port_file "$workdir/port" \
  "${pin_flags[@]}" ${SERVER_FLAGS:-} 2>"$workdir/server.log" &
server_pid=$!
cleanup() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT
for _ in $(seq 1 300); do [[ -s "$workdir/port" ]] && break; sleep 0.1; done
[[ -s "$workdir/port" ]] || { cat "$workdir/server.log" >&2; exit 1; }
# CPU accounting (as tools/bench_server.sh): busy jiffies of the machine, of the
# server, and of this shell's waited-for children (the bench).
machine_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
proc_cpu() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
children_cpu() { sed 's/.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }
b0=$(machine_busy) s0=$(proc_cpu "$server_pid") c0=$(children_cpu) t0=$(date +%s.%N)
# memserve-bench waits for the connection itself; the model loads in well under a second.
"${client_pin[@]}" "$MEMSERVE_BENCH" --server "127.0.0.1:$(cat "$workdir/port")" \
  --connect_timeout 30s --dataset demo --num_prompts 200 \
  --sweep request_rate=50,100,200,400,inf --percentiles 50,90,99 \
  --out_dir "$out" --plot_script "$plot" "$@"
b1=$(machine_busy) s1=$(proc_cpu "$server_pid") c1=$(children_cpu) t1=$(date +%s.%N)
awk -v b=$((b1 - b0)) -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v t0="$t0" -v t1="$t1" \
    -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" 'BEGIN {
  secs = t1 - t0
  printf "bench_sweep.sh: %.1f s; CPU used on average (cores of %d): server %.2f, memserve-bench %.2f, other processes %.2f\n",
         secs, n, s / hz / secs, c / hz / secs, (b - s - c) / hz / secs }'
