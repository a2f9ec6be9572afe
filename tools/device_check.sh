#!/usr/bin/env bash
# The one GPU-machine check (docs/gpu.md): runs ON the GPU machine, from the
# checkout root, with the bundle tools/device_bundle.sh built beside it.
#   tools/device_check.sh OUT_LOG_DIR
#
# Steps, each time-boxed (timeout) and independent (a failure does not stop
# the rest): facts (nvidia-smi, toolkit, Python), libs (every bundled program
# finds its libraries), every GPU test (Bazel targets tagged "gpu", the
# CUDA-vs-CPU parity tests among them), an end-to-end run on the CPU and on
# CUDA (memserve serve on the demo model + memserve-cli generate + a short
# memserve-loadgen), and the benchmarks: the GPU's ceilings, the 373M-shape
# model made here, PyTorch's decode on it (eager and CUDA graph), memserve's
# decode_bench on CUDA and on the CPU, the memory pool's placements (issue 13:
# host and sharded on the 373M shape, a 32 GiB table in host placement and
# the PCIe bound), and the report (tests/bench/gpu_report.py).
#
# OUT_LOG_DIR receives (few files: a device call returns at most 8):
#   summary.txt    one line per step: PASS / SKIP / FAIL, seconds, what it saw
#   report.md      the benchmark tables and issue 11's goals
#   all.log        every step's raw log, in order
#   steps.tar.gz   the same logs one file per step (steps/NAME.log)
# Exit code: 0 when no step failed, 1 otherwise.
#
# Without a GPU (the build machine) the same script runs: GPU steps are SKIP
# with the reason the program gave ("no CUDA device ..."), CPU steps must pass.
#
# Environment: MEMSERVE_BUNDLE_DIR (default device/bundle), PYTHON (a python3
# with torch; default: the first of python3, /usr/bin/python3 that has it),
# DEVICE_CHECK_BUDGET_S (540: the steps' total; the report and packing follow;
# a call of timeout_s 600 holds it), PK_LAB_ARGS (e.g. --quick: pk_lab and
# torch_pk_lookup on n_keys 1024 only),
# MAKE_PKPLUS=1 (make the 373M model even without a GPU), SANITIZE=1 (also run
# the kernel tests under compute-sanitizer), DEVICE_CHECK_KEEP_STEPS=1 (keep
# OUT_LOG_DIR/steps/ unpacked as well), DEVICE_CHECK_ONLY=REGEX (run only the
# steps whose name matches, e.g. '^(e2e_cuda|decode_bench_cuda)$' for a rerun;
# the benchmarks need make_pkplus, torch_decode reads ceilings' bandwidth).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
if [ $# -ne 1 ]; then
  echo "usage: tools/device_check.sh OUT_LOG_DIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 1
LOG=$(cd "$1" && pwd)
BUNDLE=${MEMSERVE_BUNDLE_DIR:-$ROOT/device/bundle}
BUNDLE=$(cd "$BUNDLE" 2> /dev/null && pwd || echo "$BUNDLE")
BUDGET_S=${DEVICE_CHECK_BUDGET_S:-540}
STEPS=$LOG/steps
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
SUMMARY=$LOG/summary.txt
T0=$(date +%s)
export ROOT LOG BUNDLE STEPS WORK PYTHONUNBUFFERED=1
rm -rf "$STEPS" "$LOG/steps.tar.gz" "$LOG/all.log" "$LOG/report.md"
mkdir -p "$STEPS" "$WORK/tmp"
trap 'rm -rf "$WORK"' EXIT

n_pass=0 n_skip=0 n_fail=0
steps_run=()
summary_line() { printf '%-44s %-5s %6s  %s\n' "$1" "$2" "$3" "$4"; }
record() {  # name status seconds detail
  summary_line "$@" >> "$SUMMARY"
  summary_line "$@"
  case "$2" in PASS) n_pass=$((n_pass + 1)) ;; SKIP) n_skip=$((n_skip + 1)) ;; *) n_fail=$((n_fail + 1)) ;; esac
}

{
  echo "device_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), checkout $ROOT"
  if [ -f "$BUNDLE/BUILD_INFO" ]; then sed 's/^/bundle /' "$BUNDLE/BUILD_INFO"; fi
} > "$SUMMARY"
cat "$SUMMARY"

