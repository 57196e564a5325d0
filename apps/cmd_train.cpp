// strand train — train a GPT-2 on text files with AdamW, on any tier chain, and save a
// Hugging Face directory that every other command (and transformers) loads.
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "bench/train_bench.h"
#include "backends/cpu/threadpool.h"
#include "core/error.h"
#include "core/progress.h"
#include "devices/probe.h"
#include "train/init.h"
#include "train/svg.h"
#include "train/trainer.h"

namespace strand::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int) { g_interrupted = true; }

struct TrainArgs {
  TrainConfig cfg;
  std::vector<std::string> data;
  std::string tokenizer_dir, out, resume;
  int layers = 4, embd = 128, heads = 4, positions = 0;
  int64_t stop_after = 0, save_every = 0;
  std::string seed_text;  // -s; empty: a random seed, printed
  bool json = false, explain = false;
  int threads = 0;
};

std::string eta_words(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) return fmt::format("{:.0f}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", int(s) / 60, int(s) % 60);
  return fmt::format("{}h{:02}m", int(s) / 3600, (int(s) / 60) % 60);
}

// The model and tokenizer a new run starts from: --init DIR, or fresh GPT-2 weights of the shape given.
std::unique_ptr<Trainer> start_run(TrainArgs& a) {
  TrainConfig& cfg = a.cfg;
  for (std::string& d : a.data) {
    std::error_code ec;
    const fs::path abs = fs::absolute(d, ec);
    if (!ec) d = abs.lexically_normal().string();
  }
  cfg.data = a.data;
  Gpt2Tokenizer tok = Gpt2Tokenizer::byte_level();
  Gpt2Config mcfg;
  Gpt2Weights weights;
  if (!cfg.init.empty()) {
    Gpt2Model m = load_trainable(cfg.init);
    mcfg = m.config;
    weights = std::move(m.weights);
    if (cfg.tokenizer == "gpt2") tok = Gpt2Tokenizer::load_dir(a.tokenizer_dir.empty() ? cfg.init : a.tokenizer_dir);
  } else {
    if (cfg.tokenizer == "gpt2") {
      if (a.tokenizer_dir.empty())
        fail("--tokenizer gpt2: give --tokenizer-dir DIR (a directory with GPT-2's vocab.json and merges.txt) or --init DIR");
      tok = Gpt2Tokenizer::load_dir(a.tokenizer_dir);
    }
    if (a.embd % a.heads != 0) fail("--embd {}: must be a multiple of --heads {}", a.embd, a.heads);
    mcfg.n_layer = a.layers;
    mcfg.n_embd = a.embd;
    mcfg.n_head = a.heads;
    mcfg.n_positions = a.positions > 0 ? a.positions : int(cfg.ctx);
    mcfg.vocab_size = tok.vocab_size();
    mcfg.n_inner = 4 * a.embd;
    mcfg.eos_token_id = tok.eot_id();
    mcfg.validate("train");
  }
  // The text first: a run it cannot feed fails before any weight is made.
  Corpus corpus = load_corpus(cfg.data, tok, cfg.val_split);
  for (const std::string& s : corpus.skipped) std::fprintf(stderr, "strand: skipped %s\n", s.c_str());
  if (cfg.ctx > mcfg.n_positions)
    fail("--ctx {}: longer than the model's context of {} tokens", cfg.ctx, mcfg.n_positions);
  if (int64_t(corpus.train.size()) < cfg.ctx + 1)
    fail("--data: {} training tokens, fewer than one window of --ctx {} + 1", corpus.train.size(), cfg.ctx);
  if (cfg.init.empty()) weights = init_gpt2_weights(mcfg, cfg.seed);
  return std::make_unique<Trainer>(mcfg, std::move(weights), std::move(tok), std::move(corpus), cfg, a.threads);
}

