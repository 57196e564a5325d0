#include "bench/model_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <memory>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "backends/cpu/threadpool.h"
#include "backends/registry.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/memory_stats.h"
#include "core/progress.h"
#include "core/rng.h"
#include "devices/machine.h"
#include "devices/probe.h"
#include "model/gpt2.h"
#include "model/weight_cast.h"
#include "planner/planner.h"

using json = nlohmann::json;

namespace strand {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::string chain_name(const std::vector<std::shared_ptr<Backend>>& chain) {
  std::string s;
  for (const auto& b : chain) s += (s.empty() ? "" : ",") + b->name();
  return s;
}

// Sets the thread count every tier takes from strand: the cpu tier's pool, and the count a
// tier created from now on reads (default_thread_count, STRAND_THREADS).
void set_threads(int n) {
  ::setenv("STRAND_THREADS", std::to_string(n).c_str(), 1);
  cpu::ThreadPool::set_global_threads(n);
}

int64_t count_parameters(const Gpt2Weights& w) {
  int64_t n = 0;
  for_each_gpt2_tensor(w, [&](const Tensor& t) { n += t.numel(); });  // a tied lm_head is wte
  return n;
}

struct Stats {
  double median = 0, min = 0, max = 0;
};

Stats stats_of(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.min = v.front();
  s.max = v.back();
  return s;
}

std::string fmt_num(double v, int prec = 2) {
  if (!std::isfinite(v) || v == 0) return "-";
  return fmt::format("{:.{}f}", v, prec);
}

json jnum(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// Puts STRAND_THREADS and the cpu tier's pool back as they were when it goes away.
class ThreadsRestore {
 public:
  ThreadsRestore() {
    const char* env = std::getenv("STRAND_THREADS");
    had_ = env != nullptr;
    if (had_) before_ = env;
  }
  ~ThreadsRestore() {
    if (had_)
      ::setenv("STRAND_THREADS", before_.c_str(), 1);
    else
      ::unsetenv("STRAND_THREADS");
    cpu::ThreadPool::set_global_threads(0);
  }

 private:
  bool had_ = false;
  std::string before_;
};

// What the probe knows at one thread count.
struct Bounds {
  std::map<std::string, TierPeak> tiers;
  double bandwidth_gbs = 0;
  std::string note;
  // Measures the bandwidth of the moment around each tg run (made when a tg test runs).
  std::shared_ptr<ReadBandwidthMeter> meter;
};

// Seconds spent on each bandwidth measurement next to a tg run.
constexpr double kWindowProbeSeconds = 0.12;

}  // namespace

Gpt2Config gpt2_124m_config() {
  Gpt2Config c;
  c.n_layer = 12;
  c.n_embd = 768;
  c.n_head = 12;
  c.n_positions = 1024;
  c.vocab_size = 50257;
  c.n_inner = 3072;
  c.eos_token_id = 50256;
  c.tie_word_embeddings = true;
  return c;
}

double decode_weight_bytes(const Gpt2Model& m, const std::vector<std::shared_ptr<Backend>>& chain) {
  const ForwardGraph fg = build_forward(m, 1, 0, false);
  const Graph& g = fg.graph;
  std::map<ValueId, Tensor> bound(fg.weights.begin(), fg.weights.end());
  Plan plan;
  if (!chain.empty()) plan = make_plan(g, chain, false);
  struct Use {
    double full = 0, row = 0;
    bool only_gathered = true;
  };
  std::map<const void*, Use> uses;  // by storage: a tied wte / lm_head is one tensor
  for (NodeId id = 0; id < NodeId(g.nodes().size()); ++id) {
    const Node& nd = g.node(id);
    for (size_t i = 0; i < nd.inputs.size(); ++i) {
      const auto it = bound.find(nd.inputs[i]);
      if (it == bound.end()) continue;
      const Tensor& t = it->second;
      Use& u = uses[t.data];
      const double as_bound = double(t.nbytes());
      u.row = t.rank() == 2 && t.dim(0) > 0 ? as_bound / double(t.dim(0)) : as_bound;
      if (nd.op == OpKind::GatherRows && i == 0) continue;
      u.only_gathered = false;
      // As the tier that runs the node reads it (a weight it packed once: its packed bytes).
      const double read = chain.empty() ? as_bound
                                        : plan.chain[size_t(plan.placement[size_t(id)].tier)]->weight_read_bytes(
                                              g, nd, i, as_bound);
      u.full = std::max(u.full, read);
    }
  }
  double bytes = 0;
  for (const auto& [p, u] : uses) bytes += u.only_gathered ? u.row : u.full;  // one token: one row gathered
  return bytes;
}

ModelBenchReport run_model_bench(const ModelBenchOptions& opt) {
  auto progress = [&](const std::string& s) {
    if (opt.progress) opt.progress(s);
  };
  if (opt.reps < 1) fail("--reps must be at least 1, got {}", opt.reps);
  if (opt.prompt_tokens < 0 || opt.gen_tokens < 0) fail("-p and -n must not be negative");
  if (opt.prompt_tokens == 0 && opt.gen_tokens == 0) fail("-p 0 and -n 0: nothing to measure");

  ModelBenchReport rep;
  rep.machine = machine_summary_line();
  rep.prompt_tokens = opt.prompt_tokens;
  rep.gen_tokens = opt.gen_tokens;
  rep.reps = opt.reps;

  // ---- the model ----
  Gpt2Model source;
  if (!opt.model_dir.empty()) {
    // Timed as generate loads (the converted copy is dropped: every combination converts anew).
    const double l0 = now();
    source = Gpt2Model::load(opt.model_dir);
    const uint64_t as_run =
        gpt2_weight_bytes(cast_gpt2_weights(source.weights, source.weights.dtype, MatrixLayout::ColMajor));
    rep.load_seconds = now() - l0;
    rep.load_peak_rss_bytes = peak_rss_bytes();
    rep.weights_as_run_bytes = as_run;
  } else {
    progress("making a random GPT-2 in memory");
    source.dir = "(random, in memory)";
    source.config = opt.random_config;
    source.config.validate("bench model");
    source.weights = random_gpt2_weights(source.config, opt.seed, DType::F32);
    rep.random_weights = true;
  }
  const Gpt2Config& cfg = source.config;
  rep.parameters = count_parameters(source.weights);
  rep.model = fmt::format("{} layers, {} channels, {} heads, context {}, vocabulary {}; {:.1f} M parameters, {} weights",
                          cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions, cfg.vocab_size,
                          double(rep.parameters) / 1e6, dtype_name(source.weights.dtype));
  if (rep.random_weights)
    rep.model = "random GPT-2 (" + rep.model +
                ") made in memory from seed " + std::to_string(opt.seed) + ": untrained, for timing only";
  else
    rep.model = opt.model_dir + " (" + rep.model + ")";

  const int tg_prompt = opt.gen_tokens > 0 ? std::max(1, opt.tg_prompt_tokens) : 0;
  rep.tg_prompt_tokens = tg_prompt;
  if (opt.prompt_tokens > cfg.n_positions)
    fail("-p {}: longer than the model's context of {} tokens", opt.prompt_tokens, cfg.n_positions);
  if (tg_prompt + opt.gen_tokens > cfg.n_positions)
    fail("-n {}: {} prompt + {} generated tokens exceed the model's context of {} tokens", opt.gen_tokens, tg_prompt,
         opt.gen_tokens, cfg.n_positions);

  // ---- what to run ----
  std::vector<std::string> chains = opt.chains;
  const bool chains_named = !chains.empty();
  if (!chains_named) {
    std::vector<std::string> usable;
    for (const auto& b : all_backends())
      if (b->probe().ok && b->in_default_chain()) usable.push_back(b->name());
    for (size_t i = 0; i < usable.size(); ++i) {
      std::string c;
      for (size_t j = i; j < usable.size(); ++j) c += (c.empty() ? "" : ",") + usable[j];
      chains.push_back(c);
    }
  }
  for (const auto& c : chains) make_chain(c);  // an unknown or unusable tier is an error before anything runs
  std::vector<int> threads = opt.threads;
  if (threads.empty()) threads.push_back(default_thread_count());
  std::vector<DType> weights = opt.weights;
  if (weights.empty()) weights.push_back(source.weights.dtype);
  rep.chains = chains;
  rep.chains_named = chains_named;
  rep.threads = threads;
  for (DType w : weights) rep.weights.push_back(std::string(dtype_name(w)));

  // ---- peaks and bandwidth, per thread count ----
  const ThreadsRestore restore;
  std::map<int, Bounds> bounds;
  const MachineInfo machine = machine_info();
  for (int t : threads) {
    Bounds& b = bounds[t];
    if (opt.probe == ModelBenchOptions::Probe::Off) {
      b.note = fmt::format("no probe (--probe off): peak = an FMA loop on {} thread(s), bandwidth unknown", t);
      continue;
    }
    progress(fmt::format("probing peaks and memory bandwidth at {} thread(s)", t));
    set_threads(t);  // the tiers the probe makes take this count
    const DeviceReport dr = opt.probe == ModelBenchOptions::Probe::Quick
                                ? probe_devices(false, t, quick_probe_budget())
                                : probe_devices(false, t);
    for (const auto& tp : dr.tiers)
      if (tp.threads == t || tp.threads == 1) b.tiers[tp.tier] = tp;  // a single-threaded tier's peak holds at any count
    b.bandwidth_gbs = dr.bandwidth_gbs;
    if (opt.gen_tokens > 0)  // a buffer far beyond the caches, as the full probe's (even with --probe quick)
      b.meter = std::make_shared<ReadBandwidthMeter>(std::max<size_t>(size_t(256) << 20, 4 * machine.l3_bytes), t);
    b.note = fmt::format("{} thread(s): memory read bandwidth {:.1f} GB/s ({}{}{})", t, dr.bandwidth_gbs,
                         dr.quick ? "quick probe, rough" : dr.from_cache ? "cached: " + display_path(dr.cache_path)
                                                                         : "measured now",
                         dr.busy ? "; on a BUSY machine (" + dr.busy_detail + "): peaks read low" : "",
                         dr.bandwidth_detail.empty() ? "" : "; " + dr.bandwidth_detail);
  }
  for (const auto& [t, b] : bounds) rep.probe_note += (rep.probe_note.empty() ? "" : "; ") + b.note;

  // ---- token ids, fixed in advance ----
  Rng rng(opt.seed ^ 0x2545f4914f6cdd1dull);
  auto random_ids = [&](int n) {
    std::vector<int32_t> v;
    for (int i = 0; i < n; ++i) v.push_back(int32_t(rng.below(uint64_t(cfg.vocab_size))));
    return v;
  };
  const std::vector<int32_t> pp_ids = random_ids(opt.prompt_tokens);
  const std::vector<int32_t> tg_prompt_ids = random_ids(tg_prompt);
  const std::vector<int32_t> tg_ids = random_ids(opt.gen_tokens);

  const int runs_per_combo = ((opt.prompt_tokens > 0) + (opt.gen_tokens > 0)) * (opt.reps + 1);
  Progress runs_progress("bench model", double(weights.size() * chains.size() * threads.size() * size_t(runs_per_combo)),
                         "runs");
  std::set<std::string> measured;  // chain | weights | threads the first tier runs on
  for (DType wdt : weights) {
    for (const std::string& spec : chains) {
      for (int nthreads : threads) {
        set_threads(nthreads);
        const std::vector<std::shared_ptr<Backend>> chain = make_chain(spec);  // fresh tiers: nothing packed yet
        const std::string cname = chain_name(chain);
        const std::string wname(dtype_name(wdt));
        const std::string first = chain.front()->name();
        progress(fmt::format("{} | {} thread(s) | {} weights: converting", cname, nthreads, wname));

        const double c0 = now();
        Gpt2Model m;
        m.dir = source.dir;
        m.config = cfg;
        m.weights = cast_gpt2_weights(source.weights, wdt, MatrixLayout::ColMajor);
        const double convert_s = now() - c0;

        // Bounds for this combination.
        const Bounds& bd = bounds[nthreads];
        double peak = 0;
        std::string peak_src;
        // The threads the first tier runs on (the naive tier: one, whatever the count asked for).
        const int tier_threads = first == "naive" ? 1 : nthreads;
        if (!measured.insert(fmt::format("{}|{}|{}", cname, wname, tier_threads)).second) {
          rep.notes.push_back(fmt::format("{} | {}: measured once, at 1 thread ({} runs on one thread whatever the "
                                          "count)", cname, wname, first));
          runs_progress.add(runs_per_combo);
          continue;
        }
        if (const auto it = bd.tiers.find(first); it != bd.tiers.end()) {
          peak = it->second.peak_gflops;
          peak_src = first == "amx"          ? fmt::format("amx measured bf16 tile peak at {} thread(s) (strand devices)", it->second.threads)
                     : first == "avx512bf16" ? fmt::format("avx512bf16 measured vdpbf16ps peak at {} thread(s) (strand devices)", it->second.threads)
                                             : fmt::format("{} FP32 peak at {} thread(s), measured by strand devices (an FMA loop)",
                                                           first, it->second.threads);
        }
        // A GPU chain is held to its own ceilings: the measured bf16 tensor-core rate and the
        // device copy bandwidth (the HBM bound: weight bytes / copy bandwidth), not the host's.
        const bool device_chain = !chain.front()->host_memory();
        double device_bw = 0;
        if (device_chain) {
          peak = 0;
          if (const auto it = bd.tiers.find(first); it != bd.tiers.end()) {
            peak = it->second.measured_gflops;
            device_bw = it->second.measured_bandwidth_gbs;
          }
          peak_src = fmt::format("{} measured bf16 tensor-core rate (strand devices)", first);
        }
        if (peak <= 0 && !device_chain) {
          peak = measure_fma_peak_gflops(tier_threads, 0.1);
          peak_src = fmt::format("FP32 peak at {} thread(s): an FMA loop measured now", tier_threads);
        }
        const double pp_flops =
            opt.prompt_tokens > 0 ? build_forward(m, opt.prompt_tokens, 0, false).graph.total_flops() : 0;
        double tg_flops = 0;
        if (opt.gen_tokens > 0) {
          // FLOPs of a decode step are affine in the cache length: the mean is the mean of the ends.
          const double f0 = build_forward(m, 1, tg_prompt, false).graph.total_flops();
          const double f1 = build_forward(m, 1, tg_prompt + opt.gen_tokens - 1, false).graph.total_flops();
          tg_flops = 0.5 * (f0 + f1);
        }
        const double bytes_tok = decode_weight_bytes(m, chain);

        // A chain picked by default that would run far too long is skipped. The estimate times a
        // short prefill and one decode step on a separate copy (its own tiers and converted
        // weights, so the measured runs below still start cold), scaled by FLOPs.
        if (!chains_named) {
          Gpt2Model em;
          em.dir = source.dir;
          em.config = cfg;
          em.weights = cast_gpt2_weights(source.weights, wdt, MatrixLayout::ColMajor);
          Gpt2Runner er(em, make_chain(spec));
          KvCache ec = er.new_cache();
          // The estimate must itself stay short: one token first (cold, then warm), and a
          // prefill only as long as that token's time predicts a small share of the budget for.
          double t_tok = 1e300;
          const int32_t one[1] = {0};
          for (int i = 0; i < 2; ++i) {
            ec.len = 0;
            const double t0 = now();
            er.forward(one, ec, false);
            t_tok = std::min(t_tok, now() - t0);
          }
          const int want = std::max(1, std::min(64, opt.prompt_tokens > 0 ? opt.prompt_tokens : tg_prompt));
          const double share = std::min(0.25, opt.max_seconds / 50);
          const int t_short = std::clamp(int(std::min(1e6, share / std::max(t_tok, 1e-9))), 1, want);
          const std::vector<int32_t> short_ids(size_t(t_short), 0);
          double t_fwd = t_tok;
          if (t_short > 1) {
            ec.len = 0;
            const double t0 = now();
            er.forward(short_ids, ec, false);
            t_fwd = now() - t0;
          }
          const double f_short = build_forward(em, t_short, 0, false).graph.total_flops();
          const double est =
              double(opt.reps + 1) * ((opt.prompt_tokens > 0 ? t_fwd * pp_flops / f_short : 0.0) +
                                      double(opt.gen_tokens + tg_prompt) * t_tok);
          if (est > opt.max_seconds) {
            rep.skipped.push_back(
                {cname, tier_threads, wname,
                 fmt::format("estimated {:.0f} s for {} run(s) of each test (from a timed {}-token prefill and decode "
                             "steps), over --max-seconds {:.0f} for a chain picked by default: name it with "
                             "--backend to run it anyway, or lower -p, -n or --reps",
                             est, opt.reps + 1, t_short, opt.max_seconds)});
            progress(fmt::format("{}: skipped ({})", cname, rep.skipped.back().reason));
            runs_progress.add(runs_per_combo);
            continue;
          }
        }

        const double r0 = now();
        Gpt2Runner runner(m, chain);  // a GPU tier uploads the weights here: charged with the conversion
        KvCache cache = runner.new_cache();
        const double prepare_s = now() - r0;
        const double combo_start = now();
        // A chain picked by default stops adding warm runs once it has used its budget (one warm
        // run at least); a named chain always does every repetition.
        auto out_of_time = [&](const BenchResult& r) {
          return !chains_named && !r.seconds.empty() && now() - combo_start > opt.max_seconds;
        };
        auto note_cut = [&](const BenchResult& r) {
          if (int(r.seconds.size()) < opt.reps)
            rep.notes.push_back(fmt::format("{} | {} thread(s) | {} | {}: {} of {} warm runs (the --max-seconds {:.0f} "
                                            "budget of a chain picked by default ran out)",
                                            r.chain, r.threads, r.weights, r.test, r.seconds.size(), opt.reps,
                                            opt.max_seconds));
        };
        bool charge_convert = true;
        auto make_result = [&](const std::string& test, int tokens) {
          BenchResult r;
          r.chain = cname;
          r.threads = tier_threads;
          r.weights = wname;
          r.test = test;
          r.tokens = tokens;
          r.reps = opt.reps;
          r.peak_gflops = peak;
          r.peak_source = peak_src;
          r.bandwidth_gbs = device_chain ? device_bw : bd.bandwidth_gbs;
          return r;
        };
        auto finish = [&](BenchResult& r, double cold_run_s) {
          r.convert_seconds = charge_convert ? convert_s + prepare_s : 0;
          charge_convert = false;
          r.cold_seconds = cold_run_s + r.convert_seconds;
          r.cold_tps = r.cold_seconds > 0 ? r.tokens / r.cold_seconds : 0;
          std::vector<double> tps;
          for (double s : r.seconds) tps.push_back(s > 0 ? r.tokens / s : 0);
          r.reps = int(r.seconds.size());
          const Stats st = stats_of(tps);
          r.tps_median = st.median;
          r.tps_min = st.min;
          r.tps_max = st.max;
        };

        // --profile: one more run of a test on a runner that times every node.
        auto profile_run = [&](BenchResult& r, const std::function<void(Gpt2Runner&, KvCache&)>& test) {
          if (!opt.profile) return;
          progress(fmt::format("{} | {} thread(s) | {} | {}: profiled run", cname, nthreads, wname, r.test));
          RunnerOptions ro;
          ro.time_nodes = true;
          Gpt2Runner pr(m, chain, ro);
          cache.len = 0;  // the timed runs' cache: its pages are already in place
          test(pr, cache);
          for (const auto& [kind, e] : pr.node_times().by_kind) r.profile.push_back({kind, e.seconds, e.calls});
          std::sort(r.profile.begin(), r.profile.end(),
                    [](const auto& x, const auto& y) { return x.seconds > y.seconds; });
          r.profile_seconds = pr.node_times().total();
        };

        if (opt.prompt_tokens > 0) {
          BenchResult r = make_result(fmt::format("pp{}", opt.prompt_tokens), opt.prompt_tokens);
          double cold = 0;
          for (int i = 0; i <= opt.reps && !out_of_time(r); ++i) {
            progress(fmt::format("{} | {} thread(s) | {} | {} run {}/{}", cname, nthreads, wname, r.test, i,
                                 opt.reps));
            runs_progress.set_note(fmt::format("{} {} {} t{}", cname, wname, r.test, tier_threads));
            runs_progress.add(1);
            cache.len = 0;
            const double t0 = now();
            runner.forward(pp_ids, cache, false);
            const double s = now() - t0;
            if (i == 0)
              cold = s;
            else
              r.seconds.push_back(s);
          }
          finish(r, cold);
          note_cut(r);
          r.flops = pp_flops;
          r.gflops = r.tps_median > 0 ? pp_flops * r.tps_median / r.tokens / 1e9 : 0;
          r.pct_peak = peak > 0 ? 100.0 * r.gflops / peak : 0;
          profile_run(r, [&](Gpt2Runner& pr, KvCache& pc) { pr.forward(pp_ids, pc, false); });
          rep.results.push_back(r);
        }
        if (opt.gen_tokens > 0) {
          BenchResult r = make_result(fmt::format("tg{}", opt.gen_tokens), opt.gen_tokens);
          double cold = 0;
          // The memory's bandwidth changes from moment to moment on a shared machine: it is
          // measured before every warm run and after the last, and each run is compared with
          // the higher of the two measurements around it.
          std::vector<double> window_bw;
          auto measure_window = [&] {  // the host's memory: not a GPU chain's bound
            if (bd.meter && !device_chain) window_bw.push_back(bd.meter->measure(kWindowProbeSeconds));
          };
          for (int i = 0; i <= opt.reps && !out_of_time(r); ++i) {
            if (i > 0) measure_window();
            progress(fmt::format("{} | {} thread(s) | {} | {} run {}/{}", cname, nthreads, wname, r.test, i,
                                 opt.reps));
            runs_progress.set_note(fmt::format("{} {} {} t{}", cname, wname, r.test, tier_threads));
            runs_progress.add(1);
            cache.len = 0;
            const double p0 = now();
            runner.forward(tg_prompt_ids, cache, false);
            const double prompt_s = now() - p0;
            const double t0 = now();
            for (int k = 0; k < opt.gen_tokens; ++k) runner.forward(std::span<const int32_t>(&tg_ids[size_t(k)], 1), cache, false);
            const double s = now() - t0;
            if (i == 0)
              cold = s + (charge_convert ? prompt_s : 0);  // the first test of the combination: its prompt was cold too
            else
              r.seconds.push_back(s);
          }
          if (!r.seconds.empty()) measure_window();
          finish(r, cold);
          note_cut(r);
          r.flops = tg_flops;
          r.gflops = tg_flops * r.tps_median / 1e9;
          r.pct_peak = peak > 0 ? 100.0 * r.gflops / peak : 0;
          r.bytes_per_token = bytes_tok;
          r.gbs = bytes_tok * r.tps_median / 1e9;
          if (window_bw.size() == r.seconds.size() + 1 && !r.seconds.empty()) {
            std::vector<double> bound, pct;
            for (size_t k = 0; k < r.seconds.size(); ++k) {
              const double b = std::max(window_bw[k], window_bw[k + 1]);
              bound.push_back(b);
              pct.push_back(100.0 * bytes_tok * (r.tokens / r.seconds[k]) / 1e9 / b);
            }
            r.bandwidth_gbs = stats_of(bound).median;
            r.pct_bandwidth = stats_of(pct).median;
            r.bandwidth_source = "measured around each run";
            if (r.pct_bandwidth > 100)
              rep.notes.push_back(fmt::format("{} | {} thread(s) | {} | {}: {:.1f}% of the memory bound: a decode cannot "
                                              "read faster than memory, so the bound is too low (a strand bug: its "
                                              "readers should reach what its kernels do)",
                                              r.chain, r.threads, r.weights, r.test, r.pct_bandwidth));
          } else {
            r.pct_bandwidth = r.bandwidth_gbs > 0 ? 100.0 * r.gbs / r.bandwidth_gbs : 0;
            r.bandwidth_source = r.bandwidth_gbs <= 0 ? ""
                                 : device_chain     ? "the GPU's device copy bandwidth (the HBM bound)"
                                                    : "the probe's";
          }
          profile_run(r, [&](Gpt2Runner& pr, KvCache& pc) {
            pr.forward(tg_prompt_ids, pc, false);
            pr.clear_node_times();  // the decode steps only
            for (int k = 0; k < opt.gen_tokens; ++k) pr.forward(std::span<const int32_t>(&tg_ids[size_t(k)], 1), pc, false);
          });
          rep.results.push_back(r);
        }
      }
    }
  }
  runs_progress.finish();
  return rep;
}

// ---- output ----------------------------------------------------------------------------------

namespace {

std::string pp_formula() {
  return "pp GFLOP/s = FLOPs of the P-token forward graph (sum of the op table's node FLOPs) x runs/s; % of the "
         "first tier's FP32 peak at that thread count";
}
std::string tg_formula() {
  return "tg GB/s = weight bytes one decode step reads x tokens/s, where bytes/token = sum over the distinct weight "
         "tensors of the one-token graph of their size in their dtype (q8: int8 payload + f32 scales) or, where the tier "
         "that runs a product keeps the weight packed (bf16 or int8 tiles), of the packed form, a tensor only "
         "gathered from (wpe; wte when lm_head is separate) counting only the row gathered; KV-cache reads not "
         "counted. % bw: the median over the warm runs of each run's GB/s against the memory read bandwidth "
         "measured right before and after it (the higher of the two; bw GB/s is their median), since on a shared "
         "machine it changes from moment to moment";
}

}  // namespace

std::string ModelBenchReport::markdown() const {
  std::string s;
  s += "machine: " + machine + "\n";
  s += "model: " + model + "\n";
  std::string tests;
  if (prompt_tokens > 0) tests += fmt::format("pp{} = one prefill of {} tokens from an empty KV cache", prompt_tokens, prompt_tokens);
  if (gen_tokens > 0)
    tests += fmt::format("{}tg{} = {} single-token forward passes on the KV cache after a {}-token prompt (ids fixed "
                         "in advance, no sampling)",
                         tests.empty() ? "" : "; ", gen_tokens, gen_tokens, tg_prompt_tokens);
  s += "tests: " + tests + "\n";
  std::string ch;
  for (const auto& c : chains) ch += (ch.empty() ? "" : "; ") + c;
  s += fmt::format("backends: {}{}\n", ch,
                   chains_named ? "" : " (picked by default: every rung of the usable ladder with the tiers below it)");
  s += fmt::format("t/s: median of {} warm runs (min-max); cold: the run before them, on fresh tiers, the weight "
                   "conversion charged to the first test of each row group\n",
                   reps);
  s += pp_formula() + "\n" + tg_formula() + "\n";
  if (!probe_note.empty()) s += "bounds: " + probe_note + "\n";
  if (load_seconds > 0)
    s += fmt::format("load: {:.2f} s (map, check, convert to the layout strand runs); peak resident set {} = {:.2f}x "
                     "the {} of weights as run\n",
                     load_seconds, human_bytes(load_peak_rss_bytes),
                     weights_as_run_bytes ? double(load_peak_rss_bytes) / double(weights_as_run_bytes) : 0.0,
                     human_bytes(weights_as_run_bytes));
  // Per weight dtype; a chain whose tier packs the weights reads other bytes: named beside them.
  std::map<std::string, std::vector<std::pair<double, std::vector<std::string>>>> bytes;
  for (const auto& r : results) {
    if (r.bytes_per_token <= 0) continue;
    auto& v = bytes[r.weights];
    auto same = [&](const auto& x) { return std::abs(x.first - r.bytes_per_token) < 0.05e6; };  // as printed
    auto it = std::find_if(v.begin(), v.end(), same);
    if (it == v.end()) it = v.insert(v.end(), {r.bytes_per_token, {}});
    if (std::find(it->second.begin(), it->second.end(), r.chain) == it->second.end()) it->second.push_back(r.chain);
  }
  if (!bytes.empty()) {
    std::string b;
    for (const auto& [w, v] : bytes)
      for (size_t k = 0; k < v.size(); ++k)
        b += fmt::format("{}{} {:.1f} MB{}", b.empty() ? "" : "; ", w, v[k].first / 1e6,
                         v.size() > 1 ? fmt::format(" ({})", fmt::join(v[k].second, "; ")) : "");
    s += "weight bytes per decode token: " + b + "\n";
  }
  s += "\n| backend | threads | weights | test | t/s (min-max) | cold t/s | GFLOP/s | % peak | GB/s | bw GB/s | % bw |\n";
  s += "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : results) {
    const bool tg = r.bytes_per_token > 0;
    const std::string cold = r.convert_seconds > 0
                                 ? fmt::format("{} (incl. {:.3g} s convert)", fmt_num(r.cold_tps), r.convert_seconds)
                                 : fmt_num(r.cold_tps);
    s += fmt::format("| {} | {} | {} | {} | {} ({}-{}) | {} | {} | {} | {} | {} | {} |\n", r.chain, r.threads,
                     r.weights, r.test, fmt_num(r.tps_median), fmt_num(r.tps_min), fmt_num(r.tps_max), cold,
                     fmt_num(r.gflops), r.pct_peak > 0 ? fmt_num(r.pct_peak, 1) + "%" : "-", tg ? fmt_num(r.gbs) : "-",
                     tg && r.bandwidth_gbs > 0 ? fmt_num(r.bandwidth_gbs) : "-",
                     tg && r.pct_bandwidth > 0 ? fmt_num(r.pct_bandwidth, 1) + "%" : "-");
  }
  for (const auto& k : skipped)
    s += fmt::format("\nskipped: {} | {} thread(s) | {}: {}", k.chain, k.threads, k.weights, k.reason);
  if (!skipped.empty()) s += "\n";
  for (const auto& n : notes) s += "\nnote: " + n;
  if (!notes.empty()) s += "\n";
  for (const auto& r : results) {
    if (r.profile.empty()) continue;
    const double per = r.test.rfind("tg", 0) == 0 ? double(r.tokens) : 1.0;
    s += fmt::format("\nprofile: {} | {} thread(s) | {} | {}: one more run, every node timed on its own ({:.3f} ms{}; "
                     "per-call overheads included)\n",
                     r.chain, r.threads, r.weights, r.test, 1e3 * r.profile_seconds / per, per > 1 ? " per token" : "");
    s += "\n| node kind | ms | share | calls |\n|---|---:|---:|---:|\n";
    for (const auto& e : r.profile)
      s += fmt::format("| {} | {:.4g} | {:.1f}% | {} |\n", e.kind, 1e3 * e.seconds / per,
                       r.profile_seconds > 0 ? 100.0 * e.seconds / r.profile_seconds : 0.0, e.calls);
  }
  return s;
}

