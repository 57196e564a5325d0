// strand bench train — training tokens/s, GFLOP/s and MFU per tier chain and thread count,
// with a peer's measurement (a PyTorch step of the same shape) beside it when given.
#include <cstdio>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "bench/model_bench.h"
#include "bench/train_bench.h"
#include "core/error.h"
#include "core/file_io.h"

namespace strand::cli {

namespace {

using json = nlohmann::json;

struct BenchTrainArgs {
  std::string shape = "124M";
  int layers = 0, embd = 0, heads = 0, vocab = 0;
  int64_t batch = 4, ctx = 256;
  std::string backend = "cpu", threads;
  int reps = 3, warmup = 1;
  bool profile = false, json = false;
  std::string format = "md", peer;
  std::string seed = "1";
};

int run_bench_train(const BenchTrainArgs& a) {
  TrainBenchOptions o;
  if (a.shape == "124M") {
    o.config = gpt2_124m_config();
  } else if (a.shape == "demo") {
    o.config = gpt2_124m_config();
    o.config.n_layer = 4, o.config.n_embd = 192, o.config.n_head = 6, o.config.vocab_size = 257, o.config.n_inner = 768;
    o.config.tie_word_embeddings = true;
  } else {
    fail("--shape '{}': use 124M or demo (and --layers/--embd/--heads/--vocab to change it)", a.shape);
  }
  if (a.layers) o.config.n_layer = a.layers;
  if (a.embd) o.config.n_embd = a.embd, o.config.n_inner = 4 * a.embd;
  if (a.heads) o.config.n_head = a.heads;
  if (a.vocab) o.config.vocab_size = a.vocab;
  o.config.eos_token_id = o.config.vocab_size - 1;
  if (o.config.n_embd % o.config.n_head != 0) fail("--embd {} is not a multiple of --heads {}", o.config.n_embd, o.config.n_head);
  o.config.n_positions = int(a.ctx);
  o.batch = a.batch;
  o.ctx = a.ctx;
  o.chains = parse_chain_list(a.backend);
  if (!a.threads.empty()) o.threads = parse_thread_list(a.threads);
  o.reps = a.reps;
  o.warmup = a.warmup;
  o.profile = a.profile;
  o.seed = parse_seed(a.seed, "--seed");
  const std::string format = a.json ? "json" : a.format;
  if (format != "md" && format != "csv" && format != "json") fail("--format '{}': use md, csv or json", a.format);
  json_silences_progress(format == "json");
  // Peers: one file or several (comma-separated), e.g. PyTorch in f32 and in bf16 autocast.
  json peers = json::array();
  if (!a.peer.empty())
    for (const std::string& file : split_on(a.peer, ',')) {
      if (file.empty()) fail("--peer '{}': an empty file name (files are separated by ',')", a.peer);
      json peer;
      try {
        peer = json::parse(read_regular_file(file, "--peer", kMaxJsonConfigBytes));
      } catch (const json::exception& e) {
        fail("--peer {}: not valid JSON: {}", file, e.what());
      }
      if (!peer.is_object() || !peer.contains("tokens_per_s") || !peer["tokens_per_s"].is_number())
        fail("--peer {}: expected an object with \"tokens_per_s\" (tools/bench_train_torch.py writes one)", file);
      peers.push_back(peer);
    }
  if (::isatty(2)) o.progress = [](const std::string& s) { std::fprintf(stderr, "  [%s]\n", s.c_str()); };
  TrainBenchReport rep = run_train_bench(o);
  // Each chain against the peer computing in its precision (f32, or bf16 for a mixed-precision
  // chain), else against the first peer, the note then saying what each computes in.
  for (const auto& r : rep.results) {
    if (peers.empty()) break;
    const std::string want = r.precision.rfind("mixed", 0) == 0 ? "bf16" : "f32";
    const json* peer = &peers[0];
    for (const json& p : peers)
      if (p.value("dtype", std::string("f32")) == want) {
        peer = &p;
        break;
      }
    const double theirs = (*peer)["tokens_per_s"].get<double>();
    const std::string theirs_in = peer->value("dtype", std::string("f32"));
    rep.notes.push_back(fmt::format("{} ({} threads): {:.1f} tokens/s = {:.2f}x {} ({:.1f} tokens/s, {}){}", r.chain,
                                    r.threads, r.tps_median, r.tps_median / theirs,
                                    peer->value("name", std::string("the peer")), theirs,
                                    peer->value("detail", std::string()),
                                    theirs_in == want ? "" : fmt::format(" — not like for like: {} against the peer's {}", r.precision, theirs_in)));
  }
  if (format == "json") {
    json j = rep.to_json();
    if (!peers.empty()) j["peer"] = peers[0];
    if (peers.size() > 1) j["peers"] = peers;
    std::puts(j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  } else if (format == "csv") {
    std::fputs(rep.csv().c_str(), stdout);
  } else {
    std::fputs(rep.markdown().c_str(), stdout);
  }
  return 0;
}

}  // namespace

Command add_bench_train(CLI::App& parent) {
  auto a = std::make_shared<BenchTrainArgs>();
  CLI::App* app = parent.add_subcommand("train", "training tokens/s, GFLOP/s and MFU per tier chain and thread count");
  app->add_option("--shape", a->shape, "model shape: 124M (GPT-2 small) or demo (strand demo's)")->capture_default_str();
  app->add_option("--layers", a->layers, "change the shape's layers")->check(CLI::Range(1, 96));
  app->add_option("--embd", a->embd, "change the shape's channels")->check(CLI::Range(8, 16384));
  app->add_option("--heads", a->heads, "change the shape's heads")->check(CLI::Range(1, 256));
  app->add_option("--vocab", a->vocab, "change the shape's vocabulary")->check(CLI::Range(2, 1 << 22));
  app->add_option("--batch", a->batch, "sequences per step")->check(CLI::Range(int64_t(1), int64_t(1) << 16))->capture_default_str();
  app->add_option("-c,--ctx", a->ctx, "tokens per sequence")->check(CLI::Range(int64_t(1), int64_t(1) << 16))->capture_default_str();
  app->add_option("--backend", a->backend, "tier chains separated by ';', tiers by ','")->capture_default_str();
  app->add_option("-t,--threads", a->threads, "comma-separated thread counts (default: strand's count)");
  app->add_option("-r,--reps", a->reps, "timed steps per combination")->check(CLI::Range(1, 1000))->capture_default_str();
  app->add_option("--warmup", a->warmup, "untimed steps first")->check(CLI::Range(0, 1000))->capture_default_str();
  app->add_flag("--profile", a->profile, "one more step with every node timed: where the time goes, and the products' GFLOP/s");
  app->add_option("-o,--format", a->format, "md, csv or json")->capture_default_str();
  app->add_flag("--json", a->json, "same as --format json");
  app->add_option("--peer", a->peer,
                  "peers' measurements to compare with, comma-separated (JSON from tools/bench_train_torch.py; each "
                  "chain is set beside the one computing in its precision: f32, or bf16 for mixed precision)");
  app->add_option("--seed", a->seed, "seed of the weights and token ids")->capture_default_str();
  app->footer(
      "A step is what strand train does: forward, loss, backward, gradient norm and AdamW, on random token ids.\n"
      "Examples:\n"
      "  strand bench train --backend cpu -t 1,2 --profile\n"
      "  /usr/bin/python3 tools/bench_train_torch.py --threads 2 > torch.json && strand bench train -t 2 --peer torch.json\n"
      "  strand bench train -t 2 --backend 'cpu;avx512bf16,cpu' --peer torch.json,torch-bf16.json   # bf16 autocast beside the mixed chain\n"
      "  strand bench train --shape demo --batch 16 --ctx 128");
  return {app, [a]() -> int { return run_bench_train(*a); }};
}

}  // namespace strand::cli
