#!/usr/bin/env bash
# scripts/gpu-check.sh — the cuda tier's checks and measurements on an NVIDIA GPU, in one run
# that fits the GPU machine's budget (docs/cuda.md: how and when to run it).
#
# On the GPU machine (no package registry there: strand's build dependencies travel in
# .gpu-deps/, made here by scripts/gpu-deps.sh), through the device tool:
#   run  command: bash scripts/gpu-check.sh     carry: [".gpu-deps"]     timeout_s: 600
# Anywhere else: OUT=dir scripts/gpu-check.sh (results in $OUT, default ./gpu-out).
#
# Steps, in order, and how long each should take on the H200 machine (16 cores); each is boxed
# by `timeout`, a step that would start past the budget is skipped, and the summary always comes:
#   env       GPU, driver, toolkit, host compiler, CMake, PyTorch, transformers        ~5 s
#   build     configure (Ninja if there, sm_90 only, no OpenBLAS/oneDNN) and build
#             strand + strand_cuda_tests against .gpu-deps and the CUDA toolkit       60-120 s (box 240)
#   tests     strand_cuda_tests, STRAND_REQUIRE_GPU=1: a skip is a failure            20-60 s (box 150)
#   memcheck  compute-sanitizer memcheck on the attention, graph and model tests     40-80 s (box 90)
#   racecheck compute-sanitizer racecheck on the same tests                           40-80 s (box 90)
#   validate  strand validate --backend cuda: every op x dtype, GPT-2 end to end      30-90 s (box 150)
#   devices   strand devices: the GPU's bf16 tensor-core rate and copy bandwidth     10-30 s (box 90)
#   train     training GPT-2 124M (batch 4 x ctx 256) on the cuda tier, f32 and with
#             STRAND_CUDA_BF16=1 (bf16 products): strand bench train --profile beside a
#             PyTorch eager step on the same GPU, bf16 autocast and f32
#             (tools/bench_train_torch.py); into bench.md                            50-100 s (box 150)
#   peers     tools/gpu_peers.py: random 124M and XL (ctx 2048) models made with
#             transformers and saved in bf16; transformers eager, torch.compile
#             (reduce-overhead, static cache) and sdpa prefill timed on them          80-150 s (box 210)
#   bench     strand bench gemm --gpu; strand bench model on those same models: 124M and
#             XL pp512/tg128 in f16 and bf16, XL pp2048 bf16, tg128 with graphs off,
#             and one profiled run of each target (where the time goes, by node kind) 70-140 s (box 200)
#   summary   one table: stdout and $OUT/summary.md
# Expected total 6-9 minutes, under the 10 of one device call; where the budget runs out first,
# the later steps say "skipped" and a second call on the warm machine runs them
# (GPU_CHECK_STEPS="peers bench"). GPU_CHECK_STEPS picks steps
# (default: all, e.g. GPU_CHECK_STEPS="env build tests validate"; a later call on a warm
# machine finds the build in /tmp/strand-gpu-build and only rebuilds what changed); GPU_CHECK_BUDGET (s, default 560)
# is when it stops starting steps.
#
# $OUT receives at most 8 files: summary.md, env.txt, build.log, tests.log (tests and
# sanitizers), validate.txt (its table and the op x tier markdown), devices.json, peers.json,
# bench.md (the training bench, then every strand benchmark: markdown then JSON lines).
set -uo pipefail
cd "$(dirname "$0")/.."
export ROOT=$PWD
export OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_BUDGET:-560}
STEPS=${GPU_CHECK_STEPS:-env build tests memcheck racecheck validate devices train peers bench}
export BUILD=${GPU_CHECK_BUILD:-/tmp/strand-gpu-build}
export MODELS=${GPU_CHECK_MODELS:-/tmp/strand-peers}
export STRAND_CACHE_DIR=/tmp/strand-gpu-cache
export PATH=$PATH:/usr/local/cuda/bin
export SAN_FILTER='CudaTier.Attention*:CudaTier.Flash*:CudaModel.Gpt2*:CudaModel.Bf16*:CudaTrain.AWhole*'
START=$(date +%s)
declare -A STATUS SECS

elapsed() { echo $(( $(date +%s) - START )); }
want() { [[ " $STEPS " == *" $1 "* ]]; }
# step NAME BOX: runs do_NAME in a shell of its own, boxed; records pass / FAIL / TIMEOUT and seconds.
step() {
  local name=$1 box=$2
  if ! want "$name"; then STATUS[$name]="not asked"; return 0; fi
  if (( $(elapsed) + 10 > BUDGET )); then STATUS[$name]="skipped: past the ${BUDGET} s budget"; return 0; fi
  echo "==== $name (at $(elapsed) s, box ${box} s)"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$box" bash -c "set -o pipefail; do_$name"
  rc=$?
  SECS[$name]=$(( $(date +%s) - t0 ))
  if (( rc == 0 )); then STATUS[$name]=pass
  elif (( rc == 124 || rc == 137 )); then STATUS[$name]="TIMEOUT (box ${box} s)"
  else STATUS[$name]="FAIL (exit $rc)"; fi
  echo "==== $name: ${STATUS[$name]} in ${SECS[$name]} s"
}

