// Training: a GPT-2's loss and gradients and two AdamW steps against PyTorch's (the golden
// fixture of tools/gen_train_golden.py), on every tier; the schedule and clipping.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>

#include "backends/amx/amx.h"
#include "backends/cuda/cuda.h"
#include "backends/naive/naive.h"
#include "backends/registry.h"
#include "bench/train_bench.h"
#include "cli_util.h"
#include "fake_device.h"
#include "train_fixtures.h"
#include "core/error.h"
#include "formats/safetensors.h"
#include "model/weight_cast.h"
#include "train/adamw.h"
#include "train/step.h"

using namespace strand;
using namespace strand::cli_test;
using namespace strand::train_test;

namespace {

constexpr int64_t kSeqs = kGoldenSeqs, kT = kGoldenT;

}  // namespace

class GoldenTraining : public ::testing::TestWithParam<std::string> {};

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

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTraining, ::testing::Values("tied", "untied"));

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

// A tier that trains in place (a GPU; here the fake device of tests/fake_device.h, which runs the
// naive loops on memory of its own): the whole step on it, the weights are its resident copies
// updated there by its AdamW, the gradients stay there, and per step only the ids, targets and
// the loss cross. It must train exactly as the host does: the same losses, gradient norms and
// weights bit for bit (the fake device computes as the naive tier and AdamW's element update is
// one function), the host's weights lagging until sync_to_host.
TEST(TrainTiers, AnOptimizerOnTheDeviceTrainsAsOnTheHostBitForBit) {
  using strand::testing::FakeDevice;
  auto fake = std::make_shared<FakeDevice>();
  std::shared_ptr<Backend> naive(make_naive_backend());
  Gpt2Model md = trainable("untied"), mh = trainable("untied");
  StepRunner dev_run(build_train_graph(md, kSeqs, kT), {fake}, true);
  StepRunner host_run(build_train_graph(mh, kSeqs, kT), {naive}, true);
  ASSERT_EQ(dev_run.whole_step_device(), fake);
  EXPECT_EQ(host_run.whole_step_device(), nullptr);
  dev_run.set_device(fake);
  auto params_of = [](const StepRunner& r, std::vector<Tensor>* p, std::vector<bool>* d) {
    for (const Param& q : r.params()) {
      p->push_back(q.tensor);
      d->push_back(q.decay);
    }
  };
  std::vector<Tensor> pd, ph;
  std::vector<bool> dd, dh;
  params_of(dev_run, &pd, &dd);
  params_of(host_run, &ph, &dh);
  AdamW opt_dev(pd, dd, AdamWConfig{}, fake), opt_host(ph, dh, AdamWConfig{});
  const std::vector<Tensor> before = [&] {
    std::vector<Tensor> c;
    for (const Tensor& t : pd) c.push_back(t.to(DType::F32));
    return c;
  }();
  for (int step = 1; step <= 3; ++step) {
    const std::string s = std::to_string(step > 2 ? 2 : step);
    const int32_t* ids = golden_tensor("untied.ids" + s).ptr<const int32_t>();
    const int32_t* tg = golden_tensor("untied.targets" + s).ptr<const int32_t>();
    const double in0 = fake->bytes_in;
    const double ld = dev_run.run(ids, tg), lh = host_run.run(ids, tg);
    EXPECT_EQ(ld, lh) << "step " << step;
    // ids, targets, positions (i32) and the loss seed: no weight crosses, not even the first time
    // after the optimizer changed them.
    if (step > 1) {
      EXPECT_EQ(fake->bytes_in - in0, double(3 * kSeqs * kT * 4 + 4)) << "more than the inputs crossed";
    }
    std::vector<Tensor> gd, gh;
    for (size_t i = 0; i < dev_run.params().size(); ++i) {
      gd.push_back(dev_run.grad(i));
      gh.push_back(host_run.grad(i));
      EXPECT_TRUE(fake->holds(gd.back())) << "the gradient left the device";
    }
    const double nd = opt_dev.grad_norm(gd), nh = opt_host.grad_norm(gh);
    EXPECT_EQ(nd, nh);
    opt_dev.step(gd, 1e-2, nd > 1 ? 1 / nd : 1.0);
    opt_host.step(gh, 1e-2, nh > 1 ? 1 / nh : 1.0);
  }
  EXPECT_EQ(fake->optimizer_updates, 3 * int(pd.size()));
  // The host tensors lag (the device's copies are the weights) until synced.
  EXPECT_EQ(std::memcmp(pd[0].data, before[0].data, pd[0].nbytes()), 0);
  // An evaluation graph on the device reads the updated copies (no fresh copy of stale host bytes).
  StepRunner eval_dev(build_eval_graph(md, kSeqs, kT), {fake}, true), eval_host(build_eval_graph(mh, kSeqs, kT), {naive}, true);
  eval_dev.set_device(fake);
  const int32_t* ids = golden_tensor("untied.ids1").ptr<const int32_t>();
  const int32_t* tg = golden_tensor("untied.targets1").ptr<const int32_t>();
  EXPECT_EQ(eval_dev.run(ids, tg), eval_host.run(ids, tg));
  opt_dev.sync_to_host();
  for (size_t i = 0; i < pd.size(); ++i) {
    EXPECT_EQ(std::memcmp(pd[i].data, ph[i].data, pd[i].nbytes()), 0) << dev_run.params()[i].name;
    const Tensor md_i = opt_dev.moment_m(i), mh_i = opt_host.moment_m(i);
    const Tensor vd_i = opt_dev.moment_v(i), vh_i = opt_host.moment_v(i);
    EXPECT_EQ(std::memcmp(md_i.data, mh_i.data, md_i.nbytes()), 0);
    EXPECT_EQ(std::memcmp(vd_i.data, vh_i.data, vd_i.nbytes()), 0);
  }
  // Moments set from the host (a resume) come back as they were given.
  Tensor m0 = opt_host.moment_m(0).to(DType::F32), v0 = opt_host.moment_v(0).to(DType::F32);
  m0.ptr<float>()[0] = 7.0f;
  opt_dev.set_moments(0, m0, v0);
  EXPECT_EQ(opt_dev.moment_m(0).ptr<const float>()[0], 7.0f);
  // A tier that does not train in place, or a step that is not whole on it, keeps the optimizer on the host.
  fake->train_in_place = false;
  EXPECT_EQ(dev_run.whole_step_device(), nullptr);
  fake->train_in_place = true;
  auto partial = std::make_shared<FakeDevice>(std::set<OpKind>{OpKind::AttentionBackward});
  StepRunner split(build_train_graph(md, kSeqs, kT), {partial, naive}, false);
  EXPECT_EQ(split.whole_step_device(), nullptr);
}

