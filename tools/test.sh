#!/usr/bin/env bash
# The test command: installs system packages (idempotent), then runs every
# test with Bazel and prints a one-line summary ("N passed, N failed").
set -uo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh || exit 1
log=$(mktemp)
# Always run the tests: results cached from another clone would hide
# changes outside Bazel's view (system packages, Python modules).
bazel test --nocache_test_results //... "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
passed=$(grep -cE '^//.* (PASSED|\(cached\) PASSED) in' "$log")
failed=$(grep -cE '^//.* (FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' "$log")
rm -f "$log"
echo "tests: ${passed} passed, ${failed} failed"
exit "$rc"
