// strand — the command line (strand::cli::run). Parses, calls the library, prints. No logic of its own.
//
//   strand demo                                  the main job: a GPT-2 strand trains on its own sources
//   strand generate   -m DIR -p TEXT -n N        text generation with the KV cache
//   strand perplexity -m DIR -f FILE             mean NLL and perplexity of a text
//   strand tokenize   -m DIR (-p TEXT | -f FILE) token ids
//
// Human output by default; --json prints exactly one JSON value on stdout. Every error is
// one line on stderr and a non-zero exit.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <new>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/commands.h"
#include "backends/cpu/threadpool.h"
#include "backends/registry.h"
#include "core/error.h"
#include "model/generate.h"
#include "model/gpt2.h"
#include "model/gpt2_weights.h"
#include "model/weight_cast.h"
#include "tokenizer/gpt2_tokenizer.h"

namespace fs = std::filesystem;
using namespace strand;
using json = nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string read_text_file(const std::string& path, const char* what) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail("{} {}: is a directory, not a text file", what, path);
  if (!fs::is_regular_file(path, ec)) fail("{} {}: no such file", what, path);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{} {}: cannot open", what, path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<int32_t> encode_arg(const Gpt2Tokenizer& tok, const std::string& text, const std::string& what) {
  try {
    return tok.encode(text);
  } catch (const Error& e) {
    fail("{}: {}", what, e.what());
  }
}

// Options shared by the commands that run the model.
struct RunArgs {
  std::string model;
  std::string backend = "auto";
  bool no_fallback = false;
  bool explain = false;
  bool json = false;
  std::string weights;  // empty: as stored

  void add_to(CLI::App* c, bool with_model = true) {
    if (with_model) c->add_option("-m,--model", model, "Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer files)")->required();
    c->add_option("--backend", backend, "tier chain, fastest first, e.g. 'naive' (default: every usable tier)");
    c->add_option("--weights", weights, "convert the weight matrices after loading: f32, f16, bf16 or int8 (default: as stored)")
        ->check(CLI::IsMember({"f32", "f16", "bf16", "int8"}));
    c->add_option_function<int>(
         "--threads", [](const int& n) { cpu::ThreadPool::set_global_threads(n); },
         "threads of the cpu tier (default: STRAND_THREADS or every hardware thread)")
        ->check(CLI::Range(1, 1024));
    c->add_flag("--no-fallback", no_fallback, "make any fallback to a later tier an error");
    c->add_flag("--explain", explain, "print where every node ran and why (on stderr)");
    c->add_flag("--json", json, "print exactly one JSON value on stdout");
  }
};

struct GenArgs {
  std::string prompt;
  int n = 32;
  double temp = 1.0;
  int top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  void add_to(CLI::App* c, bool prompt_required) {
    auto* p = c->add_option("-p,--prompt", prompt, "prompt text (empty: start from <|endoftext|>)");
    if (prompt_required) p->required();
    c->add_option("-n,--n-tokens", n, "tokens to generate (stops early at end-of-text)")->check(CLI::Range(0, 1 << 30));
    c->add_option("--temp", temp, "sampling temperature; 0 is greedy");
    c->add_option("--top-k", top_k, "keep only the k most likely tokens (0: all)");
    c->add_option("--top-p", top_p, "keep the smallest set of tokens with this total probability");
    c->add_option("--seed", seed, "random seed for sampling (a non-negative integer)")
        ->check(CLI::Validator([](std::string& v) { return v.rfind('-', 0) == 0 ? std::string("must not be negative") : std::string(); }, ""));
  }
  SamplerConfig sampler() const { return {temp, top_k, top_p, seed}; }
};

// Loads a model directory and stores its matrices the way strand runs them: column-major
// (weight_cast.h), converted to --weights' dtype when given.
Gpt2Model load_model(const std::string& dir, const RunArgs& ra) {
  Gpt2Model m = Gpt2Model::load(dir);
  const DType to = ra.weights.empty() ? m.weights.dtype : parse_weight_dtype(ra.weights);
  m.weights = cast_gpt2_weights(m.weights, to, MatrixLayout::ColMajor);
  return m;
}

