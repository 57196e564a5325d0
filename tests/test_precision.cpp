// Compute precision (Backend::precision, validate/precision.h): a tier that rounds is judged on
// exactly what it declares — the float64 reference on inputs rounded that way, the naive tier at
// that precision as the 2x bar — for single ops and whole models; and validate reports what the
// rounding costs end to end (perplexity and greedy agreement against f32). The amx tier on the
// model of the tile instructions goes through all of it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "backends/amx/amx.h"
#include "backends/naive/naive.h"
#include "core/rounding.h"
#include "reference/kernels.h"
#include "validate/opcheck.h"
#include "validate/precision.h"
#include "validate/validate.h"

using namespace strand;

namespace {

uint64_t test_seed() {
  if (const char* s = std::getenv("STRAND_SEED")) return std::strtoull(s, nullptr, 10);
  return 20261201;
}

// The naive kernels on inputs rounded with `does` (products: both operands; attention: q, k, v
// and, when round_probs, the softmax weights), declaring `says` — which may differ, to prove the
// rule checks the declaration.
class RoundingTier final : public Backend {
 public:
  RoundingTier(Rounding does, Rounding says, bool round_probs, bool declare_probs)
      : does_(does), says_(says), round_probs_(round_probs), declare_probs_(declare_probs) {}
  std::string name() const override { return "rounding"; }
  std::string description() const override { return "test tier: rounds its inputs"; }
  Verdict probe() const override { return Verdict::yes(); }
  Verdict supports(const Graph& g, const Node& n) const override {
    if (n.op == OpKind::MatMul || n.op == OpKind::Attention) return Verdict::yes("test");
    return Verdict::no("products and attention only");
  }
  Precision precision(const Graph& g, const Node& n) const override {
    Precision p;
    p.inputs.assign(n.op == OpKind::Attention ? 3 : 2, says_);
    if (n.op == OpKind::Attention && declare_probs_) p.attention_probs = does_;
    return p;
  }
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    for (NodeId id : nodes) {
      const Node& nd = g.node(id);
      std::vector<Tensor> saved;
      for (ValueId v : nd.inputs) {
        saved.push_back(values[size_t(v)]);
        values[size_t(v)] = round_to_f64(values[size_t(v)], does_).to(DType::F32);
      }
      if (nd.op == OpKind::Attention && round_probs_) {
        const Tensor& q = values[size_t(nd.inputs[0])];
        const Tensor& k = values[size_t(nd.inputs[1])];
        const Tensor& v = values[size_t(nd.inputs[2])];
        std::vector<float> scores(size_t(k.dim(0)));
        const Rounding r = does_;
        kernels::attention(q.ptr<const float>(), k.ptr<const float>(), v.ptr<const float>(), q.dim(0), q.dim(1),
                           nd.attrs.heads, nd.attrs.past, scores.data(), values[size_t(nd.output)].ptr<float>(),
                           [r](float w) { return round_value(w, r); });
      } else {
        naive_->run(g, std::span<const NodeId>(&id, 1), values);
      }
      for (size_t i = 0; i < nd.inputs.size(); ++i) values[size_t(nd.inputs[i])] = saved[i];
    }
  }

 private:
  Rounding does_, says_;
  bool round_probs_, declare_probs_;
  std::unique_ptr<Backend> naive_ = make_naive_backend();
};

OpCase matmul_case(int64_t M, int64_t K, int64_t N) {
  return {OpKind::MatMul, {{M, K}, {K, N}}, {DType::F32, DType::F32}, Attrs{}, "matmul"};
}

OpCase attention_case(int64_t T, int64_t H, int64_t D, int64_t past) {
  Attrs a;
  a.heads = H;
  a.past = past;
  return {OpKind::Attention, {{T, H * D}, {past + T, H * D}, {past + T, H * D}}, {DType::F32, DType::F32, DType::F32}, a,
          "attention"};
}

}  // namespace