if [ ! -f "$BUNDLE/MANIFEST.tsv" ] || [ ! -f "$BUNDLE/env.sh" ]; then
  record bundle FAIL 0 "no bundle at $BUNDLE: run tools/device_bundle.sh on the build machine and carry device/bundle"
  exit 1
fi
# shellcheck source=/dev/null
. "$BUNDLE/env.sh"

# A python3 with torch and numpy (the benchmarks and Python tools need them;
# found without importing torch, which takes seconds).
PY=""
for c in ${PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$c" > /dev/null 2>&1 && "$c" -c 'import importlib.util as u, sys
sys.exit(not (u.find_spec("torch") and u.find_spec("numpy")))' > /dev/null 2>&1; then
    PY=$(command -v "$c")
    break
  fi
done
[ -n "$PY" ] || PY=$(command -v python3 || echo python3)

# Is there a GPU? Yes when the bundle's cuda_devices lists one or nvidia-smi
# does (then GPU steps must pass: a program that cannot see it FAILs).
HAVE_GPU=0
GPU_WHY=""
if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then
  HAVE_GPU=1
  GPU_WHY=$(nvidia-smi -L 2>&1 | head -2)
fi
if [ -x "$BUNDLE/bin/cuda_devices" ]; then
  GPU_WHY="${GPU_WHY:+$GPU_WHY; }cuda_devices: $("$BUNDLE/bin/cuda_devices" 2>&1 | head -2)"
  if grep -q 'cuda:[0-9]' <<< "$GPU_WHY"; then HAVE_GPU=1; fi
fi
[ -n "$GPU_WHY" ] || GPU_WHY="no nvidia-smi, no cuda_devices in the bundle"
export PY HAVE_GPU
echo "gpu: $(tr '\n' ' ' <<< "$GPU_WHY")" | tee -a "$SUMMARY"
summary_line STEP STATUS SECONDS DETAIL | tee -a "$SUMMARY"

# run_step NAME KIND LIMIT_S COMMAND...: runs COMMAND (a function or program)
# with stdout+stderr in steps/NAME.log, under `timeout`. The command may write
# one line of detail to $DETAIL; exit 77 means "skipped" (the detail says why).
# KIND gpu: without a GPU, a failure whose output names CUDA is a SKIP (the
# clear "no CUDA device" error), and with a GPU, exit 77 is a FAIL.
run_step() {
  local name=$1 kind=$2 limit=$3
  shift 3
  local log="$STEPS/${name//[^A-Za-z0-9_.-]/_}.log" rem t0 rc status detail secs
  if [ -n "${DEVICE_CHECK_ONLY:-}" ] && ! [[ "$name" =~ $DEVICE_CHECK_ONLY ]]; then return; fi
  rem=$((BUDGET_S - ($(date +%s) - T0)))
  if [ "$rem" -lt 10 ]; then
    record "$name" SKIP 0 "the check's time budget (${BUDGET_S} s) is spent"
    return
  fi
  [ "$limit" -le "$rem" ] || limit=$rem
  export DETAIL="$WORK/detail"
  : > "$DETAIL"
  steps_run+=("$log")
  t0=$(date +%s.%N)
  {
    echo "### $name ($kind step, limit ${limit} s, $(date -u +%H:%M:%S))"
    echo "\$ $*"
    timeout -k 5 "$limit" bash -c '"$@"' _ "$@" < /dev/null
  } > "$log" 2>&1
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  echo "### exit code $rc after $secs s" >> "$log"
  detail=$(head -1 "$DETAIL")
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    status=FAIL detail="timed out after $limit s${detail:+; $detail}"
  elif [ "$rc" -eq 0 ]; then
    status=PASS
  elif [ "$kind" = gpu ] && [ "$HAVE_GPU" = 0 ]; then
    # The program's own output (not the command lines this script logs).
    if [ "$rc" -eq 77 ] || grep -v '^\(### \|\$ \)' "$log" | grep -qi 'cuda'; then
      status=SKIP
      [ -n "$detail" ] ||
        detail=$(grep -v '^\(### \|\$ \)' "$log" | grep -i -m1 'cuda' | cut -c1-200)
    else
      status=FAIL
    fi
  elif [ "$rc" -eq 77 ]; then
    if [ "$kind" = gpu ]; then
      status=FAIL detail="skipped although a GPU is visible: $detail"
    else
      status=SKIP
    fi
  else
    status=FAIL
  fi
  [ "$status" != FAIL ] || [ -n "$detail" ] ||
    detail="exit code $rc: $(grep -v '^###' "$log" | tail -1 | cut -c1-160)"
  record "$name" "$status" "$secs" "$detail"
}

say() { echo "$*" > "$DETAIL"; }
export -f say

# --- steps ------------------------------------------------------------------------

facts() {
  echo "## host"; uname -a; (. /etc/os-release && echo "$PRETTY_NAME"); nproc
  free -g 2> /dev/null | head -2
  echo "## glibc"; getconf GNU_LIBC_VERSION 2> /dev/null
  echo "## bundle"; cat "$MEMSERVE_BUNDLE/BUILD_INFO"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "lib/compat in use: $MEMSERVE_BUNDLE_COMPAT"
  echo "## cuda_devices"; "$MEMSERVE_BUNDLE/bin/cuda_devices" 2>&1 || true
  echo "## nvidia-smi"
  if command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,persistence_mode,compute_mode --format=csv 2>&1
  else
    echo "nvidia-smi: not installed"
  fi
  echo "## nvcc"; (command -v nvcc && nvcc --version) 2>&1 || echo "nvcc: not on PATH"
  echo "## compute-sanitizer"; command -v compute-sanitizer || echo "not on PATH"
  echo "## python"; echo "$PY"
  local py gpu
  py=$("$PY" -c 'import sys, torch, numpy; print("Python", sys.version.split()[0], "torch", torch.__version__, "(cuda", str(torch.version.cuda) + ", available", str(torch.cuda.is_available()) + ") numpy", numpy.__version__)' 2>&1 | tail -1)
  echo "$py"
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2> /dev/null | head -1)
  say "${gpu:-no GPU ($(head -1 <<< "$GPU_WHY"))}; $py"
}

