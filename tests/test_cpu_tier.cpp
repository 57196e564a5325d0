// The cpu tier: every op x weight dtype against the float64 reference (the 2x-naive rule),
// attention prefill and decode on odd head sizes, Q8 weights (layout, quantization error, the
// int8 product), the tiny GPT-2 fixtures end to end, and fallback to naive.
//
// Seeds are printed on failure; STRAND_SEED=<n> reruns one. The timing harness at the end is
// disabled by default: run it with
//   strand_tests --gtest_also_run_disabled_tests --gtest_filter='CpuBench*'
#include <gtest/gtest.h>

#include "logit_error.h"

#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/cpu/cpu.h"
#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/quant.h"
#include "backends/cpu/threadpool.h"
#include "backends/naive/naive.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/generate.h"
#include "model/gpt2.h"
#include "model/weight_cast.h"
#include "runtime/runtime.h"
#include "validate/opcheck.h"

using namespace strand;
using strand::test::rel_error;
using json = nlohmann::json;

namespace {

const std::string kFixtures = std::string(STRAND_SOURCE_DIR) + "/tests/fixtures/gpt2/";

std::vector<uint64_t> seeds() {
  if (const char* s = std::getenv("STRAND_SEED")) return {std::strtoull(s, nullptr, 10)};
  return {1, 2, 3};
}

std::shared_ptr<Backend> cpu_tier() {
  static const std::shared_ptr<Backend> b = make_cpu_backend();
  return b;
}
std::shared_ptr<Backend> cpu_portable() {
  static const std::shared_ptr<Backend> b = make_cpu_backend("portable");
  return b;
}
// The AVX2 kernels where the CPU has them (else the portable ones again).
std::shared_ptr<Backend> cpu_avx2() {
  static const std::shared_ptr<Backend> b = cpu::avx2_kernels() ? make_cpu_backend("avx2") : cpu_portable();
  return b;
}
std::shared_ptr<Backend> naive() { return make_naive_backend(); }
// The best kernels on every seed, the AVX2 and portable ones on the first.
std::vector<std::shared_ptr<Backend>> tiers_for(uint64_t seed) {
  if (seed == seeds().front()) return {cpu_tier(), cpu_avx2(), cpu_portable()};
  return {cpu_tier()};
}
std::shared_ptr<Backend> ref() { return make_reference_backend(); }

void expect_pass(const OpCheck& r, uint64_t seed) {
  EXPECT_TRUE(r.pass) << r.tier << ": " << r.label << "  err " << r.err << " > tolerance " << r.tolerance
                      << " (naive " << r.naive_err << ")" << (r.unwritten ? " [unwritten output]" : "")
                      << "  STRAND_SEED=" << seed;
}

OpCase make_case(OpKind op, std::vector<Shape> shapes, std::vector<DType> dts, Attrs a, std::string label = {}) {
  if (label.empty()) {
    label = std::string(op_name(op));
    for (size_t i = 0; i < shapes.size(); ++i) {
      label += ' ';
      label += shape_str(shapes[i]);
      if (dts[i] != DType::F32) label += dtype_name(dts[i]);
    }
    if (a.trans_b) label += " trans_b";
    if (op == OpKind::Attention) label += fmt::format(" heads={} past={}", a.heads, a.past);
  }
  return {op, std::move(shapes), std::move(dts), a, label};
}

// The 2x-naive rule on inputs given as tensors (check_op draws its own, and can only make Q8
// weights blocked along axis 0).
OpCheck check_tensors(OpKind op, const std::vector<Tensor>& inputs, const Attrs& attrs, const std::string& label,
                      const std::shared_ptr<Backend>& tier) {
  Graph g;
  std::vector<ValueId> ids;
  for (size_t i = 0; i < inputs.size(); ++i) ids.push_back(g.input(fmt::format("in{}", i), inputs[i].shape, inputs[i].dtype));
  const ValueId out = g.add(op, ids, attrs, label);
  g.mark_output(out);
  auto run = [&](const std::shared_ptr<Backend>& b) {
    std::vector<Tensor> vals(g.values().size());
    for (size_t i = 0; i < inputs.size(); ++i) vals[size_t(ids[i])] = inputs[i];
    RunOptions ro;
    ro.poison = true;
    execute_on(g, b, vals, ro);
    return vals[size_t(out)].to(DType::F64);
  };
  const Tensor r = run(ref()), nv = run(naive()), got = run(tier);
  double scale = 0;
  for (int64_t i = 0; i < r.numel(); ++i) scale = std::max(scale, std::abs(r.ptr<double>()[i]));
  if (scale == 0) scale = 1;
  auto err = [&](const Tensor& t, bool* unwritten) {
    double e = 0;
    for (int64_t i = 0; i < r.numel(); ++i) {
      if (std::isnan(t.ptr<double>()[i])) *unwritten = true;
      e = std::max(e, std::abs(t.ptr<double>()[i] - r.ptr<double>()[i]) / scale);
    }
    return e;
  };
  OpCheck c;
  c.label = label;
  c.tier = tier->name();
  bool nu = false;
  c.naive_err = err(nv, &nu);
  c.err = err(got, &c.unwritten);
  c.tolerance = 2 * c.naive_err + 4.0 * double(std::numeric_limits<float>::epsilon());
  c.pass = !c.unwritten && c.err <= c.tolerance;
  return c;
}

Tensor random_f32(const Shape& s, Rng& rng) {
  Tensor t = Tensor::empty(s, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = float(rng.normal());
  return t;
}

}  // namespace

// ---- every op, every weight dtype --------------------------------------------------------

TEST(CpuTier, ProbesAndSaysWhy) {
  const Verdict v = cpu_tier()->probe();
  EXPECT_TRUE(v.ok);
  EXPECT_NE(v.reason.find("threads"), std::string::npos) << v.reason;
  EXPECT_EQ(cpu_tier()->name(), "cpu");
  // An f16 activation is something it really cannot take: it says so.
  Graph g;
  const ValueId x = g.input("x", {3, 5}, DType::F16);
  g.add(OpKind::Softmax, {x}, {}, "sm");
  const Verdict no = cpu_tier()->supports(g, g.node(0));
  EXPECT_FALSE(no.ok);
  EXPECT_NE(no.reason.find("f32 activations"), std::string::npos) << no.reason;
}

TEST(CpuTier, RandomOpCasesWithin2xNaive) {
  for (uint64_t seed : seeds())
    for (const auto& tier : tiers_for(seed)) {
      SCOPED_TRACE(tier->probe().reason);
      const auto cases = random_op_cases(seed, 6);
      for (size_t i = 0; i < cases.size(); ++i) expect_pass(check_op(cases[i], tier, seed * 1000 + i), seed);
    }
}

TEST(CpuTier, MatMulEveryWeightDtypeEveryPath) {
  // M crosses the GEMV (<= 4 rows), q8 GEMV (<= 16) and packed GEMM paths; K and N odd and
  // around the vector widths. check_op blocks q8 weights along the reduction axis (the fast
  // layout); the other layout is tested below.
  const DType wdt[] = {DType::F32, DType::F16, DType::BF16, DType::Q8};
  const int64_t Ms[] = {1, 2, 4, 5, 16, 17, 40};
  const int64_t KN[][2] = {{1, 1}, {17, 33}, {64, 65}, {100, 31}, {33, 129}};
  for (uint64_t seed : seeds())
    for (const auto& tier : tiers_for(seed)) {
      SCOPED_TRACE(tier->probe().reason);
      uint64_t s = seed * 7919;
      for (DType w : wdt)
        for (int64_t M : Ms)
          for (const auto& kn : KN) {
            const int64_t K = kn[0], N = kn[1];
            Attrs a;
            expect_pass(check_op(make_case(OpKind::MatMul, {{M, K}, {K, N}}, {DType::F32, w}, a), tier, ++s), seed);
            a.trans_b = true;
            expect_pass(check_op(make_case(OpKind::MatMul, {{M, K}, {N, K}}, {DType::F32, w}, a), tier, ++s), seed);
            expect_pass(check_op(make_case(OpKind::Linear, {{M, K}, {K, N}, {N}}, {DType::F32, w, DType::F32}, {}), tier, ++s),
                        seed);
          }
    }
}

TEST(CpuTier, ColumnMajorWeightsEveryDtypeEveryPath) {
  // Weights stored column-major (how strand runs models): the GEMV (streaming lines), the
  // packed GEMM (reading them as Bᵀ) and, for a matmul with trans_b, the other way round.
  const DType wdt[] = {DType::F32, DType::F16, DType::BF16};
  const int64_t Ms[] = {1, 3, 4, 9, 40};
  const int64_t KN[][2] = {{1, 1}, {17, 33}, {64, 65}, {100, 31}, {769, 300}};
  for (uint64_t seed : seeds())
    for (const auto& tier : tiers_for(seed)) {
      SCOPED_TRACE(tier->probe().reason);
      uint64_t s = seed * 104729;
      for (DType w : wdt)
        for (int64_t M : Ms)
          for (const auto& kn : KN) {
            const int64_t K = kn[0], N = kn[1];
            OpCase lin = make_case(OpKind::Linear, {{M, K}, {K, N}, {N}}, {DType::F32, w, DType::F32}, {});
            lin.col_major_weight = true;
            expect_pass(check_op(lin, tier, ++s), seed);
            Attrs tb;
            tb.trans_b = true;
            OpCase mm = make_case(OpKind::MatMul, {{M, K}, {N, K}}, {DType::F32, w}, tb);
            mm.col_major_weight = true;
            expect_pass(check_op(mm, tier, ++s), seed);
          }
    }
}

TEST(CpuTier, RowMajorDecodeWeightSplitAlongK) {
  // A one-row product against a [K, N] weight large enough that the threads split K (each
  // reads a contiguous block of rows) and add their partial sums: odd K so the halves differ.
  for (uint64_t seed : seeds())
    for (DType w : {DType::F32, DType::F16, DType::BF16})
      for (int64_t M : {1, 2, 4}) {
        expect_pass(check_op(make_case(OpKind::Linear, {{M, 1001}, {1001, 515}, {515}}, {DType::F32, w, DType::F32}, {}),
                             cpu_tier(), seed * 31 + uint64_t(M)),
                    seed);
      }
}

TEST(CpuTier, Q8TransposedWeightBlockedAlongK) {
  // lm_head's layout: [N, K] read transposed, blocked along K (axis 1): the int8 GEMV and the
  // panel GEMM. check_op cannot draw this layout, so the inputs are made here.
  for (uint64_t seed : seeds())
    for (const auto& tier : tiers_for(seed)) {
      SCOPED_TRACE(tier->probe().reason);
      Rng rng(seed);
      for (int64_t M : {1, 3, 4, 9, 16, 17, 50})
        for (int64_t K : {1, 31, 32, 33, 96, 130})
          for (int64_t N : {3, 5, 64, 67}) {  // (one output alone is a noisy measure: a lucky naive sum)
            const Tensor a = random_f32({M, K}, rng);
            const Tensor w = random_f32({N, K}, rng).to_q8(1);
            Attrs at;
            at.trans_b = true;
            expect_pass(check_tensors(OpKind::MatMul, {a, w}, at, fmt::format("matmul q8ᵀ [{},{}]x[{},{}]", M, K, N, K), tier),
                        seed);
          }
    }
}

TEST(CpuTier, Q8BlockedAlongNIsSlowButCorrect) {
  // A q8 weight blocked along N (not the reduction axis) is dequantized whole per call.
  for (uint64_t seed : seeds()) {
    Rng rng(seed);
    for (int64_t M : {1, 6, 20})
      for (bool trans : {false, true}) {
        const int64_t K = 45, N = 70;
        const Tensor a = random_f32({M, K}, rng);
        const Tensor w = trans ? random_f32({N, K}, rng).to_q8(0) : random_f32({K, N}, rng).to_q8(1);
        ASSERT_FALSE(cpu::q8_blocked_along_k(w, trans));
        Attrs at;
        at.trans_b = trans;
        expect_pass(check_tensors(OpKind::MatMul, {a, w}, at, fmt::format("matmul q8 along N M={} trans={}", M, trans), cpu_tier()),
                    seed);
        if (!trans) {
          const Tensor bias = random_f32({N}, rng);
          expect_pass(check_tensors(OpKind::Linear, {a, w, bias}, {}, fmt::format("linear q8 along N M={}", M), cpu_tier()), seed);
        }
      }
  }
}

TEST(CpuTier, GatherWidensEveryTableDtype) {
  for (uint64_t seed : seeds()) {
    Rng rng(seed);
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
      const Tensor table = random_f32({37, 19}, rng).to(dt);
      Tensor ids = Tensor::empty({9}, DType::I32);
      for (int i = 0; i < 9; ++i) ids.ptr<int32_t>()[i] = int32_t(rng.below(37));
      expect_pass(check_tensors(OpKind::GatherRows, {table, ids}, {}, fmt::format("gather {}", dtype_name(dt)), cpu_tier()), seed);
    }
    for (int axis : {0, 1}) {
      const Tensor table = random_f32({37, 45}, rng).to_q8(axis);
      Tensor ids = Tensor::empty({6}, DType::I32);
      for (int i = 0; i < 6; ++i) ids.ptr<int32_t>()[i] = int32_t(rng.below(37));
      expect_pass(check_tensors(OpKind::GatherRows, {table, ids}, {}, fmt::format("gather q8 axis {}", axis), cpu_tier()), seed);
    }
  }
}

