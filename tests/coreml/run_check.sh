#!/usr/bin/env bash
# CTest entry for the coremltools check: runs check_with_coremltools.py with the Python of the
# virtual environment that scripts/test.sh creates. Without that environment the test is
# skipped (exit 77) with a message saying how to create it -- or fails, when
# STRAND_REQUIRE_COREMLTOOLS=1 (CI sets it, so CI must show the check ran).
# Usage: run_check.sh STRAND_BINARY VENV_DIR [REPORT_FILE]
set -uo pipefail
strand_bin=$1
venv=$2
report=${3:-}
src=$(cd "$(dirname "$0")/../.." && pwd)
py="$venv/bin/python"
[ -n "$report" ] && rm -f "$report"
if [ ! -x "$py" ] || ! "$py" -c 'import coremltools' >/dev/null 2>&1; then
  msg="no Python with coremltools at $venv (create it: python3 -m venv $venv && $venv/bin/pip install -r tests/coreml/requirements.txt; scripts/test.sh does this)"
  if [ "${STRAND_REQUIRE_COREMLTOOLS:-0}" = 1 ]; then
    echo "FAIL: STRAND_REQUIRE_COREMLTOOLS=1 but $msg"
    exit 1
  fi
  echo "SKIP: $msg"
  exit 77
fi
args=(--strand "$strand_bin" --fixtures "$src/tests/fixtures/gpt2")
[ -n "$report" ] && args+=(--report "$report")
exec "$py" "$src/tests/coreml/check_with_coremltools.py" "${args[@]}"
