// strand/devices/stranded.h — the compute units of this machine, and what strand leaves idle.
//
// `strand devices` ends with the stranded table: every compute unit it finds, its measured peak
// (a loop of independent instructions on every thread), the best any strand tier reaches on it,
// and the share left idle — a unit no tier uses shows as 100% stranded instead of not showing.
//   FP32 FMA lanes     peak: cpu::fma_loop_flops (the widest FMA this CPU runs);
//                      best: the highest f32 GEMM of the tiers that compute on them (cpu, blas,
//                      naive), from the tiers table;
//   AVX-512-BF16       (CPUID avx512_bf16) peak: independent vdpbf16ps; best: the avx512bf16
//                      tier's f32-weight GEMM from the tiers table (a tier that runs only when
//                      named: in the default chains this unit stays idle);
//   AVX-512-FP16       (CPUID avx512_fp16) peak: independent vfmadd231ph; no tier uses it yet;
//   AMX tiles bf16     (amx usable) peak: independent TDPBF16PS; best: the amx tier's f32-weight
//                      GEMM from the tiers table (bf16 tiles);
//   AMX tiles int8     peak: independent TDPBSSD; best: the amx tier on a q8 product
//                      (512 x 768 · 768 x 3072, GPT-2's MLP);
//   a GPU, the ANE     listed as not found, with why, until a tier for them is built here.
// Where the amx tier is usable it also measures the amx tier's row crossovers against the cpu
// tier (bf16 path with f32 weights, int8 path with q8 weights), and the avx512bf16 tier's (bf16),
// which the tiers then read from the device cache (cached_row_crossovers).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "devices/machine.h"
#include "devices/probe.h"

namespace strand {

// Fills r.units, r.units_absent and r.row_crossovers; sets the amx (avx512bf16) tier's peak in
// r.tiers to the measured bf16 tile (vdpbf16ps) peak. Runs after the tiers' GEMMs are measured.
void measure_compute_units(const std::vector<std::shared_ptr<Backend>>& all, const ProbeBudget& budget,
                           DeviceReport& r);

// `tier` against `opponent` on [M, K] · [K, N] products with a graph weight in `weights` (f32
// stored column-major as strand runs models; q8 blocked along K), every M of `ms` against every
// (K, N) of `kn`: best of a few runs each (after a warm-up run, which packs the weights).
RowCrossover measure_row_crossover(Backend& tier, Backend& opponent, DType weights, const std::vector<int64_t>& ms,
                                   const std::vector<std::pair<int64_t, int64_t>>& kn, double seconds_per_point);

// The threshold R (the tier takes products with M >= R) that minimizes the sum over points of
// the chosen tier's time divided by the faster tier's time, the tier's times counted 5% worse
// (a near tie stays below). Candidates: the measured M values and kNeverRows; ties keep the
// larger. -1 when there are no points.
long long crossover_rows_from_points(const std::vector<RowCrossoverPoint>& points);

// The cached crossovers of `tier` at `threads` threads (-1 where not measured).
struct CachedRowCrossovers {
  long long bf16 = -1, bf16_w16 = -1, int8 = -1;  // paths "bf16", "bf16-w16", "int8"
  std::string path;     // the cache file, ~ for $HOME
  std::string warning;  // the cache exists but could not be read
};
CachedRowCrossovers cached_row_crossovers(const std::string& tier, int threads);

// DeviceReport's units, units_absent and row_crossovers <-> JSON (in the report's object).
void units_to_json(const DeviceReport& r, nlohmann::json& j);
void units_from_json(const nlohmann::json& j, DeviceReport& r);

// The stranded table as `strand devices` prints it (several lines, newline-terminated).
std::string stranded_table(const DeviceReport& r);

// Peak loops of the SIMD matrix instructions on the calling thread, FLOP/s over about
// `seconds`; 0 when this build has no such code or the CPU lacks the instruction.
double bf16_dot_loop_flops(double seconds);  // vdpbf16ps zmm (AVX512_BF16): 64 FLOP each
double fp16_fma_loop_flops(double seconds);  // vfmadd231ph zmm (AVX512_FP16): 64 FLOP each
// The AMX tile loops (backends/amx/kernels.h) timed the same way: FLOP/s (bf16) and OP/s (int8)
// of independent tdpbf16ps / tdpbssd on the calling thread; 0 where amx_status() is not usable.
double amx_bf16_loop_flops(double seconds);
double amx_int8_loop_ops(double seconds);

}  // namespace strand
