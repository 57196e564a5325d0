// strand validate and strand bench model: the library entry on the tiers of this build, a tier
// that is wrong on purpose, a tier that declines ops, the generated op table, and the two
// commands' JSON and error contracts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>

#include <nlohmann/json.hpp>

#include "backends/amx/amx.h"
#include "backends/naive/naive.h"
#include "backends/registry.h"
#include "bench/model_bench.h"
#include "cli_util.h"
#include "model/gpt2.h"
#include "model/weight_cast.h"
#include "core/error.h"
#include "validate/opcheck.h"
#include "validate/validate.h"

using namespace strand;
using namespace strand::cli_test;
using json = nlohmann::json;

namespace {

uint64_t test_seed() {
  if (const char* s = std::getenv("STRAND_SEED")) return std::strtoull(s, nullptr, 10);
  return 20261126;
}

std::string fixtures() { return (source_dir() / "tests" / "fixtures" / "gpt2").string(); }

// Small and quick: one random round per op, the fixtures and the in-memory model, 4 greedy steps.
ValidateOptions small_options() {
  ValidateOptions o;
  o.seed = test_seed();
  o.cases_per_op = 1;
  o.large_cases = false;
  o.fixtures_dir = fixtures();
  o.greedy_tokens = 4;
  return o;
}

// Runs the naive kernels, then scales the outputs of every matrix product by (1 + 1e-3).
class PerturbedBackend final : public Backend {
 public:
  std::string name() const override { return "perturbed"; }
  std::string description() const override { return "test tier: matrix products off by 1e-3 relative"; }
  Verdict probe() const override { return Verdict::yes(); }
  Verdict supports(const Graph&, const Node&) const override { return Verdict::yes("test"); }
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    for (NodeId n : nodes) {
      naive_->run(g, std::span<const NodeId>(&n, 1), values);
      const Node& nd = g.node(n);
      if (nd.op != OpKind::MatMul && nd.op != OpKind::Linear) continue;
      Tensor& o = values[size_t(nd.output)];
      for (int64_t i = 0; i < o.numel(); ++i) o.ptr<float>()[i] *= 1.001f;
    }
  }

 private:
  std::unique_ptr<Backend> naive_ = make_naive_backend();
};

// Declines attention everywhere and matrix products with non-f32 weights; runs the rest naively.
class PickyBackend final : public Backend {
 public:
  std::string name() const override { return "picky"; }
  std::string description() const override { return "test tier: declines some ops"; }
  Verdict probe() const override { return Verdict::yes(); }
  Verdict supports(const Graph& g, const Node& n) const override {
    if (n.op == OpKind::Attention) return Verdict::no("no attention kernel here");
    if ((n.op == OpKind::MatMul || n.op == OpKind::Linear) && g.value(n.inputs[1]).dtype != DType::F32)
      return Verdict::no("f32 weights only");
    return Verdict::yes("test");
  }
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    naive_->run(g, nodes, values);
  }

 private:
  std::unique_ptr<Backend> naive_ = make_naive_backend();
};

const OpTierResult* find_row(const ValidateReport& r, const std::string& op, DType dt, const std::string& tier) {
  for (const auto& x : r.ops)
    if (x.op == op && x.dtype == dt && x.tier == tier) return &x;
  return nullptr;
}

// Exactly one JSON value on stdout (parse() rejects anything after it but whitespace).
json parse_one(const RunResult& r) {
  try {
    return json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "stdout is not one JSON value: " << e.what() << "\n" << r.describe();
    return json();
  }
}

}  // namespace