TEST(CpuTier, ElementwiseAroundTheVectorWidth) {
  const int64_t Ns[] = {1, 15, 16, 17, 31, 33, 64, 100, 768, 4099};
  for (uint64_t seed : seeds())
    for (const auto& tier : tiers_for(seed)) {
      SCOPED_TRACE(tier->probe().reason);
      uint64_t s = seed * 104729;
      for (int64_t N : Ns) {
        const int64_t M = N > 1000 ? 2 : 5;
        Attrs a;
        for (int act = 0; act < 5; ++act) {
          a.act = Act(act);
          expect_pass(check_op(make_case(OpKind::Activation, {{M, N}}, {DType::F32}, a,
                                         fmt::format("activation {} [{}, {}]", act_name(a.act), M, N)),
                               tier, ++s),
                      seed);
        }
        a = {};
        a.eps = 1e-5;
        for (DType w : {DType::F32, DType::F16, DType::BF16})
          expect_pass(check_op(make_case(OpKind::LayerNorm, {{M, N}, {N}, {N}}, {DType::F32, w, w}, a), tier, ++s), seed);
        expect_pass(check_op(make_case(OpKind::Softmax, {{M, N}}, {DType::F32}, {}), tier, ++s), seed);
        expect_pass(check_op(make_case(OpKind::Add, {{M, N}, {N}}, {DType::F32, DType::BF16}, {}), tier, ++s), seed);
        expect_pass(check_op(make_case(OpKind::Add, {{M, N}, {M, N}}, {DType::F32, DType::F32}, {}), tier, ++s), seed);
        a = {};
        a.scale = 0.37;
        expect_pass(check_op(make_case(OpKind::Scale, {{M, N}}, {DType::F32}, a), tier, ++s), seed);
      }
    }
}

