// Gradients: every op's rule against float64 finite differences, every tier's backward graph
// against the float64 reference, and append_backward on graphs whose gradients are known.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <set>

#include "backends/naive/naive.h"
#include "backends/registry.h"
#include "core/error.h"
#include "core/rng.h"
#include "graph/autodiff.h"
#include "runtime/runtime.h"
#include "validate/gradcheck.h"

using namespace strand;

namespace {

uint64_t test_seed() {
  if (const char* s = std::getenv("STRAND_SEED")) return std::strtoull(s, nullptr, 10);
  return 20261130;
}

std::shared_ptr<Backend> reference() { return std::shared_ptr<Backend>(make_reference_backend()); }

Tensor filled(const Shape& s, std::initializer_list<float> v) {
  Tensor t = Tensor::empty(s, DType::F32);
  int64_t i = 0;
  for (float x : v) t.ptr<float>()[i++] = x;
  return t;
}

}  // namespace

TEST(GradRules, EveryRuleMatchesFiniteDifferences) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed << " (rerun with STRAND_SEED=" << seed << ")");
  std::set<OpKind> covered;
  int differentiable = 0;
  for (const OpCase& c : grad_cases(seed, 3)) {
    const FdCheck r = fd_check(c, seed);
    if (!r.differentiable) {
      // The only case a rule declines: several sequences attending over a KV cache.
      EXPECT_EQ(c.op, OpKind::Attention) << c.label << ": " << r.reason;
      EXPECT_NE(r.reason.find("KV cache"), std::string::npos) << r.reason;
      continue;
    }
    ++differentiable;
    covered.insert(c.op);
    EXPECT_GT(r.entries, 0) << c.label;
    EXPECT_LE(r.err, kFdBound) << c.label << " (" << r.entries << " entries)";
  }
  EXPECT_GT(differentiable, 40);
  // Every op with a gradient rule was checked.
  for (int k = 0; k < int(OpKind::kCount); ++k)
    if (op_info(OpKind(k)).vjp) EXPECT_TRUE(covered.count(OpKind(k))) << op_name(OpKind(k));
}

// A rule that is off by a factor: fd_check must be able to fail.
std::vector<ValueId> doubled_scale_rule(Graph& g, const Node& n, ValueId dy) {
  Attrs a = n.attrs;
  a.scale *= 2;
  return {g.add(OpKind::Scale, {dy}, a, n.name + ".wrong")};
}

TEST(GradRules, AWrongRuleIsCaught) {
  OpCase c;
  c.op = OpKind::Scale;
  c.shapes = {{3, 5}};
  c.dtypes = {DType::F32};
  c.attrs.scale = 0.5;
  c.label = "scale";
  EXPECT_LE(fd_check(c, 7).err, kFdBound);
  EXPECT_GT(fd_check(c, 7, 12, doubled_scale_rule).err, 0.5);
}

TEST(GradTiers, EveryTierRunsEveryGradient) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed << " (rerun with STRAND_SEED=" << seed << ")");
  std::vector<std::shared_ptr<Backend>> tiers;
  for (const auto& b : all_backends())
    if (b->probe().ok) tiers.push_back(b);
  ASSERT_FALSE(tiers.empty());
  int checked = 0;
  for (const OpCase& c : grad_cases(seed, 2)) {
    for (const OpCheck& chk : check_grad_tiers(c, tiers, seed)) {
      if (!chk.supported) {
        // Only the blas tier and the tile tiers (amx, avx512bf16) take matrix products (and
        // attention) alone; every other tier runs every gradient (the one case without a rule aside).
        const bool ok = chk.tier == "blas" || chk.tier == "amx" || chk.tier == "avx512bf16" ||
                        chk.reason.find("no gradient rule") != std::string::npos;
        EXPECT_TRUE(ok) << chk.label << " on " << chk.tier << ": " << chk.reason;
        continue;
      }
      ++checked;
      EXPECT_TRUE(chk.pass) << chk.label << " on " << chk.tier << ": err " << chk.err << " > tol " << chk.tolerance
                            << (chk.unwritten ? " (unwritten output)" : "") << " " << chk.reason;
    }
  }
  EXPECT_GT(checked, 40);
}