TEST(Validate, EveryTierOfThisBuildPasses) {
  ValidateOptions o = small_options();
  SCOPED_TRACE(testing::Message() << "seed " << o.seed << " (rerun with STRAND_SEED=" << o.seed << ")");
  const ValidateReport r = run_validate(o);
  EXPECT_TRUE(r.pass()) << r.table();
  // Every op of the table was checked on every usable tier; the models ran on every usable tier.
  int usable = 0;
  for (const auto& t : r.tiers) usable += t.usable;
  ASSERT_GT(usable, 0);
  for (int k = 0; k < int(OpKind::kCount); ++k) {
    int tiers_seen = 0;
    for (const auto& t : r.tiers)
      if (t.usable && find_row(r, std::string(op_name(OpKind(k))), DType::F32, t.name)) ++tiers_seen;
    EXPECT_EQ(tiers_seen, usable) << op_name(OpKind(k));
  }
  // 4 fixtures + the in-memory model in f32, f16, bf16 and q8, on every usable tier.
  EXPECT_EQ(r.models.size(), size_t(usable) * (4 + case_weight_dtypes().size())) << r.table();
  for (const auto& m : r.models) EXPECT_EQ(m.tokens, 4) << m.model << " " << m.tier;
}

TEST(Validate, WrongTierIsReportedAsFail) {
  ValidateOptions o = small_options();
  o.fixtures_dir.clear();
  o.tiers = {std::shared_ptr<Backend>(make_naive_backend()), std::make_shared<PerturbedBackend>()};
  const ValidateReport r = run_validate(o);
  EXPECT_FALSE(r.pass());
  EXPECT_GT(r.failures(), 0);
  const OpTierResult* mm = find_row(r, "matmul", DType::F32, "perturbed");
  ASSERT_NE(mm, nullptr);
  EXPECT_EQ(mm->status, CheckStatus::Fail) << r.table();
  EXPECT_GT(mm->err, mm->tolerance);
  // Ops the tier computes right still pass; the naive tier passes everything.
  const OpTierResult* sm = find_row(r, "softmax", DType::F32, "perturbed");
  ASSERT_NE(sm, nullptr);
  EXPECT_EQ(sm->status, CheckStatus::Pass);
  for (const auto& x : r.ops)
    if (x.tier == "naive") EXPECT_EQ(x.status, CheckStatus::Pass) << x.op << ": " << x.reason;
  bool model_failed = false;
  for (const auto& m : r.models)
    if (m.tier == "perturbed") model_failed = model_failed || m.status == CheckStatus::Fail;
  EXPECT_TRUE(model_failed) << r.table();
  EXPECT_NE(r.table().find("FAIL"), std::string::npos);
  EXPECT_EQ(r.to_json()["pass"], false);
}

TEST(Validate, DecliningTierIsNotSupportedNotFailed) {
  ValidateOptions o = small_options();
  o.cases_per_op = 3;  // rounds cycle the weight dtypes: f32, f16, bf16
  o.fixtures_dir.clear();
  o.tiers = {std::make_shared<PickyBackend>()};
  const ValidateReport r = run_validate(o);
  EXPECT_TRUE(r.pass()) << r.table();
  const OpTierResult* at = find_row(r, "attention", DType::F32, "picky");
  ASSERT_NE(at, nullptr);
  EXPECT_EQ(at->status, CheckStatus::NotSupported);
  EXPECT_EQ(at->reason, "no attention kernel here");
  const OpTierResult* mm16 = find_row(r, "matmul", DType::F16, "picky");
  ASSERT_NE(mm16, nullptr);
  EXPECT_EQ(mm16->status, CheckStatus::NotSupported);
  EXPECT_EQ(mm16->reason, "f32 weights only");
  const OpTierResult* mm32 = find_row(r, "matmul", DType::F32, "picky");
  ASSERT_NE(mm32, nullptr);
  EXPECT_EQ(mm32->status, CheckStatus::Pass);
  const std::string table = r.table();
  EXPECT_NE(table.find("not supported: no attention kernel here"), std::string::npos) << table;
  // The model still runs: what the tier declines falls back to the bottom rung.
  ASSERT_FALSE(r.models.empty());
  for (const auto& m : r.models) {
    EXPECT_EQ(m.status, CheckStatus::Pass) << m.model << ": " << m.reason;
    EXPECT_LT(m.tier_flop_share, 1.0);
    EXPECT_NE(m.chain.find("picky,"), std::string::npos);
  }
}

