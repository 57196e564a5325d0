// strand — the command line (strand::cli::run). Parses, calls the library, prints. No logic of its own.
//
//   strand demo                                  the main job: a GPT-2 strand trains on its own sources
//   strand generate   -m DIR (-p TEXT | -f FILE) -n N   text generation with the KV cache
//   strand perplexity -m DIR -f FILE             mean NLL and perplexity of a text
//   strand tokenize   -m DIR (-p TEXT | -f FILE) token ids
//
// Human output by default; --json prints exactly one JSON value on stdout. Every error is
// one line on stderr and a non-zero exit. Global flags (anywhere on the line): --progress,
// --quiet, --version. Short flags follow llama.cpp where strand has the option: -t threads,
// -c context, -s seed, -f file ("-" is standard input), -r repetitions, -o output format.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <new>
#include <random>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/commands.h"
#include "backends/cpu/threadpool.h"
#include "backends/registry.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/progress.h"
#include "planner/planner.h"
#include "model/generate.h"
#include "model/gpt2.h"
#include "model/gpt2_weights.h"
#include "model/weight_cast.h"
#include "tokenizer/gpt2_tokenizer.h"

namespace fs = std::filesystem;
using namespace strand;
using json = nlohmann::json;
using strand::cli::json_silences_progress;
using strand::cli::parse_seed;
using strand::cli::random_seed;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// The text of -f: "-" is standard input, /dev/null an empty text, anything else a regular file
// (checked before reading; errors name the file).
std::string read_text_file(const std::string& path) {
  if (path == "-") return read_stdin("-f -", kMaxTextBytes);
  struct stat st {}, null {};
  if (::stat(path.c_str(), &st) == 0 && ::stat("/dev/null", &null) == 0 && S_ISCHR(st.st_mode) &&
      st.st_rdev == null.st_rdev)
    return {};  // /dev/null (or a link to it): an empty text
  return read_regular_file(path, "-f", kMaxTextBytes);
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
    c->add_option("--backend", backend, "tier chain, fastest first, e.g. 'naive' (auto: every usable tier)");
    c->add_option("--weights", weights, "convert the weight matrices after loading: f32, f16, bf16 or int8 (default: as stored)")
        ->check(CLI::IsMember({"f32", "f16", "bf16", "int8"}));
    c->add_option_function<int>(
         "-t,--threads", [](const int& n) { cpu::ThreadPool::set_global_threads(n); },
         "threads of the cpu tier (default: STRAND_THREADS or every hardware thread)")
        ->check(CLI::Range(1, 1024));
    c->add_flag("--no-fallback", no_fallback, "make any fallback to a later tier an error");
    c->add_flag("--explain", explain, "print where every node ran and why (on stderr)");
    c->add_flag("--json", json, "print exactly one JSON value on stdout");
  }
};

struct GenArgs {
  std::string prompt;
  std::string prompt_file;
  int n = 32;
  double temp = 1.0;
  int top_k = 0;
  double top_p = 1.0;
  double min_p = 0.0;
  double repeat_penalty = 1.0;
  int repeat_last_n = 64;
  std::vector<std::string> stop;
  int64_t ctx = 0;
  std::string seed_text;  // empty: a random seed, printed
  uint64_t seed = 0;      // resolved by resolve_seed()

