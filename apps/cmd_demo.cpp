// strand demo — the main job with nothing to download: strand trains a small GPT-2 on its own
// docs and sources (first run, ~2–3 minutes on 2 cores, then cached), writes it where every
// command can load it, scores held-out text, generates from it, and shows how much of this
// machine the run used.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "backends/cpu/threadpool.h"
#include "backends/registry.h"
#include "core/error.h"
#include "core/progress.h"
#include "devices/probe.h"
#include "devices/stranded.h"
#include "model/generate.h"
#include "model/gpt2.h"
#include "model/weight_cast.h"
#include "tokenizer/gpt2_tokenizer.h"
#include "train/demo.h"

namespace strand::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct DemoArgs {
  DemoOptions opt;
  std::string prompt = "// strand/";
  int n = 300;
  double temp = 0.8;
  int top_k = 40;
  std::string seed_text;  // -s; empty: a random seed, printed
  uint64_t seed = 0;
  std::string out, backend = "auto";
  bool json = false;
};

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// The demo ends with this machine's tiers: what each reached and what is stranded, from strand
// devices' cache when it has this machine, else measured now with the quick budget (about a
// second: rough numbers, said so, not cached).
void print_machine_tiers(const DemoModel& d) {
  const DeviceReport r = probe_devices(false, cpu::ThreadPool::global().size(), quick_probe_budget());
  std::printf("\nthis machine's tiers (%s):\n",
              r.from_cache ? fmt::format("strand devices' measurements of {}", r.measured_at).c_str()
                           : "measured just now with strand devices --quick: rough; `strand devices` measures properly");
  std::printf("  %-10s %-7s %8s %12s %7s %10s\n", "tier", "usable", "threads", "GEMM GFLOP/s", "% peak", "GEMV GB/s");
  for (const TierPeak& t : r.tiers) {
    if (!t.usable) {
      std::printf("  %-10s %-7s %s\n", t.tier.c_str(), "no", t.why.c_str());
      continue;
    }
    std::printf("  %-10s %-7s %8d %12.1f %6.0f%% %10.1f\n", t.tier.c_str(), "yes", t.threads, t.measured_gflops,
                t.peak_gflops > 0 ? 100 * t.measured_gflops / t.peak_gflops : 0.0, t.measured_bandwidth_gbs);
  }
  for (const TierPeak& t : r.tiers)
    if (t.tier == "cpu" && t.usable && t.peak_gflops > 0 && !d.from_cache && d.gflops > 0)
      std::printf("  the demo's training: %.1f GFLOP/s on %s, %.0f%% of the FP32 peak\n", d.gflops, d.tiers.c_str(),
                  100 * d.gflops / t.peak_gflops);
  std::printf("\n%s", stranded_table(r).c_str());
}

