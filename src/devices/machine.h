// strand/devices/machine.h — what this machine is, and what each tier reaches on it.
//
// machine_info() is cheap (cpuid / /proc/cpuinfo / sysfs, library version calls) and is what
// benchmark headers print. probe_devices() measures: a short GEMM per tier, memory read
// bandwidth, and the size from which the blas tier beats the cpu tier; it caches the result
// in a JSON file (see devices/probe.h for the file and the knobs tests use).
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

namespace strand {

struct MachineInfo {
  std::string cpu_model;        // "AMD EPYC 9654 96-Core Processor" (as the OS names it)
  int physical_cores = 1;       // cores (SMT siblings counted once)
  int logical_cpus = 1;         // online hardware threads
  std::vector<std::string> simd;  // e.g. avx512f, avx2, fma, f16c, avx512_bf16, avx512_vnni, neon
  double base_ghz = 0;          // 0 when unknown
  double max_ghz = 0;           // 0 when unknown
  std::string os, compiler, openblas_version, openblas_corename, onednn_version;
  size_t l1d_bytes = 0, l2_bytes = 0, l3_bytes = 0;  // per core for L1d/L2; per instance for L3; 0 unknown

  // Beyond the fields above (kept stable for `strand bench` / `strand validate`):
  std::string arch;             // "x86_64", "aarch64"
  std::string vendor;           // "AuthenticAMD", "GenuineIntel", "Apple", ""
  int cpu_family = 0, cpu_model_id = 0;  // x86 family/model numbers (0 elsewhere)
  std::string uarch;            // best guess at the core design ("Zen 4", "Ice Lake server"), "" unknown
  std::string ghz_source;       // where base/max GHz came from ("cpufreq", "/proc/cpuinfo cpu MHz", ...)
  std::string openblas_config;  // openblas_get_config(): build options and target
  std::string openblas_note;    // non-empty when OpenBLAS runs a generic/older kernel on this CPU

  bool has(const std::string& feature) const;
};

MachineInfo machine_info();            // cheap; from cpuid / /proc/cpuinfo / sysfs
std::string machine_summary_line();    // one line for benchmark headers

// One tier as `strand devices` sees it.
struct TierPeak {
  std::string tier;
  bool usable = false;
  std::string why;                      // the tier's probe() reason (or why it is not built)
  double peak_gflops = 0;               // fp32 peak of the cores the tier uses: an FMA loop on all of them at once
  double measured_gflops = 0;           // a short f32 GEMM on the tier (0: not measured)
  double measured_bandwidth_gbs = 0;    // a GEMV whose weight is larger than L3 (memory-bound)
  int threads = 0;
  std::string gemm_shape;               // what was timed, e.g. "1024x1024x1024"
  std::string gemv_shape;               // e.g. "1x4096 · 4096x4096"
  // A tier with memory of its own (a GPU): the device and how its figures were measured; its
  // measured_gflops is then its bf16 tensor-core rate and measured_bandwidth_gbs its device
  // copy bandwidth (devices/gpu.h). "" for host tiers.
  std::string device;
};

// One point of the blas-vs-cpu crossover measurement.
struct CrossoverPoint {
  long long m = 0, k = 0, n = 0;
  double flops = 0;                     // 2·M·N·K
  double blas_seconds = 0, other_seconds = 0;  // best of a few runs
  bool blas_wins = false;               // blas at least 5% faster here
};

// One point of a row crossover: a tier against the tier below it on one product (see
// devices/stranded.h).
struct RowCrossoverPoint {
  long long m = 0, k = 0, n = 0;
  double tier_seconds = 0, other_seconds = 0;  // best of a few runs
};

// The rows M from which a tier takes a product from the tier below it (the amx tier's
// crossover), per compute path: "bf16" (f32 weights), "bf16-w16" (f16/bf16 weights), "int8".
struct RowCrossover {
  std::string tier, path, vs;  // "amx", "bf16", "cpu"
  long long rows = -1;         // takes products with M >= rows; -1: not measured; kNeverRows: never
  std::string note;
  std::vector<RowCrossoverPoint> points;
};
constexpr long long kNeverRows = 1ll << 40;

// One compute unit of the machine, for the stranded table of `strand devices`: its measured
// peak, the best any strand tier reaches on it, and so the share left idle.
struct ComputeUnit {
  std::string name;            // "FP32 FMA lanes (AVX-512)", "AVX-512-BF16 (vdpbf16ps)", "AMX tiles, bf16", ...
  std::string unit = "GFLOP/s";  // "GOP/s" for int8
  double peak = 0;             // measured: a loop of independent instructions on every thread
  std::string peak_how;        // what was timed
  std::string best_tier;       // the tier that reaches the most on this unit ("" when none uses it)
  double best = 0;             // what it reaches
  std::string best_how;        // what was timed (or why no tier uses the unit)
  bool idle_unknown = false;   // the peak was not measured apart from the tier: the idle share is unknown
  double stranded() const { return peak > 0 ? std::max(0.0, 1.0 - best / peak) : 0.0; }
};

struct DeviceReport {
  MachineInfo machine;
  std::vector<TierPeak> tiers;          // every tier compiled in (fastest first), then tiers not built
  double bandwidth_gbs = 0;             // measured memory read bandwidth, all threads
  // The 2·M·N·K from which blas takes a product from the tier below it (measured, see
  // crossover_from_points in devices/probe.h): +inf when it never should, -1 when it was not
  // measured (no blas tier, or nothing to compare it with).
  double blas_crossover_flops = -1;
  bool from_cache = false;
  std::string cache_path;               // "" when there is no cache location

