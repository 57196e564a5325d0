// The blas tier: matmul/linear against the float64 reference, what it claims and declines
// (with reasons), the crossover it reads from the device cache, its thread count, and a GPT-2
// forward on a chain blas -> (cpu ->) naive with correct logits and the placement visible.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/blas/blas.h"
#include "backends/naive/naive.h"
#include "backends/registry.h"
#include "cli_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "devices/machine.h"
#include "devices/probe.h"
#include "model/gpt2.h"
#include "planner/planner.h"
#include "validate/opcheck.h"
#include "validate/validate.h"

using namespace strand;
using json = nlohmann::json;
namespace fs = std::filesystem;
using strand::cli_test::TempCacheDir;

namespace {

const std::string kFixtures = std::string(STRAND_SOURCE_DIR) + "/tests/fixtures/gpt2/";

uint64_t test_seed() {
  if (const char* s = std::getenv("STRAND_SEED")) return std::strtoull(s, nullptr, 10);
  return 20240611;
}


bool blas_built() { return blas_library_info().built; }

#define SKIP_UNLESS_BLAS()                                                                   \
  if (!blas_built()) GTEST_SKIP() << "blas tier not built: " << make_blas_backend()->probe().reason

// Writes a devices-cache entry for this machine at strand's thread count with the given blas
// crossover (infinity: "never"), as `strand devices` would after measuring it.
DeviceReport write_crossover(double flops) {
  DeviceReport r;
  r.machine = machine_info();
  r.threads = default_thread_count();
  r.blas_crossover_flops = flops;
  r.crossover_vs = "cpu";
  EXPECT_EQ(write_device_cache(r), "");
  return r;
}

std::shared_ptr<Backend> blas_claiming_everything() {
  return make_blas_backend(BlasOptions{BlasCrossover{0, false, "test: claims every product"}, 0});
}

// A one-node graph: value ids 0.. for the inputs, then the output.
struct OneNode {
  Graph g;
  NodeId node = 0;
  OneNode(OpKind op, const std::vector<Shape>& shapes, const std::vector<DType>& dtypes, Attrs a = {}) {
    std::vector<ValueId> in;
    for (size_t i = 0; i < shapes.size(); ++i)
      in.push_back(i == 0 ? g.input("x", shapes[i], dtypes[i]) : g.weight(fmt::format("w{}", i), shapes[i], dtypes[i]));
    g.mark_output(g.add(op, in, a, "probe"));
    node = NodeId(g.nodes().size() - 1);
  }
  Verdict ask(const Backend& b) const { return b.supports(g, g.node(node)); }
};

}  // namespace

TEST(BlasTier, NotBuiltSaysWhy) {
  const auto b = make_blas_backend();
  EXPECT_EQ(b->name(), "blas");
  if (blas_built()) {
    EXPECT_TRUE(b->probe().ok) << b->probe().reason;
    EXPECT_NE(b->probe().reason.find(blas_library_info().corename), std::string::npos) << b->probe().reason;
    return;
  }
  EXPECT_FALSE(b->probe().ok);
  EXPECT_EQ(b->probe().reason,
            "not built: OpenBLAS was not found when strand was configured (install libopenblas-dev)");
  const OneNode mm(OpKind::MatMul, {{512, 768}, {768, 3072}}, {DType::F32, DType::F32});
  EXPECT_FALSE(mm.ask(*b).ok);
  EXPECT_EQ(blas_crossover_for(1).flops, std::numeric_limits<double>::infinity());
}