int run_train(TrainArgs& a, CLI::App* app) {
  json_silences_progress(a.json);
  a.threads = cpu::ThreadPool::global().size();
  std::unique_ptr<Trainer> t;
  if (!a.resume.empty()) {
    // Everything comes from the checkpoint; only the length of the run and where it is saved may change.
    for (const char* opt : {"--data", "--tokenizer", "--tokenizer-dir", "--init", "--layers", "--embd", "--heads",
                            "--positions", "--batch", "--ctx", "--lr", "--min-lr", "--warmup", "--wd", "--clip",
                            "--seed", "--eval-every", "--val-split", "--backend"})
      if (app->count(opt) > 0) fail("{}: not with --resume (the run goes on with the checkpoint's settings)", opt);
    t = Trainer::resume(a.resume, a.threads, app->count("--steps") > 0 ? a.cfg.steps : 0);
    if (a.out.empty()) a.out = a.resume;
  } else {
    if (a.data.empty()) fail("--data: give at least one text file or folder to train on (or --resume DIR)");
    if (a.out.empty()) fail("--out: give the directory to save the trained model in");
    a.cfg.seed = a.seed_text.empty() ? random_seed() : parse_seed(a.seed_text, "--seed");
    if (!a.cfg.init.empty() && !a.tokenizer_dir.empty() && a.cfg.tokenizer != "gpt2")
      fail("--tokenizer-dir: only with --tokenizer gpt2");
    t = start_run(a);
  }
  const TrainConfig& cfg = t->config();
  const Gpt2Config& mc = t->model_config();
  std::string peak_what;  // the bar MFU is measured against: the first tier's unit
  const double peak = training_peak_gflops(t->runner().plan().chain.front()->name(), t->threads(), &peak_what);
  int64_t nparams = 0;
  for (const Param& p : t->runner().params()) nparams += p.tensor.numel();
  if (a.explain) std::fprintf(stderr, "plan of one training step:\n%s", t->runner().plan().explain(t->runner().graph().graph).c_str());
  std::string tiers;
  for (const auto& b : t->runner().plan().chain) tiers += (tiers.empty() ? "" : " -> ") + b->name();
  if (!a.json) {
    std::printf("strand train — GPT-2 %d layers, %d channels, %d heads, context %d, vocabulary %d: %.2fM parameters\n",
                mc.n_layer, mc.n_embd, mc.n_head, mc.n_positions, mc.vocab_size, double(nparams) / 1e6);
    std::printf("data: %lld files, %.2f MB -> %zu training + %zu validation tokens (%s tokenizer)\n",
                (long long)t->corpus().files, double(t->corpus().bytes) / 1e6, t->corpus().train.size(),
                t->corpus().val.size(), cfg.tokenizer.c_str());
    std::printf("run: %lld steps of %lld x %lld tokens, AdamW lr %g -> %g (warmup %lld), wd %g, clip %g, seed %llu%s\n",
                (long long)cfg.steps, (long long)cfg.batch, (long long)cfg.ctx, cfg.lr, cfg.min_lr, (long long)cfg.warmup,
                cfg.weight_decay, cfg.clip, (unsigned long long)cfg.seed,
                a.resume.empty() ? "" : fmt::format(" (resumed at step {})", t->steps_done()).c_str());
    std::printf("tiers: %s, %d threads; %.2f GFLOP per step; peak %.0f GFLOP/s (%s)%s\n", tiers.c_str(),
                t->threads(), t->flops_per_step() / 1e9, peak, peak_what.c_str(),
                t->optimizer_device() ? fmt::format("; AdamW on the {} tier", t->optimizer_device()->name()).c_str() : "");
    std::fflush(stdout);
  }
  g_interrupted = false;
  auto old = std::signal(SIGINT, on_sigint);
  Progress prog("training", double(cfg.steps), "steps");
  prog.set(double(t->steps_done()));
  double secs = 0, eval_secs = 0;  // training steps; validation (not in tokens/s)
  int64_t ran = 0;
  auto line = [&](const StepLog& l) {
    const double tps = double(t->tokens_per_step()) / l.seconds;
    const double gf = t->flops_per_step() / l.seconds / 1e9;
    return fmt::format("step {:>5}/{}  loss {:.4f}{}  lr {:.2e}  |g| {:.3f}  {:.0f} tokens/s  {:.1f} GFLOP/s  MFU {:.0f}%",
                       l.step, cfg.steps, l.loss,
                       std::isfinite(l.val_loss) ? fmt::format("  val {:.4f}", l.val_loss) : std::string(), l.lr,
                       l.grad_norm, tps, gf, peak > 0 ? 100 * gf / peak : 0.0);
  };
  while (!t->done() && !g_interrupted && (a.stop_after == 0 || ran < a.stop_after)) {
    const StepLog l = t->step();
    ++ran;
    secs += l.seconds;
    eval_secs += l.eval_seconds;
    const double per = secs / double(ran);
    prog.set_note(fmt::format("loss {:.3f}  {:.0f} tok/s  ETA {}", l.loss, double(t->tokens_per_step()) / per,
                              eta_words(per * double(cfg.steps - t->steps_done()))));
    prog.set(double(t->steps_done()));
    const bool report = std::isfinite(l.val_loss) || l.step == 1 || t->done();
    if (report && !a.json) {
      std::printf("%s\n", line(l).c_str());
      std::fflush(stdout);
    }
    if (a.save_every > 0 && l.step % a.save_every == 0) t->save(a.out);
  }
  prog.finish();
  std::signal(SIGINT, old);
  t->save(a.out);
  const std::string svg = (fs::path(a.out) / "loss.svg").string();
  write_loss_svg(svg, t->history(), fmt::format("strand train: {} layers x {} channels, {} steps", mc.n_layer, mc.n_embd,
                                                t->steps_done()),
                 std::log(double(mc.vocab_size)));
  const double tps = ran > 0 ? double(ran * t->tokens_per_step()) / secs : 0;
  const double gf = ran > 0 ? double(ran) * t->flops_per_step() / secs / 1e9 : 0;
  const bool stopped = !t->done();
  if (a.json) {
    json hist = json::array();
    for (const StepLog& l : t->history()) {
      json e = {{"step", l.step}, {"loss", l.loss}, {"lr", l.lr}, {"grad_norm", l.grad_norm}, {"seconds", l.seconds}};
      if (std::isfinite(l.val_loss)) e["val_loss"] = l.val_loss, e["eval_seconds"] = l.eval_seconds;
      hist.push_back(e);
    }
    std::puts(json({{"out", a.out}, {"seed", cfg.seed}, {"steps", t->steps_done()}, {"planned_steps", cfg.steps},
                    {"stopped_early", stopped}, {"parameters", nparams}, {"threads", t->threads()},
                    {"tokens_per_s", tps}, {"gflops", gf}, {"peak_gflops", peak}, {"validation_seconds", eval_secs},
                    {"mfu", peak > 0 ? gf / peak : 0.0}, {"history", hist}})
                  .dump(-1, ' ', false, json::error_handler_t::replace)
                  .c_str());
  } else {
    std::printf("%s: %lld steps in %.1f s, %.0f tokens/s, %.1f GFLOP/s = %.0f%% of the peak (validation: %.1f s more)\n",
                stopped ? (g_interrupted ? "interrupted" : "stopped") : "done", (long long)ran, secs, tps, gf,
                peak > 0 ? 100 * gf / peak : 0.0, eval_secs);
    std::printf("saved %s: config.json, model.safetensors, vocab.json, merges.txt (a Hugging Face GPT-2 directory), "
                "optimizer.safetensors, trainer_state.json, loss.svg\n",
                a.out.c_str());
    if (stopped) std::printf("continue with: strand train --resume %s\n", a.out.c_str());
    else std::printf("try it: strand generate -m %s -p \"...\"\n", a.out.c_str());
  }
  return g_interrupted ? 130 : 0;
}

}  // namespace

