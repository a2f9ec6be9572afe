#!/bin/bash
# Builds the libFuzzer targets of tests/fuzz/ with clang
# (-fsanitize=fuzzer,address,undefined) outside Bazel and runs each for a
# bounded time on a copy of its seed corpus (docs/security.md, "Fuzzing").
#
#   tools/fuzz.sh [SECONDS] [TARGET...]   # default: 60 s each, every target
#
# Targets: request_convert, chat_template, config, safetensors. The sources
# of each are what Bazel says its tests/fuzz:<target>_target library depends
# on (bazel query), so the list cannot drift from the BUILD files; the
# generated protobuf code comes from `bazel build`. System libraries (Abseil,
# protobuf, sentencepiece) are linked as they are (not instrumented).
#
# Output under $FUZZ_OUT (default /tmp/memserve-fuzz): the binaries, each
# target's growing corpus, its log, and crash-*/leak-*/timeout-* files for
# any failure. A failure makes the script exit 1 after all targets ran; the
# reproducer belongs in tests/fuzz/corpus/<target>/crash_<what> (replayed
# by bazel test //tests/fuzz:<target>_replay) with the fix.
# Needs: clang and libclang-rt-14-dev (tools/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(request_convert chat_template config safetensors)
out=${FUZZ_OUT:-/tmp/memserve-fuzz}
mkdir -p "$out/obj"
CXX=${CXX:-clang++}
command -v "$CXX" > /dev/null || { echo "fuzz.sh: $CXX not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }

# The generated code the targets include.
bazel build //proto:memserve_cc_proto >&2
genroot=$(bazel info bazel-bin 2> /dev/null)/proto

sanitize=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
cxxflags=(-std=c++17 -g -O1 -I. -I"$genroot" "${sanitize[@]}" -Wno-deprecated-declarations)
absl=$(sed -n '/^ABSL_LIBS = \[/,/^\]/p' third_party/BUILD | grep -o '"absl_[a-z0-9_]*"' | tr -d '"' | sed 's/^/-l/')
# shellcheck disable=SC2206
libs=($absl -lprotobuf -lsentencepiece -lpthread)

# Compiles `src` once (objects are shared by the targets; rebuilt when the
# source is newer). Sources outside the fuzz target get -fsanitize=fuzzer-no-link
# (coverage for libFuzzer), the target itself too.
compile() {
  local src=$1 obj
  obj="$out/obj/$(echo "$src" | tr '/' '_').o"
  if [[ ! -f $obj || $src -nt $obj ]]; then
    echo "compile $src" >&2
    "$CXX" "${cxxflags[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
  fi
  echo "$obj"
}

failed=()
summary=()
for target in "${targets[@]}"; do
  label=//tests/fuzz:${target}_target
  mapfile -t sources < <(bazel query --noshow_progress \
    "kind('source file', deps($label)) + kind('generated file', deps($label))" 2> /dev/null |
    grep -E '^//[^@]' | grep -E '\.cc$' | grep -v '\.grpc\.pb\.cc$' |
    sed -E 's#^//##; s#:#/#')
  objects=()
  for src in "${sources[@]}"; do
    if [[ $src == proto/* ]]; then src="$genroot/${src#proto/}"; fi
    objects+=("$(compile "$src")")
  done
  binary="$out/fuzz_$target"
  "$CXX" "${sanitize[@]}" -fsanitize=fuzzer "${objects[@]}" "${libs[@]}" -o "$binary"
  corpus="$out/corpus_$target"
  mkdir -p "$corpus" "$out/artifacts_$target"
  cp -n tests/fuzz/corpus/"$target"/* "$corpus"/ 2> /dev/null || true
  log="$out/$target.log"
  echo "fuzz $target for ${seconds}s (log $log)" >&2
  rc=0
  TMPDIR=${TMPDIR:-/tmp} "$binary" "$corpus" -max_total_time="$seconds" -max_len=65536 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts_$target/" > "$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
  if [[ $rc -ne 0 ]]; then
    failed+=("$target")
    summary+=("$target: FAILED rc=$rc after $execs executions; see $log and $out/artifacts_$target/")
  else
    summary+=("$target: ok, $execs executions in ${seconds}s, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) files")
  fi
done
printf '%s\n' "${summary[@]}"
[[ ${#failed[@]} -eq 0 ]] || exit 1
