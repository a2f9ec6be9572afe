#!/usr/bin/env bash
# Builds the device bundle: everything tools/device_check.sh needs on a GPU
# machine that has no Bazel, gRPC, Abseil or Debian libraries (docs/gpu.md).
#   tools/device_bundle.sh [OUT_DIR]      (default device/bundle, git-ignored)
#   tools/device_bundle.sh --assemble LIST OUT_DIR   (no Bazel: lays out
#       programs already built, listed as the Bazel phase lists them, see
#       "Phase 1" below; tests/tools/device_check_test.py uses it)
#
# With Bazel, it builds every target tagged "gpu" (tests, and binaries such as
# tests/bench:cuda_ceilings) plus memserve, memserve-cli, memserve-loadgen,
# decode_bench and cuda_devices, then lays out OUT_DIR:
#   libexec/PKG/NAME  every executable (ELF), stripped, at its Bazel package path
#                     (= its runfiles path below memserve/)
#   bin/NAME          a wrapper per program: sources env.sh, execs libexec/...
#   lib/              the shared libraries they load that the GPU machine lacks
#   lib/compat/       libstdc++ and libgcc_s, used only where the machine's are older
#   gen/              generated non-ELF runfiles of the GPU tests (runfiles root layout)
#   env.sh            LD_LIBRARY_PATH: lib/ (+ compat), the machine's CUDA 13 libraries
#   MANIFEST.tsv      kind, label, path (+ args for tests) of every program
#   BUILD_INFO        commit, toolchain, the glibc/libstdc++ versions the programs need
# Source files (models/, tools/*.py, tests/, the demo model) are NOT copied: the
# device call carries the checkout, and device_check.sh links them into the
# tests' runfiles. The bundle must stay under 40 MB (the call carries 64 MiB in
# all, the checkout included); this script fails when it is larger.
#
# Which libraries travel (decided per library by its name and where ldd finds
# it; the list is printed into BUILD_INFO):
#   - glibc (libc, libm, libdl, libpthread, librt, libresolv, libutil, libanl,
#     libmvec, the loader): never. It cannot be swapped under a process, and
#     every Linux machine has one; BUILD_INFO records the newest GLIBC_ symbol
#     version the programs use (2.36 is Debian 12's; the GPU machine's Ubuntu is newer).
#   - the NVIDIA driver and CUDA toolkit libraries (libcuda, libnvidia-*,
#     libcudart, libcublas, libcublasLt, anything ldd finds under the CUDA
#     toolkit): never. They must match the machine's driver; the GPU machine
#     has CUDA 13 (env.sh finds them there; lib/MACHINE_LIBS lists them).
#   - libstdc++ and libgcc_s: into lib/compat. They are backward compatible, so
#     the machine's own is used when it has every symbol version the programs
#     need (GLIBCXX_NEEDED); env.sh adds compat/ only when it does not.
#   - everything else (gRPC, protobuf, Abseil, OpenSSL, c-ares, re2, zlib,
#     libedit and its terminal libraries, and the per-library .so files
#     Bazel links tests against): into lib/. None of it is on the GPU machine
#     in the versions these programs were linked against.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
max_bytes=$((40 * 1000 * 1000))
cuda_path="${CUDA_PATH:-/usr/local/cuda}"
cuda_real=$(readlink -f "$cuda_path" 2> /dev/null || echo "$cuda_path")

