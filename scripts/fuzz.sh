#!/usr/bin/env bash
# Builds strand's fuzz targets (tests/fuzz) with clang's libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer (halting on the first error) in build-fuzz/, then runs every target
# for SECONDS (default 60) from its committed seed corpus (tests/fuzz/corpus/<target>).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Any finding fails the script (exit 1) and prints the reproducer's path and the command that
# replays it. A finding is a crash, a sanitizer report, an exception other than strand::Error,
# a broken round trip, one input running longer than 25 s, or more than 2 GB of memory.
# New inputs the fuzzer finds go to build-fuzz/corpus/<target> (not committed). Per-target
# logs: build-fuzz/logs/<target>.log. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
all=(safetensors safetensors_index gpt2_config tokenizer_files tokenizer_roundtrip model_dir coreml_reader cli)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

# strand's packages, clang and its sanitizer runtime (scripts/deps.sh: the sanitizer pass of
# scripts/test.sh uses them too); libFuzzer comes in the same runtime package.
scripts/deps.sh
if ! ls "$(clang -print-resource-dir)"/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1; then
  v=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n1)
  echo "strand: clang's libFuzzer runtime is missing; install it with:" >&2
  echo "  sudo apt-get install -y libclang-rt-${v:-14}-dev" >&2
  exit 1
fi

build=build-fuzz
# Without the cuda tier: no target reaches a GPU, and nvcc's host compiler (GCC) would be handed
# clang's sanitizer flags.
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRAND_FUZZ=ON \
  -DSTRAND_BUILD_TESTS=OFF -DSTRAND_WITH_CUDA=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}")

export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:allocator_may_return_null=0
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
# Absolute paths: the cli target runs in a directory of its own. Scratch files go to memory
# (/dev/shm) where there is one: every input is written as files.
root="$PWD"
mkdir -p "$build/logs"
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  export TMPDIR=$(mktemp -d /dev/shm/strand-fuzz.XXXXXX)
else
  export TMPDIR=$(mktemp -d "$root/$build/tmp.XXXXXX")
fi
trap 'rm -rf "$TMPDIR"' EXIT
failed=0
for t in "${targets[@]}"; do
  corpus="$root/$build/corpus/$t"
  findings="$root/$build/findings/$t"
  rm -rf "$findings"
  mkdir -p "$corpus" "$findings"
  log="$build/logs/$t.log"
  opts=(-max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$findings/")
  [ "$t" = cli ] && opts+=(-close_fd_mask=3)  # the commands' own output (libFuzzer's reports stay)
  rc=0
  "$build/tests/fuzz/fuzz_$t" "${opts[@]}" "$corpus" "$root/tests/fuzz/corpus/$t" </dev/null >"$log" 2>&1 || rc=$?
  if [ "$rc" -eq 77 ]; then
    echo "fuzz $t: skipped: $(grep -m1 'fuzz_' "$log" || true)"
    continue
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
  repro=$(ls -t "$findings" 2>/dev/null | head -n 1)
  if [ "$rc" -ne 0 ] || [ -n "$repro" ]; then
    failed=1
    echo "fuzz $t: FINDING (exit $rc) after ${runs:-?} runs; log $log"
    grep -E 'strand fuzz finding|ERROR: |runtime error|SUMMARY' "$log" | head -n 5 | sed 's/^/  /'
    if [ -n "$repro" ]; then
      echo "  reproducer: $findings/$repro"
      echo "  replay:     $build/tests/fuzz/fuzz_$t $findings/$repro"
    fi
  else
    echo "fuzz $t: ok, ${runs:-?} runs in ${seconds} s, ${cov:-cov ?}, corpus $(ls "$corpus" | wc -l) inputs"
  fi
done
exit $failed