TEST(CpuTier, ActivationsOnWideInputs) {
  // Large |x| (exp overflow and underflow inside the sigmoid forms, erf's tails) and exact zeros.
  for (const auto& tier : {cpu_tier(), cpu_avx2(), cpu_portable()}) {
    SCOPED_TRACE(tier->probe().reason);
    Tensor x = Tensor::empty({1, 2000}, DType::F32);
    for (int i = 0; i < 2000; ++i) x.ptr<float>()[i] = i == 0 ? 0.0f : float(i - 1000) * 0.05f;  // -50 .. 50
    for (int act = 0; act < 5; ++act) {
      Attrs a;
      a.act = Act(act);
      expect_pass(check_tensors(OpKind::Activation, {x}, a, fmt::format("activation {} wide", act_name(a.act)), tier), 0);
      // Its gradient on the same inputs (the vectorised tanh-GELU rule saturates at both ends).
      Tensor dy = Tensor::empty({1, 2000}, DType::F32);
      for (int i = 0; i < 2000; ++i) dy.ptr<float>()[i] = 1.0f + 0.001f * float(i % 7);
      expect_pass(check_tensors(OpKind::ActivationBackward, {x, dy}, a,
                                fmt::format("activation_backward {} wide", act_name(a.act)), tier), 0);
    }
  }
}