TEST(Validate, OpsMarkdownNamesEveryOp) {
  ValidateOptions o = small_options();
  o.models = false;
  o.tiers = {std::shared_ptr<Backend>(make_naive_backend()), std::make_shared<PickyBackend>()};
  const ValidateReport r = run_validate(o);
  ScratchDir dir("validate");
  const std::string path = (dir / "ops.md").string();
  write_ops_markdown(path, r, "strand validate --seed 7", "test machine line", "2026-01-02 03:04 UTC");
  const std::string md = read_file(path);
  EXPECT_NE(md.find("strand validate --seed 7"), std::string::npos);
  EXPECT_NE(md.find("test machine line"), std::string::npos);
  EXPECT_NE(md.find("2026-01-02 03:04 UTC"), std::string::npos);
  EXPECT_NE(md.find("| op | weights | naive | picky |"), std::string::npos) << md;
  for (int k = 0; k < int(OpKind::kCount); ++k)
    EXPECT_NE(md.find("| " + std::string(op_name(OpKind(k))) + " |"), std::string::npos) << op_name(OpKind(k));
  EXPECT_NE(md.find("— no attention kernel here"), std::string::npos) << md;
  EXPECT_NE(md.find("✓"), std::string::npos);
  // A path in a directory that does not exist is a strand::Error naming it.
  EXPECT_THROW(write_ops_markdown((dir / "no" / "such" / "ops.md").string(), r, "c", "m", "d"), Error);
}

TEST(Validate, LargeCasesReachEveryWeightDtype) {
  const auto cases = large_op_cases(test_seed());
  for (DType dt : case_weight_dtypes()) {
    bool mm = false;
    for (const auto& c : cases) mm = mm || (c.op == OpKind::MatMul && case_weight_dtype(c) == dt);
    EXPECT_TRUE(mm) << dtype_name(dt);
  }
  bool over_1e8 = false;  // a product above a BLAS-style crossover
  for (const auto& c : cases)
    if (c.op == OpKind::MatMul) {
      const double flops = 2.0 * double(c.shapes[0][0]) * double(c.shapes[0][1]) *
                           double(c.attrs.trans_b ? c.shapes[1][0] : c.shapes[1][1]);
      over_1e8 = over_1e8 || flops >= 1e8;
    }
  EXPECT_TRUE(over_1e8);
}

TEST(BenchModel, DecodeBytesCountWhatOneTokenReads) {
  Gpt2Config cfg;
  cfg.n_layer = 2;
  cfg.n_embd = 64;
  cfg.n_head = 2;
  cfg.n_positions = 32;
  cfg.vocab_size = 100;
  cfg.n_inner = 256;
  Gpt2Model m;
  m.config = cfg;
  m.weights = random_gpt2_weights(cfg, 1, DType::F32);
  const double C = 64, F = 256, V = 100;
  const double per_layer = 4 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C);
  // Tied: lm_head reads all of wte; wpe gives one row.
  EXPECT_DOUBLE_EQ(decode_weight_bytes(m), 4 * (2 * per_layer + 2 * C + V * C + C));
  m.weights = cast_gpt2_weights(m.weights, DType::F16);
  const double f16_layer = 4 * 4 * C + 4 * (3 * C + C + F + C) + 2 * (C * 3 * C + C * C + C * F + F * C);
  EXPECT_DOUBLE_EQ(decode_weight_bytes(m), 2 * f16_layer + 4 * 2 * C + 2 * (V * C + C));

  // On a chain whose first tier packs the products' weights into bf16 tiles (the amx tier's
  // kernels, here on the C++ model, taking every row count), the products read the packed
  // weights: 2 bytes an element, N padded to 16 columns (the vocabulary's 100 to 112); layer
  // norms, biases and the gathered wpe row stay as they are.
  AmxOptions o;
  o.unit = AmxUnit::Model;
  o.min_rows_bf16 = 1;
  const std::vector<std::shared_ptr<Backend>> chain = {std::shared_ptr<Backend>(make_amx_backend(o)),
                                                       make_chain("cpu").front()};
  for (const DType dt : {DType::F32, DType::F16}) {
    m.weights = cast_gpt2_weights(random_gpt2_weights(cfg, 1, DType::F32), dt);
    const double e = double(dtype_size(dt));
    const double small = 4 * (4 * C + 3 * C + C + F + C);  // per layer: ln_1, ln_2, the four biases (f32)
    const double packed = 2 * (C * 3 * C + C * C + C * F + F * C);
    EXPECT_DOUBLE_EQ(decode_weight_bytes(m, chain), 2 * (small + packed) + 4 * 2 * C + e * C + 2 * C * 112)
        << dtype_name(dt);
  }
  // The cpu tier reads them as they are.
  EXPECT_DOUBLE_EQ(decode_weight_bytes(m, make_chain("cpu")), decode_weight_bytes(m));
}