  // generate requires -p or -f (checked in run(), whose message can name both).
  void add_to(CLI::App* c) {
    auto* p = c->add_option("-p,--prompt", prompt, "prompt text (empty: start from <|endoftext|>)");
    auto* f = c->add_option("-f,--file", prompt_file, "read the prompt from a file ('-': standard input)");
    p->excludes(f);
    c->add_option("-n,--n-tokens", n, "tokens to generate (stops early at end-of-text or a stop string)")
        ->check(CLI::Range(0, 1 << 30));
    c->add_option("-c,--ctx", ctx, "context in tokens for prompt + generation (0: the model's n_positions)")
        ->check(CLI::Range(int64_t(0), int64_t(1) << 30));
    c->add_option("--temp", temp, "sampling temperature; 0 is greedy");
    c->add_option("--top-k", top_k, "keep only the k most likely tokens (0: all)");
    c->add_option("--top-p", top_p, "keep the smallest set of tokens with this total probability (1: all)");
    c->add_option("--min-p", min_p, "drop tokens less likely than min-p x the most likely token (0: off)");
    c->add_option("--repeat-penalty", repeat_penalty,
                  "divide positive logits (multiply negative ones) of tokens in the last --repeat-last-n context "
                  "tokens by this (1: off)");
    c->add_option("--repeat-last-n", repeat_last_n, "window of the repeat penalty in context tokens (-1: all of them)");
    c->add_option("--stop", stop, "stop when the generated text contains this string (not printed); repeatable")->default_str("");
    c->add_option("-s,--seed", seed_text, "random seed for sampling, 0 to 2^64-1 (default: a random one, printed)");
  }
  // The seed of this run: -s, or a fresh random one.
  void resolve_seed() { seed = seed_text.empty() ? random_seed() : parse_seed(seed_text, "--seed"); }
  SamplerConfig sampler() const {
    SamplerConfig c;
    c.temperature = temp;
    c.top_k = top_k;
    c.top_p = top_p;
    c.seed = seed;
    c.min_p = min_p;
    c.repeat_penalty = repeat_penalty;
    c.repeat_last_n = repeat_last_n;
    return c;
  }
  std::string prompt_text() const { return prompt_file.empty() ? prompt : read_text_file(prompt_file); }
  std::string prompt_what() const { return prompt_file.empty() ? "-p" : "-f " + prompt_file; }
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
  std::fflush(stdout);  // the plan starts on a line of its own when stdout and stderr share a terminal or file
  std::fprintf(stderr, "plan of the last forward pass (%s):\n%s", r.model().dir.c_str(),
               r.last_plan().explain(r.last_graph()).c_str());
}