TEST(BlasTier, MatmulAndLinearMatchTheFloat64Reference) {
  SKIP_UNLESS_BLAS();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed << " (rerun with STRAND_SEED=" << seed << ")");
  const auto blas = blas_claiming_everything();
  std::vector<OpCase> cases;
  // The random cases of the op table that are f32 matrix products...
  for (const OpCase& c : random_op_cases(seed, 6))
    if ((c.op == OpKind::MatMul || c.op == OpKind::Linear) && c.dtypes[1] == DType::F32) cases.push_back(c);
  // ...and odd shapes of our own, both layouts, including a tied-lm_head-like trans_b.
  const int64_t shapes[][3] = {{1, 1, 1}, {1, 17, 3}, {3, 1, 17}, {17, 33, 65}, {64, 65, 63}, {1, 768, 301},
                               {5, 48, 300}, {129, 97, 257}, {2, 4097, 3}};
  for (const auto& s : shapes) {
    const int64_t M = s[0], K = s[1], N = s[2];
    Attrs a;
    cases.push_back({OpKind::MatMul, {{M, K}, {K, N}}, {DType::F32, DType::F32}, a,
                     fmt::format("matmul [{}, {}] x [{}, {}]", M, K, K, N)});
    a.trans_b = true;
    cases.push_back({OpKind::MatMul, {{M, K}, {N, K}}, {DType::F32, DType::F32}, a,
                     fmt::format("matmul [{}, {}] x [{}, {}] trans_b", M, K, N, K)});
    cases.push_back({OpKind::Linear, {{M, K}, {K, N}, {N}}, {DType::F32, DType::F32, DType::F32}, Attrs{},
                     fmt::format("linear [{}, {}] x [{}, {}] + [{}]", M, K, K, N, N)});
    // Column-major weights (how strand runs models): read through CblasTrans, and back.
    cases.push_back(cases.back());
    cases.back().col_major_weight = true;
    cases.back().label += " col-major";
    cases.push_back({OpKind::MatMul, {{M, K}, {N, K}}, {DType::F32, DType::F32}, a,
                     fmt::format("matmul [{}, {}] x [{}, {}] trans_b col-major", M, K, N, K)});
    cases.back().col_major_weight = true;
  }
  ASSERT_GT(cases.size(), 45u);
  for (size_t i = 0; i < cases.size(); ++i) {
    const OpCheck r = check_op(cases[i], blas, seed + i);
    EXPECT_TRUE(r.supported) << r.label << ": " << r.reason;
    EXPECT_TRUE(r.pass) << r.label << ": err " << r.err << " > tolerance " << r.tolerance << " (naive " << r.naive_err
                        << ")" << (r.unwritten ? ", left elements unwritten" : "") << " " << r.reason;
  }
}

TEST(BlasTier, ValidateChecksEveryProductWhateverTheCrossover) {
  // A crossover says where blas is worth it, not whether it is right: validate runs blas on
  // every f32 product even where the measured crossover would have it claim none.
  SKIP_UNLESS_BLAS();
  TempCacheDir cache;
  write_crossover(std::numeric_limits<double>::infinity());  // "never"
  const OneNode big(OpKind::MatMul, {{512, 768}, {768, 3072}}, {DType::F32, DType::F32});
  ASSERT_FALSE(big.ask(*make_blas_backend()).ok);  // as placed in a chain: it claims nothing
  ValidateOptions o;
  o.seed = 5;
  o.cases_per_op = 1;
  o.large_cases = false;
  o.models = false;
  o.tiers = {std::shared_ptr<Backend>(make_blas_backend()), std::shared_ptr<Backend>(make_naive_backend())};
  const ValidateReport r = run_validate(o);
  bool saw = false;
  for (const OpTierResult& row : r.ops)
    if (row.tier == "blas" && (row.op == "matmul" || row.op == "linear") && row.dtype == DType::F32) {
      saw = true;
      EXPECT_GT(row.ran, 0) << row.op << ": " << row.reason;
      EXPECT_EQ(row.status, CheckStatus::Pass) << row.op;
    }
  EXPECT_TRUE(saw);
}

