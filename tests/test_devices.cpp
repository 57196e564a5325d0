// strand devices: machine facts, measured peaks and memory readers, the busy-machine rule, the
// crossover rule, a probe with a tiny time budget, the device cache (round trip, corrupt files),
// and the `strand devices` command.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/blas/blas.h"
#include "cli_util.h"
#include "backends/cuda/cuda.h"
#include "devices/machine.h"
#include "devices/busy.h"
#include "devices/probe.h"
#include "devices/readers.h"

using namespace strand;
using json = nlohmann::json;
namespace fs = std::filesystem;
using strand::cli_test::run_strand;
using strand::cli_test::TempCacheDir;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();


// A tiny budget that still writes the cache (quick_probe_budget() never does), on a machine
// taken as quiet (the suite runs tests side by side: the machine is never quiet here).
ProbeBudget tiny_cached_budget() {
  ProbeBudget b = quick_probe_budget();
  b.quick = false;
  b.assume_quiet = true;
  return b;
}

MachineInfo synthetic(const std::string& vendor, int family, int model, std::vector<std::string> simd) {
  MachineInfo m;
  m.arch = "x86_64";
  m.vendor = vendor;
  m.cpu_family = family;
  m.cpu_model_id = model;
  m.simd = std::move(simd);
  m.physical_cores = 2;
  m.logical_cpus = 4;
  m.base_ghz = 2.6;
  return m;
}

const TierPeak* find_tier(const DeviceReport& r, const std::string& name) {
  for (const TierPeak& t : r.tiers)
    if (t.tier == name) return &t;
  return nullptr;
}

}  // namespace

