#!/usr/bin/env bash
# scripts/amx-check.sh — the checks of the amx tier that need an Intel AMX machine, and the
# numbers of docs/performance.md's "Intel AMX" section.
#
# Run it on a quiet Xeon with AMX (Sapphire Rapids or later; `grep amx_tile /proc/cpuinfo`),
# pinned to the 2 cores the targets are stated for:
#
#   taskset -c 0,1 scripts/amx-check.sh [--model DIR] [--threads 2] [--out DIR] [--write-docs]
#
#   --model DIR    a Hugging Face GPT-2 124M directory (config.json, model.safetensors, vocab.json,
#                  merges.txt): validate then reports the perplexity cost of bf16/int8 on a fixed
#                  English text, and bench model runs the real weights (else a random GPT-2 of
#                  the same shape, which times the same work)
#   --threads N    threads for the benchmarks (default 2, as the targets)
#   --out DIR      where the outputs go (default build/amx-check)
#   --write-docs   put the summary between the amx-check markers of docs/performance.md
#
# What it runs, in order (a failure stops it with exit 1; a validate failure only at the end):
#   1. the build, Release, GCC (and clang when present: both must build)
#   2. the tests that need AMX, with STRAND_REQUIRE_AMX=1 (a skip is a failure): the kernels on
#      the instructions match the C++ model of them bitwise, op cases within 2x naive at the
#      tier's precision, the tile peak loops; then the whole suite
#   3. strand validate --backend amx,cpu: every op the tier takes, every weight dtype, whole
#      GPT-2 at its precision, and the precision-cost table (perplexity, greedy agreement)
#   4. strand devices --refresh: tile peaks (bf16, int8), the stranded table, the measured
#      crossovers (cached; the amx tier reads them)
#   5. strand bench gemm --gpt2 (packed, onednn, amx-bf16, amx-int8, onednn-bf16)
#   6. strand bench model, chains 'amx,cpu' and 'cpu', weights f32, bf16, int8, pp512 and tg128,
#      with --profile
#   7. strand bench train, chains 'cpu' and 'amx,cpu' (mixed precision: bf16 products, f32
#      master weights), GPT-2 124M shape, with --profile: training tokens/s and MFU on AMX
#   8. the summary against the targets (scripts/amx_summary.py; Python for this summary only)
#      -> $OUT/summary.md
set -euo pipefail
cd "$(dirname "$0")/.."

model=""
threads=2
out=build/amx-check
write_docs=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --write-docs) write_docs=1; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "amx-check: unknown argument '$1' (see --help)" >&2; exit 1 ;;
  esac
done
if [ -n "$model" ] && [ ! -d "$model" ]; then
  echo "amx-check: --model $model: not a directory" >&2
  exit 1
fi
if ! grep -q '\bamx_tile\b' /proc/cpuinfo; then
  echo "amx-check: no amx_tile in /proc/cpuinfo: this machine has no AMX (nothing here can be checked)" >&2
  exit 2
fi
mkdir -p "$out"
export STRAND_CACHE_DIR="$out/cache"   # a fresh device cache: crossovers measured by this run
jobs=$(nproc)

echo "== 1. build =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
if command -v clang++ >/dev/null; then
  CC=clang CXX=clang++ cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build-clang -j"$jobs"
fi
strand=build/strand

echo "== 2. tests on the instructions (STRAND_REQUIRE_AMX=1) =="
STRAND_REQUIRE_AMX=1 build/tests/strand_tests --gtest_filter='Amx*:Precision*:Stranded*' | tee "$out/tests-amx.txt"
(cd build && STRAND_REQUIRE_AMX=1 ctest -j"$jobs" --output-on-failure) | tail -5 | tee "$out/tests-all.txt"

echo "== 3. validate =="
args=(validate --backend amx,cpu --seed 1 --cases 4 --docs "$out/ops.md")
[ -n "$model" ] && args+=(--model "$model")
# A failure here is reported at the end (validate.json), after the measurements.
"$strand" "${args[@]}" --json >"$out/validate.json" || true
"$strand" "${args[@]}" | tee "$out/validate.txt" || true

echo "== 4. devices =="
"$strand" devices --refresh --threads "$threads" | tee "$out/devices.txt"
"$strand" devices --threads "$threads" --json >"$out/devices.json"

echo "== 5. bench gemm =="
gemm=(bench gemm --gpt2 --rungs packed,onednn,amx-bf16,amx-int8,onednn-bf16 --threads "$threads" --reps 9)
"$strand" "${gemm[@]}" --json >"$out/gemm.json"
"$strand" "${gemm[@]}" | tee "$out/gemm.md"

echo "== 6. bench model =="
bm=(bench model --backend 'amx,cpu;cpu' --threads "$threads" --weights f32,bf16,int8 -p 512 -n 128 --reps 5)
[ -n "$model" ] && bm+=(-m "$model")
"$strand" "${bm[@]}" --json >"$out/model.json"
"$strand" "${bm[@]}" --profile | tee "$out/model.md"

echo "== 7. bench train =="
"$strand" bench train --backend 'cpu;amx,cpu' --threads "$threads" --profile | tee "$out/train.md"

echo "== 8. summary =="
python3 scripts/amx_summary.py "$out" "$threads" "$model" | tee "$out/summary.md"

if [ "$write_docs" = 1 ]; then
  python3 - "$out/summary.md" docs/performance.md <<'PY'
import sys
summary, doc = open(sys.argv[1]).read(), open(sys.argv[2]).read()
b, e = "<!-- amx-check:begin -->", "<!-- amx-check:end -->"
if b not in doc or e not in doc:
    sys.exit("amx-check: docs/performance.md has no amx-check markers")
doc = doc[: doc.index(b) + len(b)] + "\n" + summary.strip() + "\n" + doc[doc.index(e):]
open(sys.argv[2], "w").write(doc)
print("amx-check: docs/performance.md updated")
PY
fi
if ! python3 -c "import json,sys; sys.exit(0 if json.load(open('$out/validate.json'))['pass'] else 1)"; then
  echo "amx-check: validate FAILED (see $out/validate.txt)" >&2
  exit 1
fi
echo "amx-check: done; outputs in $out/"