TEST(BlasTier, StridedAndZeroDepthOperands) {
  SKIP_UNLESS_BLAS();
  // A row-strided view of A (every row padded by 5 floats) and K = 0 (the output is the bias).
  const int64_t M = 7, K = 19, N = 11, pad = 5;
  Rng rng(test_seed());
  Tensor big = Tensor::empty({M, K + pad}, DType::F32);
  for (int64_t i = 0; i < big.numel(); ++i) big.ptr<float>()[i] = float(rng.normal());
  Tensor a = big;
  a.shape = {M, K};
  a.strides = {K + pad, 1};
  Tensor w = Tensor::empty({K, N}, DType::F32), bias = Tensor::empty({N}, DType::F32);
  for (int64_t i = 0; i < w.numel(); ++i) w.ptr<float>()[i] = float(rng.normal());
  for (int64_t i = 0; i < N; ++i) bias.ptr<float>()[i] = float(rng.normal());
  const OneNode lin(OpKind::Linear, {{M, K}, {K, N}, {N}}, {DType::F32, DType::F32, DType::F32});
  auto run = [&](Backend& b, const Tensor& x) {
    std::vector<Tensor> v(lin.g.values().size());
    v[0] = x, v[1] = w, v[2] = bias;
    v[3] = Tensor::empty({M, N}, DType::F32);
    v[3].poison();
    const NodeId n = lin.node;
    b.run(lin.g, std::span<const NodeId>(&n, 1), v);
    return v[3];
  };
  const auto blas = blas_claiming_everything();
  Tensor packed = Tensor::empty({M, K}, DType::F32);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) packed.ptr<float>()[i * K + k] = big.ptr<float>()[i * (K + pad) + k];
  const Tensor got = run(*blas, a), want = run(*make_naive_backend(), packed);
  // A column-strided (transposed) view of W: the tier gathers it.
  Tensor wt = Tensor::empty({N, K}, DType::F32);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) wt.ptr<float>()[j * K + k] = w.ptr<float>()[k * N + j];
  Tensor wview = wt;
  wview.shape = {K, N};
  wview.strides = {1, K};
  const Tensor w_saved = w;
  w = wview;
  const Tensor got_t = run(*blas, packed);
  w = w_saved;
  for (int64_t i = 0; i < M * N; ++i) EXPECT_NEAR(got_t.ptr<float>()[i], want.ptr<float>()[i], 1e-4) << i;
  for (int64_t i = 0; i < M * N; ++i) EXPECT_NEAR(got.ptr<float>()[i], want.ptr<float>()[i], 1e-4) << i;

  const OneNode zero(OpKind::Linear, {{3, 0}, {0, 4}, {4}}, {DType::F32, DType::F32, DType::F32});
  std::vector<Tensor> v(zero.g.values().size());
  v[0] = Tensor::empty({3, 0}, DType::F32), v[1] = Tensor::empty({0, 4}, DType::F32);
  v[2] = Tensor::empty({4}, DType::F32);
  for (int j = 0; j < 4; ++j) v[2].ptr<float>()[j] = float(j + 1);
  v[3] = Tensor::empty({3, 4}, DType::F32);
  v[3].poison();
  const NodeId n = zero.node;
  blas->run(zero.g, std::span<const NodeId>(&n, 1), v);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(v[3].ptr<float>()[i * 4 + j], float(j + 1));
}

TEST(BlasTier, DeclinesWithReasons) {
  SKIP_UNLESS_BLAS();
  TempCacheDir cache;  // no measurement: the built-in default applies
  const auto blas = make_blas_backend();
  const OneNode small(OpKind::MatMul, {{1, 768}, {768, 768}}, {DType::F32, DType::F32});
  const Verdict v = small.ask(*blas);
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.reason.find("below crossover 2·M·N·K = 1.2e6 < 1.0e8 FLOP"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("built-in default"), std::string::npos) << v.reason;

  const OneNode big(OpKind::Linear, {{512, 768}, {768, 3072}, {3072}}, {DType::F32, DType::F32, DType::F32});
  EXPECT_TRUE(big.ask(*blas).ok) << big.ask(*blas).reason;
  Attrs tb;
  tb.trans_b = true;
  const OneNode lm_head(OpKind::MatMul, {{64, 768}, {50257, 768}}, {DType::F32, DType::F32}, tb);
  EXPECT_TRUE(lm_head.ask(*blas).ok) << lm_head.ask(*blas).reason;

  const OneNode f16(OpKind::MatMul, {{512, 768}, {768, 3072}}, {DType::F32, DType::F16});
  EXPECT_EQ(f16.ask(*blas).reason, "f16 weights: BLAS has no f16 sgemm; the cpu tier packs them");
  const OneNode bf16(OpKind::Linear, {{512, 768}, {768, 3072}, {3072}}, {DType::F32, DType::BF16, DType::BF16});
  EXPECT_FALSE(bf16.ask(*blas).ok);
  EXPECT_NE(bf16.ask(*blas).reason.find("bf16 weights"), std::string::npos);

  const OneNode add(OpKind::Add, {{512, 768}, {512, 768}}, {DType::F32, DType::F32});
  EXPECT_EQ(add.ask(*blas).reason, "not a matrix product");
  const OneNode ln(OpKind::LayerNorm, {{4, 8}, {8}, {8}}, {DType::F32, DType::F32, DType::F32});
  EXPECT_FALSE(ln.ask(*blas).ok);
}

