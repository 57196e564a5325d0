// The conventions users bring from llama.cpp and Hugging Face, and the small things a newcomer
// trips on: short flags, --version, defaults in -h, a printed random seed, stdin and /dev/null
// as -f, the --json fields of generate, nothing on stdout after a --no-fallback error, --explain
// on a line of its own, demo --out saying where, validate leaving other projects' docs/ alone,
// the devices crossover table agreeing with its verdict, the naive tier's thread count in bench
// model, and progress lines: on stderr, only when asked for or on a terminal, never with --json
// or --quiet.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "devices/machine.h"
#include "devices/probe.h"
#include "tokenizer/gpt2_tokenizer.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using strand::cli_test::fixture_dir;
using strand::cli_test::read_file;
using strand::cli_test::run_strand;
using strand::cli_test::RunOptions;
using strand::cli_test::RunResult;
using strand::cli_test::ScratchDir;
using strand::cli_test::TempCacheDir;
using strand::cli_test::write_file;

const std::string kF32 = fixture_dir("tiny-f32").string();
const std::string kPplTxt = (fixture_dir("tiny-f32") / "ppl.txt").string();
const std::string kPplLongTxt = (fixture_dir("tiny-f32") / "ppl_long.txt").string();

void expect_ok(const RunResult& r) {
  ASSERT_TRUE(r.exited) << r.describe();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_FALSE(strand::cli_test::has_sanitizer_report(r.err)) << r.describe();
}

json one_json(const RunResult& r) {
  try {
    return json::parse(r.out);
  } catch (const json::exception& e) {
    ADD_FAILURE() << "stdout is not exactly one JSON value: " << e.what() << "\n" << r.describe();
    return json();
  }
}

// One clean error line naming every needle, exit 1, nothing on stdout.
void expect_one_line_error(const RunResult& r, const std::vector<std::string>& needles) {
  SCOPED_TRACE(r.command());
  ASSERT_TRUE(r.exited) << r.describe();
  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
  const auto lines = r.err_lines();
  ASSERT_EQ(lines.size(), 1u) << r.describe();
  EXPECT_EQ(lines[0].rfind("strand: error: ", 0), 0u) << r.describe();
  for (const std::string& n : needles) EXPECT_NE(lines[0].find(n), std::string::npos) << n << "\n" << r.describe();
}

std::vector<int32_t> ids(const json& j) { return j.get<std::vector<int32_t>>(); }

}  // namespace

TEST(Conventions, VersionFlag) {
  const RunResult r = run_strand({"--version"});
  expect_ok(r);
  EXPECT_EQ(r.out, std::string("strand ") + STRAND_VERSION + "\n") << r.describe();
}

TEST(Conventions, EveryHelpShowsDefaults) {
  // The option parser shows a captured default as "=value" after the option's type.
  const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> cases = {
      {{"generate", "-h"}, {"INT:INT in [0 - 1073741824]=32", "--repeat-last-n INT=64", "TEXT=auto", "--temp FLOAT=1"}},
      {{"demo", "-h"}, {"=300", "=160", "=3000"}},
      {{"train", "-h"}, {"TEXT:{bytes,gpt2}=bytes", "=1000", "=256"}},
      {{"bench", "train", "-h"}, {"TEXT=124M", "=4", "=256", "TEXT=cpu"}},
      {{"perplexity", "-h"}, {"=0", "TEXT=auto"}},
      {{"bench", "gemm", "-h"}, {"INT=7", "TEXT=md", "=900"}},
      {{"bench", "model", "-h"}, {"=512", "=128", "=5", "TEXT=full"}},
      {{"devices", "-h"}, {"=0"}},
      {{"validate", "-h"}, {"=4", "=16"}},
      {{"export", "coreml", "-h"}, {"=prefill"}},
  };
  for (const auto& [args, needles] : cases) {
    const RunResult r = run_strand(args);
    expect_ok(r);
    for (const std::string& n : needles) EXPECT_NE(r.out.find(n), std::string::npos) << n << "\n" << r.describe();
  }
}