TEST(CpuTier, AttentionPrefillAndDecodeOnOddHeadSizes) {
  // T <= 4 takes the decode kernel (heads x queries), more the prefill kernel (heads x blocks
  // of 32 queries); D > 128 the wide decode path.
  const int64_t Ds[] = {1, 7, 16, 17, 33, 64, 65, 130};
  const int64_t Ts[] = {1, 2, 4, 5, 17, 32, 33, 70};
  const int64_t Ps[] = {0, 1, 13, 40};
  for (uint64_t seed : seeds())
    for (const auto& tier : tiers_for(seed)) {
      SCOPED_TRACE(tier->probe().reason);
      Rng pick(seed);
      uint64_t s = seed * 15485863;
      for (int64_t D : Ds)
        for (int64_t T : Ts) {
          Attrs a;
          a.heads = 1 + int64_t(pick.below(3)) * 2;  // 1, 3, 5
          a.past = Ps[pick.below(4)];
          const int64_t C = a.heads * D;
          expect_pass(check_op(make_case(OpKind::Attention, {{T, C}, {a.past + T, C}, {a.past + T, C}},
                                         {DType::F32, DType::F32, DType::F32}, a),
                               tier, ++s),
                      seed);
        }
    }
}

// ---- Q8 tensors ----------------------------------------------------------------------------

TEST(Q8, LayoutQuantizationErrorAndRoundTrip) {
  Rng rng(11);
  for (int axis : {0, 1})
    for (const Shape& s : {Shape{33, 7}, Shape{64, 5}, Shape{5, 70}, Shape{1, 1}}) {
      const Tensor f = random_f32(s, rng);
      const Tensor q = cpu::quantize_q8(f, axis);
      SCOPED_TRACE(fmt::format("{} axis {}", shape_str(s), axis));
      EXPECT_EQ(q.dtype, DType::Q8);
      EXPECT_EQ(q.shape, s);
      EXPECT_EQ(q.q8_axis(), axis);
      EXPECT_FALSE(q.contiguous());
      const int64_t len = s[size_t(axis)], lines = s[size_t(1 - axis)];
      EXPECT_EQ(q.q8_len(), len);
      EXPECT_EQ(q.q8_lines(), lines);
      EXPECT_EQ(q.nbytes(), q8_bytes(lines, len));
      EXPECT_EQ(q8_row_bytes(len), size_t(q8_padded(len) + 4 * q8_blocks(len)));
      const Tensor back = q.to(DType::F32);
      const Tensor back64 = q.to(DType::F64);
      for (int64_t i = 0; i < f.numel(); ++i) {
        const int64_t r = i / s[1], c = i % s[1];
        const int64_t line = axis == 0 ? c : r, pos = axis == 0 ? r : c;
        const float scale = q.q8_scales()[line * q8_blocks(len) + pos / kQ8Block];
        // Each value is within half a step of its block's grid, and the grid spans the block.
        EXPECT_LE(std::abs(back.ptr<float>()[i] - f.ptr<float>()[i]), 0.5f * scale * 1.0001f) << i;
        EXPECT_EQ(load_as_double(q, i), back64.ptr<double>()[i]);
        EXPECT_EQ(float(back64.ptr<double>()[i]), back.ptr<float>()[i]);
      }
      // Same-dtype copy and re-blocking.
      const Tensor copy = q.to(DType::Q8);
      EXPECT_EQ(copy.q8_axis(), axis);
      EXPECT_EQ(std::memcmp(copy.data, q.data, q.nbytes()), 0);
      const Tensor other = q.to_q8(1 - axis);
      EXPECT_EQ(other.q8_axis(), 1 - axis);
    }
  // Rank 1, zeros, and what cannot be quantized.
  Tensor z = Tensor::empty({40}, DType::F32);
  for (int i = 0; i < 40; ++i) z.ptr<float>()[i] = 0;
  const Tensor zq = z.to(DType::Q8);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(load_as_double(zq, i), 0.0);
  z.ptr<float>()[3] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(z.to(DType::Q8), Error);
  EXPECT_THROW(random_f32({2, 3, 4}, rng).to_q8(0), Error);
  EXPECT_THROW(zq.rows(0, 1), Error);
  // A poisoned q8 tensor reads as NaN everywhere.
  Tensor p = Tensor::empty({3, 40}, DType::Q8);
  p.poison();
  for (int64_t i = 0; i < p.numel(); ++i) EXPECT_TRUE(std::isnan(load_as_double(p, i)));
  EXPECT_EQ(parse_dtype("int8"), DType::Q8);
  EXPECT_EQ(dtype_name(DType::Q8), "q8");
}

