#!/usr/bin/env bash
# Runs a Python test script with Debian's /usr/bin/python3 (which has torch),
# from the repository root inside the test's runfiles. $MEMSERVE_PYTHON names
# another interpreter (tools/device_check.sh: the GPU machine's python3).
set -euo pipefail
cd "${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-memserve}" 2>/dev/null || true
exec "${MEMSERVE_PYTHON:-/usr/bin/python3}" "$@"