TEST(BlasTier, UsesTheMeasuredCrossoverFromTheCache) {
  SKIP_UNLESS_BLAS();
  TempCacheDir cache;
  DeviceReport r = write_crossover(5e5);
  const BlasCrossover c = blas_crossover_for(r.threads);
  EXPECT_TRUE(c.measured);
  EXPECT_EQ(c.flops, 5e5);
  const auto blas = make_blas_backend();
  const OneNode small(OpKind::MatMul, {{1, 768}, {768, 768}}, {DType::F32, DType::F32});  // 1.2e6 FLOP
  const Verdict yes = small.ask(*blas);
  EXPECT_TRUE(yes.ok) << yes.reason;
  EXPECT_NE(yes.reason.find("measured, cache"), std::string::npos) << yes.reason;
  const OneNode tiny(OpKind::MatMul, {{1, 256}, {256, 256}}, {DType::F32, DType::F32});  // 1.3e5 FLOP
  const Verdict no = tiny.ask(*blas);
  EXPECT_FALSE(no.ok);
  EXPECT_NE(no.reason.find("below crossover 2·M·N·K = 1.3e5 < 5.0e5 FLOP (measured, cache "), std::string::npos)
      << no.reason;
  EXPECT_NE(no.reason.find("devices.json"), std::string::npos) << no.reason;

  // Another thread count has no entry: the default again.
  EXPECT_FALSE(blas_crossover_for(r.threads + 7).measured);

  // "never": blas declines every product.
  r.blas_crossover_flops = std::numeric_limits<double>::infinity();
  ASSERT_EQ(write_device_cache(r), "");
  const OneNode big(OpKind::MatMul, {{512, 768}, {768, 3072}}, {DType::F32, DType::F32});
  const Verdict never = big.ask(*make_blas_backend());
  EXPECT_FALSE(never.ok);
  EXPECT_NE(never.reason.find("never beat"), std::string::npos) << never.reason;
}

TEST(BlasTier, CorruptCacheFallsBackToTheDefault) {
  SKIP_UNLESS_BLAS();
  TempCacheDir cache;
  std::ofstream(cache.dir() / "devices.json") << "{\"format\": \"strand-devices\", \"entries\": [";
  const BlasCrossover c = blas_crossover_for(default_thread_count());
  EXPECT_FALSE(c.measured);
  EXPECT_EQ(c.flops, kBlasDefaultCrossoverFlops);
  EXPECT_NE(c.source.find("not valid JSON"), std::string::npos) << c.source;
  EXPECT_NO_THROW(make_chain("auto"));
}

TEST(BlasTier, SetsOpenBlasThreadsToStrands) {
  SKIP_UNLESS_BLAS();
  {
    const auto one = make_blas_backend(BlasOptions{std::nullopt, 1});
    EXPECT_EQ(blas_library_info().threads, 1);
  }
  const auto b = make_blas_backend();
  EXPECT_EQ(blas_library_info().threads, std::min(default_thread_count(), 64));  // OpenBLAS caps at its MAX_THREADS
  EXPECT_NE(b->probe().reason.find(fmt::format("{} thread", blas_library_info().threads)), std::string::npos)
      << b->probe().reason;
}

TEST(BlasTier, RegisteredFastestFirst) {
  // Faster tiers (a GPU, the Neural Engine) may come before it; cpu and naive come after.
  const auto all = all_backends();
  auto at = [&](const std::string& name) {
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i]->name() == name) return int(i);
    return -1;
  };
  ASSERT_GE(at("blas"), 0);
  EXPECT_EQ(all.back()->name(), "naive");
  EXPECT_LT(at("blas"), at("naive"));
  if (at("cpu") >= 0) EXPECT_LT(at("blas"), at("cpu"));
}