// ---- GPT-2 end to end ------------------------------------------------------------------------

namespace {

const json& golden() {
  static const json g = [] {
    std::ifstream f(kFixtures + "golden.json");
    return json::parse(f);
  }();
  return g;
}

Tensor logits_of(const Gpt2Model& m, const std::shared_ptr<Backend>& tier, const std::vector<int32_t>& ids) {
  Gpt2Runner r(m, {tier}, {true, true});
  KvCache c = r.new_cache();
  return r.forward(ids, c, true);
}

std::vector<int32_t> greedy(const Gpt2Model& m, std::vector<std::shared_ptr<Backend>> chain, int n) {
  Gpt2Runner r(m, std::move(chain));
  SamplerConfig g;
  g.temperature = 0;
  return generate(r, {262 % int32_t(m.config.vocab_size), 17, 5}, n, g, -1).ids;
}

constexpr double kFloor = 4.0 * double(std::numeric_limits<float>::epsilon());

class CpuGolden : public testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(CpuGolden, LogitsWithin2xNaiveAndSameGreedyTokens) {
  const std::string name = GetParam();
  const Gpt2Model model = Gpt2Model::load(kFixtures + name);
  for (const json& c : golden()["models"][name]["cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE(fmt::format("{}, {} tokens", name, ids.size()));
    const double en = rel_error(logits_of(model, naive(), ids), c["logits"]);
    for (const auto& tier : {cpu_tier(), cpu_avx2(), cpu_portable()}) {
      SCOPED_TRACE(tier->probe().reason);
      const double ec = rel_error(logits_of(model, tier, ids), c["logits"]);
      EXPECT_LE(ec, 2 * en + kFloor) << tier->probe().reason << "; naive " << en;
    }
  }
  EXPECT_EQ(greedy(model, {cpu_tier()}, 12), greedy(model, {naive()}, 12));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CpuGolden, testing::Values("tiny-f32", "tiny-f16", "tiny-bf16", "tiny-gelu"));

TEST(CpuModel, KvCacheDecodingEqualsFullRecomputation) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  const auto ids = golden()["models"]["tiny-f32"]["cases"][2]["ids"].get<std::vector<int32_t>>();
  Gpt2Runner r(model, {cpu_tier()}, {true, true});
  KvCache full = r.new_cache();
  const Tensor all = r.forward(ids, full, true);
  KvCache inc = r.new_cache();
  size_t at = 0;
  for (size_t chunk : {40u, 1u, 1u, 3u, 5u, 1u, 13u}) {  // prefill, decode steps, small chunks
    const std::vector<int32_t> part(ids.begin() + long(at), ids.begin() + long(at + chunk));
    const Tensor l = r.forward(part, inc, true);
    EXPECT_LT(rel_error(l, all.rows(int64_t(at), int64_t(chunk)).to(DType::F32)), 2e-6) << "chunk at " << at;
    at += chunk;
  }
  EXPECT_EQ(at, ids.size());
}

TEST(CpuModel, ChainFallsBackToNaiveWhenCpuDeclines) {
  // A cpu tier forced to decline attention and layernorm: those nodes land on naive with the
  // reason recorded, the rest stay on cpu, and the logits are unchanged.
  class Declining final : public Backend {
   public:
    explicit Declining(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}
    std::string name() const override { return "cpu"; }
    std::string description() const override { return "cpu, declining two ops"; }
    Verdict probe() const override { return inner_->probe(); }
    Verdict supports(const Graph& g, const Node& n) const override {
      if (n.op == OpKind::Attention || n.op == OpKind::LayerNorm) return Verdict::no("forced to decline");
      return inner_->supports(g, n);
    }
    void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
      for (NodeId n : nodes) EXPECT_TRUE(supports(g, g.node(n)).ok);
      inner_->run(g, nodes, values);
    }

   private:
    std::shared_ptr<Backend> inner_;
  };
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  const auto ids = golden()["models"]["tiny-f32"]["cases"][1]["ids"].get<std::vector<int32_t>>();
  Gpt2Runner r(model, {std::make_shared<Declining>(cpu_tier()), naive()}, {false, true});
  KvCache c = r.new_cache();
  const Tensor l = r.forward(ids, c, true);
  const Plan& plan = r.last_plan();
  const Graph& g = r.last_graph();
  int on_naive = 0, on_cpu = 0;
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const bool declined = g.node(n).op == OpKind::Attention || g.node(n).op == OpKind::LayerNorm;
    const Placement& p = plan.placement[size_t(n)];
    EXPECT_EQ(p.tier, declined ? 1 : 0) << g.node(n).name;
    if (declined) {
      EXPECT_NE(p.reason.find("cpu declined (forced to decline) -> naive"), std::string::npos) << p.reason;
    }
    (declined ? on_naive : on_cpu)++;
  }
  EXPECT_GT(on_naive, 0);
  EXPECT_GT(on_cpu, 0);
  EXPECT_GT(plan.segments.size(), 2u);
  EXPECT_LT(rel_error(l, golden()["models"]["tiny-f32"]["cases"][1]["logits"]), 2e-5);
  // Strict mode turns the fallback into an error naming the node.
  Gpt2Runner strict(model, {std::make_shared<Declining>(cpu_tier()), naive()}, {true, false});
  KvCache c2 = strict.new_cache();
  EXPECT_THROW(strict.forward(ids, c2, true), Error);
}

