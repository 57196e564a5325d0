// strand/bench/train_bench.h — training throughput per tier chain and thread count.
//
// For each combination: a GPT-2 of the given shape (random GPT-2 init, f32 master weights),
// batches of random token ids, and `reps` timed optimizer steps after `warmup` untimed ones.
// A step is what `strand train` does per step: the forward, loss and backward graph, the
// gradient norm and the AdamW update. Reported per combination:
//   tokens/s     batch × ctx / step seconds (median of the reps; min and max beside it)
//   GFLOP/s      the step graph's FLOPs (the op table's counts, Σ node_flops) / step seconds
//   MFU          GFLOP/s ÷ the peak of the unit the products run on, measured on the threads used:
//                the FP32 FMA lanes (an FMA loop on all of them), the bf16 unit for a mixed-
//                precision chain (vdpbf16ps, AMX tiles), the GPU's rate (training_peak_gflops)
//   products     with profile: the matrix products' FLOPs ÷ the time spent in them, and that
//                as a share of the peak (the bar the products are held to)
// The precision column says what the chain computes in: f32, or "mixed: <tier> products <what
// it rounds>" when a tier of the chain rounds its inputs (Backend::precision).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/gpt2_config.h"

namespace strand {

struct TrainBenchOptions {
  Gpt2Config config;             // default: GPT-2 124M's shape (context = ctx)
  int64_t batch = 4, ctx = 256;
  std::vector<std::string> chains;  // make_chain specs; empty: "cpu"
  std::vector<int> threads;         // empty: the pool's default size
  int reps = 3, warmup = 1;
  bool profile = false;             // one more step with every node timed
  uint64_t seed = 1;
  std::function<void(const std::string&)> progress;
};

struct TrainBenchResult {
  std::string chain, precision = "f32";
  int threads = 0;
  int64_t batch = 0, ctx = 0;
  std::vector<double> seconds;  // per timed step
  double tps_median = 0, tps_min = 0, tps_max = 0;
  double step_flops = 0, matmul_flops = 0;
  double gflops = 0, peak_gflops = 0, mfu = 0;
  std::string peak_source;       // what the peak is (training_peak_gflops): FP32 lanes, the bf16 unit, the GPU
  double optimizer_seconds = 0;  // of the median step: gradient norm + AdamW
  std::string optimizer_on;      // "host", or the tier whose memory holds the weights and moments
  // With profile: where a step's time went, by node kind (largest first), and the products' rate.
  std::vector<std::pair<std::string, double>> profile;
  double matmul_seconds = 0, matmul_gflops = 0, matmul_pct_peak = 0;
};

struct TrainBenchReport {
  std::string machine, model;
  int64_t parameters = 0;
  std::vector<TrainBenchResult> results;
  std::vector<std::string> notes;
  std::string markdown() const;
  std::string csv() const;
  nlohmann::json to_json() const;
};

TrainBenchReport run_train_bench(const TrainBenchOptions& opt);

// The peak a training step's MFU is measured against, for a chain whose first tier is
// `first_tier`: the FP32 FMA lanes of `threads` cores; on the amx and avx512bf16 tiers (mixed
// precision: bf16 products) their bf16 unit's peak (tiles, vdpbf16ps); on the cuda tier the GPU's
// rate in what its products compute in (f32, tf32 or bf16). `what` says which, measured.
double training_peak_gflops(const std::string& first_tier, int threads, std::string* what);

}  // namespace strand
