// strand validate — every op on every tier against the float64 reference, and the whole GPT-2
// per tier; writes the op × tier support table to docs/ops.md.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "backends/registry.h"
#include "core/error.h"
#include "devices/machine.h"
#include "validate/validate.h"

namespace strand::cli {

namespace {

namespace fs = std::filesystem;

struct ValidateArgs {
  std::string backend;
  uint64_t seed = 0;
  int cases = 4;
  bool json = false;
  bool no_docs = false;
  std::string docs;
  std::string fixtures;
  bool ops_only = false;
  bool no_large = false;
  int tokens = 16;
};

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

// The tiers named by --backend (comma-separated), or every tier of the build.
std::vector<std::shared_ptr<Backend>> pick_tiers(const std::string& spec) {
  const auto all = all_backends();
  if (spec.empty() || spec == "all") return all;
  std::vector<std::shared_ptr<Backend>> out;
  size_t pos = 0;
  while (pos <= spec.size()) {
    const size_t comma = spec.find(',', pos);
    const std::string name = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    std::shared_ptr<Backend> found;
    for (const auto& b : all)
      if (b->name() == name) found = b;
    if (!found) {
      std::string names;
      for (const auto& b : all) names += (names.empty() ? "" : ", ") + b->name();
      fail("--backend: unknown tier '{}' (this build has: {})", name, names);
    }
    if (const Verdict v = found->probe(); !v.ok) fail("--backend: tier '{}' is not usable here: {}", name, v.reason);
    for (const auto& b : out)
      if (b->name() == name) fail("--backend: tier '{}' named twice", name);
    out.push_back(found);
  }
  return out;
}

int run_validate_command(const ValidateArgs& a, CLI::App* app) {
  ValidateOptions opt;
  opt.tiers = pick_tiers(a.backend);
  opt.seed = a.seed;
  if (app->count("--seed") == 0) opt.seed = std::random_device{}() % 1000000000ull;
  opt.cases_per_op = a.cases;
  opt.models = !a.ops_only;
  opt.large_cases = !a.no_large;
  opt.greedy_tokens = a.tokens;
  std::string fixtures_note;
  if (!a.fixtures.empty()) {
    if (!fs::is_directory(a.fixtures)) fail("--fixtures {}: not a directory", a.fixtures);
    opt.fixtures_dir = a.fixtures;
  } else if (fs::is_directory("tests/fixtures/gpt2")) {
    opt.fixtures_dir = "tests/fixtures/gpt2";
  } else if (opt.models) {
    fixtures_note = "tests/fixtures/gpt2 is not under the current directory: only the in-memory random GPT-2 was checked "
                    "(give the fixtures with --fixtures DIR)";
  }

  // Where docs/ops.md goes.
  std::string docs_path, docs_note;
  if (a.no_docs) {
    docs_note = "not written (--no-write-docs)";
  } else if (!a.docs.empty()) {
    docs_path = a.docs;
    const fs::path parent = fs::path(a.docs).parent_path();
    if (!parent.empty() && !fs::is_directory(parent)) fail("--docs {}: the directory {} does not exist", a.docs, parent.string());
  } else if (fs::is_directory("docs")) {
    docs_path = "docs/ops.md";
  } else {
    docs_note = "not written: no docs/ directory under the current directory (give a path with --docs PATH)";
  }

  const bool tty = ::isatty(2);
  if (!a.json) std::printf("strand validate: every op on every tier against the float64 reference, seed %llu\n",
                           (unsigned long long)opt.seed);
  if (tty) opt.progress = [](const std::string& s) { std::fprintf(stderr, "  [%s]\n", s.c_str()); };
  ValidateReport rep = run_validate(opt);
  if (!fixtures_note.empty()) rep.notes.push_back(fixtures_note);

  std::string command = fmt::format("strand validate --seed {} --cases {}", opt.seed, opt.cases_per_op);
  if (!a.backend.empty()) command += " --backend " + a.backend;
  if (a.ops_only) command += " --ops-only";
  if (a.no_large) command += " --no-large";
  if (app->count("--tokens")) command += fmt::format(" --tokens {}", a.tokens);
  const std::string machine = machine_summary_line();
  if (!docs_path.empty()) {
    write_ops_markdown(docs_path, rep, command, machine, utc_now());
    docs_note = "written to " + docs_path;
  }

  if (a.json) {
    nlohmann::json j = rep.to_json();
    j["command"] = command;
    j["machine"] = machine;
    j["docs"] = {{"path", docs_path.empty() ? nlohmann::json(nullptr) : nlohmann::json(docs_path)}, {"note", docs_note}};
    std::puts(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("machine: %s\n", machine.c_str());
    std::fputs(rep.table().c_str(), stdout);
    std::printf("op x tier table: %s\n", docs_note.c_str());
  }
  std::fflush(stdout);
  if (!rep.pass()) {
    std::fprintf(stderr, "strand: error: validate: %d check(s) FAILED (rerun with --seed %llu)\n", rep.failures(),
                 (unsigned long long)opt.seed);
    return 1;
  }
  return 0;
}

}  // namespace

Command add_validate(CLI::App& parent) {
  Command c;
  auto args = std::make_shared<ValidateArgs>();
  CLI::App* app = parent.add_subcommand(
      "validate", "prove every op on every tier (and the whole GPT-2) against the float64 reference");
  c.app = app;
  app->add_option("--backend", args->backend, "comma-separated tiers to check (default: every tier of this build)");
  app->add_option("--seed", args->seed, "seed of the random shapes and inputs (default: a fresh one, printed)")
      ->check(CLI::Validator([](std::string& v) { return v.rfind('-', 0) == 0 ? std::string("must not be negative") : std::string(); }, ""));
  app->add_option("--cases", args->cases, "random rounds over every op (weight dtypes cycle f32, f16, bf16 from round to round; q8 in every round), plus GPT-2-sized cases")
      ->check(CLI::Range(1, 1000));
  app->add_flag("--json", args->json, "print exactly one JSON value on stdout");
  app->add_flag("--no-write-docs", args->no_docs, "do not write docs/ops.md");
  app->add_option("--docs", args->docs, "where to write the op x tier table (default: docs/ops.md when ./docs exists)");
  app->add_option("--fixtures", args->fixtures,
                  "directory of tiny GPT-2 model directories to check end to end (default: tests/fixtures/gpt2 when present)");
  app->add_flag("--ops-only", args->ops_only, "skip the whole-GPT-2 checks");
  app->add_flag("--no-large", args->no_large, "skip the GPT-2-sized op cases (quicker; a tier that takes only large products is then not exercised)");
  app->add_option("--tokens", args->tokens, "greedy decode steps per model check")->check(CLI::Range(1, 64));
  app->footer(
      "A tier passes a case when its error against the float64 reference is at most twice the naive f32\n"
      "tier's error on the same case (plus 4 f32 ulps). A tier that declines an op is 'not supported', not a\n"
      "failure. Exits 1 on any failure.\n"
      "Example:\n  strand validate --seed 42\n  strand validate --backend cpu --cases 8 --json --no-write-docs");
  c.run = [args, app]() -> int { return run_validate_command(*args, app); };
  return c;
}

}  // namespace strand::cli