TEST(Conventions, ShortFlagsEqualTheLongOnes) {
  ScratchDir s;
  const std::string prompt_file = (s / "prompt.txt").string();
  write_file(prompt_file, "The cat sat on");
  const RunResult a = run_strand({"generate", "-m", kF32, "-f", prompt_file, "-n", "6", "--temp", "0.9", "-s", "11",
                                  "-t", "1", "-c", "40", "--json"});
  const RunResult b = run_strand({"generate", "-m", kF32, "--prompt", "The cat sat on", "-n", "6", "--temp", "0.9",
                                  "--seed", "11", "--threads", "1", "--ctx", "40", "--json"});
  expect_ok(a);
  expect_ok(b);
  EXPECT_EQ(ids(one_json(a)["ids"]), ids(one_json(b)["ids"]));
  EXPECT_EQ(ids(one_json(a)["prompt_ids"]), ids(one_json(b)["prompt_ids"]));
  // bench: -r repetitions, -o output format, -t threads.
  const RunResult g = run_strand({"bench", "gemm", "--sizes", "16", "--rungs", "naive", "-r", "1", "-o", "csv", "-t", "1"});
  expect_ok(g);
  EXPECT_EQ(g.out.rfind("shape,M,N,K", 0), 0u) << g.describe();
  const RunResult m = run_strand({"bench", "model", "-m", kF32, "--backend", "naive", "-p", "4", "-n", "2", "-r", "1",
                                  "-o", "csv", "--probe", "off", "-t", "1"}, 300);
  expect_ok(m);
  EXPECT_EQ(m.out.rfind("backend,threads", 0), 0u) << m.describe();
  // -c is the context: a prompt longer than it is refused, naming -c.
  expect_one_line_error(run_strand({"generate", "-m", kF32, "-p", "The cat sat on the mat", "-c", "3", "--json"}),
                        {"-c", "3"});
}

TEST(Conventions, RandomSeedIsPrintedAndRepeatsTheRun) {
  const std::vector<std::string> args = {"generate", "-m", kF32, "-p", "It could", "-n", "8", "--temp", "1.2", "--json"};
  const RunResult a = run_strand(args), b = run_strand(args);
  expect_ok(a);
  expect_ok(b);
  const json ja = one_json(a), jb = one_json(b);
  ASSERT_TRUE(ja.contains("seed") && ja["seed"].is_number_unsigned()) << a.describe();
  EXPECT_NE(ja["seed"], jb["seed"]) << "two runs without -s had the same seed";
  std::vector<std::string> again = args;
  again.insert(again.end(), {"-s", std::to_string(ja["seed"].get<uint64_t>())});
  const RunResult c = run_strand(again);
  expect_ok(c);
  EXPECT_EQ(ids(one_json(c)["ids"]), ids(ja["ids"])) << "-s with the printed seed did not repeat the run";
  EXPECT_EQ(one_json(c)["seed"], ja["seed"]);
  // Human mode: on stderr.
  const RunResult h = run_strand({"generate", "-m", kF32, "-p", "It could", "-n", "3", "-s", "77"});
  expect_ok(h);
  EXPECT_NE(h.err.find("seed 77"), std::string::npos) << h.describe();
}

TEST(Conventions, SeedAndTemperatureOutOfRangeAreOneLine) {
  expect_one_line_error(run_strand({"generate", "-m", kF32, "-p", "hi", "-s", "18446744073709551616", "--json"}),
                        {"--seed 18446744073709551616", "18446744073709551615"});
  expect_one_line_error(run_strand({"generate", "-m", kF32, "-p", "hi", "-s", "-1", "--json"}), {"--seed"});
  expect_one_line_error(run_strand({"bench", "model", "-m", kF32, "-s", "99999999999999999999"}), {"--seed"});
  expect_one_line_error(run_strand({"generate", "-m", kF32, "-p", "hi", "--temp", "inf", "--json"}),
                        {"--temp inf", "finite"});
  expect_one_line_error(run_strand({"generate", "-m", kF32, "-p", "hi", "--temp", "nan", "--json"}), {"--temp"});
  expect_one_line_error(run_strand({"generate", "-m", kF32, "-p", "hi", "--min-p", "2", "--json"}), {"--min-p"});
  expect_one_line_error(run_strand({"generate", "-m", kF32, "-p", "hi", "--repeat-penalty", "0", "--json"}),
                        {"--repeat-penalty"});
}

