// Every op on the naive tier against the float64 reference, on random odd shapes; the op
// table's shape rules; fused ops against their own decompositions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "backends/naive/naive.h"
#include "core/error.h"
#include "core/rng.h"
#include "graph/graph.h"
#include "runtime/runtime.h"
#include "validate/opcheck.h"

using namespace strand;

namespace {

uint64_t test_seed() {
  // STRAND_SEED overrides, so a failure printed with its seed can be rerun exactly.
  if (const char* s = std::getenv("STRAND_SEED")) return std::strtoull(s, nullptr, 10);
  return 20261126;
}

}  // namespace

TEST(Ops, EveryOpOnNaiveMatchesFloat64Reference) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed << " (rerun with STRAND_SEED=" << seed << ")");
  const auto naive = std::shared_ptr<Backend>(make_naive_backend());
  const auto cases = random_op_cases(seed, 6);
  std::vector<bool> seen(size_t(OpKind::kCount), false);
  for (size_t i = 0; i < cases.size(); ++i) {
    const OpCheck r = check_op(cases[i], naive, seed + i);
    seen[size_t(cases[i].op)] = true;
    EXPECT_TRUE(r.pass) << r.label << ": error " << r.err << " > " << r.tolerance << (r.unwritten ? " (unwritten output)" : "");
  }
  for (size_t k = 0; k < seen.size(); ++k) EXPECT_TRUE(seen[k]) << "no case covers " << op_name(OpKind(k));
}

TEST(Ops, NaiveErrorIsNonzeroWhereF32Rounds) {
  // The check must be able to fail: the f32 tier is not bit-identical to float64 on a long dot product.
  const uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  OpCase c{OpKind::MatMul, {{5, 257}, {257, 7}}, {DType::F32, DType::F32}, {}, "matmul [5,257]x[257,7]"};
  const OpCheck r = check_op(c, make_naive_backend(), seed);
  EXPECT_GT(r.naive_err, 0.0);
  EXPECT_LT(r.naive_err, 1e-5);
}

// A tier that computes matmul wrong by a little more than f32 rounding: the 2x rule must catch it.
class SloppyBackend final : public Backend {
 public:
  std::string name() const override { return "sloppy"; }
  std::string description() const override { return "test tier: matmul with an error of 1e-4"; }
  Verdict probe() const override { return Verdict::yes(); }
  Verdict supports(const Graph&, const Node&) const override { return Verdict::yes(); }
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    naive_->run(g, nodes, values);
    for (NodeId n : nodes) {
      Tensor& o = values[size_t(g.node(n).output)];
      o.ptr<float>()[0] *= 1.0001f;
    }
  }

 private:
  std::unique_ptr<Backend> naive_ = make_naive_backend();
};

TEST(Ops, TwiceNaiveRuleRejectsASloppyTier) {
  OpCase c{OpKind::MatMul, {{9, 33}, {33, 17}}, {DType::F32, DType::F32}, {}, "matmul"};
  const OpCheck r = check_op(c, std::make_shared<SloppyBackend>(), test_seed());
  EXPECT_FALSE(r.pass) << "err " << r.err << " tolerance " << r.tolerance;
}

// A tier that leaves the last element unwritten: poisoning must catch it.
class LazyBackend final : public Backend {
 public:
  std::string name() const override { return "lazy"; }
  std::string description() const override { return "test tier: forgets the last element"; }
  Verdict probe() const override { return Verdict::yes(); }
  Verdict supports(const Graph&, const Node&) const override { return Verdict::yes(); }
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    for (NodeId n : nodes) {
      Tensor& o = values[size_t(g.node(n).output)];
      Tensor full = Tensor::empty(o.shape, DType::F32);
      std::vector<Tensor> v = values;
      v[size_t(g.node(n).output)] = full;
      naive_->run(g, std::span<const NodeId>(&n, 1), v);
      std::memcpy(o.data, full.data, o.nbytes() - sizeof(float));
    }
  }

 private:
  std::unique_ptr<Backend> naive_ = make_naive_backend();
};

TEST(Ops, PoisonedOutputsRevealUnwrittenElements) {
  OpCase c{OpKind::Add, {{4, 5}, {4, 5}}, {DType::F32, DType::F32}, {}, "add"};
  const OpCheck r = check_op(c, std::make_shared<LazyBackend>(), test_seed());
  EXPECT_TRUE(r.unwritten);
  EXPECT_FALSE(r.pass);
}