Command add_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  auto* c = app.add_subcommand("train", "train a GPT-2 on text files (AdamW, warmup + cosine); saves a Hugging Face directory");
  TrainConfig& cfg = a->cfg;
  c->add_option("--data", a->data, "text files or folders (read recursively) to train on")->expected(1, -1);
  c->add_option("--tokenizer", cfg.tokenizer, "bytes (256 byte symbols + <|endoftext|>) or gpt2 (BPE from --tokenizer-dir or --init)")
      ->check(CLI::IsMember({"bytes", "gpt2"}))
      ->capture_default_str();
  c->add_option("--tokenizer-dir", a->tokenizer_dir, "directory with vocab.json + merges.txt (or tokenizer.json) for --tokenizer gpt2");
  c->add_option("--init", cfg.init, "start from this GPT-2 directory (its weights, shape and tokenizer) instead of fresh weights");
  c->add_option("--layers", a->layers, "layers of a fresh model")->check(CLI::Range(1, 96))->capture_default_str();
  c->add_option("--embd", a->embd, "channels of a fresh model")->check(CLI::Range(8, 16384))->capture_default_str();
  c->add_option("--heads", a->heads, "attention heads of a fresh model")->check(CLI::Range(1, 256))->capture_default_str();
  c->add_option("--positions", a->positions, "context length of a fresh model (default: --ctx)")->check(CLI::Range(1, 1 << 16));
  c->add_option("--steps", cfg.steps, "optimizer steps")->check(CLI::Range(int64_t(1), int64_t(1) << 40))->capture_default_str();
  c->add_option("--batch", cfg.batch, "sequences per step")->check(CLI::Range(int64_t(1), int64_t(1) << 20))->capture_default_str();
  c->add_option("-c,--ctx", cfg.ctx, "tokens per sequence")->check(CLI::Range(int64_t(1), int64_t(1) << 20))->capture_default_str();
  c->add_option("--lr", cfg.lr, "peak learning rate")->capture_default_str();
  c->add_option("--min-lr", cfg.min_lr, "learning rate at the end of the cosine decay")->capture_default_str();
  c->add_option("--warmup", cfg.warmup, "steps of linear warmup")->check(CLI::Range(int64_t(0), int64_t(1) << 40))->capture_default_str();
  c->add_option("--wd", cfg.weight_decay, "AdamW weight decay (matrices and embeddings)")->capture_default_str();
  c->add_option("--clip", cfg.clip, "clip the global gradient norm to this (0: no clipping)")->capture_default_str();
  c->add_option("-s,--seed", a->seed_text, "seed of the weights and the batches (default: random, printed)");
  c->add_option("--eval-every", cfg.eval_every, "validation loss every N steps (0: only at the end)")->capture_default_str();
  c->add_option("--val-split", cfg.val_split, "fraction of the text held out for validation")->capture_default_str();
  c->add_option("--backend", cfg.backend, "tier chain, fastest first (default: every usable tier)")->capture_default_str();
  c->add_flag("--no-fallback", cfg.strict, "make any fallback to a later tier an error");
  c->add_option_function<int>(
       "-t,--threads", [](const int& n) { cpu::ThreadPool::set_global_threads(n); },
       "threads of the cpu tier (default: STRAND_THREADS or every hardware thread)")
      ->check(CLI::Range(1, 1024));
  c->add_option("-o,--out", a->out, "directory to save the model, optimizer state and loss curve in");
  c->add_option("--resume", a->resume, "continue the run saved in this directory");
  c->add_option("--stop-after", a->stop_after, "stop after this many steps of this invocation, saving a checkpoint to resume")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  c->add_option("--save-every", a->save_every, "save a checkpoint every N steps")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  c->add_flag("--explain", a->explain, "print where every node of a training step runs, and why (stderr)");
  c->add_flag("--json", a->json, "print one JSON object (history, speed) on stdout");
  c->footer(
      "Checkpoints are Hugging Face GPT-2 directories (config.json, model.safetensors, vocab.json, merges.txt) plus\n"
      "optimizer.safetensors and trainer_state.json; Ctrl-C saves one. Same tier and thread count: a resumed run\n"
      "continues bit for bit.\nExamples:\n"
      "  strand train --data docs/ --steps 300 --out /tmp/tiny\n"
      "  strand train --init ./gpt2 --tokenizer gpt2 --data book.txt --lr 1e-4 --steps 100 --out ./gpt2-book\n"
      "  strand train --resume /tmp/tiny --steps 600");
  return {c, [a, c] { return run_train(*a, c); }};
}

}  // namespace strand::cli