TEST(ValidateCli, JsonIsOneValueAndWritesTheDocs) {
  ScratchDir dir("validate_cli");
  const std::string docs = (dir / "ops.md").string();
  // --no-large keeps it quick under the sanitizers; the GPT-2-sized cases run in `strand validate`'s default.
  const RunResult r = run_strand({"validate", "--json", "--seed", "5", "--cases", "1", "--tokens", "3", "--no-large",
                                  "--fixtures", fixtures(), "--docs", docs},
                                 300);
  ASSERT_TRUE(r.exited) << r.describe();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_FALSE(has_sanitizer_report(r.err)) << r.err;
  const json j = parse_one(r);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["seed"], 5);
  EXPECT_EQ(j["large_cases"], 0);
  EXPECT_EQ(j["pass"], true);
  EXPECT_EQ(j["failures"], 0);
  for (const char* k : {"tiers", "ops", "models", "notes", "machine", "command", "docs", "rule"})
    EXPECT_TRUE(j.contains(k)) << k;
  ASSERT_TRUE(j["ops"].is_array());
  for (int k = 0; k < int(OpKind::kCount); ++k) {
    bool seen = false;
    for (const auto& row : j["ops"]) seen = seen || row["op"] == std::string(op_name(OpKind(k)));
    EXPECT_TRUE(seen) << op_name(OpKind(k));
  }
  for (const auto& row : j["ops"])
    for (const char* k : {"op", "weights", "tier", "status", "err", "naive_err", "tolerance", "max_err", "reason"})
      EXPECT_TRUE(row.contains(k)) << k;
  ASSERT_FALSE(j["models"].empty());
  for (const auto& m : j["models"]) EXPECT_EQ(m["status"], "pass") << m.dump();
  EXPECT_EQ(j["docs"]["path"], docs);
  const std::string md = read_file(docs);
  EXPECT_NE(md.find("strand validate --seed 5"), std::string::npos) << md.substr(0, 400);
}

