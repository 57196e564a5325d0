// strand/bench/model_bench.h — GPT-2 throughput per tier chain, thread count and weight dtype.
//
// For each combination it measures
//   pp<P>  prompt processing: one prefill of P tokens from an empty KV cache, tokens/s;
//   tg<N>  text generation: N single-token forward passes on the KV cache after a short prompt
//          (token ids fixed in advance, no sampling), tokens/s;
// each as `reps` warm repetitions (median, min, max) after one cold run. The cold run is the
// first run of a freshly converted model on fresh tiers: the first test of a combination is
// charged the weight conversion too (what any first use pays, packing included).
//
// Against the bounds:
//   pp  achieved GFLOP/s = FLOPs of the P-token forward graph (Σ node_flops, the op table's
//       counts) / warm median seconds, and its % of the first tier's FP32 peak at that thread
//       count;
//   tg  achieved GB/s = bytes of weights one decode step reads × tokens/s, and its % of the
//       measured memory read bandwidth. Bytes per token = Σ over the distinct weight tensors
//       of the one-token graph of their storage size in their dtype (int8 payload + scales
//       for q8), except that a tensor read only by a row gather (wpe; wte when lm_head is
//       separate) counts only the rows gathered. KV-cache reads are not counted.
// A chain whose first tier has memory of its own (a GPU) is held to that device's ceilings,
// from `strand devices`: pp against its measured bf16 tensor-core rate, tg against its device
// copy bandwidth (the HBM bound); the weight upload (Gpt2Runner's construction) is charged to
// the cold run with the conversion.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "model/gpt2_weights.h"

namespace strand {

class Backend;

// GPT-2 124M's shape: 12 layers, 768 channels, 12 heads, context 1024, vocabulary 50257, tied.
Gpt2Config gpt2_124m_config();

struct ModelBenchOptions {
  std::string model_dir;              // empty: a random GPT-2 of `random_config`'s shape, made in memory
  Gpt2Config random_config = gpt2_124m_config();
  // Tier chains, each a make_chain() spec ("cpu", "blas,cpu"). Empty: every rung of the ladder
  // of usable tiers, each chain being that tier and every usable tier below it.
  std::vector<std::string> chains;
  std::vector<int> threads;           // empty: default_thread_count()
  std::vector<DType> weights;         // empty: the model's own dtype
  int prompt_tokens = 512;            // P of pp<P>; 0: no pp test
  int gen_tokens = 128;               // N of tg<N>; 0: no tg test
  int tg_prompt_tokens = 8;           // the short prompt before tg
  int reps = 5;
  uint64_t seed = 1;
  // Chains picked by default (not named with --backend) are first timed on a short forward;
  // a combination predicted to take longer than this is skipped with a note.
  double max_seconds = 120;
  enum class Probe { Full, Quick, Off } probe = Probe::Full;  // peaks and bandwidth: measured/cached, rough, none
  std::function<void(const std::string&)> progress;            // progress lines (may be empty)
  // After each test's timed runs, one more run with every node timed on its own
  // (RunOptions::time_nodes); the result's `profile` lists where that run's time went.
  bool profile = false;
};

struct BenchResult {
  std::string chain;        // "blas,cpu,naive"
  int threads = 0;
  std::string weights;      // f32, f16, bf16, q8
  std::string test;         // "pp512", "tg128"
  int tokens = 0;           // P or N
  int reps = 0;
  std::vector<double> seconds;       // each warm repetition
  double tps_median = 0, tps_min = 0, tps_max = 0;  // tokens/s over the warm repetitions
  double cold_seconds = 0;           // the cold run, conversion included when charged to it
  double convert_seconds = 0;        // of that, converting the weights (0 when not charged)
  double cold_tps = 0;
  double flops = 0;                  // per run (pp) or per token (tg, averaged over the steps)
  double gflops = 0;                 // flops / median seconds (per token for tg)
  double peak_gflops = 0;            // the first tier's FP32 peak at `threads` (0: unknown)
  std::string peak_source;
  double pct_peak = 0;
  double bytes_per_token = 0;        // tg: weight bytes one decode step reads
  double gbs = 0;                    // tg: bytes_per_token × tokens/s / 1e9
  double bandwidth_gbs = 0;          // tg: memory read bandwidth the runs are compared with (0: unknown)
  double pct_bandwidth = 0;          // tg: median over the warm runs of GB/s ÷ the bandwidth of its moment
  std::string bandwidth_source;      // "measured around each run", "the probe's" or ""
  struct ProfileEntry {
    std::string kind;      // "linear mlp.c_fc", "attention", ... (layers folded together)
    double seconds = 0;    // in the profiled run
    int64_t calls = 0;
  };
  std::vector<ProfileEntry> profile;  // with --profile: largest first
  double profile_seconds = 0;         // the profiled run's total node time
};

struct BenchSkip {
  std::string chain;
  int threads = 0;
  std::string weights;
  std::string reason;
};

struct ModelBenchReport {
  std::string machine;               // machine_summary_line()
  std::string model;                 // one line: what model and where from
  bool random_weights = false;
  int64_t parameters = 0;
  std::string probe_note;            // where peak and bandwidth came from
  // A model directory's load as `strand generate` does it (map, check, convert to the layout it
  // runs in): seconds, the process's peak resident set just after, and the weights as run.
  double load_seconds = 0;
  uint64_t load_peak_rss_bytes = 0;
  uint64_t weights_as_run_bytes = 0;
  int prompt_tokens = 0, gen_tokens = 0, tg_prompt_tokens = 0, reps = 0;
  std::vector<std::string> chains;   // what was asked for (or picked by default)
  bool chains_named = false;
  std::vector<int> threads;
  std::vector<std::string> weights;
  std::vector<BenchResult> results;
  std::vector<BenchSkip> skipped;
  std::vector<std::string> notes;

  std::string markdown() const;      // header lines, then a markdown table
  std::string csv() const;           // a header row, then one row per result
  nlohmann::json to_json() const;    // one object
};

ModelBenchReport run_model_bench(const ModelBenchOptions& opt);

// Weight bytes a one-token decode reads (the formula above), for `w` in its dtypes; with a
// chain, each product's weight as the tier it is placed on reads it (Backend::weight_read_bytes).
double decode_weight_bytes(const Gpt2Model& m, const std::vector<std::shared_ptr<Backend>>& chain = {});

}  // namespace strand
