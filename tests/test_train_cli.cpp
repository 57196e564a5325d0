// strand train from the command line: a run that learns, a checkpoint every other command
// loads, a resumed run equal bit for bit to an uninterrupted one, determinism, and bad input.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "backends/amx/amx.h"
#include "cli_util.h"
#include "formats/safetensors.h"

using namespace strand::cli_test;
using json = nlohmann::json;

namespace {

// A small text corpus: strand's own docs (a few tens of kB).
std::string docs() { return (source_dir() / "docs").string(); }

std::vector<std::string> tiny_run(const std::string& out, const std::string& steps, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"train", "--data", docs(), "--layers", "2", "--embd", "32", "--heads", "2",
                                "--ctx", "32", "--batch", "4", "--steps", steps, "--lr", "3e-3", "--warmup", "2",
                                "--eval-every", "5", "-s", "11", "-t", "2", "--out", out, "--json"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::string bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

json parse(const RunResult& r) {
  try {
    return json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "stdout is not one JSON value: " << e.what() << "\n" << r.describe();
    return json::object();
  }
}

}  // namespace

TEST(TrainCli, LossFallsAndTheCheckpointLoadsEverywhere) {
  ScratchDir d("train");
  const std::string out = (d / "m").string();
  const RunResult r = run_strand(tiny_run(out, "30"), 300);
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  const json j = parse(r);
  ASSERT_EQ(j["history"].size(), 30u);
  const double first = j["history"][0]["loss"], last = j["history"][29]["loss"];
  EXPECT_NEAR(first, std::log(257.0), 0.3) << "a fresh model starts near uniform guessing";
  EXPECT_LT(last, first - 1.0) << "30 steps on strand's docs must cut the loss by more than a nat";
  EXPECT_TRUE(j["history"][29].contains("val_loss"));
  // A step's seconds (what tokens/s counts) leave out the evaluation, timed on its own.
  double eval = 0;
  for (const json& e : j["history"]) {
    EXPECT_GT(e["seconds"].get<double>(), 0.0);
    EXPECT_EQ(e.contains("eval_seconds"), e.contains("val_loss"));
    if (e.contains("eval_seconds")) eval += e["eval_seconds"].get<double>();
  }
  EXPECT_GT(eval, 0.0);
  EXPECT_DOUBLE_EQ(j["validation_seconds"].get<double>(), eval);
  for (const char* f : {"config.json", "model.safetensors", "vocab.json", "merges.txt", "optimizer.safetensors",
                        "trainer_state.json", "loss.svg"})
    EXPECT_TRUE(fs::exists(fs::path(out) / f)) << f;
  EXPECT_NE(bytes_of(fs::path(out) / "loss.svg").find("<svg"), std::string::npos);
  // The directory is a model like any other.
  const RunResult g = run_strand({"generate", "-m", out, "-p", "The ", "-n", "8", "--temp", "0", "--json"});
  EXPECT_TRUE(g.exited && g.exit_code == 0) << g.describe();
  { std::ofstream(d / "t.txt") << "strand runs one transformer on every tier.\n"; }
  const RunResult p = run_strand({"perplexity", "-m", out, "-f", (d / "t.txt").string(), "--json"});
  ASSERT_TRUE(p.exited && p.exit_code == 0) << p.describe();
  EXPECT_LT(parse(p)["ppl"].get<double>(), 257.0 / 4) << "a trained model beats uniform guessing by far";
  const RunResult e = run_strand({"export", "coreml", "-m", out, "-o", (d / "m.mlpackage").string(), "--seq", "16"});
  EXPECT_TRUE(e.exited && e.exit_code == 0) << e.describe();
  const RunResult b = run_strand(
      {"bench", "model", "-m", out, "-p", "8", "-n", "4", "-r", "1", "--backend", "cpu", "-t", "1", "-o", "json"}, 300);
  ASSERT_TRUE(b.exited && b.exit_code == 0) << b.describe();
  EXPECT_NE(b.out.find("\"tokens_per_s\""), std::string::npos) << b.describe();
}

TEST(TrainCli, ResumedRunEqualsUninterruptedBitForBit) {
  ScratchDir d("train");
  const std::string a = (d / "a").string(), b = (d / "b").string();
  const RunResult full = run_strand(tiny_run(a, "12"), 300);
  ASSERT_TRUE(full.exited && full.exit_code == 0) << full.describe();
  const RunResult half = run_strand(tiny_run(b, "12", {"--stop-after", "5"}), 300);
  ASSERT_TRUE(half.exited && half.exit_code == 0) << half.describe();
  EXPECT_TRUE(parse(half)["stopped_early"].get<bool>());
  EXPECT_NE(bytes_of(fs::path(a) / "model.safetensors"), bytes_of(fs::path(b) / "model.safetensors"));
  const RunResult rest = run_strand({"train", "--resume", b, "-t", "2", "--json"}, 300);
  ASSERT_TRUE(rest.exited && rest.exit_code == 0) << rest.describe();
  EXPECT_EQ(parse(rest)["steps"].get<int>(), 12);
  EXPECT_EQ(bytes_of(fs::path(a) / "model.safetensors"), bytes_of(fs::path(b) / "model.safetensors"));
  EXPECT_EQ(bytes_of(fs::path(a) / "optimizer.safetensors"), bytes_of(fs::path(b) / "optimizer.safetensors"));
  // The loss history of the resumed run is the uninterrupted run's.
  const json ha = parse(full)["history"], hb = parse(rest)["history"];
  ASSERT_EQ(ha.size(), hb.size());
  for (size_t i = 0; i < ha.size(); ++i) EXPECT_EQ(ha[i]["loss"].get<double>(), hb[i]["loss"].get<double>()) << i;
}

TEST(TrainCli, SameSeedSameModelOtherSeedOtherModel) {
  ScratchDir d("train");
  const std::string a = (d / "a").string(), b = (d / "b").string(), c = (d / "c").string();
  ASSERT_EQ(run_strand(tiny_run(a, "3"), 300).exit_code, 0);
  ASSERT_EQ(run_strand(tiny_run(b, "3"), 300).exit_code, 0);
  std::vector<std::string> other = tiny_run(c, "3");
  for (size_t i = 0; i + 1 < other.size(); ++i)
    if (other[i] == "-s") other[i + 1] = "12";
  ASSERT_EQ(run_strand(other, 300).exit_code, 0);
  EXPECT_EQ(bytes_of(fs::path(a) / "model.safetensors"), bytes_of(fs::path(b) / "model.safetensors"));
  EXPECT_NE(bytes_of(fs::path(a) / "model.safetensors"), bytes_of(fs::path(c) / "model.safetensors"));
}

TEST(TrainCli, TheSeedIsRandomAndPrintedWhenNotGiven) {
  ScratchDir d("train");
  std::vector<std::string> args = tiny_run((d / "a").string(), "1");
  args.erase(std::find(args.begin(), args.end(), "-s"), std::find(args.begin(), args.end(), "-s") + 2);
  const RunResult r1 = run_strand(args, 300);
  args[args.size() - 2] = (d / "b").string();
  const RunResult r2 = run_strand(args, 300);
  ASSERT_EQ(r1.exit_code, 0);
  ASSERT_EQ(r2.exit_code, 0);
  EXPECT_NE(parse(r1)["seed"], parse(r2)["seed"]);
}

TEST(TrainCli, BadInputIsOneLine) {
  ScratchDir d("train");
  const std::string out = (d / "o").string();
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  { std::ofstream(d / "empty.txt") << ""; }
  { std::ofstream(d / "bin.dat", std::ios::binary) << std::string("\xff\xfe\x00\x01", 4); }
  { std::ofstream(d / "state.json") << "{}"; }
  const std::vector<Case> cases = {
      {{"train", "--out", out}, "--data: give at least one text file or folder"},
      {{"train", "--data", (d / "missing.txt").string(), "--out", out}, "no such file or folder"},
      {{"train", "--data", (d / "empty.txt").string(), "--out", out}, "--data: no text found"},
      {{"train", "--data", (d / "bin.dat").string(), "--out", out}, "invalid UTF-8"},
      {{"train", "--data", docs()}, "--out: give the directory"},
      {{"train", "--data", docs(), "--out", out, "--embd", "30", "--heads", "4"}, "--embd 30: must be a multiple of --heads 4"},
      {{"train", "--data", docs(), "--out", out, "--lr", "-1"}, "--lr -1: must be a positive number"},
      {{"train", "--data", docs(), "--out", out, "--val-split", "1"}, "--val-split 1: must be in [0, 1)"},
      {{"train", "--data", docs(), "--out", out, "--tokenizer", "gpt2"}, "--tokenizer gpt2: give --tokenizer-dir"},
      {{"train", "--data", docs(), "--out", out, "--ctx", "99", "--positions", "64"}, "--ctx 99: longer than the model's context of 64"},
      {{"train", "--data", docs(), "--out", out, "--ctx", "99999"}, "fewer than one window of --ctx 99999 + 1"},
      {{"train", "--data", docs(), "--out", out, "--backend", "nope"}, "unknown tier 'nope'"},
      {{"train", "--resume", d.str()}, "trainer_state.json: no such file"},
      {{"train", "--resume", d.str(), "--data", docs()}, "--data: not with --resume"},
  };
  for (const Case& c : cases) {
    if (c.args.size() > 1 && c.args[1] == "--resume" && c.message.find("no such") != std::string::npos) {
      const RunResult r = run_strand(c.args);
      EXPECT_TRUE(r.exited && r.exit_code == 1) << r.describe();
      EXPECT_NE(r.err.find(c.message), std::string::npos) << r.describe();
      continue;
    }
    const RunResult r = run_strand(c.args);
    EXPECT_TRUE(r.exited && r.exit_code == 1) << r.describe();
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.describe();
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.describe();
    EXPECT_FALSE(has_sanitizer_report(r.err)) << r.describe();
  }
  // A state file that is not strand's.
  fs::create_directories(d / "ck");
  fs::copy_file(d / "state.json", d / "ck" / "trainer_state.json");
  const RunResult r = run_strand({"train", "--resume", (d / "ck").string()});
  EXPECT_TRUE(r.exited && r.exit_code == 1) << r.describe();
  EXPECT_NE(r.err.find("not a strand training state"), std::string::npos) << r.describe();
}

// bench train with peers: each chain beside the peer computing in its precision (PyTorch in f32
// for an f32 chain, in bf16 autocast for a mixed-precision one), the note saying when the only
// peer given computes in another; bad peer files are one line.
TEST(BenchTrainCli, PeersAreMatchedByPrecision) {
  TempCacheDir cache;  // the built-in crossover (32 rows): 4 x 8 rows and 32 channels reach it
  ScratchDir d("bench_train");
  { std::ofstream(d / "f32.json") << R"({"name": "P32", "tokens_per_s": 100, "dtype": "f32", "detail": "d32"})"; }
  { std::ofstream(d / "bf16.json") << R"({"name": "P16", "tokens_per_s": 200, "dtype": "bf16", "detail": "d16"})"; }
  { std::ofstream(d / "bad.json") << R"({"name": "no rate"})"; }
  const bool mixed = strand::avx512bf16_status().usable;
  const std::vector<std::string> small = {"bench", "train", "--layers", "1", "--embd", "32", "--heads", "2", "--vocab",
                                          "64", "--batch", "4", "-c", "8", "-r", "1", "--warmup", "0", "-t", "1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = small;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const std::string both = (d / "f32.json").string() + "," + (d / "bf16.json").string();
  const RunResult r = run_strand(with({"--backend", mixed ? "cpu;avx512bf16,cpu" : "cpu", "--peer", both}), 300);
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.describe();
  EXPECT_NE(r.out.find("cpu (1 threads): "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("x P32 (100.0 tokens/s, d32)\n"), std::string::npos) << r.out;
  if (mixed) EXPECT_NE(r.out.find("x P16 (200.0 tokens/s, d16)\n"), std::string::npos) << r.out;
  // Only a bf16 peer for an f32 chain: compared, and said so.
  const RunResult o = run_strand(with({"--backend", "cpu", "--peer", (d / "bf16.json").string()}), 300);
  ASSERT_TRUE(o.exited && o.exit_code == 0) << o.describe();
  EXPECT_NE(o.out.find("x P16 (200.0 tokens/s, d16) — not like for like: f32 against the peer's bf16"), std::string::npos)
      << o.out;
  for (const auto& [peer, message] : std::vector<std::pair<std::string, std::string>>{
           {(d / "f32.json").string() + ",", "an empty file name"},
           {(d / "missing.json").string(), "missing.json"},
           {(d / "bad.json").string(), "expected an object with \"tokens_per_s\""}}) {
    const RunResult b = run_strand(with({"--backend", "cpu", "--peer", peer}));
    EXPECT_TRUE(b.exited && b.exit_code == 1) << b.describe();
    EXPECT_NE(b.err.find(message), std::string::npos) << b.describe();
    EXPECT_EQ(std::count(b.err.begin(), b.err.end(), '\n'), 1) << b.describe();
  }
}
