// strand bench gemm — the GEMM ladder: every rung on square sizes and the GPT-2 shapes.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "backends/cpu/threadpool.h"
#include "bench/gemm_ladder.h"
#include "core/error.h"

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

int run(const BenchGemmArgs& a, bool sizes_given) {
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
  const std::vector<std::string> known = {"naive", "blocked", "simd", "threads", "packed", "blas", "onednn"};
  for (const std::string& r : o.rungs)
    if (std::find(known.begin(), known.end(), r) == known.end())
      fail("--rungs: unknown rung '{}' (naive, blocked, simd, threads, packed, blas, onednn)", r);

  const bool tty = isatty(STDERR_FILENO);
  const nlohmann::json rep = bench::run_gemm_ladder(o, [tty](const std::string& line) {
    if (tty) std::fprintf(stderr, "%s\n", line.c_str());
  });
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
  app->add_option("--threads", args->threads, "threads for the threaded rungs and the libraries (default: STRAND_THREADS or all)");
  app->add_option("--reps", args->reps, "timed repetitions per cell (default 7; a cell stops early after 3 s)");
  app->add_option("--format", args->format, "md (default), csv or json");
  app->add_flag("--json", args->json, "same as --format json: print exactly one JSON value");
  app->add_option("--rungs", args->rungs, "comma-separated subset of naive,blocked,simd,threads,packed,blas,onednn");
  app->add_option("--max-seconds", args->max_seconds, "total time budget; cells past it are skipped (default 900)");
  app->add_option("--max-cell-seconds", args->max_cell_seconds,
                  "skip a rung whose single run is predicted to take longer (default 20; naive at 2048 is skipped)");
  app->add_option("--dtype", args->dtype, "dtype of B for the packed rung: f32 (default), f16 or bf16");
  app->footer(
      "Times every rung of the ladder and prints median GFLOP/s with spread, % of the measured FMA peak,\n"
      "speedup over naive and crossover sizes, after a header with the machine, its measured peak and\n"
      "the library versions.\n"
      "Examples:\n"
      "  strand bench gemm --sizes 256,1024 --threads 2\n"
      "  strand bench gemm --gpt2 --rungs packed,blas,onednn --reps 9 --json");
  c.run = [args, app]() -> int { return run(*args, app->count("--sizes") > 0); };
  return c;
}

}  // namespace strand::cli