die() { echo "device_bundle: $*" >&2; exit 1; }
is_elf() { [ "$(head -c 4 "$1" 2> /dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }
pkg_path() { local l=${1#//}; echo "${l%%:*}/${l#*:}"; }  # //a/b:c -> a/b/c

# --- Phase 1 (Bazel): build, and list what to carry -------------------------------
# LIST lines (tab-separated):
#   bin   LABEL  PKG_PATH  BUILT_PATH
#   test  LABEL  PKG_PATH  BUILT_PATH  RUNFILES_MANIFEST (or -)  ARGS (shell-quoted)
bazel_list() {  # LIST
  command -v bazel > /dev/null || die "bazel not found (the bundle is built on the build machine)"
  local fixed gpu_tests gpu_bins bin_dir label p script args
  fixed=(//server:memserve //clients/cli:memserve-cli //clients/loadgen:memserve-loadgen
         //tests/bench:decode_bench)
  gpu_tests=$(bazel query 'attr(tags, "\bgpu\b", tests(//...))')
  gpu_bins=$(bazel query 'attr(tags, "\bgpu\b", kind("cc_binary", //...))')
  # cuda_devices exists only where the toolkit does (HAS_CUDA); it answers "is there a GPU".
  if bazel query //kernels:cuda_devices > /dev/null 2>&1; then fixed+=(//kernels:cuda_devices); fi
  # shellcheck disable=SC2086
  bazel build "${fixed[@]}" $gpu_bins $gpu_tests >&2
  bin_dir=$(bazel info bazel-bin 2> /dev/null)
  : > "$1"
  for label in "${fixed[@]}" $gpu_bins; do
    p=$(pkg_path "$label")
    printf 'bin\t%s\t%s\t%s\n' "$label" "$p" "$bin_dir/$p" >> "$1"
  done
  # A test's arguments as Bazel passes them (args, $(location) expanded) come
  # from the script `bazel run --script_path` writes: "cd RUNFILES && exec EXE ARGS "$@"".
  script=$(mktemp)
  for label in $gpu_tests; do
    p=$(pkg_path "$label")
    bazel run --script_path="$script" "$label" > /dev/null 2>&1 ||
      die "bazel run --script_path $label failed"
    args=$(python3 "$root/tools/device_bundle_args.py" "$script" "$p") ||
      die "cannot read the arguments of $label"
    [ -f "$bin_dir/$p.runfiles_manifest" ] || die "no runfiles manifest for $label"
    printf 'test\t%s\t%s\t%s\t%s\t%s\n' "$label" "$p" "$bin_dir/$p" \
      "$bin_dir/$p.runfiles_manifest" "$args" >> "$1"
  done
  rm -f "$script"
}

# --- Phase 2: lay out OUT_DIR from LIST ---------------------------------------------
elfs=()  # original paths of every ELF carried, for ldd

carry_exe() {  # original path, path below libexec
  mkdir -p "$(dirname "$out/libexec/$2")"
  cp -L "$1" "$out/libexec/$2"
  chmod u+w "$out/libexec/$2"
  strip --strip-unneeded "$out/libexec/$2"
  elfs+=("$1")
}

write_wrapper() {  # name, path below libexec
  [ ! -e "$out/bin/$1" ] || die "two programs named $1"
  cat > "$out/bin/$1" << EOF
#!/usr/bin/env bash
# Runs the bundled $2 with the bundle's libraries (tools/device_bundle.sh).
. "\$(dirname "\${BASH_SOURCE[0]}")/../env.sh"
exec "\$MEMSERVE_BUNDLE/libexec/$2" "\$@"
EOF
  chmod +x "$out/bin/$1"
}

# A test's generated runfiles: ELF files to libexec/ (at their package path),
# other generated files to gen/ (runfiles root layout). The checkout's source
# files are skipped: device_check.sh links them from the checkout.
carry_runfiles() {  # runfiles manifest
  local rel abs src_rel
  while read -r rel abs; do
    case "$rel" in
      memserve/external/* | */_solib_*) continue ;;  # legacy duplicates; libraries go to lib/
    esac
    src_rel=${rel#memserve/}
    if [ "$rel" != "$src_rel" ] && [ -n "$abs" ] && [ -e "$root/$src_rel" ] &&
        [ "$(readlink -f "$abs")" = "$(readlink -f "$root/$src_rel")" ]; then
      continue
    fi
    if [ -n "$abs" ] && is_elf "$abs" && [ "$rel" != "$src_rel" ]; then
      [ -e "$out/libexec/$src_rel" ] || carry_exe "$abs" "$src_rel"
      continue
    fi
    mkdir -p "$(dirname "$out/gen/$rel")"
    if [ -z "$abs" ]; then : > "$out/gen/$rel"; else cp -L "$abs" "$out/gen/$rel"; fi
    if [ -n "$abs" ] && is_elf "$abs"; then elfs+=("$abs"); fi
  done < "$1"
}

assemble() {  # LIST
  local kind label p built mf args
  while IFS=$'\t' read -r kind label p built mf args; do
    case "$kind" in
      bin)
        carry_exe "$built" "$p"
        write_wrapper "$(basename "$p")" "$p"
        printf 'bin\t%s\t%s\n' "$label" "$p" >> "$manifest"
        ;;
      test)
        if [ "$mf" != - ]; then carry_runfiles "$mf"; fi
        if [ ! -e "$out/libexec/$p" ] && [ ! -e "$out/gen/memserve/$p" ]; then
          if is_elf "$built"; then
            carry_exe "$built" "$p"
          else
            mkdir -p "$(dirname "$out/gen/memserve/$p")"
            cp -L "$built" "$out/gen/memserve/$p"
          fi
        fi
        printf 'test\t%s\t%s\t%s\n' "$label" "$p" "$args" >> "$manifest"
        ;;
      *) die "bad LIST line: '$kind $label'" ;;
    esac
  done < "$1"
}

# --- main ---------------------------------------------------------------------------
if [ "${1:-}" = --assemble ]; then
  [ $# -eq 3 ] || die "usage: tools/device_bundle.sh --assemble LIST OUT_DIR"
  list=$2
  out=$3
else
  [ $# -le 1 ] || die "usage: tools/device_bundle.sh [OUT_DIR]"
  out="${1:-device/bundle}"
  list=$(mktemp)
  trap 'rm -f "$list"' EXIT
  bazel_list "$list"
fi
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/MANIFEST.tsv" ]; then
  die "$out exists and is not a bundle (no MANIFEST.tsv); refusing to replace it"
fi
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib/compat" "$out/libexec" "$out/gen"
out=$(cd "$out" && pwd)
manifest="$out/MANIFEST.tsv"
: > "$manifest"
assemble "$list"

# --- shared libraries ---------------------------------------------------------------
declare -A seen=()
machine_libs=()
for f in "${elfs[@]}"; do
  deps=$(ldd "$f" 2>&1) || die "ldd $f failed: $deps"
  if grep -q 'not found' <<< "$deps"; then
    die "$f: libraries not found here: $(grep 'not found' <<< "$deps" | tr -s ' \t' ' ')"
  fi
  while read -r name path; do
    [ -n "$name" ] && [ -z "${seen[$name]:-}" ] || continue
    seen[$name]=1
    case "$name" in
      linux-vdso.so.* | ld-linux-*.so.* | libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | \
        librt.so.* | libresolv.so.* | libutil.so.* | libanl.so.* | libmvec.so.*)
        continue ;;  # glibc: the machine's
      libcuda.so.* | libnvidia-* | libcudart.so.* | libcublas.so.* | libcublasLt.so.*)
        machine_libs+=("$name"); continue ;;  # driver and CUDA 13: the machine's
      libstdc++.so.* | libgcc_s.so.*)
        cp -L "$path" "$out/lib/compat/$name"; continue ;;
    esac
    case "$(readlink -f "$path")" in
      "$cuda_real"/*) machine_libs+=("$name"); continue ;;
    esac
    cp -L "$path" "$out/lib/$name"
    chmod u+w "$out/lib/$name"
    strip --strip-unneeded "$out/lib/$name"
  done < <(sed -n 's/^[[:space:]]*\([^ ]*\) => \(\/[^ ]*\) (0x.*/\1 \2/p' <<< "$deps")
done
printf '%s\n' "${machine_libs[@]}" | sort -u > "$out/lib/MACHINE_LIBS"

# Newest symbol versions the carried programs and libraries use.
symbols=$(find "$out/libexec" "$out/lib" "$out/gen" -path "$out/lib/compat" -prune -o -type f -print |
  while read -r f; do if is_elf "$f"; then objdump -T "$f" 2> /dev/null; fi; done |
  grep -o 'GLIBC\(XX\)\?_[0-9][0-9.]*' | sort -u)
glibcxx=$(grep '^GLIBCXX_' <<< "$symbols" | sort -V | tail -1)
glibc=$(grep '^GLIBC_' <<< "$symbols" | sort -V | tail -1)
echo "$glibcxx" > "$out/lib/compat/GLIBCXX_NEEDED"

# --- env.sh -------------------------------------------------------------------
cp tools/device_env.sh "$out/env.sh"

# --- BUILD_INFO and size -------------------------------------------------------------
bytes=$(du -sb "$out" | cut -f1)
{
  echo "commit: $(git rev-parse HEAD 2> /dev/null || echo unknown)$(
    [ -z "$(git status --porcelain --untracked-files=no 2> /dev/null)" ] || echo ' (modified)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n) ($(. /etc/os-release && echo "$PRETTY_NAME"))"
  echo "bazel: $(bazel info release 2> /dev/null || echo none)"
  echo "nvcc: $("$cuda_path/bin/nvcc" --version 2> /dev/null | sed -n 's/.*release \([^,]*\).*/\1/p' || echo none)"
  echo "needs: $glibc (glibc), $glibcxx (libstdc++; lib/compat has the build machine's)"
  echo "machine libraries: $(tr '\n' ' ' < "$out/lib/MACHINE_LIBS")"
  echo "carried libraries: $(ls "$out/lib" | grep -c '\.so')"
  echo "programs: $(grep -c '^bin' "$manifest"), GPU tests: $(grep -c '^test' "$manifest")"
  echo "size: $bytes bytes"
} > "$out/BUILD_INFO"
cat "$out/BUILD_INFO" >&2
if [ "$bytes" -gt "$max_bytes" ]; then
  du -ab "$out" | sort -n | tail -15 >&2
  die "the bundle is $bytes bytes, over the $max_bytes limit (the largest files are above)"
fi
echo "device_bundle: wrote $out" >&2