do_env() {
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv,noheader
    nvcc --version | tail -2
    g++ --version | head -1
    cmake --version | head -1
    echo "ninja $(ninja --version 2>/dev/null || echo 'not found')"
    echo "compute-sanitizer: $(command -v compute-sanitizer || echo 'not found')"
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__)"
    echo "cores $(nproc)"; free -g | head -2; df -h /tmp | tail -1
  } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
}

do_build() {
  [ -d "$ROOT/.gpu-deps" ] || { echo "no .gpu-deps/: run scripts/gpu-deps.sh first and carry it"; return 1; }
  local gen=() nvcc
  command -v ninja >/dev/null && gen=(-G Ninja)
  [ -f "$BUILD/CMakeCache.txt" ] && gen=()  # an earlier build: keep its generator
  nvcc=$(command -v nvcc || ls /usr/local/cuda*/bin/nvcc 2>/dev/null | head -1)
  [ -n "$nvcc" ] && gen+=(-DCMAKE_CUDA_COMPILER="$nvcc")
  cmake -S "$ROOT" -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$ROOT/.gpu-deps" \
    -DSTRAND_WITH_OPENBLAS=OFF -DSTRAND_WITH_ONEDNN=OFF -DCMAKE_CUDA_ARCHITECTURES=90-real \
    | tee /tmp/strand-gpu-configure.log || return 1
  grep -q "cuda=ON" /tmp/strand-gpu-configure.log || { echo "configured without the cuda tier"; return 1; }
  cmake --build "$BUILD" -j "$(nproc)" --target strand strand_cuda_tests || return 1
  # Which instructions the kernels got: tensor-core MMAs (HMMA) in the flash attention, spills.
  if command -v cuobjdump >/dev/null; then
    local lib
    lib=$(find "$BUILD" -name 'libstrand_lib.a' | head -1)
    echo "SASS: $(cuobjdump --dump-sass "$lib" 2>/dev/null | grep -c HMMA) HMMA instructions in libstrand_lib.a"
    cuobjdump --dump-resource-usage "$lib" 2>/dev/null | grep -E "Function|REG|STACK" | paste - - | head -40
  fi
  "$BUILD/strand" devices --quick --threads 1 | grep -E "^  (cuda|naive) "
}

do_tests() { cd "$ROOT" && STRAND_REQUIRE_GPU=1 "$BUILD/tests/strand_cuda_tests"; }
do_memcheck() {
  cd "$ROOT" && STRAND_REQUIRE_GPU=1 compute-sanitizer --tool memcheck --error-exitcode 99 \
    "$BUILD/tests/strand_cuda_tests" --gtest_filter="$SAN_FILTER"
}
do_racecheck() {
  cd "$ROOT" && STRAND_REQUIRE_GPU=1 compute-sanitizer --tool racecheck --racecheck-report hazard --error-exitcode 99 \
    "$BUILD/tests/strand_cuda_tests" --gtest_filter="$SAN_FILTER"
}

do_validate() {
  cd "$ROOT" || return 1
  "$BUILD/strand" validate --backend cuda --seed 1 --docs /tmp/strand-ops.md
  local rc=$?
  echo; echo "---- the op x tier table it wrote (docs/ops.md format)"; cat /tmp/strand-ops.md
  return $rc
}

do_devices() {
  "$BUILD/strand" devices --refresh --json > "$OUT/devices.json" || return 1
  python3 -c "
import json, sys
for t in json.load(open(sys.argv[1]))['tiers']:
    if t['tier'] == 'cuda':
        print('cuda usable:', t['usable'], '|', t['why']); print(t.get('device', ''))
        sys.exit(0 if t['usable'] and t.get('measured_gflops', 0) > 0 else 1)
sys.exit(1)
" "$OUT/devices.json"
}