TEST(Precision, ATierIsJudgedOnWhatItDeclares) {
  const uint64_t seed = test_seed();
  const OpCase mm = matmul_case(17, 65, 33);
  // Rounds to bf16 and says so: within 2x the naive tier at bf16.
  const OpCheck honest = check_op(mm, std::make_shared<RoundingTier>(Rounding::BF16, Rounding::BF16, false, false), seed);
  EXPECT_TRUE(honest.pass) << honest.err << " > " << honest.tolerance << " seed " << seed;
  EXPECT_EQ(honest.precision, "a bf16, b bf16");
  // Rounds to bf16 but declares nothing: judged as f32, it fails by orders of magnitude.
  const OpCheck silent = check_op(mm, std::make_shared<RoundingTier>(Rounding::BF16, Rounding::None, false, false), seed);
  EXPECT_FALSE(silent.pass);
  EXPECT_GT(silent.err, 100 * silent.tolerance);
  EXPECT_EQ(silent.precision, "");
  // Declares bf16 but rounds to f16: not the function it declared, so it fails too.
  const OpCheck wrong = check_op(mm, std::make_shared<RoundingTier>(Rounding::F16, Rounding::BF16, false, false), seed);
  EXPECT_FALSE(wrong.pass) << wrong.err << " <= " << wrong.tolerance;
  // Rows quantized as q8: declared, passes; the error bar is the naive tier's at q8.
  const OpCheck q8 = check_op(mm, std::make_shared<RoundingTier>(Rounding::Q8, Rounding::Q8, false, false), seed);
  EXPECT_TRUE(q8.pass) << q8.err << " > " << q8.tolerance;
  EXPECT_EQ(q8.precision, "a q8, b q8");
}

TEST(Precision, AttentionWeightsRoundedOnlyWhenDeclared) {
  const uint64_t seed = test_seed();
  const OpCase at = attention_case(19, 3, 24, 6);
  const auto both = std::make_shared<RoundingTier>(Rounding::BF16, Rounding::BF16, true, true);
  const OpCheck r1 = check_op(at, both, seed);
  EXPECT_TRUE(r1.pass) << r1.err << " > " << r1.tolerance;
  EXPECT_EQ(r1.precision, "q bf16, k bf16, v bf16; P bf16");
  // Rounds P too but declares only q, k, v: the bar (naive without rounding P) is too tight.
  const OpCheck r2 = check_op(at, std::make_shared<RoundingTier>(Rounding::BF16, Rounding::BF16, true, false), seed);
  EXPECT_FALSE(r2.pass) << r2.err << " <= " << r2.tolerance;
}