TEST(Autodiff, SharedValueGetsTheSumOfItsGradients) {
  // L = sum_rows(sum_rows-free): y = x·w + x (x used twice); L = cross-entropy-free check with a
  // linear objective: L = sum over a [1]-shaped sum of y·r. Built from table ops only.
  Graph g;
  const ValueId x = g.input("x", {2, 3}, DType::F32);
  const ValueId w = g.weight("w", {3, 3}, DType::F32);
  const ValueId r = g.input("r", {3, 1}, DType::F32);
  const ValueId xw = g.add(OpKind::MatMul, {x, w}, {}, "xw");
  const ValueId y = g.add(OpKind::Add, {xw, x}, {}, "y");        // x used twice
  const ValueId yr = g.add(OpKind::MatMul, {y, r}, {}, "yr");    // [2, 1]
  const ValueId loss = g.add(OpKind::SumRows, {yr}, {}, "loss");  // [1]
  const Backward b = append_backward(g, loss, {x, w});
  const Graph pg = g.pruned();
  std::vector<Tensor> vals(pg.values().size());
  vals[size_t(x)] = filled({2, 3}, {1, 2, 3, 4, 5, 6});
  vals[size_t(w)] = filled({3, 3}, {1, 0, 0, 0, 2, 0, 0, 0, 3});  // diag(1, 2, 3)
  vals[size_t(r)] = filled({3, 1}, {1, -1, 2});
  vals[size_t(b.seed)] = filled({1}, {1});
  execute_on(pg, reference(), vals);
  // L = sum_i (x_i·(W + I))·r  =>  dL/dx_i = (W + I)·r = (2, -3, 8) for every row;
  // dL/dW = (sum_i x_i)ᵀ rᵀ = [5, 7, 9]ᵀ·[1, -1, 2].
  const Tensor gx = vals[size_t(b.grad.at(x))].to(DType::F64), gw = vals[size_t(b.grad.at(w))].to(DType::F64);
  const double ex[] = {2, -3, 8, 2, -3, 8};
  for (int i = 0; i < 6; ++i) EXPECT_DOUBLE_EQ(gx.ptr<double>()[i], ex[i]) << i;
  const double colsum[] = {5, 7, 9}, rv[] = {1, -1, 2};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_DOUBLE_EQ(gw.ptr<double>()[i * 3 + j], colsum[i] * rv[j]) << i << "," << j;
}

TEST(Autodiff, SlicesOfOneProductRejoinWithoutArithmetic) {
  // q, k, v = slices of one qkv; their gradients come back as the attention_backward result itself.
  Graph g;
  const ValueId qkv = g.input("qkv", {4, 6}, DType::F32);
  Attrs s;
  s.len = 2;
  std::vector<ValueId> p;
  for (int i = 0; i < 3; ++i) {
    s.start = 2 * i;
    p.push_back(g.add(OpKind::SliceCols, {qkv}, s, "part"));
  }
  Attrs at;
  at.heads = 1;
  const ValueId o = g.add(OpKind::Attention, {p[0], p[1], p[2]}, at, "attn");
  const ValueId r = g.input("r", {2, 1}, DType::F32);
  const ValueId loss = g.add(OpKind::SumRows, {g.add(OpKind::MatMul, {o, r}, {}, "or")}, {}, "loss");
  const Backward b = append_backward(g, loss, {qkv});
  const Graph pg = g.pruned();
  const ValueId gq = b.grad.at(qkv);
  EXPECT_EQ(pg.node(pg.value(gq).producer).op, OpKind::AttentionBackward);
  for (const Node& n : pg.nodes()) {
    EXPECT_NE(n.op, OpKind::PadCols) << n.name;
    EXPECT_NE(n.op, OpKind::ConcatCols) << n.name;
  }
}

TEST(Autodiff, ErrorsNameTheValue) {
  Graph h;
  const ValueId hx = h.input("x", {2, 3}, DType::F32);
  const ValueId hw = h.weight("unused", {3}, DType::F32);
  const ValueId hr = h.input("r", {3, 1}, DType::F32);
  const ValueId hl = h.add(OpKind::SumRows, {h.add(OpKind::MatMul, {hx, hr}, {}, "xr")}, {}, "loss");
  try {
    append_backward(h, hl, {hw});
    FAIL() << "no error for a weight that does not influence the loss";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unused does not influence the loss"), std::string::npos) << e.what();
  }
  try {
    append_backward(h, hx, {hx});
    FAIL() << "no error for a loss that is not [1]";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("must have shape [1]"), std::string::npos) << e.what();
  }
}