TEST(Conventions, FileDashIsStdinAndDevNullIsEmpty) {
  const std::string text = "Hello world, the cat";
  const RunResult p = run_strand({"tokenize", "-m", kF32, "-p", text, "--json"});
  RunOptions in;
  in.stdin_text = text;
  const RunResult f = run_strand({"tokenize", "-m", kF32, "-f", "-", "--json"}, 60, in);
  expect_ok(p);
  expect_ok(f);
  EXPECT_EQ(one_json(f), one_json(p));
  in.stdin_text = read_file(kPplTxt);
  const RunResult s = run_strand({"perplexity", "-m", kF32, "-f", "-", "--json"}, 60, in);
  const RunResult t = run_strand({"perplexity", "-m", kF32, "-f", kPplTxt, "--json"});
  expect_ok(s);
  expect_ok(t);
  EXPECT_EQ(one_json(s)["nll"], one_json(t)["nll"]);
  in.stdin_text = "The cat";
  const RunResult g = run_strand({"generate", "-m", kF32, "-f", "-", "-n", "3", "--temp", "0", "--json"}, 60, in);
  expect_ok(g);
  EXPECT_EQ(ids(one_json(g)["prompt_ids"]), strand::Gpt2Tokenizer::load_dir(kF32).encode("The cat"));
  // /dev/null: an empty text, not "no such file".
  const RunResult n = run_strand({"tokenize", "-m", kF32, "-f", "/dev/null", "--json"});
  expect_ok(n);
  EXPECT_EQ(one_json(n), json::array());
  const RunResult e = run_strand({"generate", "-m", kF32, "-f", "/dev/null", "-n", "2", "--temp", "0", "--json"});
  expect_ok(e);
  EXPECT_EQ(ids(one_json(e)["prompt_ids"]), std::vector<int32_t>{299});  // <|endoftext|>
  expect_one_line_error(run_strand({"perplexity", "-m", kF32, "-f", "/dev/null", "--json"}), {"-f /dev/null", "0 tokens"});
  // -p and -f together is a parser error; neither is a clear one.
  expect_one_line_error(run_strand({"generate", "-m", kF32, "--json"}), {"-p", "-f"});
}

TEST(Conventions, GenerateJsonHasStopSeedAndSpeeds) {
  const RunResult r = run_strand({"generate", "-m", kF32, "-p", "The cat", "-n", "5", "--temp", "0", "--json"});
  expect_ok(r);
  const json j = one_json(r);
  for (const char* k : {"prompt_ids", "ids", "text", "stop", "seed", "prompt_seconds", "gen_seconds",
                        "prompt_tokens_per_s", "gen_tokens_per_s"})
    EXPECT_TRUE(j.contains(k)) << k << "\n" << r.describe();
  EXPECT_TRUE(j["stop"] == "length" || j["stop"] == "eot") << r.describe();
  EXPECT_GT(j["prompt_tokens_per_s"].get<double>(), 0);
  if (j["ids"].size() > 1) EXPECT_GT(j["gen_tokens_per_s"].get<double>(), 0);
  // A stop string from the greedy text itself: stop reason "stop", the text ends before it.
  const std::string text = j["text"];
  if (text.size() >= 3) {
    const std::string stop = text.substr(1, 2);
    const RunResult s =
        run_strand({"generate", "-m", kF32, "-p", "The cat", "-n", "5", "--temp", "0", "--stop", stop, "--json"});
    expect_ok(s);
    const json js = one_json(s);
    EXPECT_EQ(js["stop"], "stop") << s.describe();
    EXPECT_EQ(js["stop_string"], stop);
    EXPECT_EQ(js["text"], text.substr(0, text.find(stop)));
    const RunResult h = run_strand({"generate", "-m", kF32, "-p", "The cat", "-n", "5", "--temp", "0", "--stop", stop});
    expect_ok(h);
    EXPECT_EQ(h.out, "The cat" + text.substr(0, text.find(stop)) + "\n") << h.describe();
  }
}

TEST(Conventions, NoFallbackErrorPrintsNothingOnStdout) {
  // The blas tier cannot take a layernorm: in the chain blas,naive with --no-fallback that is an
  // error, and the prompt must not have been echoed already.
  const RunResult r =
      run_strand({"generate", "-m", kF32, "-p", "The cat", "-n", "3", "--backend", "blas,naive", "--no-fallback"});
  ASSERT_TRUE(r.exited) << r.describe();
  if (r.err.find("not usable") != std::string::npos) GTEST_SKIP() << "no blas tier in this build";
  expect_one_line_error(r, {"--no-fallback", "blas"});
}

TEST(Conventions, ExplainStartsOnItsOwnLine) {
  RunOptions o;
  o.merge_stderr = true;  // stdout and stderr in one file, as in a terminal or `2>&1 | less`
  const RunResult r = run_strand({"generate", "-m", kF32, "-p", "The cat", "-n", "3", "--temp", "0", "--explain"}, 60, o);
  expect_ok(r);
  const size_t at = r.out.find("plan of the last forward pass");
  ASSERT_NE(at, std::string::npos) << r.describe();
  EXPECT_TRUE(at == 0 || r.out[at - 1] == '\n') << r.describe();
}