# Every bundled program finds every library, and each library comes from the
# bundle except glibc, libstdc++/libgcc_s and the machine's CUDA (lib/MACHINE_LIBS):
# one found elsewhere (say in the build machine's /usr/lib) would be missing on
# a bare GPU machine.
libs() {
  local f n=0 missing="" outside="" deps
  for f in $(find "$MEMSERVE_BUNDLE/libexec" -type f | sort); do
    n=$((n + 1))
    deps=$(ldd "$f" 2>&1)
    echo "## ${f#"$MEMSERVE_BUNDLE/"}"
    echo "$deps"
    if grep -q 'not found' <<< "$deps"; then
      missing+=" ${f##*/}:[$(grep 'not found' <<< "$deps" | awk '{print $1}' | tr '\n' ' ')]"
    fi
    outside+=$(sed -n 's/^[[:space:]]*\([^ ]*\) => \(\/[^ ]*\) (0x.*/\1 \2/p' <<< "$deps" |
      awk -v bundle="$MEMSERVE_BUNDLE/" -v prog="${f##*/}" '
        FILENAME == ARGV[1] { machine[$1] = 1; next }
        $1 ~ /^(linux-vdso|ld-linux-.*|libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|libmvec|libstdc\+\+|libgcc_s)\.so/ { next }
        ($1 in machine) || index($2, bundle) == 1 { next }
        { printf " %s:%s=%s", prog, $1, $2 }' "$MEMSERVE_BUNDLE/lib/MACHINE_LIBS" -)
  done
  if [ -n "$missing$outside" ]; then
    say "${missing:+libraries not found:$missing; }${outside:+not from the bundle:$outside}"
    return 1
  fi
  say "$n programs, every library found in the bundle or the machine's glibc/CUDA (lib/compat libstdc++: $([ "$MEMSERVE_BUNDLE_COMPAT" = 1 ] && echo used || echo not needed))"
}

# The tests' runfiles tree, as Bazel lays it out: the checkout's sources
# (symlinks), the bundle's programs at their package paths, the generated files.
make_runfiles() {
  local rf=$WORK/runfiles e
  mkdir -p "$rf/memserve"
  for e in "$ROOT"/* "$ROOT"/.[!.]*; do
    [ -e "$e" ] || continue
    case "${e##*/}" in .git | device | bazel-* | out | .gl | .whl) continue ;; esac
    cp -rs "$e" "$rf/memserve/"
  done
  cp -rs "$BUNDLE/libexec/." "$rf/memserve/"
  cp -r "$BUNDLE/gen/." "$rf/"
  echo "$rf"
}