TEST(Ops, ShapeRulesRejectMismatches) {
  Graph g;
  const ValueId a = g.input("a", {3, 4}, DType::F32);
  const ValueId b = g.input("b", {5, 6}, DType::F32);
  EXPECT_THROW(g.add(OpKind::MatMul, {a, b}, {}, "mm"), Error);
  EXPECT_THROW(g.add(OpKind::Add, {a, b}, {}, "add"), Error);
  EXPECT_THROW(g.add(OpKind::MatMul, {a}, {}, "arity"), Error);
  Attrs at;
  at.heads = 3;  // 4 channels are not divisible by 3 heads
  EXPECT_THROW(g.add(OpKind::Attention, {a, a, a}, at, "attn"), Error);
  Attrs sl;
  sl.start = 2;
  sl.len = 3;
  EXPECT_THROW(g.add(OpKind::SliceCols, {a}, sl, "slice"), Error);
  try {
    g.add(OpKind::MatMul, {a, b}, {}, "h.0.mm");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("h.0.mm"), std::string::npos) << e.what();
  }
}

TEST(Ops, FlopCountsFollowTheShapes) {
  Graph g;
  const ValueId a = g.input("a", {3, 4}, DType::F32);
  const ValueId b = g.input("b", {4, 5}, DType::F32);
  g.add(OpKind::MatMul, {a, b}, {}, "mm");
  EXPECT_DOUBLE_EQ(g.node_flops(0), 2.0 * 3 * 4 * 5);
  EXPECT_DOUBLE_EQ(g.node_bytes(0), 4.0 * (12 + 20 + 15));
}

// The fused ops' decompositions compute the same thing as the fused kernels, in float64.
TEST(Ops, FusedOpsEqualTheirDecompositions) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  Rng rng(seed);
  for (int trial = 0; trial < 6; ++trial) {
    const int64_t heads = 1 + int64_t(rng.below(4)), d = 1 + int64_t(rng.below(9));
    const int64_t t = 1 + int64_t(rng.below(7)), past = int64_t(rng.below(5)), c = heads * d;
    Graph g;
    const ValueId q = g.input("q", {t, c}, DType::F32), k = g.input("k", {past + t, c}, DType::F32),
                  v = g.input("v", {past + t, c}, DType::F32);
    const ValueId w = g.input("w", {c, 5}, DType::F32), bias = g.input("b", {5}, DType::F32);
    Attrs at;
    at.heads = heads;
    at.past = past;
    const ValueId att = g.add(OpKind::Attention, {q, k, v}, at, "attn");
    const ValueId lin = g.add(OpKind::Linear, {att, w, bias}, {}, "proj");
    g.mark_output(lin);
    const Graph dg = g.decomposed();
    for (const Node& nd : dg.nodes()) EXPECT_FALSE(op_info(nd.op).fused) << nd.name;
    EXPECT_GT(dg.nodes().size(), g.nodes().size());

    std::vector<Tensor> vals(g.values().size());
    for (ValueId id : {q, k, v, w, bias}) {
      Tensor x = Tensor::empty(g.value(id).shape, DType::F32);
      for (int64_t i = 0; i < x.numel(); ++i) x.ptr<float>()[i] = float(rng.normal());
      vals[size_t(id)] = x;
    }
    std::vector<Tensor> dvals(dg.values().size());
    for (ValueId id : {q, k, v, w, bias}) dvals[size_t(id)] = vals[size_t(id)];
    const auto ref = std::shared_ptr<Backend>(make_reference_backend());
    RunOptions ro;
    ro.poison = true;
    execute_on(g, ref, vals, ro);
    execute_on(dg, ref, dvals, ro);
    const Tensor& a = vals[size_t(lin)];
    const Tensor& b = dvals[size_t(lin)];
    ASSERT_EQ(a.shape, b.shape);
    for (int64_t i = 0; i < a.numel(); ++i)
      EXPECT_NEAR(a.ptr<double>()[i], b.ptr<double>()[i], 1e-12) << "trial " << trial << " element " << i;
  }
}

TEST(Dtype, HalfConversionsRoundToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);        // rounds up to infinity
  EXPECT_EQ(f32_to_f16(5.960464477539063e-08f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(2.98023223876953125e-08f), 0x0000);  // half of it: ties to even (0)
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);     // tie between 0x3f80 and 0x3f81: even
  // Every f16 value survives f16 -> f32 -> f16.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
}