  // Beyond the fields above:
  int threads = 1;                      // threads the measurement ran with
  std::string crossover_vs;             // the tier blas was timed against ("cpu")
  std::string crossover_note;           // how the crossover reads, in words
  std::vector<CrossoverPoint> crossover_points;
  std::string bandwidth_detail;         // "256 MiB buffer, 2 threads, best of 5"
  std::string bandwidth_reader;         // the reader (devices/readers.h) that reached bandwidth_gbs
  std::string peak_detail;              // how the peak was measured
  double peak_1thread_gflops = 0;       // the FMA loop on one thread
  bool busy = false;                    // measured while the machine was busy (devices/busy.h): not cached
  std::string busy_detail;              // why it counts as busy
  std::string measured_at;              // UTC time of the measurement (ISO 8601)
  std::string strand_version;
  bool quick = false;                   // measured with a tiny time budget (rough; never cached)
  std::vector<std::string> warnings;    // e.g. a corrupt cache that was ignored

  // The stranded table and the amx tier's crossovers (devices/stranded.h).
  std::vector<ComputeUnit> units;
  std::vector<std::string> units_absent;  // units not found here, with why ("AMX: no AMX-TILE in CPUID")
  std::vector<RowCrossover> row_crossovers;
};

// Measures (a few seconds) or reads the cache; the cache is keyed by CPU model + thread count
// + strand version (+ the OpenBLAS kernel). refresh: measure even when the cache has an entry.
DeviceReport probe_devices(bool refresh, int threads);

// FLOP per cycle per core for f32 that the widest FMA of this CPU design should give (what the
// measured peak can be read against; strand's peaks are measured, see devices/probe.h), and
// the reasoning in words, e.g. for Zen 4:
// "Zen 4: AVX-512 is double-pumped on two 256-bit FMA pipes: 2 × 8 lanes × 2 FLOP = 32".
double fp32_flops_per_cycle(const MachineInfo&, std::string* why = nullptr);

// How many copies of `bytes_per_copy` bytes, read one after another, fill an L3 of `l3_bytes`
// twice over, so that each is read from memory rather than the cache (what a decode does with
// a model's weights): 1 to 128, 1 when the L3 is unknown (0).
int copies_beyond_l3(double bytes_per_copy, double l3_bytes);

// The thread count strand's tiers use: STRAND_THREADS when set (a positive integer), else the
// number of logical CPUs this process may run on.
int default_thread_count();

// Whether an OpenBLAS core name is a generic / older kernel for this CPU, and what to say
// about it ("" when the kernel fits the CPU). Pure: tests feed it any name.
std::string openblas_kernel_note(const std::string& corename, const MachineInfo& m);

}  // namespace strand