TEST(Precision, RoundedInputsAreTheRule) {
  Tensor t = Tensor::empty({2, 40}, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = 1.0f + float(i) / 1024.0f;
  Precision p;
  p.inputs = {Rounding::BF16, Rounding::None, Rounding::Q8};
  const std::vector<Tensor> r = rounded_inputs({t, t, t}, p);
  for (int64_t i = 0; i < t.numel(); ++i) {
    EXPECT_EQ(r[0].ptr<double>()[i], double(bf16_to_f32(f32_to_bf16(t.ptr<float>()[i]))));
    EXPECT_EQ(r[1].ptr<float>()[i], t.ptr<float>()[i]);  // untouched: the same tensor
  }
  // Q8 per row in blocks of 32: block 0 of row 0 spans 1 .. 1 + 31/1024, scale = max / 127.
  const float scale = (1.0f + 31.0f / 1024.0f) / 127.0f;
  EXPECT_EQ(r[2].ptr<double>()[5], double(std::nearbyint((1.0f + 5.0f / 1024.0f) / scale)) * double(scale));
  EXPECT_TRUE(Precision{}.exact());
  EXPECT_FALSE(p.exact());
}

// tf32 (the cuda tier's f32 products with STRAND_CUDA_TF32=1): 10 mantissa bits, nearest even.
TEST(Precision, Tf32KeepsTenMantissaBitsNearestEven) {
  const float one = 1.0f, ulp = 1.0f / 1024.0f;  // tf32's spacing at 1
  EXPECT_EQ(round_value(one + ulp, Rounding::TF32), one + ulp);
  EXPECT_EQ(round_value(one + 0.4f * ulp, Rounding::TF32), one);
  EXPECT_EQ(round_value(one + 0.6f * ulp, Rounding::TF32), one + ulp);
  EXPECT_EQ(round_value(one + 0.5f * ulp, Rounding::TF32), one);                  // tie: to even
  EXPECT_EQ(round_value(one + 1.5f * ulp, Rounding::TF32), one + 2 * ulp);        // tie: to even
  EXPECT_EQ(round_value(-(one + 0.6f * ulp), Rounding::TF32), -(one + ulp));
  EXPECT_TRUE(std::isinf(round_value(std::numeric_limits<float>::infinity(), Rounding::TF32)));
  EXPECT_TRUE(std::isnan(round_value(std::numeric_limits<float>::quiet_NaN(), Rounding::TF32)));
  EXPECT_EQ(rounding_short(Rounding::TF32), "tf32");
}

TEST(Precision, AmxOnTheInstructionModelPassesValidate) {
  AmxOptions ao;
  ao.unit = AmxUnit::Model;
  ao.min_rows_bf16 = ao.min_rows_int8 = 1;
  ao.min_attention_queries = 1;
  ValidateOptions o;
  o.seed = test_seed();
  o.cases_per_op = 1;
  o.large_cases = false;
  o.greedy_tokens = 4;
  o.fixtures_dir = std::string(STRAND_SOURCE_DIR) + "/tests/fixtures/gpt2";
  o.tiers = {std::shared_ptr<Backend>(make_amx_backend(ao))};
  SCOPED_TRACE(testing::Message() << "seed " << o.seed << " (rerun with STRAND_SEED=" << o.seed << ")");
  const ValidateReport r = run_validate(o);
  EXPECT_TRUE(r.pass()) << r.table();
  int products = 0;
  for (const auto& x : r.ops) {
    if (x.op == "matmul" || x.op == "linear") {
      ++products;
      EXPECT_EQ(x.status, CheckStatus::Pass) << x.op << " " << dtype_name(x.dtype) << ": " << x.reason;
      EXPECT_EQ(x.precision, x.dtype == DType::Q8 ? (x.op == "linear" ? "x q8" : "a q8") : (x.op == "linear" ? "x bf16, w bf16" : "a bf16, b bf16"))
          << x.op << " " << dtype_name(x.dtype);
    }
    if (x.op == "attention") EXPECT_EQ(x.precision, "q bf16, k bf16, v bf16; P bf16");
    if (x.op == "layernorm") EXPECT_EQ(x.status, CheckStatus::NotSupported);
  }
  EXPECT_GE(products, 4);  // matmul and linear, f32 and q8 weights (one random round)
  // Whole models at the tier's precision, products and attention on the tiles.
  ASSERT_FALSE(r.models.empty());
  for (const auto& m : r.models) {
    EXPECT_EQ(m.status, CheckStatus::Pass) << m.model << " " << m.weights << ": " << m.reason;
    EXPECT_NE(m.precision.find("attention: q bf16, k bf16, v bf16; P bf16"), std::string::npos) << m.precision;
    EXPECT_GT(m.tier_flop_share, 0.5);
  }
  // What it costs: every weight dtype, finite perplexities, agreement a share.
  ASSERT_EQ(r.costs.size(), case_weight_dtypes().size()) << r.table();
  for (const auto& c : r.costs) {
    EXPECT_TRUE(c.error.empty()) << c.error;
    EXPECT_TRUE(std::isfinite(c.ppl) && c.ppl > 1) << c.ppl;
    EXPECT_GE(c.top1_agree, 0.0);
    EXPECT_LE(c.top1_agree, 1.0);
    EXPECT_GE(c.kl, 0.0);
    EXPECT_FALSE(c.precision.empty());
  }
  EXPECT_NE(r.table().find("what each tier's precision and each weight dtype cost"), std::string::npos);
  EXPECT_TRUE(r.to_json().contains("precision_costs"));
}

TEST(Precision, AnExactTierCostsNothingAgainstItself) {
  ValidateOptions o;
  o.seed = test_seed();
  o.cases_per_op = 1;
  o.large_cases = false;
  o.models = false;
  o.greedy_tokens = 2;
  const ValidateReport r = run_validate(o);
  bool saw = false;
  for (const auto& c : r.costs) {
    if (c.tier != "cpu" || c.weights != "f32") continue;
    saw = true;
    EXPECT_EQ(c.ppl, c.ppl_f32);  // the baseline is the cpu tier with f32 weights: the same run
    EXPECT_EQ(c.top1_agree, 1.0);
    EXPECT_EQ(c.kl, 0.0);
    EXPECT_EQ(c.precision, "");
  }
  EXPECT_TRUE(saw) << r.table();
  // Lower-precision weights on an exact tier cost something, reported per dtype.
  for (const auto& c : r.costs)
    if (c.tier == "cpu" && c.weights == "q8") EXPECT_NE(c.ppl, c.ppl_f32);
}