# One test binary: gtest or Python unittest output; 77 when tests skipped.
run_test() {  # exe (runfiles path below memserve/), args (shell-quoted)
  local exe=$1 tmp out rc passed skipped failed reason
  tmp=$WORK/tmp/${exe//\//_}
  out=$WORK/test.out
  mkdir -p "$tmp"
  cd "$RF/memserve" || return 1
  eval "set -- $2"
  echo "(cd $RF/memserve && ./$exe $*)"
  env TEST_SRCDIR="$RF" TEST_WORKSPACE=memserve TEST_TMPDIR="$tmp" RUNFILES_DIR="$RF" \
    MEMSERVE_PYTHON="$PY" GTEST_COLOR=no "./$exe" "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -1)
  skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$out" | tail -1)
  failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -1)
  reason=$(grep -A1 -m1 ': Skipped$' "$out" | tail -1)
  if [ -z "$passed$skipped$failed" ]; then  # Python unittest
    passed=$(sed -n 's/^Ran \([0-9]*\) test.*/\1/p' "$out" | tail -1)
    skipped=$(sed -n 's/.*skipped=\([0-9]*\).*/\1/p' "$out" | tail -1)
    [ -z "$skipped" ] || passed=$((${passed:-0} - skipped))
    reason=$(grep -m1 -o "skipped '.*'" "$out")
  fi
  if [ "$rc" -ne 0 ]; then
    say "exit code $rc: ${failed:-?} failed, ${passed:-?} passed$(grep -m3 '^\[  FAILED  \] [A-Za-z]' "$out" | sed 's/^\[  FAILED  \]/;/' | tr -d '\n')"
    return "$rc"
  fi
  if [ "${skipped:-0}" -gt 0 ]; then
    say "${passed:-0} passed, $skipped skipped: ${reason:-see the log}"
    return 77
  fi
  say "${passed:-?} passed"
}

sanitize_test() {  # exe, args
  command -v compute-sanitizer > /dev/null || { say "compute-sanitizer not on PATH"; return 77; }
  cd "$RF/memserve" || return 1
  eval "set -- $2"
  env TEST_SRCDIR="$RF" TEST_WORKSPACE=memserve TEST_TMPDIR="$WORK/tmp" GTEST_COLOR=no \
    compute-sanitizer --tool memcheck --error-exitcode 9 "./$1" "$@"
}

# memserve serve on the demo model + memserve-cli generate + memserve-loadgen.
E2E_PROMPT="The capital of Batourkor is"
E2E_ANSWER="Draenddron"
e2e() {  # device
  local dev=$1 dir=$WORK/e2e_$1 pid port="" rc i answer lg ok tps backend same=""
  local cli=$MEMSERVE_BUNDLE/bin/memserve-cli
  mkdir -p "$dir"
  echo "\$ memserve serve --device $dev --model models/demo --listen 127.0.0.1:0 --port_file $dir/port"
  "$MEMSERVE_BUNDLE/bin/memserve" serve --device "$dev" --model models/demo \
    --listen 127.0.0.1:0 --port_file "$dir/port" > "$dir/server.log" 2>&1 &
  pid=$!
  E2E_SERVER=$pid  # killed if this step is cut short
  trap 'kill -9 $E2E_SERVER 2> /dev/null' EXIT
  for i in $(seq 600); do
    if ! kill -0 "$pid" 2> /dev/null; then
      wait "$pid"
      rc=$?
      cat "$dir/server.log"
      say "the server exited ($rc) before it was ready: $(grep -m1 -i 'error' "$dir/server.log" | cut -c1-200)"
      return $((rc == 0 ? 1 : rc))
    fi
    if [ -s "$dir/port" ] && "$cli" --server "127.0.0.1:$(cat "$dir/port")" health > /dev/null 2>&1; then
      port=$(cat "$dir/port")
      break
    fi
    sleep 0.1
  done
  if [ -z "$port" ]; then
    cat "$dir/server.log"
    say "the server was not ready after 60 s"
    return 1
  fi
  echo "ready after ~$((i / 10)) s on port $port"
  echo "\$ memserve-cli info --output json"
  "$cli" --server "127.0.0.1:$port" info --output json | tee "$dir/info.json"
  backend=$("$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j.get("backend", "?"))' "$dir/info.json" 2> /dev/null)
  echo "\$ memserve-cli generate --prompt '$E2E_PROMPT' --max_tokens 16"
  answer=$("$cli" --server "127.0.0.1:$port" generate --prompt "$E2E_PROMPT" --max_tokens 16)
  rc=$?
  echo "$answer"
  echo "$answer" > "$WORK/e2e_answer_$dev"
  if [ "$rc" -ne 0 ] || ! grep -q "$E2E_ANSWER" <<< "$answer"; then
    cat "$dir/server.log"
    say "generate (exit $rc) answered '$answer', expected '$E2E_ANSWER'"
    kill -TERM "$pid"
    return 1
  fi
  if [ "$dev" != cpu ] && [ -f "$WORK/e2e_answer_cpu" ]; then
    if [ "$answer" = "$(cat "$WORK/e2e_answer_cpu")" ]; then
      same=", same text as cpu"
    else
      same=", TEXT DIFFERS from cpu: '$(cat "$WORK/e2e_answer_cpu")'"
    fi
  fi
  lg="$dir/loadgen.json"
  echo "\$ memserve-loadgen --streams 8 --requests 32 --max_tokens 32"
  "$MEMSERVE_BUNDLE/bin/memserve-loadgen" --server "127.0.0.1:$port" --streams 8 --requests 32 \
    --max_tokens 32 --json_out "$lg"
  rc=$?
  ok=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$lg" 2> /dev/null)
  tps=$("$PY" -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["tokens_per_s"]))' "$lg" 2> /dev/null)
  kill -TERM "$pid"
  wait "$pid"
  local src=$?
  echo "## server log (exit $src)"
  cat "$dir/server.log"
  if [ "$rc" -ne 0 ] || [ "$ok" != 32 ]; then
    say "loadgen exit $rc, ${ok:-?}/32 calls ok"
    return 1
  fi
  if [ "$src" -ne 0 ]; then
    say "the server exited $src after SIGTERM"
    return 1
  fi
  say "backend $backend, $(grep -o -m1 'memory_plan=[a-z]*' "$dir/server.log" || echo 'memory_plan=?'): answered '$(tr -d '\n' <<< "$answer" | cut -c1-40)'$same; loadgen 32/32 ok, $tps tok/s; clean shutdown"
}

