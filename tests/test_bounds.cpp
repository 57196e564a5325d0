// The bounds strand measures tiers against hold: no tier reads memory faster than the memory
// bound, and no tier computes faster than its FP32 peak. A tier above 100% of its bound means
// the bound is wrong (too few readers, a peak computed instead of measured), so these fail.
//
// Timed, so they run on their own (CTest RUN_SERIAL, see tests/CMakeLists.txt), and are skipped
// -- saying so -- when the machine is visibly busy (devices/busy.h): then neither figure means
// anything.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "backends/cpu/threadpool.h"
#include "backends/registry.h"
#include "devices/busy.h"
#include "devices/machine.h"
#include "devices/probe.h"

using namespace strand;

namespace {

std::shared_ptr<Backend> cpu_tier() {
  for (const auto& b : all_backends())
    if (b->name() == "cpu" && b->probe().ok) return b;
  return nullptr;
}

}  // namespace

TEST(Bounds, CpuTierGemvStaysWithinTheMemoryBound) {
  const auto cpu = cpu_tier();
  if (!cpu) GTEST_SKIP() << "no usable cpu tier";
  const MachineInfo m = machine_info();
  const int threads = default_thread_count();
  // As strand devices measures: a weight 4x the L3 or 256 MiB, read from memory.
  const size_t bytes = std::max<size_t>(size_t(256) << 20, 4 * m.l3_bytes);
  const int64_t side = int64_t(std::sqrt(double(bytes) / 4.0)) / 64 * 64;
  ReadBandwidthMeter meter(bytes, threads);
  const BusyMeter busy;
  // Interleaved, best of five each: both see the same moments of the machine.
  double bound = 0, gemv = 0, worst_spread = 0;
  for (int r = 0; r < 5; ++r) {
    bound = std::max(bound, meter.measure(0.2));
    worst_spread = std::max(worst_spread, meter.best().spread);
    gemv = std::max(gemv, measure_tier_gemv_gbs(*cpu, side, 0.2));
  }
  const BusyVerdict v = judge_busy(busy.others_share(), worst_spread);
  if (v.busy) GTEST_SKIP() << "the machine is busy (" << v.why << "): the ratio check means nothing now";
  ASSERT_GT(bound, 0);
  ASSERT_GT(gemv, 0);
  EXPECT_LE(gemv, bound) << fmt::format(
      "the cpu tier's GEMV read {:.2f} GB/s, {:.1f}% of the memory bound {:.2f} GB/s (best reader {}): the bound is "
      "too low",
      gemv, 100 * gemv / bound, bound, meter.best().name);
  std::printf("[ bounds ] GEMV %.2f GB/s = %.1f%% of the memory bound %.2f GB/s (%s), %d thread(s)\n", gemv,
              100 * gemv / bound, bound, meter.best().name.c_str(), threads);
}

TEST(Bounds, CpuTierGemmStaysWithinTheMeasuredPeak) {
  const auto cpu = cpu_tier();
  if (!cpu) GTEST_SKIP() << "no usable cpu tier";
  const int threads = cpu::ThreadPool::global().size();
  const BusyMeter busy;
  double peak = 0, gemm = 0, worst_spread = 0;
  for (int r = 0; r < 3; ++r) {
    double spread = 0;
    peak = std::max(peak, measure_fma_peak_gflops(threads, 0.2, &spread));
    worst_spread = std::max(worst_spread, spread);
    gemm = std::max(gemm, measure_tier_gemm_gflops(*cpu, 512, 0.3));
  }
  const BusyVerdict v = judge_busy(busy.others_share(), worst_spread);
  if (v.busy) GTEST_SKIP() << "the machine is busy (" << v.why << "): the ratio check means nothing now";
  ASSERT_GT(peak, 0);
  ASSERT_GT(gemm, 0);
  EXPECT_LE(gemm, peak) << fmt::format("the cpu tier's GEMM reached {:.1f} GFLOP/s, above the measured FP32 peak "
                                       "{:.1f} GFLOP/s of {} thread(s): the peak is too low",
                                       gemm, peak, threads);
  std::printf("[ bounds ] GEMM 512^3 %.1f GFLOP/s = %.1f%% of the FP32 peak %.1f GFLOP/s, %d thread(s)\n", gemm,
              100 * gemm / peak, peak, threads);
}
