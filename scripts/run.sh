#!/usr/bin/env bash
# strand's main job on an embedded default: installs missing packages, builds build/strand,
# and runs `strand demo`: it trains a small GPT-2 on strand's own docs and sources (embedded in
# the binary; at most 160 s of training, cached for the next run), then scores and samples it.
# Extra arguments go to `strand demo` (try: scripts/run.sh -n 64 --seed 3).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target strand
exec build/strand demo "$@"
