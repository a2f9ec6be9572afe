#!/usr/bin/env bash
# tools/device_bundle.sh copies this file into the bundle as env.sh.
# Sourced (bash) by the wrappers in bin/ and by tools/device_check.sh: lets the
# bundle's programs load on a machine without the build machine's libraries.
# Sets MEMSERVE_BUNDLE, MEMSERVE_BUNDLE_COMPAT (1 when lib/compat is used) and
# prepends to LD_LIBRARY_PATH (what it held stays: e.g. the driver's folder).
MEMSERVE_BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MEMSERVE_BUNDLE
if [ -z "${MEMSERVE_BUNDLE_ENV:-}" ]; then
  _mb_path=$MEMSERVE_BUNDLE/lib
  # libstdc++/libgcc_s: the machine's, unless it lacks a version the programs use.
  _mb_need=$(cat "$MEMSERVE_BUNDLE/lib/compat/GLIBCXX_NEEDED" 2> /dev/null)
  _mb_sys=$(/sbin/ldconfig -p 2> /dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')
  MEMSERVE_BUNDLE_COMPAT=0
  if [ -n "$_mb_need" ] && { [ -z "$_mb_sys" ] || ! grep -qa "$_mb_need" "$_mb_sys"; }; then
    _mb_path=$_mb_path:$MEMSERVE_BUNDLE/lib/compat
    MEMSERVE_BUNDLE_COMPAT=1
  fi
  export MEMSERVE_BUNDLE_COMPAT
  # The machine's CUDA 13 libraries: where ldconfig, LD_LIBRARY_PATH or the
  # programs' RUNPATH (/usr/local/cuda/lib64) do not find them, look in the
  # usual toolkit folders and in the NVIDIA wheels of the machine's Python.
  _mb_pydirs=""
  for _mb_lib in $(cat "$MEMSERVE_BUNDLE/lib/MACHINE_LIBS" 2> /dev/null); do
    case "$_mb_lib" in libcuda.so.* | libnvidia-*) continue ;; esac
    if /sbin/ldconfig -p 2> /dev/null |
        awk -v l="$_mb_lib" '$1 == l {f = 1} END {exit !f}'; then continue; fi
    _mb_found=""
    for _mb_d in $(echo "${LD_LIBRARY_PATH:-}:$_mb_path" | tr ':' ' ') \
        "${CUDA_HOME:-/nonexistent}/lib64" "${CUDA_PATH:-/nonexistent}/lib64" \
        /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
      if [ -e "$_mb_d/$_mb_lib" ]; then _mb_found=$_mb_d; break; fi
    done
    if [ -z "$_mb_found" ]; then
      if [ -z "$_mb_pydirs" ]; then
        _mb_pydirs=$(python3 -c 'import nvidia, os; print(" ".join(nvidia.__path__))' 2> /dev/null || echo none)
      fi
      if [ "$_mb_pydirs" != none ]; then
        # shellcheck disable=SC2086
        _mb_f=$(find $_mb_pydirs -maxdepth 3 -name "$_mb_lib" 2> /dev/null | head -1)
        [ -z "$_mb_f" ] || _mb_found=$(dirname "$_mb_f")
      fi
    fi
    if [ -n "$_mb_found" ]; then
      case ":$_mb_path:" in *":$_mb_found:"*) ;; *) _mb_path=$_mb_path:$_mb_found ;; esac
    fi
  done
  export LD_LIBRARY_PATH=$_mb_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export MEMSERVE_BUNDLE_ENV=1
  unset _mb_path _mb_need _mb_sys _mb_pydirs _mb_lib _mb_found _mb_d _mb_f
fi
