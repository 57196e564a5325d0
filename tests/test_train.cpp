// Training: a GPT-2's loss and gradients and two AdamW steps against PyTorch's (the golden
// fixture of tools/gen_train_golden.py), on every tier; the schedule and clipping.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "backends/amx/amx.h"
#include "backends/cuda/cuda.h"
#include "backends/naive/naive.h"
#include "backends/registry.h"
#include "cli_util.h"
#include "core/error.h"
#include "formats/safetensors.h"
#include "model/weight_cast.h"
#include "train/adamw.h"
#include "train/step.h"

using namespace strand;
using namespace strand::cli_test;

namespace {

constexpr int64_t kSeqs = 3, kT = 9;  // the golden batches' shape

std::string train_fixtures() { return (source_dir() / "tests" / "fixtures" / "train").string(); }

const SafeTensors& golden() {
  static const std::shared_ptr<SafeTensors> g = SafeTensors::open(train_fixtures() + "/golden.safetensors");
  return *g;
}

const Tensor& golden_tensor(const std::string& name) {
  const Tensor* t = golden().find(name);
  if (!t) throw std::runtime_error("golden.safetensors has no " + name);
  return *t;
}

// The fixture model with its weights as owned, writable f32 tensors (row-major, as loaded).
Gpt2Model trainable(const std::string& tag) {
  Gpt2Model m = Gpt2Model::load(train_fixtures() + "/" + tag);
  m.weights = cast_gpt2_weights(m.weights, DType::F32);
  return m;
}

// max |a - b| / max |b| over a tensor pair (b the golden, f64).
double rel_err(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(DType::F64), y = b.to(DType::F64);
  double d = 0, s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    d = std::max(d, std::abs(x.ptr<const double>()[i] - y.ptr<const double>()[i]));
    s = std::max(s, std::abs(y.ptr<const double>()[i]));
  }
  return d / (s > 0 ? s : 1.0);
}

struct StepErrors {
  double loss = 0, grads = 0;  // relative errors against the golden
};

// Loss and gradients of the first golden batch on `chain`.
StepErrors first_step_errors(const std::string& tag, const std::vector<std::shared_ptr<Backend>>& chain) {
  Gpt2Model m = trainable(tag);
  StepRunner r(build_train_graph(m, kSeqs, kT), chain, false);
  const double loss = r.run(golden_tensor(tag + ".ids1").ptr<const int32_t>(), golden_tensor(tag + ".targets1").ptr<const int32_t>());
  StepErrors e;
  const double want = golden_tensor(tag + ".loss1").ptr<const double>()[0];
  e.loss = std::abs(loss - want) / std::abs(want);
  for (size_t i = 0; i < r.params().size(); ++i)
    e.grads = std::max(e.grads, rel_err(r.grad(i), golden_tensor(tag + ".grad1." + r.params()[i].name)));
  return e;
}

}  // namespace

class GoldenTraining : public testing::TestWithParam<std::string> {};

TEST_P(GoldenTraining, ReferenceGradientsEqualPyTorchs) {
  const StepErrors e = first_step_errors(GetParam(), {std::shared_ptr<Backend>(make_reference_backend())});
  // Both are float64 computations of the same function (different summation orders).
  EXPECT_LT(e.loss, 1e-12);
  EXPECT_LT(e.grads, 1e-10);
}

TEST_P(GoldenTraining, EveryTierIsWithinTwiceNaiveF32) {
  const StepErrors naive = first_step_errors(GetParam(), {std::shared_ptr<Backend>(make_naive_backend())});
  EXPECT_LT(naive.grads, 1e-4) << "naive f32 far from PyTorch's float64";
  EXPECT_LT(naive.loss, 1e-5);
  EXPECT_GT(naive.grads, 0.0) << "f32 and f64 cannot agree exactly: the comparison is broken";
  const double floor = 4.0 * double(std::numeric_limits<float>::epsilon());
  for (const auto& tier : all_backends()) {
    if (!tier->probe().ok || tier->name() == "naive") continue;
    // The tile tiers train in bf16 (judged by MixedPrecision below), the rest in f32.
    if (tier->name() == "amx" || tier->name() == "avx512bf16") continue;
    // The tier first, naive behind it (the blas tier takes only large products).
    const StepErrors e = first_step_errors(GetParam(), {tier, std::shared_ptr<Backend>(make_naive_backend())});
    EXPECT_LE(e.grads, 2 * naive.grads + floor) << tier->name();
    EXPECT_LE(e.loss, 2 * naive.loss + floor) << tier->name();
  }
}