TEST(Conventions, DemoOutSaysWhereItWrote) {
  ScratchDir s;
  strand::cli_test::TempCacheDir cache;
  const std::string out = (s / "tiny").string();
  const std::vector<std::string> quick = {"--budget", "5", "--steps", "20", "-n", "4"};
  std::vector<std::string> args = {"demo", "--out", out};
  args.insert(args.end(), quick.begin(), quick.end());
  const RunResult h = run_strand(args, 300);
  expect_ok(h);
  EXPECT_NE(h.out.find("written to: " + fs::canonical(out).string()), std::string::npos) << h.describe();
  EXPECT_TRUE(fs::exists(fs::path(out) / "model.safetensors"));
  args.push_back("--json");
  const RunResult j = run_strand(args, 300);
  expect_ok(j);
  EXPECT_EQ(one_json(j)["out"], fs::canonical(out).string()) << j.describe();
  std::vector<std::string> no_out = {"demo", "--json"};
  no_out.insert(no_out.end(), quick.begin(), quick.end());
  const RunResult t = run_strand(no_out, 300);
  expect_ok(t);
  EXPECT_TRUE(one_json(t)["out"].is_null()) << t.describe();  // only the cache holds the model
}

TEST(Conventions, ValidateLeavesOtherProjectsDocsAlone) {
  ScratchDir s;
  fs::create_directories(s / "docs");
  RunOptions o;
  o.cwd = s.str();
  const std::vector<std::string> args = {"validate", "-s", "3", "--cases", "1", "--ops-only", "--no-large", "--backend", "naive"};
  const RunResult r = run_strand(args, 300, o);
  expect_ok(r);
  EXPECT_FALSE(fs::exists(s / "docs" / "ops.md")) << r.describe();
  EXPECT_NE(r.out.find("not written"), std::string::npos) << r.describe();
  // strand's own table (it says strand validate wrote it) is refreshed.
  write_file(s / "docs" / "ops.md", "# Op × tier support\n\n<!-- Generated by `strand validate`; do not edit -->\n");
  const RunResult w = run_strand(args, 300, o);
  expect_ok(w);
  EXPECT_NE(read_file(s / "docs" / "ops.md").find("strand validate --seed 3"), std::string::npos)
      << read_file(s / "docs" / "ops.md").substr(0, 300);
}

TEST(Conventions, DevicesCrossoverRowsAgreeWithTheVerdict) {
  TempCacheDir cache;
  strand::ProbeBudget b = strand::quick_probe_budget();
  b.quick = false;
  b.assume_quiet = true;
  strand::DeviceReport r = strand::probe_devices(true, 2, b);
  if (r.crossover_vs.empty()) GTEST_SKIP() << "no blas tier: no crossover";
  // One product where blas was faster, but a verdict of "never" (the least total time).
  r.crossover_points = {{1, 768, 768, 2.0 * 768 * 768, 1.0e-3, 1.2e-3, true},
                        {8, 768, 768, 16.0 * 768 * 768, 3.0e-3, 1.0e-3, false},
                        {64, 768, 768, 128.0 * 768 * 768, 9.0e-3, 3.0e-3, false}};
  r.blas_crossover_flops = strand::crossover_from_points(r.crossover_points);
  r.crossover_note = strand::crossover_note(r.crossover_points, r.blas_crossover_flops, r.crossover_vs);
  ASSERT_TRUE(std::isinf(r.blas_crossover_flops));
  ASSERT_EQ(strand::write_device_cache(r), "");
  const RunResult d = run_strand({"devices", "-t", "2"});
  expect_ok(d);
  EXPECT_NE(d.out.find("never"), std::string::npos) << d.out;
  EXPECT_NE(d.out.find("faster on 1 of the 3"), std::string::npos) << d.out;
  // Every row is placed on the other tier, as "never" says, though one was faster on blas.
  size_t rows = 0;
  for (size_t at = d.out.find(" x 768 x 768"); at != std::string::npos; at = d.out.find(" x 768 x 768", at + 1)) {
    const std::string line = d.out.substr(at, d.out.find('\n', at) - at);
    EXPECT_EQ(line.substr(line.size() - r.crossover_vs.size()), r.crossover_vs) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 3u) << d.out;
}

