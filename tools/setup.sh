#!/usr/bin/env bash
# Installs every system package memserve needs on a fresh Debian 12 machine.
# Idempotent: when everything is present it changes nothing (no apt-get update).
# Run as root (or with passwordless sudo).
set -euo pipefail

PACKAGES=(
  # build
  bazel-bootstrap bazel-platforms g++ git ca-certificates
  # C++ libraries
  libabsl-dev nlohmann-json3-dev libsentencepiece-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libgtest-dev libgmock-dev libbenchmark-dev
  # line editing in memserve-cli chat
  libedit-dev
  # tokenizer training for tests, Python tools and the PyTorch reference
  sentencepiece python3 python3-numpy python3-torch python3-sentencepiece python3-grpcio python3-protobuf
  # a real BLAS for torch (Debian's default is the slow reference BLAS)
  libopenblas0-pthread
  # sanitizers
  clang libclang-rt-14-dev
  # HTTP (metrics endpoint, OpenAI-compatible API): cpp-httplib
  libcpp-httplib-dev
  # real components in tests: Prometheus scraping /metrics, a headless browser for web pages
  prometheus chromium
  # plots in benchmark reports
  python3-matplotlib python3-yaml
  # deploy/: its shell scripts are checked (tests/deploy)
  shellcheck
  # the test CA and certificates of the TLS tests (tests/e2e/tls_test.py)
  openssl
)
# deploy/k8s is rendered with `kubectl kustomize` (tests/deploy). Any kubectl
# will do (Google Cloud's `kubectl` package conflicts with Debian's
# kubernetes-client), so Debian's is installed only when none is on PATH.
if ! command -v kubectl > /dev/null; then
  PACKAGES+=(kubernetes-client)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
  echo "setup.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup.sh: all ${#PACKAGES[@]} packages present" >&2
fi

# CUDA is not a Debian package here: the machine image provides the toolkit
# at /usr/local/cuda. Without it kernels/ is skipped and the CPU backend runs.
if [ ! -x "${CUDA_PATH:-/usr/local/cuda}/bin/nvcc" ]; then
  echo "setup.sh: note: no CUDA toolkit at ${CUDA_PATH:-/usr/local/cuda}; CUDA targets are skipped" >&2
fi
