// strand/devices/probe.h — the measurements behind probe_devices(), its cache, and the knobs
// tests use to keep a probe short.
//
// Measurements (each the best of a few runs, so that a busy machine reads as itself at best):
//   fp32 peak          an FMA loop (the widest vectors the CPU has) on every thread the tier
//                      uses at once: GFLOP/s measured, not cores x clock x FLOP/cycle;
//   memory bandwidth   every thread reads its slice of a buffer much larger than L3 with each
//                      reader of devices/readers.h; the best reader's GB/s is the bound;
//   tier GEMM peak     an f32 matmul on the tier, the largest square up to 1024 that fits
//                      the time budget;
//   tier GEMV GB/s     [1, K] · [K, K] with a weight 4x L3 (or 256 MiB): bytes it must read / time;
//   blas crossover     blas and the cpu tier (or the tier below blas when there is no cpu
//                      tier) timed on GPT-2-like products, M = 1..512 rows against 768 x 768
//                      .. 768 x 3072 and 3072 x 768; the crossover is the threshold on 2·M·N·K
//                      that would have taken the least time over those products (or "never"),
//                      see crossover_from_points.
//
// Cache: one JSON file, $STRAND_CACHE_DIR/devices.json, else $XDG_CACHE_HOME/strand/devices.json,
// else ~/.cache/strand/devices.json. It holds one entry per key (CPU model, thread count, strand
// version, OpenBLAS kernel). A file that cannot be parsed is ignored with a warning and
// rewritten by the next measurement. A measurement taken on a busy machine (devices/busy.h) is
// reported as such and never cached.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "devices/machine.h"

namespace strand {

struct ProbeBudget {
  double seconds_per_measurement = 0.3;  // each timing loop stops after about this long
  int64_t gemm_max_n = 1024;             // largest square GEMM timed per tier
  size_t bandwidth_bytes = 0;            // 0: max(256 MiB, 4 x L3)
  size_t gemv_weight_bytes = 0;          // 0: max(256 MiB, 4 x L3)
  std::vector<int64_t> crossover_m = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
  std::vector<std::pair<int64_t, int64_t>> crossover_kn = {{768, 768}, {768, 2304}, {768, 3072}, {3072, 768}};
  bool quick = false;                    // rough numbers: never written to the cache
  // Tests: take the machine as quiet (true) or busy (false) whatever it shows; unset: judged
  // from what it shows (devices/busy.h).
  std::optional<bool> assume_quiet;
};

// A probe that finishes in a fraction of a second (tests, `strand devices --quick`).
ProbeBudget quick_probe_budget();

// probe_devices() with an explicit budget.
DeviceReport probe_devices(bool refresh, int threads, const ProbeBudget& budget);

// The cache file ("" when no location can be found: no STRAND_CACHE_DIR, XDG_CACHE_HOME or HOME).
std::string device_cache_path();
// The path with $HOME shown as ~ (for messages).
std::string display_path(const std::string& path);

struct CacheLookup {
  std::optional<DeviceReport> report;  // the entry for this key, when there is one
  std::string warning;                 // non-empty: the file exists but was unreadable/corrupt
};
// The format_version of the cache file this build writes (a file of another version is
// measured again and rewritten).
int device_cache_format_version();
// The cached entry for this machine and thread count (the machine part is taken live).
CacheLookup read_device_cache(const MachineInfo& m, int threads);
// Adds or replaces this report's entry; returns a warning ("" on success). Never throws.
std::string write_device_cache(const DeviceReport& r);

// The cache key of an entry, as JSON: cpu model, threads, strand version, OpenBLAS kernel.
nlohmann::json device_cache_key(const MachineInfo& m, int threads);

// The blas tier's view of the cache: the measured crossover against the cpu tier, if any.
struct CachedCrossover {
  bool found = false;
  double flops = 0;       // +inf: blas never won
  std::string vs;         // the tier it was measured against
  std::string path;
  std::string warning;    // the cache exists but could not be used, and why
};
CachedCrossover cached_blas_crossover(int threads);

// DeviceReport <-> JSON (the --json output of `strand devices` and the cache entry format).
nlohmann::json to_json(const MachineInfo& m);
nlohmann::json to_json(const DeviceReport& r);
DeviceReport report_from_json(const nlohmann::json& j);  // throws on missing/ill-typed fields

// The measurements on their own.
// Read bandwidth in GB/s (1e9 bytes/s) of `threads` threads reading a `bytes` buffer: the best
// reader's best run within `seconds`.
double measure_read_bandwidth(size_t bytes, int threads, double seconds, int* runs = nullptr);

// The same measurement, repeatable: the buffer is allocated and touched once, so that a
// benchmark can measure the bandwidth of the moment next to each of its runs (on a shared or
// virtual machine it changes from second to second).
class ReadBandwidthMeter {
 public:
  ReadBandwidthMeter(size_t bytes, int threads);
  ~ReadBandwidthMeter();
  ReadBandwidthMeter(const ReadBandwidthMeter&) = delete;
  ReadBandwidthMeter& operator=(const ReadBandwidthMeter&) = delete;
  // GB/s of the best reader: every reader of memory_readers() runs at least 3 times (all
  // threads at once, each on its slice), `seconds` shared between them; `runs` gets the total.
  double measure(double seconds, int* runs = nullptr);
  size_t bytes() const;

  struct ReaderResult {
    std::string name;
    double gbs = 0;     // best run
    double spread = 0;  // slowest run / fastest run
    int runs = 0;
  };
  const std::vector<ReaderResult>& last() const;  // every reader of the last measure()
  const ReaderResult& best() const;               // the reader that set the last figure

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One tier's figures as strand devices measures them: the GFLOP/s of an f32 [n, n] x [n, n]
// matmul, and the GB/s of a [1, side] x [side, side] one (weight bytes + vectors / time), each
// the best run within `seconds`. 0 when the tier declines the product.
class Backend;
double measure_tier_gemm_gflops(Backend& tier, int64_t n, double seconds);
double measure_tier_gemv_gbs(Backend& tier, int64_t side, double seconds);

// The FP32 peak in GFLOP/s of `threads` threads: each runs the FMA loop of the widest kernel
// set (cpu::fma_loop_flops) at the same time, timed in its own CPU time; the sum. `spread`, if
// given, gets the slowest thread's figure over the fastest's.
double measure_fma_peak_gflops(int threads, double seconds, double* spread = nullptr);

// Crossover from measured points: the threshold F (blas takes products with 2·M·N·K >= F) that
// minimizes the sum over points of the chosen tier's time divided by the faster tier's time,
// blas's time counted 5% worse (a near tie goes to the cpu tier). Candidates are the measured
// sizes and +inf ("never"); on a tie the larger wins. -1 when there are no points.
double crossover_from_points(const std::vector<CrossoverPoint>& points);
// The crossover in words for `strand devices`: where the threshold comes from, and when it is
// "never" although blas was faster on some products, why (a single threshold cannot follow them).
std::string crossover_note(const std::vector<CrossoverPoint>& points, double flops, const std::string& vs,
                           bool stopped_early = false);

}  // namespace strand