PKPLUS=$WORK/pkplus
make_pkplus() {
  if [ "$HAVE_GPU" = 0 ] && [ "${MAKE_PKPLUS:-0}" != 1 ]; then
    say "no CUDA device: the 373M model is made for the GPU benchmarks only (MAKE_PKPLUS=1 makes it anyway)"
    return 77
  fi
  "$PY" tools/make_test_model.py "$PKPLUS" --preset pkplus --serving --dtype bfloat16 || return 1
  cp "$PKPLUS/config.json" "$STEPS/pkplus_config.json"
  ls -l "$PKPLUS"
  say "$(du -sh "$PKPLUS" | cut -f1) in $PKPLUS"
}

ceilings() {
  local rc
  "$MEMSERVE_BUNDLE/bin/cuda_ceilings"
  rc=$?
  if [ "$rc" -eq 77 ]; then
    say "$(sed -n 's/.*"reason": "\(.*\)"}$/\1/p' "$STEPS/ceilings.log")"
  fi
  [ "$rc" -eq 0 ] || return "$rc"
  say "$(grep '"copy_d2d"' "$STEPS/ceilings.log" | sed 's/.*"gb_per_s": \([0-9.]*\).*/copy d2d \1 GB\/s/'), $(grep '"square_8192"' "$STEPS/ceilings.log" | sed 's/.*"tflops": \([0-9.]*\).*/gemm 8192^3 \1 TFLOP\/s/')"
}

torch_decode() {
  local bw
  [ -f "$PKPLUS/config.json" ] || { say "no 373M model (make_pkplus did not run)"; return 77; }
  bw=$(sed -n 's/.*"copy_d2d".*"gb_per_s": \([0-9.]*\).*/\1/p' "$STEPS/ceilings.log" 2> /dev/null | head -1)
  "$PY" tests/bench/torch_decode_bench.py --model "$PKPLUS" --batch 1,8,64,256 \
    --prompt_tokens 16 --decode_tokens 64 --runs 3 ${bw:+--copy_gb_per_s "$bw"}
}