TEST(BlasTier, Gpt2ChainBlasThenCpuThenNaive) {
  SKIP_UNLESS_BLAS();
  std::ifstream gf(kFixtures + "golden.json");
  const json golden = json::parse(gf);
  const json& gcase = golden["models"]["tiny-f32"]["cases"][1];
  const auto ids = gcase["ids"].get<std::vector<int32_t>>();
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");

  // A crossover that splits this model's products: the largest go to blas, the rest fall through.
  const ForwardGraph fg = build_forward(model, int64_t(ids.size()), 0, true);
  std::vector<double> flops;
  for (NodeId n = 0; n < NodeId(fg.graph.nodes().size()); ++n) {
    const Node& nd = fg.graph.node(n);
    if (nd.op == OpKind::MatMul || nd.op == OpKind::Linear) {
      const auto& a = fg.graph.value(nd.inputs[0]).shape;
      const auto& o = fg.graph.value(nd.output).shape;
      flops.push_back(2.0 * double(a[0]) * double(a[1]) * double(o[1]));
    }
  }
  std::sort(flops.begin(), flops.end());
  flops.erase(std::unique(flops.begin(), flops.end()), flops.end());
  ASSERT_GE(flops.size(), 2u);
  const double crossover = flops[flops.size() - 2];

  std::vector<std::shared_ptr<Backend>> chain = {
      make_blas_backend(BlasOptions{BlasCrossover{crossover, false, "test split"}, 0})};
  for (const auto& b : all_backends())
    if (b->name() == "cpu" && b->probe().ok) chain.push_back(b);
  chain.push_back(make_naive_backend());
  const std::string next = chain[1]->name();

  Gpt2Runner runner(model, chain, {false, true});
  KvCache cache = runner.new_cache();
  const Tensor logits = runner.forward(ids, cache, true);

  // Logits agree with the independent float64 implementation to f32 rounding.
  double err = 0, scale = 0;
  const auto& rows = gcase["logits"];
  const int64_t V = logits.dim(1);
  for (size_t t = 0; t < rows.size(); ++t)
    for (int64_t j = 0; j < V; ++j) {
      const double g = rows[t][size_t(j)].get<double>();
      scale = std::max(scale, std::abs(g));
      err = std::max(err, std::abs(load_as_double(logits, int64_t(t) * V + j) - g));
    }
  EXPECT_LT(err / scale, 2e-5);

  // The plan shows which products went where, and why.
  const Plan& plan = runner.last_plan();
  const Graph& g = runner.last_graph();
  int on_blas = 0, fell = 0;
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const Node& nd = g.node(n);
    const Placement& p = plan.placement[size_t(n)];
    const std::string tier = plan.chain[size_t(p.tier)]->name();
    if (nd.op != OpKind::MatMul && nd.op != OpKind::Linear) {
      EXPECT_NE(tier, "blas") << nd.name;
      EXPECT_NE(p.reason.find("not a matrix product"), std::string::npos) << nd.name << ": " << p.reason;
      continue;
    }
    const auto& a = g.value(nd.inputs[0]).shape;
    const auto& o = g.value(nd.output).shape;
    const double f = 2.0 * double(a[0]) * double(a[1]) * double(o[1]);
    if (f >= crossover) {
      EXPECT_EQ(tier, "blas") << nd.name << ": " << p.reason;
      ++on_blas;
    } else {
      EXPECT_EQ(tier, next) << nd.name << ": " << p.reason;
      EXPECT_NE(p.reason.find("below crossover"), std::string::npos) << p.reason;
      ++fell;
    }
  }
  EXPECT_GT(on_blas, 0);
  EXPECT_GT(fell, 0);
  const std::string text = plan.explain(g);
  EXPECT_NE(text.find("blas"), std::string::npos) << text;
  EXPECT_GT(plan.to_json(g)["flop_share"]["blas"].get<double>(), 0.0);
}