std::string ModelBenchReport::csv() const {
  std::string s =
      "backend,threads,weights,test,tokens,reps,tps_median,tps_min,tps_max,cold_tps,cold_seconds,convert_seconds,"
      "flops,gflops,peak_gflops,pct_peak,bytes_per_token,gbs,bandwidth_gbs,pct_bandwidth\n";
  for (const auto& r : results)
    s += fmt::format("\"{}\",{},{},{},{},{},{:.4f},{:.4f},{:.4f},{:.4f},{:.6f},{:.6f},{:.6g},{:.4f},{:.4f},{:.3f},{:.6g},"
                     "{:.4f},{:.4f},{:.3f}\n",
                     r.chain, r.threads, r.weights, r.test, r.tokens, r.reps, r.tps_median, r.tps_min, r.tps_max,
                     r.cold_tps, r.cold_seconds, r.convert_seconds, r.flops, r.gflops, r.peak_gflops, r.pct_peak,
                     r.bytes_per_token, r.gbs, r.bandwidth_gbs, r.pct_bandwidth);
  return s;
}

json ModelBenchReport::to_json() const {
  json j;
  j["machine"] = machine;
  j["model"] = {{"description", model}, {"random_weights", random_weights}, {"parameters", parameters}};
  j["settings"] = {{"prompt_tokens", prompt_tokens}, {"gen_tokens", gen_tokens}, {"tg_prompt_tokens", tg_prompt_tokens},
                   {"reps", reps},           {"backends", chains},       {"backends_named", chains_named},
                   {"threads", threads},     {"weights", weights}};
  j["formulas"] = {{"pp", pp_formula()}, {"tg", tg_formula()}};
  j["bounds"] = probe_note;
  if (load_seconds > 0)
    j["load"] = {{"seconds", load_seconds}, {"peak_rss_bytes", load_peak_rss_bytes},
                 {"weights_as_run_bytes", weights_as_run_bytes}};
  json rs = json::array();
  for (const auto& r : results) {
    json x = {{"backend", r.chain},
              {"threads", r.threads},
              {"weights", r.weights},
              {"test", r.test},
              {"tokens", r.tokens},
              {"reps", r.reps},
              {"seconds", r.seconds},
              {"tokens_per_s", {{"median", jnum(r.tps_median)}, {"min", jnum(r.tps_min)}, {"max", jnum(r.tps_max)}}},
              {"cold", {{"seconds", jnum(r.cold_seconds)}, {"convert_seconds", jnum(r.convert_seconds)},
                        {"tokens_per_s", jnum(r.cold_tps)}}},
              {"flops", jnum(r.flops)},
              {"gflops", jnum(r.gflops)},
              {"peak_gflops", jnum(r.peak_gflops)},
              {"peak_source", r.peak_source},
              {"pct_peak", jnum(r.pct_peak)}};
    if (r.bytes_per_token > 0) {
      x["bytes_per_token"] = r.bytes_per_token;
      x["gbs"] = jnum(r.gbs);
      x["bandwidth_gbs"] = r.bandwidth_gbs > 0 ? json(r.bandwidth_gbs) : json(nullptr);
      x["pct_bandwidth"] = r.bandwidth_gbs > 0 ? json(r.pct_bandwidth) : json(nullptr);
      x["bandwidth_source"] = r.bandwidth_source.empty() ? json(nullptr) : json(r.bandwidth_source);
    }
    if (!r.profile.empty()) {
      json pr = json::array();
      for (const auto& e : r.profile) pr.push_back({{"kind", e.kind}, {"seconds", e.seconds}, {"calls", e.calls}});
      x["profile"] = {{"seconds", r.profile_seconds}, {"nodes", pr}};
    }
    rs.push_back(x);
  }
  j["results"] = rs;
  json sk = json::array();
  for (const auto& k : skipped)
    sk.push_back({{"backend", k.chain}, {"threads", k.threads}, {"weights", k.weights}, {"reason", k.reason}});
  j["skipped"] = sk;
  j["notes"] = notes;
  return j;
}

}  // namespace strand