TEST(Conventions, BenchModelNaiveRowsSayOneThreadAndTheEstimateStaysShort) {
  const RunResult r = run_strand({"bench", "model", "-m", kF32, "--backend", "naive", "-t", "2", "-p", "4", "-n", "2",
                                  "-r", "1", "--probe", "off", "--json"},
                                 300);
  expect_ok(r);
  const json j = one_json(r);
  ASSERT_FALSE(j["results"].empty()) << r.describe();
  for (const json& x : j["results"]) EXPECT_EQ(x["threads"], 1) << x.dump();
  // Chains picked by default are estimated first; the estimate itself must take a small share of
  // --max-seconds: with a budget of a microsecond, one timed token, not a 64-token prefill.
  const RunResult e = run_strand({"bench", "model", "-m", kF32, "-p", "64", "-n", "4", "-r", "1", "--probe", "off",
                                  "--max-seconds", "0.000001", "--json"},
                                 300);
  expect_ok(e);
  const json je = one_json(e);
  ASSERT_FALSE(je["skipped"].empty()) << e.describe();
  for (const json& k : je["skipped"])
    EXPECT_NE(k["reason"].get<std::string>().find("timed 1-token prefill"), std::string::npos) << k.dump();
}

// ---- progress lines -------------------------------------------------------------------------

namespace {

RunOptions shown_at_once() {
  RunOptions o;
  o.env = {{"STRAND_PROGRESS_AFTER", "0"}};  // short work shows its line too
  return o;
}

}  // namespace

TEST(Progress, ForcedOnGoesToStderrWithRateAndNeverToStdout) {
  TempCacheDir cache;
  ScratchDir s;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"perplexity", "-m", kF32, "-f", kPplLongTxt, "--json"}, "perplexity"},
      {{"devices", "--quick", "--json"}, "strand devices"},
      {{"validate", "-s", "2", "--cases", "1", "--ops-only", "--no-large", "--backend", "naive", "--json",
        "--no-write-docs"}, "validate"},
      {{"bench", "gemm", "--sizes", "16,24", "--rungs", "naive", "-r", "1", "--json"}, "bench gemm"},
      {{"bench", "model", "-m", kF32, "--backend", "naive", "-p", "4", "-n", "2", "-r", "1", "--probe", "off", "--json"},
       "bench model"},
      {{"export", "coreml", "-m", kF32, "-o", (s / "t.mlpackage").string(), "--seq", "8", "--json"}, "export coreml"},
  };
  for (const auto& [args, label] : cases) {
    std::vector<std::string> on = args;
    on.push_back("--progress");
    const RunResult r = run_strand(on, 300, shown_at_once());
    expect_ok(r);
    SCOPED_TRACE(r.command());
    one_json(r);  // stdout: exactly one JSON value, no progress in it
    EXPECT_NE(r.err.find(label), std::string::npos) << r.describe();
    EXPECT_NE(r.err.find("done in"), std::string::npos) << r.describe();
    // --quiet: nothing on stderr at all.
    std::vector<std::string> quiet = args;
    quiet.push_back("--quiet");
    const RunResult q = run_strand(quiet, 300, shown_at_once());
    expect_ok(q);
    EXPECT_TRUE(q.err.empty()) << q.describe();
  }
}

TEST(Progress, OnATerminalUnlessJsonOrQuiet) {
  RunOptions tty = shown_at_once();
  tty.stderr_tty = true;
  const RunResult h = run_strand({"perplexity", "-m", kF32, "-f", kPplLongTxt}, 60, tty);
  expect_ok(h);
  EXPECT_NE(h.err.find("perplexity"), std::string::npos) << h.describe();
  EXPECT_NE(h.err.find("tokens"), std::string::npos) << h.describe();
  const RunResult j = run_strand({"perplexity", "-m", kF32, "-f", kPplLongTxt, "--json"}, 60, tty);
  expect_ok(j);
  EXPECT_EQ(j.err.find("perplexity"), std::string::npos) << "--json on a terminal: " << j.describe();
  const RunResult q = run_strand({"perplexity", "-m", kF32, "-f", kPplLongTxt, "-q"}, 60, tty);
  expect_ok(q);
  EXPECT_EQ(q.err.find("perplexity"), std::string::npos) << "--quiet on a terminal: " << q.describe();
  // Not a terminal and not asked for: nothing.
  const RunResult n = run_strand({"perplexity", "-m", kF32, "-f", kPplLongTxt}, 60, shown_at_once());
  expect_ok(n);
  EXPECT_TRUE(n.err.empty()) << n.describe();
}
