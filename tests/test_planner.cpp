// The planner: placement with reasons, segments, the fallback chain, strict mode.
#include <gtest/gtest.h>

#include "backends/naive/naive.h"
#include "core/error.h"
#include "backends/registry.h"
#include "model/gpt2.h"
#include "planner/planner.h"
#include "runtime/runtime.h"

using namespace strand;

namespace {

// A tier that declines matmul and linear on purpose and runs everything else through naive.
class DecliningBackend final : public Backend {
 public:
  std::string name() const override { return "decliner"; }
  std::string description() const override { return "test tier that declines matrix products"; }
  Verdict probe() const override { return Verdict::yes(); }
  Verdict supports(const Graph&, const Node& n) const override {
    if (n.op == OpKind::MatMul || n.op == OpKind::Linear) return Verdict::no("declines matrix products on purpose");
    return Verdict::yes("test tier");
  }
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    ++runs;
    for (NodeId n : nodes)
      if (!supports(g, g.node(n)).ok) throw Error("decliner was handed a node it declined");
    naive_->run(g, nodes, values);
  }
  int runs = 0;

 private:
  std::unique_ptr<Backend> naive_ = make_naive_backend();
};

const std::string kModel = std::string(STRAND_SOURCE_DIR) + "/tests/fixtures/gpt2/tiny-f32";

}  // namespace

TEST(Planner, FallsBackNodeByNodeWithReasons) {
  const Gpt2Model model = Gpt2Model::load(kModel);
  const ForwardGraph fg = build_forward(model, 5, 0, true);
  auto decl = std::make_shared<DecliningBackend>();
  std::shared_ptr<Backend> naive = make_naive_backend();
  const Plan plan = make_plan(fg.graph, {decl, naive}, false);
  ASSERT_EQ(plan.placement.size(), fg.graph.nodes().size());
  int on_naive = 0;
  for (NodeId n = 0; n < NodeId(fg.graph.nodes().size()); ++n) {
    const Node& nd = fg.graph.node(n);
    const Placement& p = plan.placement[size_t(n)];
    const bool mm = nd.op == OpKind::MatMul || nd.op == OpKind::Linear;
    EXPECT_EQ(plan.chain[size_t(p.tier)]->name(), mm ? "naive" : "decliner") << nd.name;
    if (mm) {
      ++on_naive;
      EXPECT_NE(p.reason.find("declines matrix products"), std::string::npos) << p.reason;
    }
  }
  EXPECT_GT(on_naive, 0);
  EXPECT_GT(plan.segments.size(), 2u);
  EXPECT_EQ(plan.copies, 0);  // both tiers use host memory
  const std::string text = plan.explain(fg.graph);
  EXPECT_NE(text.find("segments:"), std::string::npos);
  EXPECT_NE(text.find("% of FLOPs"), std::string::npos);
  const auto j = plan.to_json(fg.graph);
  EXPECT_GT(j["flop_share"]["naive"].get<double>(), 0.5);  // matrix products dominate
}

TEST(Planner, ChainWithADecliningTierComputesTheSameLogits) {
  const Gpt2Model model = Gpt2Model::load(kModel);
  const std::vector<int32_t> ids = {5, 262, 40, 299, 1};
  auto decl = std::make_shared<DecliningBackend>();
  Gpt2Runner mixed(model, {decl, make_naive_backend()}, {false, true});
  Gpt2Runner plain(model, {make_naive_backend()}, {false, true});
  KvCache a = mixed.new_cache(), b = plain.new_cache();
  const Tensor x = mixed.forward(ids, a, true), y = plain.forward(ids, b, true);
  EXPECT_GT(decl->runs, 1);
  ASSERT_EQ(x.numel(), y.numel());
  EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes()), 0);
}

TEST(Planner, StrictModeTurnsAFallbackIntoAnErrorNamingTheNode) {
  const Gpt2Model model = Gpt2Model::load(kModel);
  const ForwardGraph fg = build_forward(model, 2, 0, false);
  auto decl = std::make_shared<DecliningBackend>();
  try {
    make_plan(fg.graph, {decl, make_naive_backend()}, true);
    FAIL() << "strict mode accepted a fallback";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("h.0.attn.c_attn"), std::string::npos) << m;
    EXPECT_NE(m.find("declines matrix products"), std::string::npos) << m;
  }
  // With a single tier that supports everything, strict mode is fine.
  EXPECT_NO_THROW(make_plan(fg.graph, {make_naive_backend()}, true));
}

TEST(Planner, NoTierForANodeIsAnError) {
  const Gpt2Model model = Gpt2Model::load(kModel);
  const ForwardGraph fg = build_forward(model, 2, 0, false);
  EXPECT_THROW(make_plan(fg.graph, {std::make_shared<DecliningBackend>()}, false), Error);
  EXPECT_THROW(make_plan(fg.graph, {}, false), Error);
}

TEST(Registry, ChainsFromNames) {
  const auto chain = make_chain("auto");
  ASSERT_FALSE(chain.empty());
  EXPECT_EQ(chain.back()->name(), "naive");
  EXPECT_EQ(make_chain("naive").size(), 1u);
  EXPECT_EQ(make_chain("reference").front()->activation_dtype(), DType::F64);
  EXPECT_THROW(make_chain("warp-drive"), Error);
  EXPECT_THROW(make_chain("naive,naive"), Error);
  EXPECT_THROW(make_chain("reference,naive"), Error);
}

TEST(Runtime, LargeOutputsReuseTheBuffersOfEarlierRuns) {
  // The runtime takes large node outputs from a pool of released buffers: running the same
  // graph again lands in the same memory (no fresh pages), and results stay right.
  Graph g;
  const ValueId x = g.input("x", {300, 301}, DType::F32);
  Attrs a;
  a.scale = 2.0;
  const ValueId y = g.add(OpKind::Scale, {x}, a, "twice");
  g.mark_output(y);
  const std::shared_ptr<Backend> naive = make_naive_backend();
  Tensor in = Tensor::empty({300, 301}, DType::F32);
  for (int64_t i = 0; i < in.numel(); ++i) in.ptr<float>()[i] = float(i % 97);
  const void* first = nullptr;
  for (int run = 0; run < 3; ++run) {
    std::vector<Tensor> vals(g.values().size());
    vals[size_t(x)] = in;
    RunOptions ro;
    ro.poison = run == 2;  // a reused buffer is poisoned too when asked
    execute_on(g, naive, vals, ro);
    const Tensor& out = vals[size_t(y)];
    for (int64_t i = 0; i < out.numel(); ++i) ASSERT_EQ(out.ptr<float>()[i], 2.0f * float(i % 97)) << i;
    if (run == 0) first = out.data;
    else EXPECT_EQ(out.data, first) << "run " << run;
  }
}