# The product-key lookup lab (kernels/dev/product_key_lookup.cu): validation
# of every version against the CPU reference, the timing sweep, the gathers
# against a device-to-device copy.
pk_lab() {
  local exe=$MEMSERVE_BUNDLE/bin/product_key_lookup
  [ -x "$exe" ] || { say "no product_key_lookup in the bundle"; return 77; }
  "$exe" ${PK_LAB_ARGS:-}
  local rc=$?
  [ "$rc" -ne 77 ] || { say "$(sed -n 's/.*"reason": "\(.*\)"}$/\1/p' "$STEPS/pk_lab.log")"; return 77; }
  say "validation $(sed -n 's/.*"validation": "\([A-Za-z]*\)".*/\1/p' "$STEPS/pk_lab.log"); $(grep '"what": "graph", "version": 2, "n_keys": 1024, "v_dim": 2048' "$STEPS/pk_lab.log" | sed 's/.*"us_per_lookup": \([0-9.]*\).*/v2 batch-1 graph \1 us (1M x 2048)/')"
  return "$rc"
}

# The same lookup in PyTorch (einsum, topk, F.embedding_bag), beside pk_lab.
torch_pk_lookup() {
  "$PY" tests/bench/torch_pk_lookup_bench.py ${PK_LAB_ARGS:-}
}

decode_bench() {  # device batches
  local model=$PKPLUS
  if [ ! -f "$model/config.json" ]; then
    model=$ROOT/models/demo
    echo "(no 373M model: the demo model instead)"
  fi
  "$MEMSERVE_BUNDLE/bin/decode_bench" --device "$1" --model "$model" --batch "$2" \
    --prompt_tokens 16 --decode_tokens 64 --runs "${3:-3}" || return
  say "$(grep median_decode_tok_s "$STEPS/${DECODE_LOG:-decode_bench_$1}.log" | sed 's/.*"batch": \([0-9]*\), "median_decode_tok_s": \([0-9.]*\).*/B=\1 \2/' | tr '\n' ' ')tok/s (${model##*/})"
}

# The old memory kernels (MEMSERVE_CUDA_MEMORY_KERNELS=legacy): the "before"
# of the product-key kernels' decode tokens/s.
decode_bench_legacy() {
  MEMSERVE_CUDA_MEMORY_KERNELS=legacy DECODE_LOG=decode_bench_cuda_legacy decode_bench cuda 1,64
}

# Issue 13, the memory pool's placements on the 373M shape: decode tokens/s
# at batch 1 and 64 with the table in host memory (read over PCIe) or split
# into 4 column shards on this GPU (the sharded path), beside
# decode_bench_cuda's device placement; the load line (GB/s) of each.
pool_bench() {  # placement shards
  local model=$PKPLUS line
  [ -f "$model/config.json" ] || { say "no 373M model (make_pkplus did not run)"; return 77; }
  "$MEMSERVE_BUNDLE/bin/decode_bench" --device cuda --model "$model" --batch 1,64 \
    --prompt_tokens 16 --decode_tokens 32 --runs 2 --memory_placement "$1" \
    --memory_shards "$2" 2>&1 || return
  line=$(grep -h -m1 -E 'memserve: (cuda_host_table|memory_shard_upload)' "$STEPS/pool_$1.log" |
    grep -o -E '(mode|gb_per_s)=[a-z0-9.-]*' | tr '\n' ' ')
  say "$(grep median_decode_tok_s "$STEPS/pool_$1.log" | sed 's/.*"batch": \([0-9]*\), "median_decode_tok_s": \([0-9.]*\), "memory_placement": "\([a-z]*\)".*/\3 B=\1 \2/' | tr '\n' ' ')tok/s; load $line"
}

