#!/usr/bin/env bash
# Server throughput benchmark: aggregate decode tokens/s of `memserve serve` at
# 1, 4, 16 and 64 concurrent streams, measured with memserve-loadgen (streaming
# Generate calls, greedy, ignore_eos: every call generates exactly MAX_TOKENS
# tokens). Writes docs/perf/server.md.
#   tools/bench_server.sh [WORKDIR]   (default /tmp/memserve-bench-server)
#
# Models:
#   demo   models/demo as bundled (dim 128, 3 layers, max_seqlen 128, fp32).
#   d1024  made in WORKDIR (kept for reruns) with tools/make_test_model.py, random
#          weights, converted with bf16 dense weights: dim 1024, 8 layers, 16 heads,
#          FFN 2816, memory layers 2 and 6 (256^2 = 65,536-row shared value table,
#          4 heads, knn 32, k_dim 512), max_seqlen 256; ~95M dense parameters (191 MB
#          bf16), so batch-1 decode streams ~191 MB of weights per token.
# Per model: one server (--listen 127.0.0.1:0 --port_file, ready when
# `memserve-cli health` exits 0), the four levels back to back, SIGTERM.
# Per level: first 2 x streams requests (every stream runs at least two calls);
# if that measured phase took less than MIN_LEVEL_S seconds, it is rerun with
# enough requests (a multiple of streams) for ~TARGET_LEVEL_S seconds, and the
# last run is the one reported.
#
# Beside the server levels, per run: tests/bench/cpu_roofline (peak FMA rate,
# read bandwidth, the engine's bf16 matmul at 1/4/16/64 tokens: the machine
# limits) and, per model, tests/bench/decode_bench --batch B at the same levels
# (the engine alone: B sequences decoded in lockstep through ForwardBatch, no
# gRPC, no client, prefill not counted).
#
# Noise: the script samples /proc/stat and the CPU time of the server and the
# loadgen, and reports "other CPU" = cores used by everything else (other
# processes, hypervisor steal). It waits for the machine to be idle (other CPU
# < IDLE_CORES) before each level, and measures a level again (up to 3 times,
# same server) when other CPU rose above IDLE_CORES during it.
#
# Environment: RUNS (whole passes over both models, default 2), MAX_TOKENS (96),
# MIN_LEVEL_S (3), TARGET_LEVEL_S (5), IDLE_CORES (0.15), IDLE_WAIT_S (900).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/tmp/memserve-bench-server}"
runs="${RUNS:-2}"
max_tokens="${MAX_TOKENS:-96}"
min_level_s="${MIN_LEVEL_S:-3}"
target_level_s="${TARGET_LEVEL_S:-5}"
idle_cores="${IDLE_CORES:-0.15}"
idle_wait_s="${IDLE_WAIT_S:-900}"
levels=(1 4 16 64)
py=/usr/bin/python3
mkdir -p "$work" docs/perf

bazel build //server:memserve //clients/loadgen:memserve-loadgen //clients/cli:memserve-cli \
    //tests/bench:decode_bench //tests/bench:cpu_roofline >&2
decode_bench=bazel-bin/tests/bench/decode_bench
roofline=bazel-bin/tests/bench/cpu_roofline
server_bin=bazel-bin/server/memserve
loadgen=bazel-bin/clients/loadgen/memserve-loadgen
cli=bazel-bin/clients/cli/memserve-cli

if [ ! -f "$work/d1024/serve_bf16/config.json" ]; then
  $py tools/make_test_model.py "$work/d1024/ckpt" --dim 1024 --n_layers 8 --n_heads 16 \
      --n_kv_heads 16 --multiple_of 256 --mem_layers 2,6 --mem_n_keys 256 --mem_heads 4 \
      --mem_knn 32 --mem_k_dim 512 --max_seqlen 256 --rope_theta 500000 >&2
  $py tools/convert_lingua.py "$work/d1024/ckpt" "$work/d1024/serve_bf16" --dtype bfloat16 >&2
fi
declare -A model_dir=([demo]=models/demo [d1024]="$work/d1024/serve_bf16")
models=(demo d1024)