void print_explain(const Gpt2Runner& r) {
  std::fprintf(stderr, "plan of the last forward pass (%s):\n%s", r.model().dir.c_str(),
               r.last_plan().explain(r.last_graph()).c_str());
}

// Shared by generate and demo.
json run_generate(const Gpt2Model& model, const Gpt2Tokenizer& tok, const RunArgs& ra, const GenArgs& ga,
                  bool stream) {
  std::vector<int32_t> prompt = encode_arg(tok, ga.prompt, "-p");
  if (prompt.empty()) {
    if (tok.eot_id() < 0) fail("-p: empty prompt and the vocabulary has no <|endoftext|> to start from");
    prompt.push_back(tok.eot_id());
  }
  if (int64_t(prompt.size()) > model.config.n_positions)
    fail("-p: the prompt is {} tokens, longer than the model's context of {} tokens", prompt.size(),
         model.config.n_positions);
  ga.sampler().validate();
  Gpt2Runner runner(model, make_chain(ra.backend), {ra.no_fallback, false});
  if (stream) {
    std::fwrite(ga.prompt.data(), 1, ga.prompt.size(), stdout);
    std::fflush(stdout);
  }
  const GenerateResult res = generate(runner, prompt, ga.n, ga.sampler(), tok.eot_id(), [&](int32_t id) {
    if (!stream) return;
    const std::string s = tok.token_bytes(id);
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  });
  if (stream) std::fputc('\n', stdout);
  if (ra.explain) print_explain(runner);
  json j = {{"prompt_ids", prompt}, {"ids", res.ids}, {"text", tok.decode(res.ids)}};
  j["stop"] = res.stop;
  j["prefill_seconds"] = res.prefill_seconds;
  j["decode_seconds"] = res.decode_seconds;
  return j;
}

void print_speed(FILE* out, const json& j) {
  const size_t np = j["prompt_ids"].size(), ng = j["ids"].size();
  const double pp = j["prefill_seconds"].get<double>(), tg = j["decode_seconds"].get<double>();
  std::fprintf(out, "[%zu prompt tokens in %.3f s; %zu generated in %.3f s (%.1f tokens/s); stop: %s]\n", np, pp, ng,
               tg, ng > 1 && tg > 0 ? double(ng - 1) / tg : 0.0, j["stop"].get<std::string>().c_str());
}

int cmd_generate(const RunArgs& ra, const GenArgs& ga) {
  const Gpt2Model model = load_model(ra.model, ra);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(ra.model);
  json j = run_generate(model, tok, ra, ga, !ra.json);
  if (ra.json) {
    j.erase("stop");
    j.erase("prefill_seconds");
    j.erase("decode_seconds");
    std::puts(dump(j).c_str());
  } else {
    print_speed(stderr, j);
  }
  return 0;
}

int cmd_perplexity(const RunArgs& ra, const std::string& file, int64_t stride) {
  const Gpt2Model model = load_model(ra.model, ra);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(ra.model);
  const std::vector<int32_t> ids = encode_arg(tok, read_text_file(file, "-f"), "-f " + file);
  if (ids.size() < 2)
    fail("-f {}: the text has {} token{}; perplexity needs at least 2", file, ids.size(), ids.size() == 1 ? "" : "s");
  Gpt2Runner runner(model, make_chain(ra.backend), {ra.no_fallback, false});
  const PerplexityResult r = perplexity(runner, ids, stride);
  if (ra.explain) print_explain(runner);
  if (ra.json) {
    std::puts(dump({{"tokens", r.tokens}, {"nll", r.nll}, {"ppl", r.ppl}}).c_str());
  } else {
    std::printf("%s: %lld tokens, %lld scored in %d window(s) of %d\nnll %.6f nats/token  perplexity %.4f\n",
                file.c_str(), (long long)r.tokens, (long long)r.scored, r.windows, model.config.n_positions, r.nll,
                r.ppl);
  }
  return 0;
}

