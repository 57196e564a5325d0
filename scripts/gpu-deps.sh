#!/usr/bin/env bash
# scripts/gpu-deps.sh — gathers what strand's build needs beyond a compiler, CMake and the CUDA
# toolkit into .gpu-deps/ (git-ignored), for a machine that has no package registry (the GPU
# machine scripts/gpu-check.sh runs on): the headers of fmt, nlohmann-json, CLI11 and
# GoogleTest, fmt's shared library and GoogleTest's static ones, and their CMake package
# files, in the /usr layout those files expect (each locates its prefix from where it lies).
#
# Run it here, on a Debian/Ubuntu machine with strand's packages (scripts/deps.sh). About 4 MB.
# OpenBLAS and oneDNN are not carried: the GPU build turns both tiers off.
#
#   scripts/gpu-deps.sh            # writes .gpu-deps/ in the checkout
#   scripts/gpu-deps.sh --check    # and configures + builds strand against it alone, with /usr
#                                  # hidden from find_package (what the GPU machine will see)
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu-deps
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
lib=/usr/lib/$multiarch

need() { [ -e "$1" ] || { echo "gpu-deps: $1 is missing: run scripts/deps.sh (or install $2)" >&2; exit 1; }; }
need /usr/include/fmt/format.h libfmt-dev
need /usr/include/nlohmann/json.hpp nlohmann-json3-dev
need /usr/include/CLI/CLI.hpp libcli11-dev
need /usr/include/gtest/gtest.h libgtest-dev
need "$lib/libgtest.a" libgtest-dev
need "$lib/cmake/fmt/fmt-config.cmake" libfmt-dev

rm -rf "$out"
mkdir -p "$out/include" "$out/lib/$multiarch/cmake" "$out/share/cmake"
cp -r /usr/include/fmt /usr/include/nlohmann /usr/include/CLI /usr/include/gtest "$out/include/"
[ -d /usr/include/gmock ] && cp -r /usr/include/gmock "$out/include/"
# Real files, not links: links travel as links and could point outside the folder.
fmt_so=$(readlink -f "$lib/libfmt.so")
cp "$fmt_so" "$out/lib/$multiarch/"
soname=$(objdump -p "$fmt_so" 2>/dev/null | awk '/SONAME/ {print $2}')
[ -n "$soname" ] && cp "$fmt_so" "$out/lib/$multiarch/$soname"
cp "$fmt_so" "$out/lib/$multiarch/libfmt.so"
cp "$lib"/libgtest.a "$lib"/libgtest_main.a "$out/lib/$multiarch/"
for f in libgmock.a libgmock_main.a; do [ -e "$lib/$f" ] && cp "$lib/$f" "$out/lib/$multiarch/"; done
cp -r "$lib/cmake/fmt" "$lib/cmake/GTest" "$out/lib/$multiarch/cmake/"
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$out/share/cmake/"
echo "gpu-deps: $(du -sh "$out" | cut -f1) in $out/ ($(find "$out" -type f | wc -l) files)"

if [ "${1:-}" = "--check" ]; then
  # The rehearsal: a clean build directory, find_package kept away from /usr (where this
  # machine's packages are) so that only .gpu-deps and the CUDA toolkit can be found.
  dir=build-gpudeps-check
  rm -rf "$dir"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PWD/$out" \
    -DCMAKE_IGNORE_PREFIX_PATH=/usr -DSTRAND_WITH_OPENBLAS=OFF -DSTRAND_WITH_ONEDNN=OFF \
    -DCMAKE_CUDA_ARCHITECTURES=90-real
  grep -E "^(fmt|nlohmann_json|CLI11|GTest)_DIR" "$dir/CMakeCache.txt"
  nice cmake --build "$dir" -j"$(nproc)" --target strand strand_cuda_tests
  # The compiler searches /usr/include after the carried headers: prove none was taken from there.
  if grep -rhoE "/usr/include/(fmt|nlohmann|CLI|gtest)/[^ ]*" "$dir" --include=*.d --include=compiler_depend.make \
      2>/dev/null | sort -u | head -5 | grep .; then
    echo "gpu-deps: the build above read headers from /usr/include, not from $out" >&2
    exit 1
  fi
  ldd "$dir/strand" | grep -E "fmt|cublas|cudart" || true
  ldd "$dir/strand" | grep -q "$out/lib/.*libfmt" || { echo "gpu-deps: strand did not link the carried libfmt" >&2; exit 1; }
  "$dir/strand" devices --quick | grep -E "^  (cuda|cpu|naive) " || true
  echo "gpu-deps: the build against $out alone works"
fi
