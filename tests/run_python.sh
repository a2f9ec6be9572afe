#!/usr/bin/env bash
# Runs a Python test script with Debian's /usr/bin/python3 (which has torch),
# from the repository root inside the test's runfiles.
set -euo pipefail
cd "${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-memserve}" 2>/dev/null || true
exec /usr/bin/python3 "$@"