do_train() {
  cd "$ROOT" || return 1
  local rc=0 bf=/tmp/strand-torch-bf16.json f32=/tmp/strand-torch-f32.json
  echo "\$ python3 tools/bench_train_torch.py --device cuda --dtype bf16   (and f32)"
  PYTHONUNBUFFERED=1 python3 tools/bench_train_torch.py --device cuda --dtype bf16 --reps 10 --warmup 3 > $bf || rc=1
  PYTHONUNBUFFERED=1 python3 tools/bench_train_torch.py --device cuda --dtype f32 --reps 10 --warmup 3 > $f32 || rc=1
  cat $bf $f32
  # strand's rows come even when PyTorch failed (then without the peer beside them).
  peer() { [ -s "$1" ] && echo "--peer $1"; }
  echo; echo "\$ strand bench train --backend cuda --reps 5 --profile $(peer $bf)"
  "$BUILD/strand" bench train --backend cuda --reps 5 --warmup 2 --profile $(peer $bf) || rc=1
  echo; echo "\$ STRAND_CUDA_BF16=1 strand bench train --backend cuda --reps 5 --profile $(peer $bf)"
  STRAND_CUDA_BF16=1 "$BUILD/strand" bench train --backend cuda --reps 5 --warmup 2 --profile $(peer $bf) || rc=1
  echo; echo "\$ STRAND_CUDA_BF16=1 strand bench train --backend cuda --reps 5 $(peer $bf) --json"
  STRAND_CUDA_BF16=1 "$BUILD/strand" bench train --backend cuda --reps 5 --warmup 2 $(peer $bf) --json || rc=1
  echo; echo "\$ strand bench train --backend cuda --reps 5 $(peer $f32) --json"
  "$BUILD/strand" bench train --backend cuda --reps 5 --warmup 2 $(peer $f32) --json || rc=1
  return $rc
}

do_peers() { cd "$ROOT" && PYTHONUNBUFFERED=1 python3 tools/gpu_peers.py --dir "$MODELS" --out "$OUT/peers.json" --reps 3; }

do_bench() {
  local m124=$MODELS/gpt2-124m-bf16 mxl=$MODELS/gpt2-xl-bf16 rc=0
  sb() { echo; echo "\$ strand $*"; "$BUILD/strand" "$@" || rc=1; }
  sb bench gemm --gpu --gpt2 --sizes 4096,8192 --reps 5
  if [ -d "$m124" ]; then
    sb bench model -m "$m124" --backend cuda --weights bf16,f16 -p 512 -n 128 --reps 5
    echo; echo "\$ STRAND_CUDA_GRAPHS=0 strand bench model (decode without CUDA graphs)"
    STRAND_CUDA_GRAPHS=0 "$BUILD/strand" bench model -m "$m124" --backend cuda --weights bf16 -p 0 -n 128 --reps 3 || rc=1
  else echo "no $m124 (the peers step makes it)"; rc=1; fi
  if [ -d "$mxl" ]; then
    sb bench model -m "$mxl" --backend cuda --weights bf16,f16 -p 512 -n 128 --reps 3
    sb bench model -m "$mxl" --backend cuda --weights bf16 -p 2048 -n 0 --reps 5 --json
  else echo "no $mxl (the peers step makes it)"; rc=1; fi
  [ -d "$m124" ] && { echo; "$BUILD/strand" bench model -m "$m124" --backend cuda --weights bf16 -p 512 -n 128 --reps 5 --json || rc=1; }
  # Where the time goes (every node timed on its own, synchronized): for the next round of work.
  [ -d "$mxl" ] && sb bench model -m "$mxl" --backend cuda --weights bf16 -p 2048 -n 0 --reps 1 --profile
  [ -d "$m124" ] && sb bench model -m "$m124" --backend cuda --weights bf16 -p 0 -n 32 --reps 1 --profile
  return $rc
}
export -f do_env do_build do_tests do_memcheck do_racecheck do_validate do_devices do_train do_peers do_bench

step env 30
step build 240 > "$OUT/build.log" 2>&1
tail -3 "$OUT/build.log"
if [[ ${STATUS[build]} == pass || ${STATUS[build]} == "not asked" ]] && [ -x "$BUILD/strand" ]; then
  { step tests 150; step memcheck 90; step racecheck 90; } > "$OUT/tests.log" 2>&1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^==== |ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/tests.log"
  step validate 150 > "$OUT/validate.txt" 2>&1
  grep -E "^==== |^summary:|FAIL" "$OUT/validate.txt" | head -20
  step devices 90
  step train 150 > "$OUT/bench.md" 2>&1
  grep -E "^==== |^\| cuda|^note: cuda" "$OUT/bench.md" | head -10
  step peers 210
  step bench 200 >> "$OUT/bench.md" 2>&1
  grep -E "^==== |^\| cuda" "$OUT/bench.md" | head -30
else
  for s in tests memcheck racecheck validate devices train peers bench; do STATUS[$s]="skipped: no build"; done
fi

for s in env build tests memcheck racecheck validate devices train peers bench; do
  printf '%s\t%s%s\n' "$s" "${STATUS[$s]:-not run}" "${SECS[$s]:+ (${SECS[$s]} s)}"
done > /tmp/strand-gpu-steps.txt
python3 "$ROOT/tools/gpu_summary.py" "$OUT" /tmp/strand-gpu-steps.txt "$(elapsed)" > "$OUT/summary.md" 2>&1
cat "$OUT/summary.md"
