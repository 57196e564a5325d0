#!/usr/bin/env bash
# Installs missing packages, builds strand and its tests in build/ with the default compiler
# (GCC on Debian), runs them with CTest, then builds the same suite with clang under
# AddressSanitizer + UndefinedBehaviorSanitizer in build-clang-asan/ and runs it: every run
# builds with both compilers. STRAND_SKIP_SANITIZERS=1 skips the second pass.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)

# Apple's coremltools in a virtual environment, for the Core ML export check only (strand never
# needs Python). Without it that one test is skipped (or fails, with STRAND_REQUIRE_COREMLTOOLS=1).
venv=build/venv-coreml
if ! "$venv/bin/python" -c 'import coremltools' >/dev/null 2>&1; then
  echo "== creating $venv with coremltools (tests/coreml/requirements.txt) =="
  rm -rf "$venv"
  mkdir -p build
  if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check -r tests/coreml/requirements.txt; }; then
    echo "strand: could not create $venv; the coremltools check will be skipped" >&2
    rm -rf "$venv"
  fi
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest -j"$jobs" --output-on-failure)
if [ -f build/coremltools-check.txt ]; then
  echo "== coremltools on the exported Core ML packages =="
  cat build/coremltools-check.txt
fi

if [ "${STRAND_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== the same suite built with clang, under AddressSanitizer + UndefinedBehaviorSanitizer =="
  cmake -S . -B build-clang-asan -DCMAKE_BUILD_TYPE=Debug -DSTRAND_SANITIZE=ON \
    -DCMAKE_CXX_COMPILER=clang++ >/dev/null
  cmake --build build-clang-asan -j"$jobs"
  (cd build-clang-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest -j"$jobs" --output-on-failure)
fi