TEST(CpuModel, CastWeightsRunOnEveryTier) {
  // f16 / bf16 casts: the cpu tier against the reference on the same cast weights.
  Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  const auto ids = golden()["models"]["tiny-f32"]["cases"][2]["ids"].get<std::vector<int32_t>>();
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Gpt2Model m = model;
    m.weights = cast_gpt2_weights(model.weights, dt);
    EXPECT_EQ(m.weights.layers[0].fc_w.dtype, dt);
    EXPECT_EQ(m.weights.layers[0].fc_b.dtype, DType::F32);
    EXPECT_EQ(m.weights.lm_head.data, m.weights.wte.data);  // tied: shared
    const Tensor r64 = logits_of(m, ref(), ids);
    const double en = rel_error(logits_of(m, naive(), ids), r64);
    EXPECT_LE(rel_error(logits_of(m, cpu_tier(), ids), r64), 2 * en + kFloor);
  }
  EXPECT_THROW(cast_gpt2_weights(model.weights, DType::I32), Error);
  EXPECT_EQ(parse_weight_dtype("int8"), DType::Q8);
  EXPECT_THROW(parse_weight_dtype("int4"), Error);
}

TEST(CpuModel, ColumnMajorMatricesGiveTheSameModel) {
  // The layout strand runs models in: the same logical tensors, stored as lines. The naive
  // tier sums in the same order either way (bit-identical logits); the cpu and blas tiers take
  // other kernels and stay within 2x naive of the reference; greedy tokens agree.
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  const auto ids = golden()["models"]["tiny-f32"]["cases"][2]["ids"].get<std::vector<int32_t>>();
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Gpt2Model rm = model, cm = model;
    rm.weights = cast_gpt2_weights(model.weights, dt);
    cm.weights = cast_gpt2_weights(model.weights, dt, MatrixLayout::ColMajor);
    for (const Tensor* t : {&cm.weights.layers[0].attn_w, &cm.weights.layers[0].attn_proj_w, &cm.weights.layers[1].fc_w,
                            &cm.weights.layers[1].fc_proj_w}) {
      EXPECT_TRUE(t->col_major());
      EXPECT_FALSE(t->contiguous());
      EXPECT_EQ(t->dtype, dt);
    }
    EXPECT_EQ(cm.weights.layers[0].attn_w.shape, model.weights.layers[0].attn_w.shape);
    const Tensor nr = logits_of(rm, naive(), ids), nc = logits_of(cm, naive(), ids);
    ASSERT_EQ(nr.numel(), nc.numel());
    EXPECT_EQ(0, std::memcmp(nr.data, nc.data, nr.nbytes()));
    const Tensor r64 = logits_of(cm, ref(), ids);
    EXPECT_LT(rel_error(logits_of(rm, ref(), ids), r64), 1e-12);
    const double en = rel_error(nc, r64);
    EXPECT_LE(rel_error(logits_of(cm, cpu_tier(), ids), r64), 2 * en + kFloor);
    EXPECT_EQ(greedy(cm, {cpu_tier()}, 8), greedy(rm, {naive()}, 8));
    // Converting a column-major model again keeps it column-major and the values.
    const Gpt2Weights again = cast_gpt2_weights(cm.weights, DType::F32, MatrixLayout::ColMajor);
    EXPECT_TRUE(again.layers[0].fc_w.col_major());
    EXPECT_EQ(0, std::memcmp(again.layers[0].fc_w.to(DType::F32).data, rm.weights.layers[0].fc_w.to(DType::F32).data,
                             size_t(rm.weights.layers[0].fc_w.numel()) * 4));
  }
  // q8 matrices are lines already: the layout changes nothing.
  const Gpt2Weights q = cast_gpt2_weights(model.weights, DType::Q8, MatrixLayout::ColMajor);
  EXPECT_EQ(q.layers[0].fc_w.dtype, DType::Q8);
  EXPECT_EQ(q.layers[0].fc_w.q8_axis(), 0);
}

