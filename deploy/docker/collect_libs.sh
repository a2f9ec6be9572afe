#!/bin/bash
# Usage: collect_libs.sh DEST_DIR BINARY...
#
# Copies the shared libraries the BINARYs load (as ldd resolves them on the
# build machine) into DEST_DIR, so that an image's runtime stage gets the
# libraries and nothing else. Left out, because the runtime base image
# provides its own (and they must match it): the C library and its parts
# (libc, libm, libpthread, libdl, librt, libresolv, the dynamic loader), the
# compiler's runtime (libstdc++, libgcc_s) and the CUDA libraries (libcuda
# comes with the driver, libcudart/libcublas with the CUDA runtime image).
# Exits 1 naming the library when ldd cannot resolve one.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: collect_libs.sh DEST_DIR BINARY..." >&2
  exit 2
fi
dest=$1
shift
mkdir -p "$dest"

provided='^(linux-vdso|ld-linux|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvidia-[a-z]+)\.so'
status=0
for binary in "$@"; do
  while read -r name arrow path _; do
    if [[ $name =~ $provided ]]; then
      continue
    fi
    if [[ $arrow != "=>" ]]; then
      continue  # the loader itself ("/lib64/ld-linux-x86-64.so.2 (0x...)")
    fi
    if [[ $path == "not" ]]; then
      echo "collect_libs.sh: $binary: $name not found" >&2
      status=1
      continue
    fi
    cp -L "$path" "$dest/$name"
  done < <(ldd "$binary")
done
exit "$status"