// Shared by generate and demo.
json run_generate(const Gpt2Model& model, const Gpt2Tokenizer& tok, const RunArgs& ra, const GenArgs& ga,
                  bool stream) {
  const std::string prompt_text = ga.prompt_text();
  std::vector<int32_t> prompt = encode_arg(tok, prompt_text, ga.prompt_what());
  if (prompt.empty()) {
    if (tok.eot_id() < 0) fail("{}: empty prompt and the vocabulary has no <|endoftext|> to start from", ga.prompt_what());
    prompt.push_back(tok.eot_id());
  }
  const int64_t model_ctx = model.config.n_positions;
  if (ga.ctx > model_ctx) fail("-c {}: larger than the model's context of {} tokens", ga.ctx, model_ctx);
  const int64_t ctx = ga.ctx > 0 ? ga.ctx : model_ctx;
  if (int64_t(prompt.size()) > ctx)
    fail("{}: the prompt is {} tokens, longer than the {}context of {} tokens", ga.prompt_what(), prompt.size(),
         ga.ctx > 0 ? "-c " : "model's ", ctx);
  ga.sampler().validate();
  for (const std::string& s : ga.stop)
    if (s.empty()) fail("--stop: an empty stop string would stop before the first token");
  const auto chain = make_chain(ra.backend);
  if (ra.no_fallback) {
    // Both shapes the run will plan (the prompt, then one token at a time) are placed before
    // anything is printed: a fallback is an error with nothing on stdout.
    make_plan(build_forward(model, int64_t(prompt.size()), 0, false).graph, chain, true);
    if (ga.n > 1) make_plan(build_forward(model, 1, int64_t(prompt.size()), false).graph, chain, true);
  }
  Gpt2Runner runner(model, chain, {ra.no_fallback, false});
  GenerateOptions go;
  go.n = ga.n;
  go.sampler = ga.sampler();
  go.eot_id = tok.eot_id();
  go.context = ctx;
  go.stop = ga.stop;
  go.token_bytes = [&](int32_t id) { return tok.token_bytes(id); };
  // The prompt is echoed once the prefill has run (so an error leaves stdout empty).
  bool echoed = false;
  auto echo_prompt = [&] {
    if (!stream || echoed) return;
    echoed = true;
    std::fwrite(prompt_text.data(), 1, prompt_text.size(), stdout);
    std::fflush(stdout);
  };
  const GenerateResult res = generate(runner, prompt, go, [&](int32_t) { echo_prompt(); }, [&](std::string_view s) {
    if (!stream) return;
    echo_prompt();
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  });
  if (stream) {
    echo_prompt();
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  if (ra.explain) print_explain(runner);
  const size_t ng = res.ids.size();
  json j = {{"prompt_ids", prompt}, {"ids", res.ids}, {"text", res.text}, {"stop", res.stop}, {"seed", ga.seed}};
  if (res.stop == "stop") j["stop_string"] = res.stop_string;
  j["prompt_seconds"] = res.prefill_seconds;
  j["gen_seconds"] = res.decode_seconds;
  j["prompt_tokens_per_s"] = res.prefill_seconds > 0 ? json(double(prompt.size()) / res.prefill_seconds) : json(nullptr);
  // The first token comes from the prompt's logits: decoding produced the other ng - 1.
  j["gen_tokens_per_s"] = ng > 1 && res.decode_seconds > 0 ? json(double(ng - 1) / res.decode_seconds) : json(nullptr);
  return j;
}

void print_speed(FILE* out, const json& j) {
  const size_t np = j["prompt_ids"].size(), ng = j["ids"].size();
  const double pp = j["prompt_seconds"].get<double>(), tg = j["gen_seconds"].get<double>();
  std::string stop = j["stop"].get<std::string>();
  if (j.contains("stop_string")) stop += " " + dump(j["stop_string"]);
  std::fprintf(out, "[%zu prompt tokens in %.3f s; %zu generated in %.3f s (%.1f tokens/s); stop: %s; seed %llu]\n",
               np, pp, ng, tg, j["gen_tokens_per_s"].is_number() ? j["gen_tokens_per_s"].get<double>() : 0.0,
               stop.c_str(), (unsigned long long)j["seed"].get<uint64_t>());
}

int cmd_generate(const RunArgs& ra, GenArgs ga) {
  json_silences_progress(ra.json);
  ga.resolve_seed();
  const Gpt2Model model = load_model(ra.model, ra);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(ra.model);
  json j = run_generate(model, tok, ra, ga, !ra.json);
  if (ra.json)
    std::puts(dump(j).c_str());
  else
    print_speed(stderr, j);
  return 0;
}

int cmd_perplexity(const RunArgs& ra, const std::string& file, int64_t stride, int64_t ctx) {
  json_silences_progress(ra.json);
  const Gpt2Model model = load_model(ra.model, ra);
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(ra.model);
  const std::vector<int32_t> ids = encode_arg(tok, read_text_file(file), "-f " + file);
  if (ids.size() < 2)
    fail("-f {}: the text has {} token{}; perplexity needs at least 2", file, ids.size(), ids.size() == 1 ? "" : "s");
  if (ctx > model.config.n_positions)
    fail("-c {}: larger than the model's context of {} tokens", ctx, model.config.n_positions);
  Gpt2Runner runner(model, make_chain(ra.backend), {ra.no_fallback, false});
  const PerplexityResult r = perplexity(runner, ids, stride, ctx);
  if (ra.explain) print_explain(runner);
  if (ra.json) {
    std::puts(dump({{"tokens", r.tokens}, {"nll", r.nll}, {"ppl", r.ppl}}).c_str());
  } else {
    std::printf("%s: %lld tokens, %lld scored in %d window(s) of %lld\nnll %.6f nats/token  perplexity %.4f\n",
                file.c_str(), (long long)r.tokens, (long long)r.scored, r.windows, (long long)r.window, r.nll, r.ppl);
  }
  return 0;
}

int cmd_tokenize(const std::string& model, const std::string& prompt, const std::string& file, bool as_json) {
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(model);
  const std::vector<int32_t> ids =
      file.empty() ? encode_arg(tok, prompt, "-p") : encode_arg(tok, read_text_file(file), "-f " + file);
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

uint64_t parse_seed(const std::string& text, const std::string& option) {
  const std::string why = "must be an integer from 0 to 18446744073709551615";
  if (text.empty() || text.size() > 20 || text.find_first_not_of("0123456789") != std::string::npos)
    fail("{} {}: {}", option, text, why);
  uint64_t v = 0;
  for (const char ch : text) {
    const uint64_t d = uint64_t(ch - '0');
    if (v > (UINT64_MAX - d) / 10) fail("{} {}: {} (2^64 or more does not fit)", option, text, why);
    v = v * 10 + d;
  }
  return v;
}

std::vector<std::string> split_on(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t e = s.find(sep, pos);
    out.push_back(s.substr(pos, e == std::string::npos ? std::string::npos : e - pos));
    pos = e == std::string::npos ? s.size() + 1 : e + 1;
  }
  return out;
}

std::vector<std::string> parse_chain_list(const std::string& spec) {
  std::vector<std::string> chains = split_on(spec, ';');
  for (const std::string& c : chains)
    if (c.empty()) fail("--backend '{}': an empty chain (chains are separated by ';', tiers by ',')", spec);
  return chains;
}

std::vector<int> parse_thread_list(const std::string& spec) {
  std::vector<int> out;
  for (const std::string& t : split_on(spec, ',')) {
    char* end = nullptr;
    const long v = t.empty() ? 0 : std::strtol(t.c_str(), &end, 10);
    if (t.empty() || *end != '\0' || v < 1 || v > 256)
      fail("--threads '{}': '{}' is not a thread count from 1 to 256", spec, t);
    out.push_back(int(v));
  }
  return out;
}

uint64_t random_seed() {
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ uint64_t(rd());
}

void json_silences_progress(bool json) {
  if (json && progress_mode() == ProgressMode::Auto) set_progress_mode(ProgressMode::Off);
}

int run(int argc, char** argv) {
  CLI::App app{"strand: one GPT-2 transformer on every compute tier this machine has"};
  app.require_subcommand(1);
  app.footer("Start with: strand demo        Every command has -h with an example.");
  // Defaults show in every -h; global flags may come after the command (they fall through to here).
  app.option_defaults()->always_capture_default();
  app.fallthrough();
  app.set_version_flag("--version", std::string("strand ") + STRAND_VERSION);
  bool progress_on = false, quiet = false;
  auto* progress_flag =
      app.add_flag("--progress", progress_on, "progress lines on stderr even when it is not a terminal (for logs)");
  app.add_flag("-q,--quiet", quiet, "no progress lines")->excludes(progress_flag);

  RunArgs ra;
  GenArgs ga;
  std::string file;
  int64_t stride = 0, ppl_ctx = 0;
  bool tok_json = false;

  auto* gen = app.add_subcommand("generate", "generate text from a prompt");
  ra.add_to(gen);
  ga.add_to(gen);
  gen->footer(
      "Sampling: repeat penalty, then temperature, top-k, top-p, min-p (Hugging Face's order); --temp 0 is greedy.\n"
      "The seed is printed (stderr; \"seed\" in --json): -s SEED repeats a run.\n"
      "Examples:\n"
      "  strand generate -m ./gpt2 -p \"The meaning of life is\" -n 40 --temp 0.8 --top-k 40 -s 1\n"
      "  echo \"Once upon a time\" | strand generate -m ./gpt2 -f - -n 64 --min-p 0.05 --repeat-penalty 1.1 --stop $'\\n\\n'");

  auto* ppl = app.add_subcommand("perplexity", "mean negative log-likelihood and perplexity of a text file");
  RunArgs pra;
  pra.add_to(ppl);
  ppl->add_option("-f,--file", file, "UTF-8 text file ('-': standard input)")->required();
  ppl->add_option("-c,--ctx", ppl_ctx, "window W in tokens (0: the model's context)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 30));
  ppl->add_option("--stride", stride, "window step for texts longer than the window (0: W / 2)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  ppl->footer(
      "Every token after the first is predicted from all tokens before it, within a window of W tokens\n"
      "(the model's context, or -c); longer texts use windows of W tokens every --stride tokens, each token\n"
      "scored once.\n"
      "Example:\n  strand perplexity -m ./gpt2 -f wiki.txt --json\n  strand perplexity -m ./gpt2 -f wiki.txt -c 512 --stride 256");

  auto* tok = app.add_subcommand("tokenize", "token ids of a text with the model's GPT-2 tokenizer");
  std::string tok_model, tok_prompt;
  tok->add_option("-m,--model", tok_model, "directory with vocab.json + merges.txt or tokenizer.json")->required();
  auto* tp = tok->add_option("-p,--prompt", tok_prompt, "text");
  auto* tf = tok->add_option("-f,--file", file, "UTF-8 text file ('-': standard input)");
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
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, like every other strand error; the options are in -h.
    std::string msg = e.what();
    for (char& ch : msg)
      if (ch == '\n') ch = ' ';
    std::fprintf(stderr, "strand: error: %s (see -h)\n", msg.c_str());
    return 1;
  }
  if (quiet) set_progress_mode(ProgressMode::Off);
  if (progress_on) set_progress_mode(ProgressMode::On);
  try {
    for (const auto& c : extra)
      if (c.app->parsed()) return c.run();
    if (gen->parsed()) {
      if (gen->count("-p") == 0 && gen->count("-f") == 0)
        fail("generate: give the prompt with -p/--prompt TEXT or -f/--file FILE");
      return cmd_generate(ra, ga);
    }
    if (ppl->parsed()) return cmd_perplexity(pra, file, stride, ppl_ctx);
    if (tok->parsed()) {
      if (tok->count("-p") == 0 && tok->count("-f") == 0) fail("tokenize: give the text with -p TEXT or -f FILE");
      return cmd_tokenize(tok_model, tok_prompt, file, tok_json);
    }
  } catch (const Error& e) {
    std::fflush(stdout);
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