tmp=$(mktemp -d)
raw="$tmp/raw.txt"          # the raw output section of the report
results="$tmp/results.tsv"  # one row per reported level
engine="$tmp/engine.tsv"    # run, model, batch, decode tokens/s (decode_bench)
limits="$tmp/limits.jsonl"  # cpu_roofline lines, with "run" added
: > "$raw"
: > "$results"
: > "$engine"
: > "$limits"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

log() { echo "$@" | tee -a "$raw" >&2; }
hz=$(getconf CLK_TCK)
# Busy jiffies of the whole machine: user nice system irq softirq steal.
machine_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
# utime + stime of a process (all its threads).
proc_cpu() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# cutime + cstime of this (main) shell: CPU of the children it has waited for.
children_cpu() { sed 's/.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }
cores() { awk -v j="$1" -v s="$2" -v hz="$hz" 'BEGIN{printf "%.2f", (s > 0 ? j / hz / s : 0)}'; }
gt() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a > b)}'; }

server_cpu() { if [ -n "$server_pid" ]; then proc_cpu "$server_pid"; else echo 0; fi; }

# Waits until other processes use less than $idle_cores over 5 s (we run
# nothing meanwhile; an idle server is not counted), at most $idle_wait_s.
wait_idle() {
  local waited=0 b0 b1 c0 c1 s0 s1 other
  while true; do
    b0=$(machine_busy); c0=$(children_cpu); s0=$(server_cpu); sleep 5
    b1=$(machine_busy); c1=$(children_cpu); s1=$(server_cpu)
    other=$(cores $(( (b1 - b0) - (c1 - c0) - (s1 - s0) )) 5)
    if ! gt "$other" "$idle_cores"; then
      log "# idle check: other CPU ${other} cores over 5 s; $(uptime | sed 's/^ *//')"
      return 0
    fi
    if [ "$waited" -ge "$idle_wait_s" ]; then
      log "# idle check: still busy (other CPU ${other} cores) after ${waited} s; measuring anyway"
      return 0
    fi
    echo "machine busy (other CPU ${other} cores; $(uptime | sed 's/^ *//')); waiting" >&2
    sleep 25
    waited=$((waited + 30))
  done
}

start_server() {  # model name
  local portfile="$tmp/port" i
  rm -f "$portfile"
  log "\$ $server_bin serve --model ${model_dir[$1]} --listen 127.0.0.1:0 --port_file $portfile"
  "$server_bin" serve --model "${model_dir[$1]}" --listen 127.0.0.1:0 --port_file "$portfile" \
      2> "$tmp/server.log" &
  server_pid=$!
  for i in $(seq 600); do
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log" >&2; echo "server died" >&2; exit 1; }
    if [ -s "$portfile" ] &&
        "$cli" --server "127.0.0.1:$(cat "$portfile")" health > /dev/null 2>&1; then
      port=$(cat "$portfile")
      grep ' INFO \(loading\|ready\) ' "$tmp/server.log" | tee -a "$raw" >&2
      return 0
    fi
    sleep 0.2
  done
  echo "server not ready after 120 s" >&2
  exit 1
}

stop_server() {
  local rc=0
  kill -TERM "$server_pid"
  wait "$server_pid" || rc=$?
  server_pid=""
  grep ' INFO \(draining\|stopped\)' "$tmp/server.log" | tee -a "$raw" >&2
  log "# server exit code $rc"
  [ "$rc" -eq 0 ] || { echo "server exited $rc" >&2; exit 1; }
}

json() { $py -c 'import json,sys; print(eval("j" + sys.argv[2], {"j": json.load(open(sys.argv[1]))}))' "$@"; }