TEST(ValidateCli, HumanTablePrintsTheSeed) {
  // --no-write-docs: run from a checkout's root, validate would otherwise refresh docs/ops.md.
  const RunResult r = run_strand(
      {"validate", "--seed", "11", "--cases", "1", "--ops-only", "--no-large", "--backend", "naive", "--no-write-docs"}, 300);
  ASSERT_TRUE(r.exited) << r.describe();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("seed 11"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rerun with --seed 11"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("summary:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not written (--no-write-docs)"), std::string::npos) << r.out;
}

TEST(BenchModelCli, JsonIsOneValueWithTheExpectedFields) {
  const RunResult r = run_strand({"bench", "model", "-m", (source_dir() / "tests/fixtures/gpt2/tiny-f32").string(),
                                  "-p", "16", "-n", "4", "--reps", "2", "--backend", "naive", "--json", "--probe",
                                  "quick"},
                                 300);
  ASSERT_TRUE(r.exited) << r.describe();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_FALSE(has_sanitizer_report(r.err)) << r.err;
  const json j = parse_one(r);
  ASSERT_TRUE(j.is_object());
  for (const char* k : {"machine", "model", "settings", "formulas", "results", "skipped", "bounds"})
    EXPECT_TRUE(j.contains(k)) << k;
  ASSERT_EQ(j["results"].size(), 2u) << j.dump(2);
  const json& pp = j["results"][0];
  const json& tg = j["results"][1];
  EXPECT_EQ(pp["test"], "pp16");
  EXPECT_EQ(tg["test"], "tg4");
  for (const json* x : {&pp, &tg}) {
    EXPECT_EQ((*x)["backend"], "naive");
    EXPECT_EQ((*x)["weights"], "f32");
    EXPECT_EQ((*x)["reps"], 2);
    EXPECT_EQ((*x)["seconds"].size(), 2u);
    EXPECT_GT((*x)["tokens_per_s"]["median"].get<double>(), 0);
    EXPECT_GT((*x)["cold"]["tokens_per_s"].get<double>(), 0);
    EXPECT_GT((*x)["flops"].get<double>(), 0);
    EXPECT_GT((*x)["gflops"].get<double>(), 0);
  }
  EXPECT_GT(tg["bytes_per_token"].get<double>(), 0);
  EXPECT_GT(tg["gbs"].get<double>(), 0);
  EXPECT_TRUE(tg.contains("pct_bandwidth"));
  // The bandwidth is measured around each warm run (a shared machine's changes from moment to moment).
  EXPECT_EQ(tg["bandwidth_source"], "measured around each run") << tg.dump(2);
  EXPECT_GT(tg["bandwidth_gbs"].get<double>(), 0);
  EXPECT_GT(tg["pct_bandwidth"].get<double>(), 0);
  EXPECT_FALSE(pp.contains("bandwidth_source"));  // pp has no bandwidth bound
}

TEST(BenchModelCli, ProfileSaysWhereTheTimeGoes) {
  const std::string model = (source_dir() / "tests/fixtures/gpt2/tiny-f32").string();
  const RunResult r = run_strand({"bench", "model", "-m", model, "-p", "9", "-n", "3", "--reps", "1", "--backend",
                                  "naive", "--probe", "off", "--profile", "--json"},
                                 300);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const json j = parse_one(r);
  ASSERT_EQ(j["results"].size(), 2u) << j.dump(2);
  const Gpt2Config cfg = Gpt2Model::load(model).config;
  for (const json& res : j["results"]) {
    SCOPED_TRACE(res["test"].get<std::string>());
    ASSERT_TRUE(res.contains("profile")) << res.dump(2);
    const json& p = res["profile"];
    double sum = 0, prev = 1e300;
    std::map<std::string, int64_t> calls;
    for (const json& e : p["nodes"]) {
      const double s = e["seconds"].get<double>();
      EXPECT_GE(s, 0);
      EXPECT_LE(s, prev);  // largest first
      prev = s;
      sum += s;
      calls[e["kind"].get<std::string>()] = e["calls"].get<int64_t>();
    }
    EXPECT_NEAR(sum, p["seconds"].get<double>(), 1e-9 + 1e-6 * sum);
    // Layers are folded together: one entry per kind, a call per layer per forward pass.
    const int64_t passes = res["test"] == "tg3" ? 3 : 1;
    EXPECT_EQ(calls["linear mlp.c_fc"], cfg.n_layer * passes);
    EXPECT_EQ(calls["attention attn"], cfg.n_layer * passes);
    EXPECT_EQ(calls["matmul lm_head"], passes);
  }
  const RunResult md = run_strand({"bench", "model", "-m", model, "-p", "9", "-n", "0", "--reps", "1", "--backend",
                                   "naive", "--probe", "off", "--profile"},
                                  300);
  ASSERT_EQ(md.exit_code, 0) << md.describe();
  EXPECT_NE(md.out.find("profile: naive | "), std::string::npos) << md.out;
  EXPECT_NE(md.out.find(" | f32 | pp9: one more run"), std::string::npos) << md.out;
  EXPECT_NE(md.out.find("| linear mlp.c_fc |"), std::string::npos) << md.out;
}

TEST(BenchModelCli, MarkdownAndCsv) {
  const std::string model = (source_dir() / "tests/fixtures/gpt2/tiny-f16").string();
  const RunResult md = run_strand({"bench", "model", "-m", model, "-p", "8", "-n", "2", "--reps", "1", "--backend",
                                   "naive", "--weights", "f32,f16", "--probe", "off"},
                                  300);
  ASSERT_EQ(md.exit_code, 0) << md.describe();
  EXPECT_EQ(md.out.rfind("machine: ", 0), 0u) << md.out;
  EXPECT_NE(md.out.find("| backend | threads | weights | test |"), std::string::npos) << md.out;
  EXPECT_NE(md.out.find("| naive | "), std::string::npos) << md.out;
  EXPECT_NE(md.out.find("bytes/token"), std::string::npos) << md.out;
  const RunResult csv = run_strand({"bench", "model", "-m", model, "-p", "8", "-n", "0", "--reps", "1", "--backend",
                                    "naive", "--format", "csv", "--probe", "off"},
                                   300);
  ASSERT_EQ(csv.exit_code, 0) << csv.describe();
  EXPECT_EQ(csv.out.rfind("backend,threads,weights,test,", 0), 0u) << csv.out;
  EXPECT_NE(csv.out.find("\"naive\",") , std::string::npos) << csv.out;
}

TEST(ValidateCli, BadOptionsFailWithOneLine) {
  const std::string model = (source_dir() / "tests/fixtures/gpt2/tiny-f32").string();
  const std::vector<std::vector<std::string>> bad = {
      {"validate", "--backend", "nosuch"},
      {"validate", "--cases", "0"},
      {"validate", "--seed", "-3"},
      {"validate", "--fixtures", "/no/such/dir"},
      {"validate", "--docs", "/no/such/dir/ops.md"},
      {"bench", "model", "-m", model, "--threads", "0"},
      {"bench", "model", "-m", model, "--threads", "1,x"},
      {"bench", "model", "-m", model, "--weights", "f8"},
      {"bench", "model", "-m", model, "--backend", "nosuch"},
      {"bench", "model", "-m", model, "--backend", "naive;;naive"},
      {"bench", "model", "-m", model, "--format", "xml"},
      {"bench", "model", "-m", model, "--probe", "maybe"},
      {"bench", "model", "-m", model, "-p", "100000"},
      {"bench", "model", "-m", model, "-p", "0", "-n", "0"},
      {"bench", "model", "-m", model, "--reps", "0"},
      {"bench", "model", "-m", "/no/such/model"},
  };
  for (const auto& args : bad) {
    const RunResult r = run_strand(args, 60);
    ASSERT_TRUE(r.exited) << r.describe();
    EXPECT_EQ(r.exit_code, 1) << r.describe();
    EXPECT_EQ(r.err_lines().size(), 1u) << r.describe();
    EXPECT_EQ(r.err.rfind("strand: error: ", 0), 0u) << r.describe();
    EXPECT_TRUE(r.out.empty()) << r.describe();
  }
}

TEST(BenchModelCli, HelpHasAnExample) {
  const RunResult r = run_strand({"bench", "model", "-h"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("Example:"), std::string::npos) << r.out;
  const RunResult v = run_strand({"validate", "-h"});
  EXPECT_EQ(v.exit_code, 0) << v.describe();
  EXPECT_NE(v.out.find("Example:"), std::string::npos) << v.out;
}