TEST(CpuModel, SmallModelsDoNotWakeTheOtherThreads) {
  // Waking the pool costs about as much as streaming ~100-200 KiB: a decode step of a tiny
  // model stays on the calling thread, a GPT-2-sized one-row product does not.
  cpu::ThreadPool& pool = cpu::ThreadPool::global();
  const int before_threads = pool.size();
  cpu::ThreadPool::set_global_threads(2);
  // `strand demo`'s shape: 128 channels, 4 heads; decode after a 300-token prompt.
  Gpt2Model model;
  model.config.n_layer = 2;
  model.config.n_embd = 128;
  model.config.n_head = 4;
  model.config.n_positions = 320;
  model.config.vocab_size = 300;
  model.config.n_inner = 512;
  model.config.validate("test");
  model.weights = cast_gpt2_weights(random_gpt2_weights(model.config, 5, DType::F32), DType::F32, MatrixLayout::ColMajor);
  Gpt2Runner r(model, {cpu_tier()});
  KvCache c = r.new_cache();
  std::vector<int32_t> prompt(300);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t(i % 300);
  r.forward(prompt, c, false);
  const uint64_t runs0 = pool.parallel_runs();
  for (int32_t t = 0; t < 8; ++t) r.forward(std::vector<int32_t>{t}, c, false);
  EXPECT_EQ(pool.parallel_runs(), runs0) << "a decode step of a 128-channel model woke the pool";

  OpCase big = make_case(OpKind::Linear, {{1, 768}, {768, 3072}, {3072}}, {DType::F32, DType::F32, DType::F32}, {});
  big.col_major_weight = true;
  const uint64_t runs1 = pool.parallel_runs();
  expect_pass(check_op(big, cpu_tier(), 77), 77);
  EXPECT_GT(pool.parallel_runs(), runs1) << "a 9 MiB one-row product stayed on one thread";
  cpu::ThreadPool::set_global_threads(before_threads);
}

TEST(CpuModel, Q8WeightsEndToEnd) {
  for (const std::string name : {"tiny-f32", "tiny-gelu"}) {
    SCOPED_TRACE(name);
    const Gpt2Model f32m = Gpt2Model::load(kFixtures + name);
    Gpt2Model q8m = f32m;
    q8m.weights = cast_gpt2_weights(f32m.weights, DType::Q8);
    const Gpt2Weights& w = q8m.weights;
    EXPECT_EQ(w.layers[0].attn_w.dtype, DType::Q8);
    EXPECT_EQ(w.layers[0].attn_w.q8_axis(), 0);  // blocked along K = in
    EXPECT_EQ(w.lm_head.dtype, DType::Q8);
    EXPECT_EQ(w.lm_head.q8_axis(), 1);  // [V, C] read transposed: blocked along C
    EXPECT_EQ(w.wte.dtype, f32m.weights.wte.dtype);
    for (const json& c : golden()["models"][name]["cases"]) {
      const auto ids = c["ids"].get<std::vector<int32_t>>();
      SCOPED_TRACE(fmt::format("{} tokens", ids.size()));
      // The same q8 weights, dequantized exactly, on the float64 reference: the cpu tier's
      // int8 product must match it within the 2x-naive rule.
      const Tensor r64 = logits_of(q8m, ref(), ids);
      const double en = rel_error(logits_of(q8m, naive(), ids), r64);
      for (const auto& tier : {cpu_tier(), cpu_avx2(), cpu_portable()})
        EXPECT_LE(rel_error(logits_of(q8m, tier, ids), r64), 2 * en + kFloor) << tier->probe().reason << "; naive " << en;
      // Quantization error itself: the q8 model against the f32 one, both in float64.
      const double eq = rel_error(r64, c["logits"]);
      EXPECT_LT(eq, 0.05) << "q8 vs f32 logits";
      EXPECT_GT(eq, 1e-6) << "q8 really is quantized";
    }
    // Greedy text stays close to f32's: the first tokens agree, most of the rest do.
    const auto gq = greedy(q8m, {cpu_tier()}, 16), gf = greedy(f32m, {cpu_tier()}, 16);
    ASSERT_EQ(gq.size(), gf.size());
    int same = 0;
    for (size_t i = 0; i < gq.size(); ++i) same += gq[i] == gf[i];
    EXPECT_EQ(gq[0], gf[0]);
    EXPECT_GE(same, 12) << "of " << gq.size();
    // Decoding with q8 weights follows full recomputation (the int8 GEMV and the panel GEMM
    // compute the same products).
    Gpt2Runner r(q8m, {cpu_tier()}, {true, false});
    const auto ids = golden()["models"][name]["cases"][2]["ids"].get<std::vector<int32_t>>();
    KvCache full = r.new_cache();
    const Tensor all = r.forward(ids, full, true);
    KvCache inc = r.new_cache();
    std::vector<int32_t> head(ids.begin(), ids.end() - 2);
    r.forward(head, inc, false);
    const std::vector<int32_t> one = {ids[ids.size() - 2]};
    const Tensor l = r.forward(one, inc, true);
    EXPECT_LT(rel_error(l, all.rows(all.dim(0) - 2, 1).to(DType::F32)), 2e-6);
  }
}