// MFU is stated against the unit the products run on: the FP32 lanes for an f32 chain, the bf16
// unit (vdpbf16ps, AMX tiles) for a mixed-precision one; a share above 1 would be a wrong bound.
TEST(TrainBench, MfuIsOfTheUnitTheProductsRunOn) {
  TempCacheDir cache;  // the built-in crossover (32 rows), whatever this machine's cache says
  TrainBenchOptions o;
  o.config.n_layer = 1;
  o.config.n_embd = 32;
  o.config.n_head = 2;
  o.config.n_inner = 128;
  o.config.vocab_size = 64;
  o.config.n_positions = 16;
  o.batch = 2;
  o.ctx = 16;
  o.reps = 1;
  o.warmup = 0;
  o.threads = {1};
  const bool bf16 = avx512bf16_status().usable;
  o.chains = {"cpu"};
  if (bf16) o.chains.push_back("avx512bf16,cpu");
  const TrainBenchReport r = run_train_bench(o);
  ASSERT_EQ(r.results.size(), o.chains.size());
  for (const TrainBenchResult& x : r.results) {
    EXPECT_GT(x.peak_gflops, 0) << x.chain;
    EXPECT_GT(x.mfu, 0) << x.chain;
    EXPECT_LE(x.mfu, 1) << x.chain << ": " << x.gflops << " GFLOP/s against a peak of " << x.peak_gflops;
    if (x.chain == "cpu") {
      EXPECT_NE(x.peak_source.find("FP32 FMA lanes of 1 thread"), std::string::npos) << x.peak_source;
      EXPECT_EQ(x.precision, "f32");
    } else {
      EXPECT_NE(x.peak_source.find("AVX-512-BF16 (vdpbf16ps) of 1 thread"), std::string::npos) << x.peak_source;
      EXPECT_NE(x.precision.find("mixed"), std::string::npos) << x.precision;
    }
  }
  // Without AMX, a chain named amx (never built there) falls back to the FP32 lanes, saying so.
  if (!amx_status().usable) {
    std::string what;
    EXPECT_GT(training_peak_gflops("amx", 1, &what), 0);
    EXPECT_NE(what.find("FP32 FMA lanes"), std::string::npos) << what;
  }
}