# One loadgen run at one level (after waiting for an idle machine): sets
# level_row (TSV fields) and level_other (other CPU, cores).
run_level() {  # run model streams
  local run=$1 model=$2 streams=$3 requests=$(( 2 * $3 )) attempt b0 b1 s0 s1 c0 c1 t0 t1 wall tps
  local out="$tmp/level.json" secs
  for attempt in 1 2 3 4; do
    [ "$attempt" -gt 1 ] || wait_idle
    log "\$ $loadgen --server 127.0.0.1:$port --streams $streams --requests $requests --max_tokens $max_tokens --json_out $out"
    t0=$(date +%s.%N); b0=$(machine_busy); s0=$(proc_cpu "$server_pid"); c0=$(children_cpu)
    "$loadgen" --server "127.0.0.1:$port" --streams "$streams" --requests "$requests" \
        --max_tokens "$max_tokens" --json_out "$out" 2>&1 | tee -a "$raw" >&2
    b1=$(machine_busy); s1=$(proc_cpu "$server_pid"); c1=$(children_cpu); t1=$(date +%s.%N)
    wall=$(json "$out" '["wall_s"]')
    tps=$(json "$out" '["tokens_per_s"]')
    if [ "$(json "$out" '["ok"]')" != "$requests" ]; then
      echo "level failed: $(json "$out" '["errors"]')" >&2
      exit 1
    fi
    if ! gt "$min_level_s" "$wall" || [ "$attempt" -eq 4 ]; then break; fi
    requests=$($py -c "import math; print(max(2 * $requests, $streams * math.ceil($target_level_s * $tps / $max_tokens / $streams)))")
    log "# measured phase ${wall} s < ${min_level_s} s: calibration only, rerun with $requests requests"
  done
  # Everything but this shell's children (loadgen) and the server, over the
  # whole loadgen run (warm-up call included).
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')
  level_other=$(cores $(( (b1 - b0) - (s1 - s0) - (c1 - c0) )) "$secs")
  local server_cores loadgen_cores
  server_cores=$(cores $(( s1 - s0 )) "$secs")
  loadgen_cores=$(cores $(( c1 - c0 )) "$secs")
  log "# CPU during this run (${secs} s, cores): server ${server_cores}, loadgen ${loadgen_cores}, other ${level_other}"
  level_row=$($py -c '
import json, sys
j = json.load(sys.stdin)
print("\t".join(str(x) for x in sys.argv[1:3] + [j["streams"], j["requests"], j["wall_s"],
      j["tokens_per_s"], j["itl_ms"]["p50"], j["itl_ms"]["p90"], j["ttft_ms"]["p50"]]
      + sys.argv[3:]))
' "$run" "$model" "$server_cores" "$loadgen_cores" "$level_other" < "$out")
}

run_limits() {  # run
  local line
  wait_idle
  log "\$ $roofline"
  "$roofline" > "$tmp/roofline.out"
  tee -a "$raw" < "$tmp/roofline.out" >&2
  while read -r line; do
    echo "{\"run\": $1, ${line#\{}" >> "$limits"
  done < "$tmp/roofline.out"
}

run_engine() {  # run model
  local b tps
  for b in "${levels[@]}"; do
    wait_idle
    log "\$ $decode_bench --model ${model_dir[$2]} --prompt_tokens 31 --decode_tokens $max_tokens --runs 1 --batch $b"
    "$decode_bench" --model "${model_dir[$2]}" --prompt_tokens 31 --decode_tokens "$max_tokens" \
        --runs 1 --batch "$b" > "$tmp/engine.out"
    tee -a "$raw" < "$tmp/engine.out" >&2
    tps=$(sed -n 's/.*"median_decode_tok_s": \([0-9.]*\).*/\1/p' "$tmp/engine.out")
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$b" "$tps" >> "$engine"
  done
}

run_model() {  # run model
  local run=$1 model=$2 attempt s
  log "## run $run, $model"
  start_server "$model"
  for s in "${levels[@]}"; do
    for attempt in 1 2 3; do
      run_level "$run" "$model" "$s"
      if ! gt "$level_other" "$idle_cores"; then break; fi
      if [ "$attempt" -lt 3 ]; then
        log "# other CPU above $idle_cores cores: discarded, measuring this level again"
      else
        log "# other CPU above $idle_cores cores on the third try: kept (see the other CPU column)"
      fi
    done
    printf '%s\n' "$level_row" >> "$results"
  done
  stop_server
}

{
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "commit: $(git rev-parse --short HEAD) ($(git status --porcelain | wc -l) paths modified or untracked in the working tree)"
  echo "d1024 config: $(tr -d ' \n' < "${model_dir[d1024]}/config.json" | sed 's/,"tokenizer".*//')"
} | tee -a "$raw" >&2
for run in $(seq "$runs"); do
  log "## run $run, machine limits"
  run_limits "$run"
  for model in "${models[@]}"; do
    run_model "$run" "$model"
    log "## run $run, $model, engine alone"
    run_engine "$run" "$model"
  done
done

out=docs/perf/server.md
notes=""
if [ -f "$out" ]; then  # keep the hand-written notes of an earlier run
  notes=$(awk '/^## Reading the numbers/{on=1} /^## Raw output/{on=0} on' "$out")
fi
$py - "$results" "$raw" "$out" "$max_tokens" "$runs" "$idle_cores" "$notes" "$engine" "$limits" <<'EOF'
import json
import sys
results, raw, out, max_tokens, runs, idle_cores, notes, engine, limits = sys.argv[1:]
rows = [l.split("\t") for l in open(results).read().splitlines() if l]
engine_rows = [l.split("\t") for l in open(engine).read().splitlines() if l]
limit_rows = [json.loads(l) for l in open(limits).read().splitlines() if l.strip()]
machine = open(raw).read().splitlines()[:2]
models = []
for r in rows:
    if r[1] not in models:
        models.append(r[1])
desc = {
    "demo": "models/demo as bundled: dim 128, 3 layers (memory layer 1, 65,536-row table), "
            "vocab 258, max_seqlen 128; fp32 dense weights (3.1 MB), bf16 value table (16.8 MB)",
    "d1024": "random test model (tools/make_test_model.py, converted with --dtype bfloat16): "
             "dim 1024, 8 layers, 16 heads, FFN 2816, memory layers 2 and 6 (65,536-row table, "
             "4 heads, knn 32, k_dim 512), vocab 258, max_seqlen 256; ~95M dense parameters, "
             "191 MB of bf16 dense weights",
}
L = []
L.append("# Server decode throughput vs concurrent streams (CPU)")
L.append("")
L.append("Command: `tools/bench_server.sh` (this file is its output, except the section *Reading "
         "the numbers*, written by hand and kept across reruns). One `memserve serve` per model "
         "(default flags: `--threads` all cores, `--max_batch_size 64`, automatic KV cache), and "
         "`memserve-loadgen` at 1, 4, 16 and 64 streams back to back against it: streaming "
         f"Generate calls with the loadgen's default prompt (31 tokens with BOS), greedy, "
         f"ignore_eos, `--max_tokens {max_tokens}`, one unmeasured warm-up call per level. "
         "Requests per level: 2 x streams, or more (a multiple of streams, for ~5 s) when that took "
         "under 3 s (that shorter run is in the raw output, marked calibration). tokens/s = completion tokens of all calls / wall time of the measured phase "
         "(prompt processing included). ITL = time between consecutive token messages of a "
         "call; TTFT = call start to first token (both as the client sees them).")
L.append("")
L.append("**Client and server share the machine's 2 cores**: the loadgen (one thread per "
         "stream, gRPC) takes CPU time the engine would otherwise use, more so with more streams. "
         f"The *CPU* columns are cores used on average over the level's loadgen run (warm-up call "
         "included), from /proc: by the server, by the loadgen, and by anything else (*other*: "
         "other processes, hypervisor steal). Each level starts when other CPU is below "
         f"{idle_cores} cores and is measured again when it exceeded that during the run.")
L.append("")
L.append("```")
L.extend(machine)
L.append("```")
def ms(v):
    v = float(v)
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"
by = {}
for r in rows:
    by[(int(r[0]), r[1], int(r[2]))] = r
goal = []
for m in models:
    L.append("")
    L.append(f"## {m}")
    L.append("")
    L.append(desc.get(m, m))
    L.append("")
    L.append("| run | streams | requests | wall s | tokens/s | x vs 1 stream | ITL p50 ms | "
             "ITL p90 ms | TTFT p50 ms | server CPU | loadgen CPU | other CPU |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in range(1, int(runs) + 1):
        base = by.get((run, m, 1))
        for r in rows:
            if int(r[0]) != run or r[1] != m:
                continue
            tps = float(r[5])
            x = tps / float(base[5]) if base else float("nan")
            L.append(f"| {run} | {r[2]} | {r[3]} | {float(r[4]):.2f} | {tps:.1f} | {x:.2f} | "
                     f"{ms(r[6])} | {ms(r[7])} | {ms(r[8])} | {r[9]} | {r[10]} | {r[11]} |")
            if int(r[2]) == 16 and base:
                goal.append((m, run, x))
    tps_by_level = {}
    for r in rows:
        if r[1] == m:
            tps_by_level.setdefault(int(r[2]), []).append(float(r[5]))
    diffs = [(max(v) / min(v) - 1) * 100 for v in tps_by_level.values() if len(v) > 1]
    if diffs:
        L.append("")
        L.append(f"Largest run-to-run difference of tokens/s at one level: {max(diffs):.1f}%.")
L.append("")
L.append("## Engine alone")
L.append("")
L.append("`tests/bench/decode_bench --batch B --prompt_tokens 31 --decode_tokens "
         f"{max_tokens} --runs 1`: B sequences (random 31-token prompts) prefilled one by one, "
         f"then {max_tokens} greedy steps of one ForwardBatch over all B; tokens/s = B x "
         f"{max_tokens} / decode time (prefill not counted), no gRPC and no client. What the "
         "server levels above would reach if serving cost nothing and prompts were free.")
L.append("")
L.append("| model | run | B=1 tok/s | B=4 | B=16 | B=64 | B=16 / B=1 |")
L.append("|---|---|---|---|---|---|---|")
for m in models:
    for run in range(1, int(runs) + 1):
        e = {int(r[2]): float(r[3]) for r in engine_rows if int(r[0]) == run and r[1] == m}
        if 1 not in e:
            continue
        cells = " | ".join(f"{e[b]:.1f}" if b in e else "-" for b in (1, 4, 16, 64))
        ratio = f"{e[16] / e[1]:.2f}x" if 16 in e else "-"
        L.append(f"| {m} | {run} | {cells} | {ratio} |")
L.append("")
L.append("## Machine limits")
L.append("")
L.append("`tests/bench/cpu_roofline`: peak fp32 FMA rate (register-only chains), streaming read "
         "bandwidth of a 1 GiB buffer, and the engine's bf16 matmul (CpuBackend::MatMul, "
         "d1024's FFN shape 2816 x 1024, cycling through 512 MiB of weights so that they come "
         "from memory) at 1/4/16/64 tokens; best of 3 each. *matmul 16 vs 1* = GFLOP/s at 16 "
         "tokens / GFLOP/s at 1 token = how much more tokens/s the matmul alone gives at 16 "
         "tokens per step than at 1: a ceiling for the 16-stream ratio of a model whose time "
         "is its weight matmuls.")
L.append("")
L.append("| run | FMA peak 1 thread GFLOP/s | FMA peak all threads | read GB/s | matmul T=1 "
         "GFLOP/s (weight GB/s) | T=4 | T=16 | T=64 | matmul 16 vs 1 |")
L.append("|---|---|---|---|---|---|---|---|---|")
for run in range(1, int(runs) + 1):
    lr = [j for j in limit_rows if j["run"] == run]
    fma = {j["threads"]: j["gflops"] for j in lr if j["what"] == "fma"}
    rd = [j["gb_per_s"] for j in lr if j["what"] == "read"]
    mm = {j["tokens"]: j for j in lr if j["what"] == "matmul_bf16"}
    if not mm:
        continue
    f1 = fma.get(1, "-")
    fall = max(fma.values()) if fma else "-"
    t1 = f"{mm[1]['gflops']} ({mm[1]['weight_gb_per_s']})" if 1 in mm else "-"
    rest = " | ".join(str(mm[t]["gflops"]) if t in mm else "-" for t in (4, 16, 64))
    ratio = f"{mm[16]['gflops'] / mm[1]['gflops']:.2f}x" if 1 in mm and 16 in mm else "-"
    L.append(f"| {run} | {f1} | {fall} | {rd[0] if rd else '-'} | {t1} | {rest} | {ratio} |")
L.append("")
L.append("## Goal: 16 streams >= 6x the aggregate throughput of 1 stream")
L.append("")
for m, run, x in goal:
    L.append(f"- {m}, run {run}: {x:.2f}x, {'met' if x >= 6 else 'not met'}")
if notes.strip():
    L.append("")
    L.append(notes.strip())
L.append("")
L.append("## Raw output")
L.append("")
L.append("```")
L.extend(open(raw).read().splitlines())
L.append("```")
open(out, "w").write("\n".join(L) + "\n")
EOF
echo "wrote $out" >&2