TEST(Machine, InfoIsSane) {
  const MachineInfo m = machine_info();
  EXPECT_FALSE(m.cpu_model.empty());
  EXPECT_GE(m.physical_cores, 1);
  EXPECT_GE(m.logical_cpus, m.physical_cores);
  EXPECT_FALSE(m.os.empty());
  EXPECT_FALSE(m.compiler.empty());
  EXPECT_GE(m.base_ghz, 0.0);
  EXPECT_GE(m.max_ghz, 0.0);
#if defined(__x86_64__)
  ASSERT_FALSE(m.simd.empty());
  EXPECT_TRUE(m.has("sse2")) << "x86-64 always has SSE2";
  EXPECT_FALSE(m.vendor.empty());
  EXPECT_GT(m.cpu_family, 0);
#endif
#if defined(__linux__)
  if (fs::exists("/sys/devices/system/cpu/cpu0/cache/index0")) EXPECT_GT(m.l1d_bytes, 0u);
#endif
  if (blas_library_info().built) {
    EXPECT_FALSE(m.openblas_version.empty());
    EXPECT_FALSE(m.openblas_corename.empty());
  } else {
    EXPECT_TRUE(m.openblas_version.empty());
  }
  const std::string line = machine_summary_line();
  EXPECT_NE(line.find(m.cpu_model), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
}

TEST(Machine, FlopsPerCycleFollowsTheIsa) {
  std::string why;
  EXPECT_EQ(fp32_flops_per_cycle(synthetic("AuthenticAMD", 25, 17, {"avx2", "fma", "avx512f"}), &why), 32);
  EXPECT_NE(why.find("double-pumped"), std::string::npos) << why;
  EXPECT_EQ(fp32_flops_per_cycle(synthetic("AuthenticAMD", 25, 1, {"avx2", "fma"})), 32);   // Zen 3
  EXPECT_EQ(fp32_flops_per_cycle(synthetic("AuthenticAMD", 23, 1, {"avx2", "fma"})), 16);   // Zen 1
  EXPECT_EQ(fp32_flops_per_cycle(synthetic("AuthenticAMD", 26, 2, {"avx2", "fma", "avx512f"})), 64);  // Zen 5
  EXPECT_EQ(fp32_flops_per_cycle(synthetic("GenuineIntel", 6, 0x8f, {"avx2", "fma", "avx512f"})), 64);
  EXPECT_EQ(fp32_flops_per_cycle(synthetic("GenuineIntel", 6, 0x3c, {"avx", "avx2", "fma"})), 32);
  EXPECT_EQ(fp32_flops_per_cycle(synthetic("GenuineIntel", 6, 0x2a, {"avx"})), 16);
  EXPECT_EQ(fp32_flops_per_cycle(synthetic("GenuineIntel", 6, 0x1a, {"sse2"})), 8);
  MachineInfo arm;
  arm.arch = "aarch64";
  arm.simd = {"neon"};
  EXPECT_EQ(fp32_flops_per_cycle(arm), 16);
}

TEST(Machine, OpenBlasGenericKernelIsNamed) {
  const MachineInfo avx512 = synthetic("GenuineIntel", 6, 0x55, {"avx", "avx2", "fma", "avx512f"});
  EXPECT_EQ(openblas_kernel_note("Prescott", avx512),
            "OpenBLAS picked the generic Prescott kernel on this AVX-512 CPU; expect low GFLOP/s; "
            "OPENBLAS_CORETYPE=SkylakeX may help");
  EXPECT_NE(openblas_kernel_note("Core2", avx512).find("generic Core2"), std::string::npos);
  EXPECT_NE(openblas_kernel_note("Haswell", avx512).find("AVX2 Haswell kernel"), std::string::npos);
  EXPECT_EQ(openblas_kernel_note("SkylakeX", avx512), "");
  EXPECT_EQ(openblas_kernel_note("Cooperlake", avx512), "");
  const MachineInfo avx2 = synthetic("GenuineIntel", 6, 0x3c, {"avx", "avx2", "fma"});
  EXPECT_EQ(openblas_kernel_note("Haswell", avx2), "");
  EXPECT_NE(openblas_kernel_note("Prescott", avx2).find("OPENBLAS_CORETYPE=Haswell"), std::string::npos);
  const MachineInfo zen4 = synthetic("AuthenticAMD", 25, 17, {"avx", "avx2", "fma", "avx512f"});
  EXPECT_NE(openblas_kernel_note("Zen", zen4).find("little is lost"), std::string::npos);
  EXPECT_EQ(openblas_kernel_note("SomethingNew", avx512), "");  // unknown names: no claim
}

TEST(Machine, DefaultThreadCountFollowsStrandThreads) {
  const char* old = std::getenv("STRAND_THREADS");
  const std::string saved = old ? old : "";
  ::setenv("STRAND_THREADS", "3", 1);
  EXPECT_EQ(default_thread_count(), 3);
  ::setenv("STRAND_THREADS", "zero", 1);
  EXPECT_GE(default_thread_count(), 1);
  if (old)
    ::setenv("STRAND_THREADS", saved.c_str(), 1);
  else
    ::unsetenv("STRAND_THREADS");
}

TEST(Devices, CrossoverFromPoints) {
  // A point: its size, blas's time, the other tier's time.
  auto pt = [](double flops, double blas, double other) {
    CrossoverPoint p;
    p.flops = flops;
    p.blas_seconds = blas;
    p.other_seconds = other;
    p.blas_wins = 1.05 * blas < other;
    return p;
  };
  EXPECT_EQ(crossover_from_points({}), -1);
  // blas slower on small products, faster on large ones.
  EXPECT_EQ(crossover_from_points({pt(1, 2, 1), pt(10, 1, 2), pt(100, 1, 2)}), 10);
  EXPECT_EQ(crossover_from_points({pt(1, 1, 2), pt(10, 1, 2)}), 1);
  // Slower everywhere, or only a tie: never.
  EXPECT_EQ(crossover_from_points({pt(1, 2, 1), pt(100, 2, 1)}), kInf);
  EXPECT_EQ(crossover_from_points({pt(1, 1, 1), pt(100, 1, 1)}), kInf);
  EXPECT_EQ(crossover_from_points({pt(1, 1.04, 1), pt(100, 1.0, 1.04)}), kInf);  // within 5%: cpu keeps it
  // One noisy loss among many large wins does not push the threshold up...
  EXPECT_EQ(crossover_from_points({pt(1, 3, 1), pt(10, 1, 3), pt(20, 1, 3), pt(30, 1.2, 1), pt(40, 1, 3), pt(50, 1, 3)}),
            10);
  // ...and one noisy win among small losses does not pull it down.
  EXPECT_EQ(crossover_from_points({pt(1, 3, 1), pt(2, 1, 1.1), pt(3, 3, 1), pt(4, 3, 1), pt(50, 1, 3), pt(60, 1, 3)}),
            50);
}

TEST(Devices, ReadBandwidthIsMeasured) {
  int runs = 0;
  const double gbs = measure_read_bandwidth(size_t(4) << 20, 2, 0.01, &runs);
  EXPECT_GT(gbs, 0.1);
  EXPECT_GE(runs, 3);
}

TEST(Devices, BandwidthMeterMeasuresAgainAndAgain) {
  ReadBandwidthMeter meter(size_t(4) << 20, 2);
  EXPECT_GE(meter.bytes(), size_t(4) << 20);
  for (int i = 0; i < 3; ++i) {
    int runs = 0;
    const double gbs = meter.measure(0.005, &runs);
    EXPECT_GT(gbs, 0.1);
    EXPECT_TRUE(std::isfinite(gbs));
    EXPECT_GE(runs, 3);
  }
  ReadBandwidthMeter one(1000, 1);  // tiny and single-threaded still works
  EXPECT_GT(one.measure(0.001), 0.0);
}

TEST(Devices, FmaPeakIsMeasuredOnEveryThreadAtOnce) {
  double spread = 0;
  const double one = measure_fma_peak_gflops(1, 0.02, &spread);
  EXPECT_GT(one, 0.1);
  EXPECT_DOUBLE_EQ(spread, 1.0);  // one thread: nothing to spread over
  const double two = measure_fma_peak_gflops(2, 0.02, &spread);
  EXPECT_GT(two, 0.1);
  EXPECT_GE(spread, 1.0);
}

TEST(Devices, EveryMemoryReaderRunsAndAgrees) {
  // Each reader returns the sum of the words it read: the same value for the same buffer.
  std::vector<uint64_t, std::allocator<uint64_t>> buf(size_t(1) << 16);  // 512 KiB, a multiple of 64 words
  uint64_t* p = static_cast<uint64_t*>(::operator new(buf.size() * 8, std::align_val_t(64)));
  uint64_t expect = 0;
  for (size_t i = 0; i < buf.size(); ++i) expect += (p[i] = i * 2654435761u);
  ASSERT_GE(memory_readers().size(), 2u);
  for (const MemoryReader& r : memory_readers()) EXPECT_EQ(r.read(p, buf.size()), expect) << r.name;
  ::operator delete(p, std::align_val_t(64));
  ReadBandwidthMeter meter(size_t(4) << 20, 2);
  meter.measure(0.01);
  EXPECT_EQ(meter.last().size(), memory_readers().size());
  for (const auto& x : meter.last()) EXPECT_LE(x.gbs, meter.best().gbs) << x.name;
}

TEST(Devices, BusyMachineIsJudgedByOthersCpuAndSpread) {
  EXPECT_FALSE(judge_busy(0.05, 1.1).busy);
  EXPECT_FALSE(judge_busy(-1, 0).busy);  // unknown counts as quiet
  const BusyVerdict cpu = judge_busy(0.45, 1.1);
  EXPECT_TRUE(cpu.busy);
  EXPECT_NE(cpu.why.find("45%"), std::string::npos) << cpu.why;
  EXPECT_FALSE(judge_busy(0.0, 1.8).busy);  // memory that moves from moment to moment is not a busy machine
  const BusyVerdict spread = judge_busy(0.0, 2.4);
  EXPECT_TRUE(spread.busy);
  EXPECT_NE(spread.why.find("2.40x"), std::string::npos) << spread.why;
  // A busy measurement is reported as such and never cached.
  TempCacheDir cache;
  ProbeBudget b = quick_probe_budget();
  b.quick = false;
  b.assume_quiet = false;
  const DeviceReport r = probe_devices(true, 2, b);
  EXPECT_TRUE(r.busy);
  EXPECT_FALSE(r.busy_detail.empty());
  EXPECT_FALSE(fs::exists(cache.file())) << "a measurement from a busy machine was cached";
  // A process that keeps a core busy shows up as other processes' CPU time.
  const BusyMeter m;
  const pid_t child = ::fork();
  if (child == 0) {
    const auto t0 = std::chrono::steady_clock::now();
    volatile uint64_t x = 0;
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(300)) x = x + 1;
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_GT(m.others_share(), 0.1) << "a child spinning 300 ms on one of the CPUs";
}

TEST(Devices, QuickProbeMeasuresEveryUsableTier) {
  TempCacheDir cache;
  const DeviceReport r = probe_devices(true, 2, quick_probe_budget());
  EXPECT_FALSE(r.from_cache);
  EXPECT_TRUE(r.quick);
  EXPECT_EQ(r.threads, 2);
  EXPECT_GT(r.bandwidth_gbs, 0);
  // Measured twice, before and after the tiers; the higher one is the figure.
  EXPECT_NE(r.bandwidth_detail.find(" s later; "), std::string::npos) << r.bandwidth_detail;
  EXPECT_NE(r.bandwidth_detail.find(fmt::format("{:.1f}", r.bandwidth_gbs)), std::string::npos)
      << r.bandwidth_detail;
  EXPECT_FALSE(fs::exists(cache.file())) << "a quick probe must not be cached";

  const TierPeak* naive = find_tier(r, "naive");
  ASSERT_NE(naive, nullptr);
  EXPECT_TRUE(naive->usable);
  EXPECT_EQ(naive->threads, 1);
  EXPECT_GT(naive->measured_gflops, 0);
  EXPECT_GT(naive->measured_bandwidth_gbs, 0);
  EXPECT_FALSE(naive->gemm_shape.empty());
  for (const char* name : {"cuda", "metal", "coreml"}) {
    const TierPeak* t = find_tier(r, name);
    ASSERT_NE(t, nullptr) << name;
    // The cuda tier is built wherever the CUDA toolkit is: on a machine without a GPU it is
    // listed as not usable, with the reason.
    if (std::string(name) == "cuda" && cuda_device_info().built) {
      if (cuda_device_info().available) continue;
      EXPECT_FALSE(t->usable);
      EXPECT_FALSE(t->why.empty());
      continue;
    }
    EXPECT_FALSE(t->usable);
    EXPECT_EQ(t->why.rfind("not built", 0), 0u) << t->why;
  }
  const TierPeak* blas = find_tier(r, "blas");
  ASSERT_NE(blas, nullptr);
  if (blas_library_info().built) {
    EXPECT_TRUE(blas->usable);
    EXPECT_GT(blas->measured_gflops, 0);
    EXPECT_GT(blas->peak_gflops, 0);
    EXPECT_FALSE(r.crossover_vs.empty());
    EXPECT_FALSE(r.crossover_points.empty());
    EXPECT_TRUE(r.blas_crossover_flops >= 0) << r.blas_crossover_flops;
  } else {
    EXPECT_FALSE(blas->usable);
    EXPECT_EQ(r.blas_crossover_flops, -1);
  }
}

TEST(Devices, CacheRoundTrip) {
  TempCacheDir cache;
  EXPECT_EQ(device_cache_path(), cache.file().string());
  const DeviceReport a = probe_devices(false, 2, tiny_cached_budget());
  EXPECT_FALSE(a.from_cache);
  ASSERT_TRUE(fs::exists(cache.file()));
  for (const std::string& w : a.warnings) EXPECT_EQ(w.find("cache"), std::string::npos) << w;

  const DeviceReport b = probe_devices(false, 2, tiny_cached_budget());
  EXPECT_TRUE(b.from_cache);
  EXPECT_EQ(b.cache_path, cache.file().string());
  EXPECT_EQ(b.bandwidth_gbs, a.bandwidth_gbs);
  EXPECT_EQ(b.blas_crossover_flops, a.blas_crossover_flops);
  EXPECT_EQ(b.measured_at, a.measured_at);
  ASSERT_EQ(b.tiers.size(), a.tiers.size());
  for (size_t i = 0; i < a.tiers.size(); ++i) {
    EXPECT_EQ(b.tiers[i].tier, a.tiers[i].tier);
    EXPECT_EQ(b.tiers[i].measured_gflops, a.tiers[i].measured_gflops);
  }
  // Another thread count is another entry; --refresh measures again.
  EXPECT_FALSE(probe_devices(false, 1, tiny_cached_budget()).from_cache);
  EXPECT_TRUE(probe_devices(false, 1, tiny_cached_budget()).from_cache);
  EXPECT_TRUE(probe_devices(false, 2, tiny_cached_budget()).from_cache);
  const DeviceReport fresh = probe_devices(true, 2, tiny_cached_budget());
  EXPECT_FALSE(fresh.from_cache);
  const json file = json::parse(std::ifstream(cache.file()));
  EXPECT_EQ(file["entries"].size(), 2u);

  // The blas tier reads the same entry (the latest measurement).
  const CachedCrossover c = cached_blas_crossover(2);
  EXPECT_EQ(c.found, fresh.blas_crossover_flops >= 0);
  if (c.found) EXPECT_EQ(c.flops, fresh.blas_crossover_flops);
}

TEST(Devices, JsonRoundTripKeepsNeverAndNotMeasured) {
  DeviceReport r;
  r.machine = machine_info();
  r.threads = 3;
  r.bandwidth_gbs = 12.5;
  r.tiers.push_back({"naive", true, "always available", 83.2, 1.5, 3.1, 1, "256x256x256", "1x4096 · 4096x4096"});
  for (double f : {-1.0, kInf, 3.1e7}) {
    r.blas_crossover_flops = f;
    const json j = to_json(r);
    const DeviceReport back = report_from_json(json::parse(j.dump()));
    EXPECT_EQ(back.blas_crossover_flops, f);
    EXPECT_EQ(back.threads, 3);
    ASSERT_EQ(back.tiers.size(), 1u);
    EXPECT_EQ(back.tiers[0].gemm_shape, "256x256x256");
    EXPECT_EQ(back.machine.cpu_model, r.machine.cpu_model);
    EXPECT_EQ(back.machine.simd, r.machine.simd);
  }
  EXPECT_EQ(to_json(r)["blas_crossover_flops"], 3.1e7);
  r.blas_crossover_flops = kInf;
  EXPECT_EQ(to_json(r)["blas_crossover_flops"], "never");
  EXPECT_THROW(report_from_json(json{{"machine", 1}}), std::exception);
}

TEST(Devices, CorruptCacheIsIgnoredWithAWarning) {
  TempCacheDir cache;
  const std::vector<std::string> bad = {
      "{\"format\": \"strand-devices\", \"entries\": [",                             // cut short
      "[1, 2, 3]",                                                                   // not ours
      "\x01\x02 binary junk",                                                        // not JSON at all
  };
  for (const std::string& text : bad) {
    std::ofstream(cache.file(), std::ios::binary | std::ios::trunc) << text;
    DeviceReport r;
    ASSERT_NO_THROW(r = probe_devices(false, 2, quick_probe_budget()));
    EXPECT_FALSE(r.from_cache);
    ASSERT_FALSE(r.warnings.empty()) << text;
    EXPECT_NE(r.warnings.front().find("ignored"), std::string::npos) << r.warnings.front();
    EXPECT_FALSE(cached_blas_crossover(2).found);
    EXPECT_FALSE(cached_blas_crossover(2).warning.empty());
  }
  // A well-formed file whose entry for this machine is damaged.
  DeviceReport good;
  good.machine = machine_info();
  good.threads = 2;
  json file = {{"format", "strand-devices"},
               {"format_version", device_cache_format_version()},
               {"entries", json::array({{{"key", device_cache_key(good.machine, 2)}, {"report", {{"tiers", "oops"}}}}})}};
  std::ofstream(cache.file(), std::ios::trunc) << file.dump();
  DeviceReport r;
  ASSERT_NO_THROW(r = probe_devices(false, 2, tiny_cached_budget()));
  EXPECT_FALSE(r.from_cache);
  ASSERT_FALSE(r.warnings.empty());
  EXPECT_NE(r.warnings.front().find("damaged"), std::string::npos) << r.warnings.front();
  // The measurement replaced the damaged entry: the next probe reads it.
  EXPECT_TRUE(probe_devices(false, 2, tiny_cached_budget()).from_cache);
}

TEST(DevicesCli, JsonIsOneValue) {
  TempCacheDir cache;
  const auto r = run_strand({"devices", "--quick", "--json", "--threads", "2"});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  EXPECT_FALSE(strand::cli_test::has_sanitizer_report(r.err)) << r.describe();
  json j;
  ASSERT_NO_THROW(j = json::parse(r.out)) << r.describe();  // parse() rejects anything after the value
  EXPECT_TRUE(j.is_object());
  EXPECT_EQ(j["threads"], 2);
  EXPECT_TRUE(j["quick"].get<bool>());
  EXPECT_FALSE(j["machine"]["cpu_model"].get<std::string>().empty());
  bool naive = false;
  for (const json& t : j["tiers"]) naive = naive || t["tier"] == "naive";
  EXPECT_TRUE(naive) << r.out;
  EXPECT_TRUE(j["blas_crossover_flops"].is_number() || j["blas_crossover_flops"].is_null() ||
              j["blas_crossover_flops"] == "never");
}

TEST(DevicesCli, HumanTableHelpAndErrors) {
  TempCacheDir cache;
  const auto r = run_strand({"devices", "--quick"});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  for (const char* s : {"machine", "tiers", "naive", "cuda", "not built", "GB/s", "blas crossover", "fp32 peak"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;

  const auto h = run_strand({"devices", "-h"});
  EXPECT_EQ(h.exit_code, 0) << h.describe();
  EXPECT_NE(h.out.find("Example"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("--refresh"), std::string::npos) << h.out;

  const auto bad = run_strand({"devices", "--threads", "0"});
  EXPECT_EQ(bad.exit_code, 1) << bad.describe();
  EXPECT_EQ(bad.err_lines().size(), 1u) << bad.describe();

  // A corrupt cache is a warning on stderr, never a crash.
  { std::ofstream f(cache.file()); f << "not json"; }
  const auto c = run_strand({"devices", "--quick", "--json"});
  ASSERT_TRUE(c.exited && c.exit_code == 0) << c.describe();
  EXPECT_FALSE(strand::cli_test::has_sanitizer_report(c.err)) << c.describe();
  EXPECT_NE(c.err.find("warning"), std::string::npos) << c.describe();
  EXPECT_TRUE(json::accept(c.out)) << c.describe();
}
