// strand bench gemm — the GEMM ladder: every rung on square sizes and the GPT-2 shapes.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "backends/cpu/threadpool.h"
#include "backends/cuda/cuda.h"
#include "bench/gemm_ladder.h"
#include "core/error.h"
#include "core/progress.h"

namespace strand::cli {

namespace {

struct BenchGemmArgs {
  std::string sizes;
  bool gpt2 = false;
  int threads = 0;
  int reps = 7;
  std::string format = "md";
  bool json = false;
  std::string rungs;
  double max_seconds = 900;
  double max_cell_seconds = 20;
  std::string dtype = "f32";
  bool gpu = false;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s + ",") {
    if (ch == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (ch != ' ') {
      cur += ch;
    }
  }
  return out;
}

// --gpu: the GPU's rungs (the cuda tier's own kernels, cuBLASLt per dtype, strand's GEMV), in
// TFLOP/s against the GPU's measured bf16 tensor-core rate.
int run_gpu(const BenchGemmArgs& a, const std::vector<int64_t>& sizes) {
  const CudaDeviceInfo d = cuda_device_info();
  if (!d.available) fail("--gpu: {}", d.why);
  std::vector<CudaGemmShape> shapes;
  for (int64_t n : sizes) shapes.push_back({fmt::format("{0}x{0}x{0}", n), n, n, n});
  if (a.gpt2)
    for (const auto& [label, m, k, n] : std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>>{
             {"124M c_attn, 1 token", 1, 768, 2304},       {"124M lm_head, 1 token", 1, 768, 50257},
             {"124M c_fc, 512 tokens", 512, 768, 3072},    {"XL c_attn, 1 token", 1, 1600, 4800},
             {"XL c_fc, 2048 tokens", 2048, 1600, 6400},   {"XL mlp.c_proj, 2048 tokens", 2048, 6400, 1600},
             {"XL lm_head, 2048 tokens", 2048, 1600, 50257}})
      shapes.push_back({label, m, n, k});
  json_silences_progress(a.json || a.format == "json");
  const bool show = progress_enabled();  // a terminal or --progress; never with --quiet or --json
  const CudaPeaks peak = measure_cuda_peaks(false);
  const std::vector<CudaGemmCell> cells = cuda_gemm_ladder(shapes, a.reps, [show](const std::string& line) {
    if (show) std::fprintf(stderr, "%s\n", line.c_str());
  });
  const std::string format = a.json ? "json" : a.format;
  if (format == "json") {
    nlohmann::json j;
    j["gpu"] = d.summary();
    j["bf16_peak_tflops"] = peak.bf16_tflops;
    j["bf16_peak_detail"] = peak.bf16_detail;
    j["copy_gbs"] = peak.copy_gbs;
    nlohmann::json rows = nlohmann::json::array();
    for (const CudaGemmCell& c : cells)
      rows.push_back({{"rung", c.rung}, {"what", c.what}, {"shape", c.shape}, {"M", c.M}, {"N", c.N}, {"K", c.K},
                      {"tflops_median", c.tflops_median}, {"tflops_min", c.tflops_min}, {"tflops_max", c.tflops_max},
                      {"gbs", c.gbs_median}, {"reps", c.reps}, {"note", c.note}});
    j["results"] = rows;
    std::puts(j.dump(2).c_str());
    return 0;
  }
  std::string o = fmt::format("gpu: {}\nbf16 tensor-core peak {:.1f} TFLOP/s ({}); device copy {:.0f} GB/s\n",
                              d.summary(), peak.bf16_tflops, peak.bf16_detail, peak.copy_gbs);
  o += "TFLOP/s: median over the timed runs (min-max), timed with CUDA events after 2 warm-ups on random inputs; "
       "% peak against the bf16 rate above; GB/s: A, B and C once\n\n";
  o += "| shape | rung | TFLOP/s (min-max) | % bf16 peak | GB/s | note |\n|---|---|---:|---:|---:|---|\n";
  for (const CudaGemmCell& c : cells)
    o += c.reps == 0 ? fmt::format("| {} | {} | - | - | - | {} |\n", c.shape, c.rung, c.note)
                     : fmt::format("| {} | {} | {:.2f} ({:.2f}-{:.2f}) | {:.1f}% | {:.0f} | {} |\n", c.shape, c.rung,
                                   c.tflops_median, c.tflops_min, c.tflops_max,
                                   100.0 * c.tflops_median / peak.bf16_tflops, c.gbs_median, c.note);
  std::fwrite(o.data(), 1, o.size(), stdout);
  return 0;
}

int run(const BenchGemmArgs& a, bool sizes_given) {
  if (a.gpu) {
    std::vector<int64_t> sizes;
    for (const std::string& t : split_list(sizes_given ? a.sizes : (a.gpt2 ? "" : "1024,4096,8192"))) {
      size_t used = 0;
      long long v = 0;
      try {
        v = std::stoll(t, &used);
      } catch (...) {
        used = 0;
      }
      if (used != t.size() || v < 1 || v > 16384) fail("--sizes: '{}' is not a size from 1 to 16384", t);
      sizes.push_back(v);
    }
    if (a.reps < 1 || a.reps > 1000) fail("--reps: {} is not from 1 to 1000", a.reps);
    return run_gpu(a, sizes);
  }
  bench::LadderOptions o;
  if (sizes_given) {
    for (const std::string& t : split_list(a.sizes)) {
      size_t used = 0;
      long long v = 0;
      try {
        v = std::stoll(t, &used);
      } catch (...) {
        used = 0;
      }
      if (used != t.size() || v < 1 || v > 16384) fail("--sizes: '{}' is not a size from 1 to 16384", t);
      o.sizes.push_back(v);
    }
    if (o.sizes.empty() && !a.gpt2) fail("--sizes: no sizes given (e.g. --sizes 256,1024)");
  } else if (!a.gpt2) {
    o.sizes = {128, 256, 512, 1024, 2048};
  }
  o.gpt2 = a.gpt2;
  if (a.threads < 0 || a.threads > 256) fail("--threads: {} is not from 1 to 256 (0: all)", a.threads);
  o.threads = a.threads;
  if (a.reps < 1 || a.reps > 1000) fail("--reps: {} is not from 1 to 1000", a.reps);
  o.reps = a.reps;
  if (!(a.max_seconds > 0)) fail("--max-seconds: must be positive");
  if (!(a.max_cell_seconds > 0)) fail("--max-cell-seconds: must be positive");
  o.max_seconds = a.max_seconds;
  o.max_cell_seconds = a.max_cell_seconds;
  const std::string format = a.json ? "json" : a.format;
  if (format != "md" && format != "csv" && format != "json") fail("--format: '{}' is not md, csv or json", a.format);
  if (a.dtype == "f32") o.b_dtype = DType::F32;
  else if (a.dtype == "f16") o.b_dtype = DType::F16;
  else if (a.dtype == "bf16") o.b_dtype = DType::BF16;
  else fail("--dtype: '{}' is not f32, f16 or bf16", a.dtype);
  for (const std::string& r : split_list(a.rungs)) o.rungs.push_back(r);
  if (!a.rungs.empty() && o.rungs.empty()) fail("--rungs: no rungs given (e.g. --rungs packed,blas,onednn)");
  const std::vector<std::string> known = {"naive",    "blocked",  "simd",       "threads",    "packed", "blas",
                                         "onednn",   "amx-bf16", "amx-int8",   "avx512bf16", "onednn-bf16"};
  for (const std::string& r : o.rungs)
    if (std::find(known.begin(), known.end(), r) == known.end())
      fail("--rungs: unknown rung '{}' (naive, blocked, simd, threads, packed, blas, onednn, amx-bf16, amx-int8, "
           "avx512bf16, onednn-bf16)", r);

  json_silences_progress(format == "json");
  const nlohmann::json rep = bench::run_gemm_ladder(o, {});  // its progress line: core/progress.h
  std::string out;
  if (format == "json") out = rep.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  else if (format == "csv") out = bench::ladder_csv(rep);
  else out = bench::ladder_markdown(rep);
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace

Command add_bench_gemm(CLI::App& parent) {
  auto args = std::make_shared<BenchGemmArgs>();
  Command c;
  c.app = parent.add_subcommand("gemm", "the GEMM ladder: naive -> blocked -> simd -> threads -> packed (strand) vs blas, onednn");
  CLI::App* app = c.app;
  app->add_option("--sizes", args->sizes, "square sizes M=N=K, comma-separated (default 128,256,512,1024,2048; none with --gpt2 alone)");
  app->add_flag("--gpt2", args->gpt2, "the GPT-2 124M shapes: M = 1, 128, 512 against 768x2304, 768x768, 768x3072, 3072x768, 768x50257 (B^T)");
  app->add_option("-t,--threads", args->threads, "threads for the threaded rungs and the libraries (0: STRAND_THREADS or all)");
  app->add_option("-r,--reps", args->reps, "timed repetitions per cell (a cell stops early after 3 s)");
  app->add_option("-o,--format", args->format, "md, csv or json");
  app->add_flag("--json", args->json, "same as --format json: print exactly one JSON value");
  app->add_option("--rungs", args->rungs,
                  "comma-separated subset of naive,blocked,simd,threads,packed,blas,onednn,amx-bf16,amx-int8,avx512bf16,"
                  "onednn-bf16");
  app->add_option("--max-seconds", args->max_seconds, "total time budget; cells past it are skipped");
  app->add_option("--max-cell-seconds", args->max_cell_seconds,
                  "skip a rung whose single run is predicted to take longer (naive at 2048 is skipped)");
  app->add_option("--dtype", args->dtype, "dtype of B for the packed rung: f32, f16 or bf16");
  app->add_flag("--gpu", args->gpu,
                "the GPU's ladder instead (cuda-naive, cuda-tiled, cuBLASLt f32/tf32/f16/bf16, strand's GEMV): sizes "
                "default to 1024,4096,8192; --gpt2 adds GPT-2 124M and XL shapes");
  app->footer(
      "Times every rung of the ladder and prints median GFLOP/s with spread, % of the measured FMA peak,\n"
      "speedup over naive and crossover sizes, after a header with the machine, its measured peak and\n"
      "the library versions.\n"
      "Examples:\n"
      "  strand bench gemm --sizes 256,1024 -t 2 -r 9\n"
      "  strand bench gemm --gpt2 --rungs packed,blas,onednn -o csv\n"
      "  strand bench gemm --gpu --gpt2 --sizes 4096,8192");
  c.run = [args, app]() -> int { return run(*args, app->count("--sizes") > 0); };
  return c;
}

}  // namespace strand::cli