int cmd_tokenize(const std::string& model, const std::string& prompt, const std::string& file, bool as_json) {
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(model);
  const std::vector<int32_t> ids =
      file.empty() ? encode_arg(tok, prompt, "-p") : encode_arg(tok, read_text_file(file, "-f"), "-f " + file);
  if (as_json) {
    std::puts(dump(json(ids)).c_str());
  } else {
    for (int32_t id : ids) {
      json piece = tok.token_bytes(id);
      std::printf("%6d  %s\n", id, dump(piece).c_str());
    }
    std::printf("%zu tokens\n", ids.size());
  }
  return 0;
}

}  // namespace

namespace strand::cli {

int run(int argc, char** argv) {
  CLI::App app{"strand: one GPT-2 transformer on every compute tier this machine has"};
  app.require_subcommand(1);
  app.footer("Start with: strand demo        Every command has -h with an example.");

  RunArgs ra;
  GenArgs ga;
  std::string file;
  int64_t stride = 0;
  bool tok_json = false;

  auto* gen = app.add_subcommand("generate", "generate text from a prompt");
  ra.add_to(gen);
  ga.add_to(gen, true);
  gen->footer("Example:\n  strand generate -m ./gpt2 -p \"The meaning of life is\" -n 40 --temp 0.8 --top-k 40 --seed 1");

  auto* ppl = app.add_subcommand("perplexity", "mean negative log-likelihood and perplexity of a text file");
  RunArgs pra;
  pra.add_to(ppl);
  ppl->add_option("-f,--file", file, "UTF-8 text file")->required();
  ppl->add_option("--stride", stride, "window step for texts longer than the context (default: context / 2)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  ppl->footer(
      "Every token after the first is predicted from all tokens before it, within a window of the model's\n"
      "context W; longer texts use windows of W tokens every --stride tokens, each token scored once.\n"
      "Example:\n  strand perplexity -m ./gpt2 -f wiki.txt --json");

  auto* tok = app.add_subcommand("tokenize", "token ids of a text with the model's GPT-2 tokenizer");
  std::string tok_model, tok_prompt;
  tok->add_option("-m,--model", tok_model, "directory with vocab.json + merges.txt or tokenizer.json")->required();
  auto* tp = tok->add_option("-p,--prompt", tok_prompt, "text");
  auto* tf = tok->add_option("-f,--file", file, "UTF-8 text file");
  tp->excludes(tf);
  tok->add_flag("--json", tok_json, "print the ids as one JSON array");
  tok->footer("Example:\n  strand tokenize -m ./gpt2 -p \"Hello world\" --json");

  // Commands defined in their own files.
  std::vector<cli::Command> extra;
  auto* bench = app.add_subcommand("bench", "benchmarks: the GEMM ladder and model throughput per tier");
  bench->require_subcommand(1);
  extra.push_back(cli::add_bench_gemm(*bench));
  extra.push_back(cli::add_bench_model(*bench));
  extra.push_back(cli::add_bench_train(*bench));
  extra.push_back(cli::add_devices(app));
  extra.push_back(cli::add_validate(app));
  extra.push_back(cli::add_export(app));
  extra.push_back(cli::add_explain(app));
  extra.push_back(cli::add_train(app));
  extra.push_back(cli::add_demo(app));

  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const auto* sub : app.get_subcommands({})) known = known || sub->get_name() == argv[1];
    if (!known) {
      std::fprintf(stderr, "strand: error: unknown command '%s' (see strand -h for the list)\n", argv[1]);
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, like every other strand error; the options are in -h.
    std::string msg = e.what();
    for (char& ch : msg)
      if (ch == '\n') ch = ' ';
    std::fprintf(stderr, "strand: error: %s (see -h)\n", msg.c_str());
    return 1;
  }
  try {
    for (const auto& c : extra)
      if (c.app->parsed()) return c.run();
    if (gen->parsed()) return cmd_generate(ra, ga);
    if (ppl->parsed()) return cmd_perplexity(pra, file, stride);
    if (tok->parsed()) {
      if (tok->count("-p") == 0 && tok->count("-f") == 0) fail("tokenize: give the text with -p TEXT or -f FILE");
      return cmd_tokenize(tok_model, tok_prompt, file, tok_json);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "strand: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "strand: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strand: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}

}  // namespace strand::cli
