// strand devices — every tier this build has, whether it is usable here, what it reaches
// against its peak, memory bandwidth, the blas crossover, and the machine.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/error.h"
#include "devices/machine.h"
#include "devices/probe.h"
#include "devices/stranded.h"

namespace strand::cli {

namespace {

struct DevicesArgs {
  bool refresh = false;
  bool json = false;
  bool quick = false;
  int threads = 0;
};

std::string bytes_str(size_t b) {
  if (b == 0) return "?";
  if (b >= (size_t(1) << 20) && b % (size_t(1) << 20) == 0) return fmt::format("{} MiB", b >> 20);
  if (b >= 1024 && b % 1024 == 0) return fmt::format("{} KiB", b >> 10);
  return fmt::format("{} B", b);
}

std::string num(double v, int prec = 1) { return v > 0 ? fmt::format("{:.{}f}", v, prec) : "-"; }

std::string pct(double part, double whole) { return part > 0 && whole > 0 ? fmt::format("{:.0f}%", 100 * part / whole) : "-"; }

// 31000000 -> "3.1e7" (as the blas tier writes it in its reasons).
std::string sci(double f) {
  if (f < 0) return "not measured";
  if (std::isinf(f)) return "never";
  if (f < 1e4) return fmt::format("{:.0f}", f);
  int e = int(std::floor(std::log10(f)));
  double m = f / std::pow(10.0, e);
  if (m >= 9.95) m /= 10, ++e;
  return fmt::format("{:.1f}e{}", m, e);
}

void print_human(const DeviceReport& r) {
  const MachineInfo& m = r.machine;
  std::printf("strand devices — the compute tiers of this machine, and what each reaches\n");
  if (r.from_cache)
    std::printf("measurements from the cache %s (taken %s with %d threads; --refresh measures again)\n\n",
                display_path(r.cache_path).c_str(), r.measured_at.c_str(), r.threads);
  else if (r.quick)
    std::printf("measured just now with --quick (%d threads): rough numbers, not cached\n\n", r.threads);
  else if (r.busy)
    std::printf("measured just now (%d threads) on a BUSY machine (%s): figures read low, not cached; measure again "
                "when it is quiet\n\n",
                r.threads, r.busy_detail.c_str());
  else
    std::printf("measured just now (%d threads)%s\n\n", r.threads,
                r.cache_path.empty() ? "" : fmt::format("; cached in {}", display_path(r.cache_path)).c_str());

  std::printf("machine\n");
  std::string id = m.cpu_model;
  if (!m.vendor.empty() && m.cpu_family)
    id += fmt::format(" ({} family {} model {}{})", m.vendor, m.cpu_family, m.cpu_model_id,
                      m.uarch.empty() ? "" : ": " + m.uarch);
  else if (!m.uarch.empty())
    id += " (" + m.uarch + ")";
  std::printf("  %-10s %s, %s\n", "CPU", id.c_str(), m.arch.c_str());
  std::printf("  %-10s %d physical, %d logical\n", "cores", m.physical_cores, m.logical_cpus);
  std::string clock;
  if (m.base_ghz > 0) clock += fmt::format("{:.2f} GHz base", m.base_ghz);
  if (m.max_ghz > 0) clock += fmt::format("{}{:.2f} GHz max", clock.empty() ? "" : ", ", m.max_ghz);
  if (clock.empty()) clock = "unknown";
  if (!m.ghz_source.empty()) clock += " (" + m.ghz_source + ")";
  std::printf("  %-10s %s\n", "clock", clock.c_str());
  std::string simd;
  for (const auto& f : m.simd) simd += (simd.empty() ? "" : " ") + f;
  std::printf("  %-10s %s\n", "SIMD", simd.empty() ? "-" : simd.c_str());
  std::printf("  %-10s L1d %s, L2 %s per core; L3 %s\n", "caches", bytes_str(m.l1d_bytes).c_str(),
              bytes_str(m.l2_bytes).c_str(), bytes_str(m.l3_bytes).c_str());
  std::printf("  %-10s %s\n", "OS", m.os.c_str());
  std::printf("  %-10s %s\n", "compiler", m.compiler.c_str());
  if (m.openblas_version.empty())
    std::printf("  %-10s not built in\n", "OpenBLAS");
  else
    std::printf("  %-10s %s, %s kernel (config: %s)\n", "OpenBLAS", m.openblas_version.c_str(),
                m.openblas_corename.c_str(), m.openblas_config.c_str());
  if (!m.openblas_note.empty()) std::printf("  %-10s %s\n", "", m.openblas_note.c_str());
  if (const char* ct = std::getenv("OPENBLAS_CORETYPE"); ct && *ct)
    std::printf("  %-10s OPENBLAS_CORETYPE=%s is set in the environment\n", "", ct);
  std::printf("  %-10s %s\n", "oneDNN", m.onednn_version.empty() ? "not built in" : m.onednn_version.c_str());
  std::printf("  %-10s %s\n", "fp32 peak", r.peak_detail.c_str());
  std::printf("  %-10s %.1f GB/s read, the bound of memory-bound work (%s)\n\n", "memory", r.bandwidth_gbs,
              r.bandwidth_detail.c_str());

  std::printf("tiers, fastest first (peak: an FMA loop on the cores the tier uses, measured; GEMM: best f32 matmul;\n"
              "GEMV: 1-row matmul with a weight far larger than L3, in GB/s of the bytes it must read, against the\n"
              "memory bound above)\n");
  std::printf("  %-10s %-6s %7s %12s %12s %-16s %7s %10s %9s\n", "tier", "usable", "threads", "peak GFLOP/s",
              "GEMM GFLOP/s", "(shape)", "% peak", "GEMV GB/s", "% memory");
  for (const TierPeak& t : r.tiers) {
    std::printf("  %-10s %-6s %7s %12s %12s %-16s %7s %10s %9s\n", t.tier.c_str(), t.usable ? "yes" : "no",
                t.threads > 0 ? std::to_string(t.threads).c_str() : "-", num(t.peak_gflops).c_str(),
                num(t.measured_gflops).c_str(), t.gemm_shape.empty() ? "" : ("(" + t.gemm_shape + ")").c_str(),
                pct(t.measured_gflops, t.peak_gflops).c_str(), num(t.measured_bandwidth_gbs).c_str(),
                t.device.empty() ? pct(t.measured_bandwidth_gbs, r.bandwidth_gbs).c_str() : "-");
  }
  std::printf("  why:\n");
  for (const TierPeak& t : r.tiers) std::printf("    %-10s %s\n", t.tier.c_str(), t.why.c_str());
  for (const TierPeak& t : r.tiers)
    if (!t.device.empty())
      std::printf("  %s (its own memory: GEMM is its bf16 tensor-core rate, GEMV its device copy bandwidth):\n    %s\n",
                  t.tier.c_str(), t.device.c_str());

  std::printf("\nblas crossover%s: ", r.crossover_vs.empty() ? "" : (" against " + r.crossover_vs).c_str());
  if (r.blas_crossover_flops < 0)
    std::printf("not measured (%s)\n", r.crossover_note.c_str());
  else if (std::isinf(r.blas_crossover_flops))
    std::printf("never (%s)\n", r.crossover_note.c_str());
  else
    std::printf("2·M·N·K >= %s FLOP\n  %s\n", sci(r.blas_crossover_flops).c_str(), r.crossover_note.c_str());
  if (!r.crossover_points.empty()) {
    // Two columns that can differ: which tier was faster on that product, and which tier the
    // crossover gives it to (one threshold for all products cannot follow every point).
    std::printf("  %-20s %10s %10s %10s  %-18s %s\n", "M x K x N", "FLOP", "blas ms", (r.crossover_vs + " ms").c_str(),
                "faster here", "placed on");
    for (const CrossoverPoint& p : r.crossover_points) {
      const bool placed_blas = r.blas_crossover_flops >= 0 && p.flops >= r.blas_crossover_flops;
      std::printf("  %-20s %10s %10.3f %10.3f  %-18s %s\n", fmt::format("{} x {} x {}", p.m, p.k, p.n).c_str(),
                  sci(p.flops).c_str(), p.blas_seconds * 1e3, p.other_seconds * 1e3,
                  p.blas_wins ? "blas (by 5%+)" : r.crossover_vs.c_str(), placed_blas ? "blas" : r.crossover_vs.c_str());
    }
  }
  std::printf("\n");
  std::fputs(stranded_table(r).c_str(), stdout);
}

}  // namespace

Command add_devices(CLI::App& parent) {
  auto args = std::make_shared<DevicesArgs>();
  Command c;
  c.app = parent.add_subcommand("devices", "every compute tier, whether it is usable here, its peak and what it reaches");
  c.app->add_flag("--refresh", args->refresh, "measure again even when the cache has this machine");
  c.app->add_option("-t,--threads", args->threads, "threads to measure with (0: STRAND_THREADS or every CPU)")
      ->check(CLI::Range(1, 256));
  c.app->add_flag("--json", args->json, "print exactly one JSON value on stdout");
  c.app->add_flag("--quick", args->quick, "measure with a tiny time budget: rough numbers, never cached");
  c.app->footer(
      "Measures (a few seconds) a short f32 GEMM and a memory-bound GEMV on every usable tier, the memory read\n"
      "bandwidth, and the product size from which the blas tier beats the cpu tier (its crossover, which the\n"
      "blas tier then uses); caches the result in $STRAND_CACHE_DIR, $XDG_CACHE_HOME/strand or ~/.cache/strand.\n"
      "Example:\n  strand devices\n  strand devices --refresh --threads 4 --json");
  c.run = [args]() -> int {
    if (args->threads > 0) {
      // Every tier follows STRAND_THREADS; set it before any tier starts its threads.
      ::setenv("STRAND_THREADS", std::to_string(args->threads).c_str(), 1);
    }
    json_silences_progress(args->json);
    const int threads = args->threads > 0 ? args->threads : default_thread_count();
    const DeviceReport r =
        args->quick ? probe_devices(args->refresh, threads, quick_probe_budget()) : probe_devices(args->refresh, threads);
    for (const std::string& w : r.warnings) std::fprintf(stderr, "strand: warning: %s\n", w.c_str());
    if (args->json) {
      std::puts(to_json(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      print_human(r);
    }
    return 0;
  };
  return c;
}

}  // namespace strand::cli