TEST_P(GoldenTraining, AdamWStepsEqualTorchOptimAdamW) {
  // strand's AdamW fed PyTorch's own gradients (rounded to f32) must land where torch's did.
  const std::string tag = GetParam();
  Gpt2Model m = trainable(tag);
  const TrainGraph tg = build_train_graph(m, kSeqs, kT);
  std::vector<Tensor> params;
  std::vector<bool> decay;
  for (const Param& p : tg.params) {
    params.push_back(p.tensor);
    decay.push_back(p.decay);
  }
  AdamWConfig cfg;  // the generator's: betas (0.9, 0.95), eps 1e-8, weight decay 0.1
  AdamW opt(params, decay, cfg);
  for (int step = 1; step <= 2; ++step) {
    std::vector<Tensor> grads;
    for (const Param& p : tg.params) grads.push_back(golden_tensor(tag + ".grad" + std::to_string(step) + "." + p.name).to(DType::F32));
    opt.step(grads, 1e-2);
  }
  for (const Param& p : tg.params) {
    const Tensor& want = golden_tensor(tag + ".after2." + p.name);
    const Tensor got = p.tensor.to(DType::F64);
    for (int64_t i = 0; i < want.numel(); ++i) {
      const double w = want.ptr<const double>()[i], x = got.ptr<const double>()[i];
      // f32 rounding of the parameter and of the update (the update is ~lr, summed twice).
      EXPECT_NEAR(x, w, 4e-7 * std::abs(w) + 1e-8) << p.name << "[" << i << "]";
    }
  }
}

TEST_P(GoldenTraining, TwoStepsOnTheReferenceLandWhereTorchDid) {
  // Gradients, then AdamW, then the second batch's loss at the new parameters, then AdamW again.
  const std::string tag = GetParam();
  Gpt2Model m = trainable(tag);
  StepRunner r(build_train_graph(m, kSeqs, kT), {std::shared_ptr<Backend>(make_reference_backend())}, false);
  std::vector<Tensor> params;
  std::vector<bool> decay;
  for (const Param& p : r.params()) {
    params.push_back(p.tensor);
    decay.push_back(p.decay);
  }
  AdamW opt(params, decay, AdamWConfig{});
  for (int step = 1; step <= 2; ++step) {
    const std::string s = std::to_string(step);
    const double loss = r.run(golden_tensor(tag + ".ids" + s).ptr<const int32_t>(), golden_tensor(tag + ".targets" + s).ptr<const int32_t>());
    const double want = golden_tensor(tag + ".loss" + s).ptr<const double>()[0];
    EXPECT_NEAR(loss, want, 1e-6 * std::abs(want)) << "step " << step;  // the parameters are f32 after step 1
    std::vector<Tensor> grads;
    for (size_t i = 0; i < r.params().size(); ++i) grads.push_back(r.grad(i).to(DType::F32));
    opt.step(grads, 1e-2);
  }
  for (const Param& p : r.params()) EXPECT_LT(rel_err(p.tensor, golden_tensor(tag + ".after2." + p.name)), 2e-6) << p.name;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTraining, testing::Values("tied", "untied"));

TEST(Schedule, WarmupThenCosineToMinimum) {
  EXPECT_DOUBLE_EQ(lr_at(0, 100, 1e-3, 1e-4, 10), 1e-4);    // 1/10 of lr at the first step
  EXPECT_DOUBLE_EQ(lr_at(9, 100, 1e-3, 1e-4, 10), 1e-3);    // full lr at the end of warmup
  EXPECT_DOUBLE_EQ(lr_at(10, 100, 1e-3, 1e-4, 10), 1e-3);   // the cosine starts at lr
  EXPECT_NEAR(lr_at(99, 100, 1e-3, 1e-4, 10), 1e-4, 1e-15);  // and ends at min_lr
  // Half way through the decay: the mean of lr and min_lr.
  EXPECT_NEAR(lr_at(10 + 89 / 2, 100, 1e-3, 1e-4, 10), 0.5 * (1e-3 + 1e-4), 1e-5);
}

TEST(Clipping, GlobalNormOverEveryGradient) {
  Tensor a = Tensor::empty({2}, DType::F32), b = Tensor::empty({1, 1}, DType::F32);
  a.ptr<float>()[0] = 3;
  a.ptr<float>()[1] = 0;
  b.ptr<float>()[0] = 4;
  EXPECT_DOUBLE_EQ(global_grad_norm({a, b}), 5.0);
}

// Mixed precision: the tile tier (amx, avx512bf16, or the instruction model where neither
// runs) takes a training step's products in bf16 with f32 accumulation; everything else, the
// master weights and AdamW stay f32. Judged against PyTorch's float64 golden at bf16's scale,
// and shown to be bf16 (further from the golden than the f32 naive tier).
static std::shared_ptr<Backend> tile_tier_from_one_row() {
  AmxOptions o;
  o.unit = amx_status().usable ? AmxUnit::Tiles : avx512bf16_status().usable ? AmxUnit::Avx512Bf16 : AmxUnit::Model;
  o.min_rows_bf16 = 1;
  return std::shared_ptr<Backend>(make_amx_backend(o));
}

static int nodes_on(const Plan& plan, int tier) {
  int n = 0;
  for (const Placement& p : plan.placement) n += p.tier == tier;
  return n;
}

