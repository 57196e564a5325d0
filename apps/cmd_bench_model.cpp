// strand bench model — GPT-2 prompt-processing and generation throughput per tier chain,
// thread count and weight dtype, against the tiers' FP32 peak and the memory bandwidth.
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "bench/model_bench.h"
#include "core/error.h"
#include "model/weight_cast.h"

namespace strand::cli {

namespace {

struct BenchModelArgs {
  std::string model;
  std::string backend;
  std::string threads;
  std::string weights;
  int p = 512;
  int n = 128;
  int reps = 5;
  std::string format = "md";
  bool json = false;
  bool profile = false;
  std::string seed = "1";
  std::string probe = "full";
  double max_seconds = 120;
};

int run_bench_model(const BenchModelArgs& a) {
  ModelBenchOptions opt;
  opt.model_dir = a.model;
  if (!a.backend.empty()) opt.chains = parse_chain_list(a.backend);
  if (!a.threads.empty()) opt.threads = parse_thread_list(a.threads);
  if (!a.weights.empty())
    for (const auto& w : split_on(a.weights, ',')) opt.weights.push_back(parse_weight_dtype(w));
  opt.prompt_tokens = a.p;
  opt.gen_tokens = a.n;
  opt.reps = a.reps;
  opt.seed = parse_seed(a.seed, "--seed");
  opt.max_seconds = a.max_seconds;
  opt.profile = a.profile;
  const std::string format = a.json ? "json" : a.format;
  if (format != "md" && format != "csv" && format != "json") fail("--format '{}': use md, csv or json", a.format);
  if (a.probe == "full")
    opt.probe = ModelBenchOptions::Probe::Full;
  else if (a.probe == "quick")
    opt.probe = ModelBenchOptions::Probe::Quick;
  else if (a.probe == "off")
    opt.probe = ModelBenchOptions::Probe::Off;
  else
    fail("--probe '{}': use full, quick or off", a.probe);
  json_silences_progress(format == "json");  // the bench's own progress line: core/progress.h

  const ModelBenchReport rep = run_model_bench(opt);
  if (format == "json") {
    std::puts(rep.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else if (format == "csv") {
    std::fputs(rep.csv().c_str(), stdout);
  } else {
    std::fputs(rep.markdown().c_str(), stdout);
  }
  return 0;
}

}  // namespace

Command add_bench_model(CLI::App& parent) {
  Command c;
  auto a = std::make_shared<BenchModelArgs>();
  CLI::App* app = parent.add_subcommand("model", "GPT-2 tokens/s per tier chain, threads and weight dtype (pp and tg)");
  c.app = app;
  app->add_option("-m,--model", a->model,
                  "Hugging Face GPT-2 directory (default: a random GPT-2 of the 124M shape, made in memory)");
  app->add_option("--backend", a->backend,
                  "tier chains separated by ';', tiers in a chain by ',', e.g. 'naive;cpu;blas,cpu' (default: every "
                  "rung of the usable ladder, each with the tiers below it)");
  app->add_option("-t,--threads", a->threads, "comma-separated thread counts, e.g. 1,2 (default: strand's count)");
  app->add_option("--weights", a->weights, "comma-separated weight dtypes: f32, f16, bf16, int8 (default: the model's)");
  app->add_option("-p,--n-prompt", a->p, "tokens of the pp test (0: skip it)")->check(CLI::Range(0, 1 << 20));
  app->add_option("-n,--n-gen", a->n, "tokens of the tg test (0: skip it)")->check(CLI::Range(0, 1 << 20));
  app->add_option("-r,--reps", a->reps, "warm repetitions of each test (after one cold run)")->check(CLI::Range(1, 1000));
  app->add_option("-o,--format", a->format, "md, csv or json");
  app->add_flag("--json", a->json, "same as --format json: exactly one JSON value on stdout");
  app->add_option("-s,--seed", a->seed, "seed of the random model and token ids (0 to 2^64-1)");
  app->add_option("--probe", a->probe,
                  "where peak and bandwidth come from: full (strand devices' measurement, cached), quick (rough, a "
                  "fraction of a second), off");
  app->add_flag("--profile", a->profile,
                "after each test's timed runs, one more run with every node timed on its own: where the time goes, "
                "by kind of node");
  app->add_option("--max-seconds", a->max_seconds,
                  "skip a chain picked by default when its estimated run exceeds this (named chains always run)")
      ->check(CLI::Range(0.0, 1e9));
  app->footer(
      "pp<P>: one prefill of P tokens; tg<N>: N single-token decode steps on the KV cache after a short prompt.\n"
      "Each test runs once cold (fresh tiers; the first test of a combination also pays the weight conversion),\n"
      "then --reps times warm: median and min-max. The naive tier is slow at 124M: by default a chain whose\n"
      "estimated time exceeds --max-seconds is skipped with a note; name it with --backend to run it.\n"
      "Example:\n"
      "  strand bench model --backend 'cpu;blas,cpu' -t 1,2 --weights f32,f16,int8 -p 512 -n 128 -r 5\n"
      "  strand bench model -m ./gpt2 -o csv\n"
      "  strand bench model --backend cpu -p 0 -n 64 --weights f16 --profile\n"
      "  strand bench model --backend 'amx,cpu;cpu' --weights bf16,int8 --profile   # on an AMX machine\n"
      "  strand bench model -m tests/fixtures/gpt2/tiny-f32 --backend naive -p 16 -n 4 --reps 2 --json");
  c.run = [a]() -> int { return run_bench_model(*a); };
  return c;
}

}  // namespace strand::cli