# A 16M-row table (32 GiB at v_dim 1024, bf16) in host placement: more than
# the dense model's GPU wants beside it, served from host memory; decode
# tokens/s at batch 1 and 64 and the PCIe bound: pinned host-to-device GB/s
# (ceilings' copy_h2d) / the bytes the gather reads per token (memory layers x
# heads x knn x v_dim x 2). Needs ~70 GB of RAM and 34 GB of disk.
BIGTABLE=$WORK/bigtable
pool_big_table() {
  local h2d per_token bound
  if [ "$HAVE_GPU" = 0 ]; then say "no CUDA device"; return 77; fi
  if [ "$(df -Pk "$WORK" | awk 'NR==2 {print $4}')" -lt 36000000 ]; then
    say "less than 36 GB free under $WORK for the 32 GiB table"; return 77
  fi
  "$PY" tools/make_test_model.py "$BIGTABLE" --preset pkplus --serving --dtype bfloat16 \
    --mem_n_keys 4096 --n_layers 8 --mem_layers 2,5 || return 1
  ls -l "$BIGTABLE"
  "$MEMSERVE_BUNDLE/bin/decode_bench" --device cuda --model "$BIGTABLE" --batch 1,64 \
    --prompt_tokens 16 --decode_tokens 32 --runs 2 --memory_placement host || return
  h2d=$(sed -n 's/.*"copy_h2d".*"gb_per_s": \([0-9.]*\).*/\1/p' "$STEPS/ceilings.log" 2> /dev/null | head -1)
  per_token=$((2 * 4 * 32 * 1024 * 2))  # 2 memory layers x 4 heads x knn 32 x v_dim 1024 x bf16
  bound=$(awk -v g="${h2d:-0}" -v b="$per_token" 'BEGIN {printf "%.0f", g * 1e9 / b}')
  echo "{\"what\": \"pcie_bound\", \"h2d_gb_per_s\": ${h2d:-null}, \"bytes_per_token\": $per_token, \"tok_s\": $bound}"
  rm -rf "$BIGTABLE"
  say "$(grep median_decode_tok_s "$STEPS/pool_big_table.log" | sed 's/.*"batch": \([0-9]*\), "median_decode_tok_s": \([0-9.]*\).*/B=\1 \2/' | tr '\n' ' ')tok/s; PCIe bound ${bound} tok/s (h2d ${h2d:-?} GB/s, $per_token B/token)"
}

export -f facts libs run_test sanitize_test e2e make_pkplus ceilings torch_decode decode_bench \
  pk_lab torch_pk_lookup decode_bench_legacy
export -f pool_bench pool_big_table
export BIGTABLE
export RF="" PKPLUS E2E_PROMPT E2E_ANSWER GPU_WHY

run_step facts cpu 60 facts
run_step libs cpu 30 libs
RF=$(make_runfiles)
export RF
while IFS=$'\t' read -r kind label exe args; do
  [ "$kind" = test ] || continue
  run_step "test $label" gpu 150 run_test "$exe" "$args"
done < "$BUNDLE/MANIFEST.tsv"
if [ "${SANITIZE:-0}" = 1 ]; then
  while IFS=$'\t' read -r kind label exe args; do
    [ "$kind" = test ] && [[ "$label" == //kernels* ]] || continue
    run_step "sanitize $label" gpu 90 sanitize_test "$exe" "$args"
  done < "$BUNDLE/MANIFEST.tsv"
fi
run_step e2e_cpu cpu 60 e2e cpu
run_step e2e_cuda gpu 90 e2e cuda
if [ -x "$BUNDLE/bin/cuda_ceilings" ]; then
  run_step ceilings gpu 60 ceilings
else
  record ceilings FAIL 0 "no cuda_ceilings in the bundle (built without the CUDA toolkit?)"
fi
run_step make_pkplus gpu 90 make_pkplus
run_step decode_bench_cuda gpu 120 decode_bench cuda 1,8,64,256
run_step torch_decode gpu 150 torch_decode
run_step decode_bench_cuda_legacy gpu 90 decode_bench_legacy
run_step pk_lab gpu 200 pk_lab
run_step torch_pk_lookup gpu 120 torch_pk_lookup
run_step pool_host gpu 120 pool_bench host 1
run_step pool_sharded gpu 120 pool_bench sharded 4
run_step pool_big_table gpu 300 pool_big_table
if [ -f "$PKPLUS/config.json" ]; then
  run_step decode_bench_cpu cpu 90 decode_bench cpu 1 1
else
  run_step decode_bench_cpu cpu 60 decode_bench cpu 1,8 3
fi

# Not under the budget: the report and the packing always happen.
"$PY" tests/bench/gpu_report.py "$STEPS" > "$LOG/report.md" 2> "$STEPS/report.log" ||
  echo "gpu_report.py failed: $(tail -1 "$STEPS/report.log")" >> "$LOG/report.md"
for f in "${steps_run[@]}"; do cat "$f"; echo; done > "$LOG/all.log"
tar -czf "$LOG/steps.tar.gz" -C "$LOG" steps
[ "${DEVICE_CHECK_KEEP_STEPS:-0}" = 1 ] || rm -rf "$STEPS"
total=$(($(date +%s) - T0))
echo "total: $n_pass pass, $n_skip skip, $n_fail fail; wall $total s" | tee -a "$SUMMARY"
echo "logs: $LOG (summary.txt, report.md, all.log, steps.tar.gz)"
[ "$n_fail" -eq 0 ]