TEST(Tensor, ColumnMajorCopiesKeepTheValues) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  Rng rng(seed);
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::F64}) {
    for (const Shape& sh : {Shape{1, 1}, Shape{3, 17}, Shape{33, 5}, Shape{70, 41}}) {
      SCOPED_TRACE(testing::Message() << dtype_name(dt) << " " << shape_str(sh));
      Tensor f = Tensor::empty(sh, DType::F32);
      for (int64_t i = 0; i < f.numel(); ++i) f.ptr<float>()[i] = float(rng.normal());
      const Tensor src = f.to(dt);
      const Tensor cm = src.to_col_major();
      EXPECT_EQ(cm.shape, sh);
      EXPECT_EQ(cm.dtype, dt);
      EXPECT_TRUE(cm.col_major());
      EXPECT_NE(cm.data, src.data);  // a copy
      // Element (i, j) sits at j * R + i of the storage.
      const Tensor st = cm.col_major_storage();
      EXPECT_EQ(st.shape, (Shape{sh[1], sh[0]}));
      EXPECT_TRUE(st.contiguous());
      const Tensor st64 = st.to(DType::F64), src64 = src.to(DType::F64);
      for (int64_t i = 0; i < sh[0]; ++i)
        for (int64_t j = 0; j < sh[1]; ++j)
          ASSERT_EQ(st64.ptr<double>()[j * sh[0] + i], src64.ptr<double>()[i * sh[1] + j]) << i << "," << j;
      // to() turns it back into rows, in any float dtype; a column-major copy of a
      // column-major tensor is a copy; q8 quantizes the same values.
      const Tensor back = cm.to(DType::F64);
      EXPECT_TRUE(back.contiguous());
      EXPECT_EQ(0, std::memcmp(back.data, src64.data, back.nbytes()));
      const Tensor again = cm.to_col_major();
      EXPECT_TRUE(again.col_major());
      EXPECT_NE(again.data, cm.data);
      EXPECT_EQ(0, std::memcmp(again.to(DType::F64).data, src64.data, back.nbytes()));
      const Tensor q1 = cm.to_q8(0), q2 = src.to_q8(0);
      EXPECT_EQ(0, std::memcmp(q1.data, q2.data, q1.nbytes()));
    }
  }
}

TEST(Tensor, ColumnMajorRefusesWhatItCannotHold) {
  EXPECT_THROW(Tensor::empty({2, 3, 4}, DType::F32).to_col_major(), Error);
  EXPECT_THROW(Tensor::empty({64, 64}, DType::F32).to_q8(0).to_col_major(), Error);
  EXPECT_THROW(Tensor::empty({4, 4}, DType::I32).to_col_major(), Error);
  EXPECT_THROW(Tensor::empty({4, 5}, DType::F32).col_major_storage(), Error);  // row-major
  const Tensor cm = Tensor::empty({4, 5}, DType::F32).to_col_major();
  EXPECT_THROW(cm.reshape({20}), Error);  // not contiguous
  EXPECT_FALSE(Tensor::empty({4, 5}, DType::F32).col_major());
}

TEST(Tensor, WeightCopiesStartOnHugePageBoundaries) {
  // Weights converted at load, 2 MiB and more: placed on 2 MiB boundaries (and offered to the
  // kernel as huge pages). Activations keep the plain 64-byte alignment.
  const uintptr_t huge = uintptr_t(2) << 20;
  const Tensor w = Tensor::empty({1024, 1024}, DType::F32);  // 4 MiB
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.to_col_major().data) % huge, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.to_col_major(DType::BF16).data) % huge, 0u);
  Tensor f = Tensor::empty({2048, 1024}, DType::F32);
  for (int64_t i = 0; i < f.numel(); ++i) f.ptr<float>()[i] = float(i % 7);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.to_q8(0).data) % huge, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(Tensor::empty({1024, 1024}, DType::F32, true).data) % huge, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.to(DType::F16, /*huge_pages=*/true).data) % huge, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.to_col_major().to(DType::F32, /*huge_pages=*/true).data) % huge, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(Tensor::empty({7, 9}, DType::F32).data) % 64, 0u);
}

TEST(Tensor, ColumnMajorCopyConvertsTheDtype) {
  Tensor f = Tensor::empty({5, 3}, DType::F32);
  for (int64_t i = 0; i < f.numel(); ++i) f.ptr<float>()[i] = 0.25f * float(i);  // exact in bf16
  const Tensor cm = f.to_col_major(DType::BF16);
  EXPECT_EQ(cm.dtype, DType::BF16);
  EXPECT_TRUE(cm.col_major());
  const Tensor back = cm.to(DType::F32);
  EXPECT_EQ(0, std::memcmp(back.data, f.data, f.nbytes()));
  const Tensor cm2 = cm.to_col_major(DType::F16);  // lines to lines, converted
  EXPECT_TRUE(cm2.col_major());
  EXPECT_EQ(0, std::memcmp(cm2.to(DType::F32).data, f.data, f.nbytes()));
  EXPECT_THROW(f.to_col_major(DType::I32), Error);
}