int run_demo(DemoArgs& a) {
  json_silences_progress(a.json);
  a.seed = a.seed_text.empty() ? random_seed() : parse_seed(a.seed_text, "--seed");
  const Gpt2Config mc = demo_model_config();
  if (!a.json) {
    std::printf("strand demo — a GPT-2 that strand trains itself, on its own docs and C++ sources (nothing to download)\n\n");
    std::printf("model: %d layers, %d channels, %d heads, context %d, byte-level vocabulary of %d\n", mc.n_layer, mc.n_embd,
                mc.n_head, mc.n_positions, mc.vocab_size);
    std::fflush(stdout);
  }
  Progress prog("training the demo model", double(a.opt.steps), "steps");
  a.opt.on_step = [&](const StepLog& l, int64_t planned) {
    prog.set_note(fmt::format("loss {:.3f}{}", l.loss, std::isfinite(l.val_loss) ? fmt::format("  val {:.3f}", l.val_loss) : ""));
    prog.set(double(l.step) * a.opt.steps / double(planned));
    if (std::isfinite(l.val_loss) && !a.json) {
      std::printf("  step %4lld/%lld  loss %.3f  validation %.3f nats/byte\n", (long long)l.step, (long long)planned, l.loss, l.val_loss);
      std::fflush(stdout);
    }
  };
  if (!a.json) {
    std::printf("training it now unless a cached copy exists (about %.0f s on 2 cores; the result is cached)...\n",
                a.opt.budget_seconds);
    std::fflush(stdout);
  }
  const DemoModel d = demo_model(a.opt);
  prog.finish();
  std::string where = d.dir, out_abs;
  if (!a.out.empty()) {
    std::error_code ec;
    fs::create_directories(a.out, ec);
    if (ec) fail("--out {}: cannot create the directory: {}", a.out, ec.message());
    for (const auto& e : fs::directory_iterator(d.dir))
      if (e.is_regular_file()) fs::copy_file(e.path(), fs::path(a.out) / e.path().filename(), fs::copy_options::overwrite_existing, ec);
    if (ec) fail("--out {}: cannot copy the model there: {}", a.out, ec.message());
    out_abs = fs::canonical(a.out, ec).string();
    where = out_abs;
  }

  // Held-out text scored, and text generated, the way any model directory is run.
  Gpt2Model model = Gpt2Model::load(d.dir);
  model.weights = cast_gpt2_weights(model.weights, model.weights.dtype, MatrixLayout::ColMajor);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(d.dir);
  Gpt2Runner runner(model, make_chain(a.backend));
  const std::vector<int32_t> held(d.held_out.begin(), d.held_out.begin() + std::min<size_t>(d.held_out.size(), 4096));
  const PerplexityResult ppl = perplexity(runner, held);
  SamplerConfig sc;
  sc.temperature = a.temp;
  sc.top_k = a.top_k;
  sc.seed = a.seed;
  std::vector<int32_t> prompt = tok.encode(a.prompt);
  if (prompt.empty()) prompt.push_back(tok.eot_id());
  Gpt2Runner gen_runner(model, make_chain(a.backend));
  const GenerateResult g = generate(gen_runner, prompt, a.n, sc, tok.eot_id());
  const std::string text = tok.decode(g.ids);
  const double uniform = std::log(double(mc.vocab_size));

  if (a.json) {
    json hist = json::array();
    for (const StepLog& l : d.history) {
      json e = {{"step", l.step}, {"loss", l.loss}};
      if (std::isfinite(l.val_loss)) e["val_loss"] = l.val_loss;
      hist.push_back(e);
    }
    std::puts(dump({{"model_dir", where},
                    {"out", out_abs.empty() ? json(nullptr) : json(out_abs)},
                    {"seed", a.seed},
                    {"from_cache", d.from_cache},
                    {"parameters", d.parameters},
                    {"steps", d.steps},
                    {"train_seconds", d.train_seconds},
                    {"tokens_per_s", d.tokens_per_s},
                    {"val_loss", d.val_loss},
                    {"uniform_loss", uniform},
                    {"held_out", {{"tokens", ppl.tokens}, {"nll", ppl.nll}, {"ppl", ppl.ppl}}},
                    {"generate", {{"prompt", a.prompt}, {"text", text}, {"seed", a.seed}, {"stop", g.stop}}},
                    {"history", hist}})
                  .c_str());
    return 0;
  }
  std::printf("\n%s: %.2fM parameters, %lld steps%s\n", d.from_cache ? "from the cache" : "trained", double(d.parameters) / 1e6,
              (long long)d.steps,
              d.from_cache ? fmt::format(" (trained in {:.0f} s on this machine; --retrain trains again)", d.train_seconds).c_str()
                           : fmt::format(" in {:.0f} s on {} ({:.0f} tokens/s, {:.1f} GFLOP/s)", d.train_seconds, d.tiers,
                                         d.tokens_per_s, d.gflops)
                                 .c_str());
  if (!out_abs.empty())
    std::printf("written to: %s (config.json, model.safetensors, vocab.json, merges.txt, loss.svg)\n", out_abs.c_str());
  std::printf("model directory: %s (a Hugging Face GPT-2 directory: try strand generate -m %s -p \"...\")\n",
              display_path(where).c_str(), display_path(where).c_str());
  std::printf("loss curve: %s\n\n", display_path((fs::path(d.dir) / "loss.svg").string()).c_str());
  std::printf("held-out text (the last %lld bytes of the corpus, never trained on): %.3f nats/byte, perplexity %.2f\n",
              (long long)ppl.tokens, ppl.nll, ppl.ppl);
  std::printf("  uniform guessing: %.3f nats/byte, perplexity %d: the model has learned %.0f%% of the way to zero loss\n\n",
              uniform, mc.vocab_size, 100 * (1 - ppl.nll / uniform));
  std::printf("generate (prompt %s, %d bytes, temperature %.1f, top-k %d, seed %llu):\n", dump(json(a.prompt)).c_str(), a.n,
              a.temp, a.top_k, (unsigned long long)a.seed);
  std::printf("----\n%s%s\n----\n", a.prompt.c_str(), text.c_str());
  print_machine_tiers(d);
  return 0;
}

}  // namespace

Command add_demo(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  auto* c = app.add_subcommand(
      "demo", "train a small GPT-2 on strand's own docs and sources (cached after the first run), score it, generate from it");
  c->add_option("-p,--prompt", a->prompt, "text to continue")->capture_default_str();
  c->add_option("-n,--n-tokens", a->n, "bytes to generate")->check(CLI::Range(0, 100000))->capture_default_str();
  c->add_option("--temp", a->temp, "sampling temperature; 0 is greedy")->check(CLI::Range(0.0, 100.0))->capture_default_str();
  c->add_option("--top-k", a->top_k, "sample among the k most likely bytes (0: all)")->check(CLI::Range(0, 1 << 20))->capture_default_str();
  c->add_option("-s,--seed", a->seed_text, "sampling seed (default: random, printed)");
  c->add_option("--steps", a->opt.steps, "training steps at most (the run is fitted to --budget)")
      ->check(CLI::Range(int64_t(10), int64_t(1) << 30))
      ->capture_default_str();
  c->add_option("--budget", a->opt.budget_seconds, "seconds of training at most")->check(CLI::Range(5.0, 1e6))->capture_default_str();
  c->add_flag("--retrain", a->opt.retrain, "train again even if a cached model exists");
  c->add_option("-o,--out", a->out, "also copy the model directory here");
  c->add_option("--backend", a->backend, "tier chain for scoring and generating (default: every usable tier)");
  c->add_option_function<int>(
       "-t,--threads", [](const int& n) { cpu::ThreadPool::set_global_threads(n); },
       "threads of the cpu tier (default: STRAND_THREADS or every hardware thread)")
      ->check(CLI::Range(1, 1024));
  c->add_flag("--json", a->json, "print one JSON object on stdout");
  c->footer("Example:\n  strand demo\n  strand demo -p \"int main\" -n 400 --temp 0.7\n  strand demo --out /tmp/demo && strand generate -m /tmp/demo -p \"// \"");
  return {c, [a] { return run_demo(*a); }};
}

}  // namespace strand::cli