// ---- timing harness (disabled by default) ----------------------------------------------------

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
// CPU seconds of the whole process (every thread; spinning included): on a shared machine
// tokens per CPU-second with one thread is the per-core speed the wall clock hides.
double cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

}  // namespace

TEST(CpuBench, DISABLED_Gpt2_124M) {
  Gpt2Config cfg;
  cfg.n_layer = 12;
  cfg.n_embd = 768;
  cfg.n_head = 12;
  cfg.n_positions = 1024;
  cfg.vocab_size = 50257;
  cfg.n_inner = 3072;
  const int pp = std::getenv("STRAND_BENCH_PP") ? std::atoi(std::getenv("STRAND_BENCH_PP")) : 512;
  const int tg = std::getenv("STRAND_BENCH_TG") ? std::atoi(std::getenv("STRAND_BENCH_TG")) : 128;
  const int reps = std::getenv("STRAND_BENCH_REPS") ? std::atoi(std::getenv("STRAND_BENCH_REPS")) : 3;
  const char* only = std::getenv("STRAND_BENCH_WEIGHTS");
  const Gpt2Weights base = random_gpt2_weights(cfg, 1, DType::F32);
  const std::shared_ptr<Backend> tier = cpu_tier();
  std::printf("cpu tier: %s\n", tier->probe().reason.c_str());
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::Q8}) {
    if (only && std::string(only) != dtype_name(dt)) continue;
    Gpt2Model m;
    m.config = cfg;
    m.weights = cast_gpt2_weights(base, dt);
    double bytes = 0;  // weight bytes one decode step reads (matrices and lm_head; 1 row of each table)
    for (const Gpt2Layer& L : m.weights.layers)
      for (const Tensor* t : {&L.attn_w, &L.attn_proj_w, &L.fc_w, &L.fc_proj_w}) bytes += double(t->nbytes());
    bytes += double(m.weights.lm_head.nbytes());
    Gpt2Runner r(m, {tier}, {true, false});
    std::vector<double> pps, tgs, ppc, tgc;
    for (int rep = 0; rep < reps; ++rep) {
      std::vector<int32_t> prompt(static_cast<size_t>(pp));
      for (int i = 0; i < pp; ++i) prompt[size_t(i)] = (i * 7919 + 13) % cfg.vocab_size;
      KvCache c = r.new_cache();
      double t0 = now_s(), c0 = cpu_s();
      r.forward(prompt, c, false);
      pps.push_back(pp / (now_s() - t0));
      ppc.push_back(pp / (cpu_s() - c0));
      KvCache d = r.new_cache();
      const std::vector<int32_t> first = {50256};
      r.forward(first, d, false);
      t0 = now_s();
      c0 = cpu_s();
      for (int i = 0; i < tg; ++i) {
        const std::vector<int32_t> one = {int32_t((i * 31 + 7) % cfg.vocab_size)};
        r.forward(one, d, false);
      }
      tgs.push_back(tg / (now_s() - t0));
      tgc.push_back(tg / (cpu_s() - c0));
    }
    for (auto* v : {&pps, &tgs, &ppc, &tgc}) std::sort(v->begin(), v->end());
    const size_t mid = pps.size() / 2;
    std::printf("%-5s pp%d %7.1f tok/s (min %.1f max %.1f; %.1f per CPU-s)   tg%d %6.1f tok/s (min %.1f max %.1f; %.1f per CPU-s)"
                "  %.1f MB/token -> %.2f GB/s\n",
                std::string(dtype_name(dt)).c_str(), pp, pps[mid], pps.front(), pps.back(), ppc[mid], tg, tgs[mid],
                tgs.front(), tgs.back(), tgc[mid], bytes / 1e6, bytes * tgs[mid] / 1e9);
  }
}