TEST_P(GoldenTraining, TileTierTrainsInBf16WithF32MasterWeights) {
  const auto tile = tile_tier_from_one_row();
  const auto naive = std::shared_ptr<Backend>(make_naive_backend());
  Gpt2Model m = trainable(GetParam());
  StepRunner r(build_train_graph(m, kSeqs, kT), {tile, naive}, false);
  // Products, forward and backward, on the tile tier; attention and the rest are not.
  int products = 0, on_tile = 0;
  for (size_t i = 0; i < r.graph().graph.nodes().size(); ++i) {
    const OpKind k = r.graph().graph.node(NodeId(i)).op;
    if (k != OpKind::MatMul && k != OpKind::Linear) continue;
    ++products;
    on_tile += r.plan().placement[i].tier == 0;
  }
  EXPECT_GT(products, 10);
  EXPECT_EQ(on_tile, products);
  EXPECT_LT(nodes_on(r.plan(), 0), int(r.graph().graph.nodes().size()) / 2);

  const std::string tag = GetParam();
  const double loss = r.run(golden_tensor(tag + ".ids1").ptr<const int32_t>(), golden_tensor(tag + ".targets1").ptr<const int32_t>());
  const double want = golden_tensor(tag + ".loss1").ptr<const double>()[0];
  double grads = 0;
  for (size_t i = 0; i < r.params().size(); ++i)
    grads = std::max(grads, rel_err(r.grad(i), golden_tensor(tag + ".grad1." + r.params()[i].name)));
  const StepErrors f32 = first_step_errors(tag, {naive});
  EXPECT_LT(std::abs(loss - want) / want, 1e-2) << "loss " << loss << " vs " << want;
  EXPECT_LT(grads, 5e-2) << "bf16 products: gradients far from PyTorch's";
  EXPECT_GT(grads, 10 * f32.grads) << "no further from float64 than f32: the products did not round to bf16";

  // The optimizer changes the weights in place between steps; the next run must use them (the
  // tier must not keep tiles packed from the old values). Evaluation graphs (a loss, no
  // backward) use each weight in one direction only, where a cache would be hit: after every
  // matrix is tripled, the tile chain's validation loss follows the naive tier's on the new
  // weights, not the old loss.
  const int32_t* ids = golden_tensor(tag + ".ids1").ptr<const int32_t>();
  const int32_t* tg = golden_tensor(tag + ".targets1").ptr<const int32_t>();
  StepRunner eval(build_eval_graph(m, kSeqs, kT), {tile, naive}, false);
  const double before = eval.run(ids, tg);
  for (const Param& p : r.params())
    if (p.tensor.rank() == 2)
      for (int64_t j = 0; j < p.tensor.numel(); ++j) const_cast<float*>(p.tensor.ptr<const float>())[j] *= 3;
  const double after = eval.run(ids, tg);
  StepRunner exact(build_eval_graph(m, kSeqs, kT), {naive}, false);
  const double after_f32 = exact.run(ids, tg);
  EXPECT_GT(std::abs(after_f32 - before), 0.1 * before) << "the change did not move the loss: the check is void";
  EXPECT_LT(std::abs(after - after_f32), 0.05 * std::abs(after_f32 - before))
      << "after the change: tile chain " << after << ", f32 " << after_f32 << ", before " << before;
}

// The cuda tier has a kernel for every op of a training step (the loss, the backward ops,
// attention over several sequences), so a training graph runs whole on the GPU; the runtime
// hands it fresh copies of the weights on every run of a graph with a loss (the optimizer
// changes them in place; test_device_residency proves the mechanism). Where the tier is not
// built, its stub declines every node saying so. Run on a GPU: tests/cuda/test_cuda_train.cpp.
TEST(TrainTiers, CudaTierTakesEveryNodeOfATrainingStep) {
  const std::unique_ptr<Backend> cuda = make_cuda_backend();
  Gpt2Model m = trainable("tied");
  for (const TrainGraph& tg : {build_train_graph(m, kSeqs, kT), build_eval_graph(m, kSeqs, kT)}) {
    std::set<OpKind> ops;
    for (const Node& n : tg.graph.nodes()) {
      const Verdict v = cuda->supports(tg.graph, n);
      ops.insert(n.op);
#if defined(STRAND_HAVE_CUDA)
      EXPECT_TRUE(v.ok) << n.name << ": " << v.reason;
#else
      EXPECT_FALSE(v.ok) << n.name;
      EXPECT_NE(v.reason.find("not built"), std::string::npos) << v.reason;
#endif
    }
    EXPECT_TRUE(ops.count(OpKind::CrossEntropy));
    EXPECT_TRUE(ops.count(OpKind::Attention));
  }
  // The backward graph has the ops it is made of.
  const TrainGraph tg = build_train_graph(m, kSeqs, kT);
  for (OpKind k : {OpKind::MatMulAt, OpKind::AttentionBackward, OpKind::LayerNormBackward, OpKind::ScatterAddRows})
    EXPECT_TRUE(tg.graph.has_op(k)) << op_name(k);
}
