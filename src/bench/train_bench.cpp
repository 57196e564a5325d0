#include "bench/train_bench.h"

#include <algorithm>
#include <map>
#include <chrono>

#include <fmt/format.h>

#include "backends/cpu/threadpool.h"
#include "backends/cuda/cuda.h"
#include "backends/registry.h"
#include "bench/gemm_ladder.h"
#include "bench/gemm_tiles.h"
#include "bench/model_bench.h"
#include "core/error.h"
#include "core/rng.h"
#include "devices/machine.h"
#include "devices/probe.h"
#include "train/adamw.h"
#include "train/init.h"
#include "train/step.h"

namespace strand {

using json = nlohmann::json;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

double training_peak_gflops(const std::string& first_tier, int threads, std::string* what) {
  if (first_tier == "cuda") {
    // The GPU's ceiling in what the step's products compute in: f32 (TF32 with
    // STRAND_CUDA_TF32=1), or bf16 tensor cores with STRAND_CUDA_BF16=1.
    const CudaOptions co = cuda_options_from_env();
    if (co.bf16) {
      const CudaPeaks pk = measure_cuda_peaks(false);
      *what = "cuda: " + pk.bf16_detail;
      return pk.bf16_tflops * 1e3;
    }
    *what = fmt::format("cuda: cuBLASLt {} 4096³ product, measured", co.tf32 ? "tf32" : "f32");
    return measure_cuda_f32_peak_tflops(co.tf32) * 1e3;
  }
  if (first_tier == "avx512bf16" || first_tier == "amx") {
    // Mixed precision: the step's products run on the bf16 unit, the ceiling MFU is stated
    // against (the peak of the precision the matrix products compute in).
    cpu::ThreadPool pool(threads);
    bench::MachinePeak pk;
    bench::measure_tile_peaks(pool, pk);
    const bool amx = first_tier == "amx";
    const double peak = amx ? (pk.bf16_unit.rfind("AMX", 0) == 0 ? pk.bf16_gflops : 0) : pk.avx512_bf16_gflops;
    if (peak > 0) {
      *what = fmt::format("{} of {} thread{}, measured: the unit its bf16 products run on",
                          amx ? "AMX tiles (tdpbf16ps)" : "AVX-512-BF16 (vdpbf16ps)", threads, threads == 1 ? "" : "s");
      return peak;
    }
  }
  *what = fmt::format("FP32 FMA lanes of {} thread{}, measured", threads, threads == 1 ? "" : "s");
  return measure_fma_peak_gflops(threads, 0.3);
}

TrainBenchReport run_train_bench(const TrainBenchOptions& o) {
  TrainBenchReport r;
  r.machine = machine_summary_line();
  Gpt2Config cfg = o.config.n_layer > 0 ? o.config : gpt2_124m_config();
  cfg.n_positions = std::max<int>(cfg.n_positions, int(o.ctx));
  cfg.validate("bench train");
  Gpt2Model m;
  m.config = cfg;
  m.weights = init_gpt2_weights(cfg, o.seed);
  r.model = fmt::format("GPT-2 {} layers x {} channels, {} heads, vocabulary {}, batch {} x ctx {} (random init, f32 master weights)",
                        cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, o.batch, o.ctx);
  const std::vector<std::string> chains = o.chains.empty() ? std::vector<std::string>{"cpu"} : o.chains;
  const std::vector<int> threads = o.threads.empty() ? std::vector<int>{cpu::ThreadPool::default_threads()} : o.threads;
  std::vector<int32_t> ids(size_t(o.batch * o.ctx)), targets(ids.size());
  Rng rng(o.seed);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = int32_t(rng.below(uint64_t(cfg.vocab_size)));
    targets[i] = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  }
  for (const std::string& spec : chains)
    for (int th : threads) {
      cpu::ThreadPool::set_global_threads(th);
      if (o.progress) o.progress(fmt::format("{} on {} threads", spec, th));
      TrainBenchResult res;
      res.chain = spec;
      res.threads = th;
      res.batch = o.batch;
      res.ctx = o.ctx;
      StepRunner runner(build_train_graph(m, o.batch, o.ctx), make_chain(spec), false);
      if (r.parameters == 0)
        for (const Param& p : runner.params()) r.parameters += p.tensor.numel();
      AdamW opt = make_adamw(runner, AdamWConfig{});  // on a GPU that runs the whole step: state stays there
      res.optimizer_on = opt.device() ? opt.device()->name() : "host";
      std::vector<double> opt_secs;
      auto step = [&] {
        runner.run(ids.data(), targets.data());
        const double t0 = now();
        std::vector<Tensor> grads;
        for (size_t i = 0; i < runner.params().size(); ++i) grads.push_back(runner.grad(i));
        const double norm = opt.grad_norm(grads);
        opt.step(grads, 1e-4, norm > 1 ? 1 / norm : 1.0);
        opt_secs.push_back(now() - t0);
      };
      for (int w = 0; w < o.warmup; ++w) step();
      opt_secs.clear();
      for (int i = 0; i < o.reps; ++i) {
        const double t0 = now();
        step();
        res.seconds.push_back(now() - t0);
      }
      const double med = median(res.seconds);
      const double tokens = double(o.batch * o.ctx);
      res.tps_median = tokens / med;
      res.tps_min = tokens / *std::max_element(res.seconds.begin(), res.seconds.end());
      res.tps_max = tokens / *std::min_element(res.seconds.begin(), res.seconds.end());
      // What the chain computes in: f32, or the tiers that round (Backend::precision) and how.
      {
        std::map<std::string, std::string> rounding;  // tier -> what it rounds
        const Graph& tg = runner.graph().graph;
        for (size_t n = 0; n < tg.nodes().size(); ++n) {
          const auto& tier = runner.plan().chain[size_t(runner.plan().placement[n].tier)];
          const Precision p = tier->precision(tg, tg.node(NodeId(n)));
          if (!p.exact()) rounding[tier->name()] = p.summary({"a", "b", "c"});
        }
        res.precision = "f32";
        for (const auto& [tier, how] : rounding) res.precision = fmt::format("mixed: {} products {}", tier, how);
      }
      res.step_flops = runner.graph().flops;
      res.matmul_flops = runner.graph().matmul_flops;
      res.gflops = res.step_flops / med / 1e9;
      res.optimizer_seconds = median(opt_secs);
      opt.sync_to_host();  // the next combination starts from the host's (now current) weights
      res.peak_gflops = training_peak_gflops(runner.plan().chain.front()->name(), th, &res.peak_source);
      res.mfu = res.peak_gflops > 0 ? res.gflops / res.peak_gflops : 0;
      if (o.profile) {
        runner.set_time_nodes(true);
        runner.run(ids.data(), targets.data());
        for (const auto& [kind, e] : runner.node_times()) {
          res.profile.push_back({kind, e.first});
          if (kind.rfind("matmul", 0) == 0 || kind.rfind("linear", 0) == 0) res.matmul_seconds += e.first;
        }
        std::sort(res.profile.begin(), res.profile.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
        res.matmul_gflops = res.matmul_seconds > 0 ? res.matmul_flops / res.matmul_seconds / 1e9 : 0;
        res.matmul_pct_peak = res.peak_gflops > 0 ? res.matmul_gflops / res.peak_gflops : 0;
      }
      r.results.push_back(std::move(res));
    }
  cpu::ThreadPool::set_global_threads(0);
  return r;
}

std::string TrainBenchReport::markdown() const {
  std::string s = fmt::format("strand bench train — {}\nmachine: {}\nparameters: {:.1f}M\n\n", model, machine, double(parameters) / 1e6);
  s += "| chain | threads | precision | tokens/s (median) | min–max | GFLOP/s | peak GFLOP/s | MFU | products GFLOP/s (% peak) | optimizer s |\n";
  s += "|---|---:|---|---:|---|---:|---:|---:|---:|---:|\n";
  for (const auto& r : results)
    s += fmt::format("| {} | {} | {} | {:.1f} | {:.1f}–{:.1f} | {:.1f} | {:.0f} | {:.0f}% | {} | {:.3f} |\n", r.chain, r.threads,
                     r.precision, r.tps_median, r.tps_min, r.tps_max, r.gflops, r.peak_gflops, 100 * r.mfu,
                     r.matmul_seconds > 0 ? fmt::format("{:.1f} ({:.0f}%)", r.matmul_gflops, 100 * r.matmul_pct_peak) : "-",
                     r.optimizer_seconds);
  for (const auto& r : results) {
    if (r.profile.empty()) continue;
    double total = 0;
    for (const auto& [k, t] : r.profile) total += t;
    s += fmt::format("\nwhere a step's time goes ({}, {} threads; every node timed on its own: {:.3f} s):\n", r.chain, r.threads, total);
    for (const auto& [k, t] : r.profile)
      if (t >= 0.002 * total) s += fmt::format("  {:<32} {:8.3f} s  {:5.1f}%\n", k, t, 100 * t / total);
  }
  std::vector<std::string> sources;
  for (const auto& r : results)
    if (std::find(sources.begin(), sources.end(), r.chain + ": " + r.peak_source) == sources.end())
      sources.push_back(r.chain + ": " + r.peak_source);
  std::vector<std::string> where;
  for (const auto& r : results)
    if (r.optimizer_on != "host" && !r.optimizer_on.empty())
      where.push_back(fmt::format("{}: the weights, gradients and AdamW's moments stay in the {} tier's memory "
                                  "(per step only the inputs go in, the loss and the gradient norm come out)",
                                  r.chain, r.optimizer_on));
  s += "\npeak GFLOP/s is";
  for (size_t i = 0; i < sources.size(); ++i) s += (i ? "; " : " ") + sources[i];
  s += "\n";
  for (const auto& w : where) s += "optimizer: " + w + "\n";
  for (const auto& n : notes) s += "\nnote: " + n + "\n";
  return s;
}

std::string TrainBenchReport::csv() const {
  std::string s = "chain,threads,precision,batch,ctx,tokens_per_s_median,tokens_per_s_min,tokens_per_s_max,gflops,peak_gflops,mfu,products_gflops,optimizer_seconds\n";
  for (const auto& r : results)
    s += fmt::format("{},{},{},{},{},{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},{:.4f},{:.3f},{:.4f}\n", r.chain, r.threads, r.precision,
                     r.batch, r.ctx, r.tps_median, r.tps_min, r.tps_max, r.gflops, r.peak_gflops, r.mfu, r.matmul_gflops,
                     r.optimizer_seconds);
  return s;
}

json TrainBenchReport::to_json() const {
  json rows = json::array();
  for (const auto& r : results) {
    json prof = json::array();
    for (const auto& [k, t] : r.profile) prof.push_back({{"kind", k}, {"seconds", t}});
    rows.push_back({{"chain", r.chain}, {"threads", r.threads}, {"precision", r.precision}, {"batch", r.batch}, {"ctx", r.ctx},
                    {"seconds", r.seconds}, {"tokens_per_s", r.tps_median}, {"tokens_per_s_min", r.tps_min},
                    {"tokens_per_s_max", r.tps_max}, {"step_flops", r.step_flops}, {"matmul_flops", r.matmul_flops},
                    {"gflops", r.gflops}, {"peak_gflops", r.peak_gflops}, {"peak_source", r.peak_source}, {"mfu", r.mfu},
                    {"optimizer_seconds", r.optimizer_seconds}, {"optimizer_on", r.optimizer_on}, {"products_gflops", r.matmul_gflops},
                    {"products_pct_peak", r.matmul_pct_peak}, {"profile", prof}});
  }
  return {{"machine", machine}, {"model", model}, {"parameters", parameters}, {"results", rows}, {"notes", notes}};
}

}  // namespace strand
