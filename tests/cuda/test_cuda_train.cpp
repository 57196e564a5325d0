// Training on the cuda tier: every op's backward graph and PyTorch's golden GPT-2 step within
// twice the naive f32 error; a whole step placed on the GPU alone against the cpu tier, repeated
// bit for bit; AdamW steps the GPU sees, with the optimizer on the host (the weights change
// there between steps: a stale resident copy would leave the loss where it was) and on the GPU
// (weights, gradients and moments there); bf16 products with f32 master weights against the
// golden step; `strand train --backend cuda`. The kernels themselves, backward ones included,
// are checked against float64 in test_cuda_ops (random_op_cases holds the training ops).
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "backends/cpu/cpu.h"
#include "backends/cuda/cuda.h"
#include "backends/naive/naive.h"
#include "cli_util.h"
#include "core/rng.h"
#include "formats/safetensors.h"
#include "gpu_test.h"
#include "train_fixtures.h"
#include "model/gpt2.h"
#include "model/weight_cast.h"
#include "train/adamw.h"
#include "train/step.h"
#include "validate/gradcheck.h"
#include "validate/opcheck.h"

using namespace strand;
using strand::cli_test::run_strand;
using namespace strand::train_test;

namespace {

struct Batch {
  std::vector<int32_t> ids, targets;
};

Batch random_batch(int64_t rows, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  Batch b;
  for (int64_t i = 0; i < rows; ++i) {
    b.ids.push_back(int32_t(rng.below(uint64_t(vocab))));
    b.targets.push_back(int32_t(rng.below(uint64_t(vocab))));
  }
  return b;
}

// Losses of `steps` AdamW steps on `chain`, each on its own batch (seeds seed, seed + 1, ...);
// with `on_device`, the optimizer runs on the chain's first tier (StepRunner::whole_step_device).
std::vector<double> train_losses(const std::vector<std::shared_ptr<Backend>>& chain, int steps, uint64_t seed,
                                 bool on_device = false) {
  Gpt2Model m = trainable("untied");
  const int64_t seqs = 3, t = 9;
  StepRunner r(build_train_graph(m, seqs, t), chain, false);
  AdamW opt = make_adamw(r, AdamWConfig{}, on_device);
  if (on_device && !opt.device()) ADD_FAILURE() << "the step is not whole on a tier that trains in place";
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    const Batch b = random_batch(seqs * t, m.config.vocab_size, seed + uint64_t(s));
    losses.push_back(r.run(b.ids.data(), b.targets.data()));
    std::vector<Tensor> grads;
    for (size_t i = 0; i < r.params().size(); ++i) grads.push_back(r.grad(i));
    const double norm = opt.grad_norm(grads);
    opt.step(grads, 3e-2, norm > 1 ? 1 / norm : 1.0);
  }
  return losses;
}

}  // namespace

TEST(CudaTrain, AWholeTrainingStepRunsOnTheGpuAndMatchesTheCpuTier) {
  STRAND_NEED_GPU();
  const uint64_t seed = 20261130;
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::shared_ptr<Backend> cuda = make_cuda_backend();
  std::shared_ptr<Backend> cpu = make_cpu_backend();
  for (const std::string tag : {"tied", "untied"}) {
    SCOPED_TRACE(tag);
    Gpt2Model m = trainable(tag);
    const int64_t seqs = 3, t = 9;
    StepRunner on_gpu(build_train_graph(m, seqs, t), {cuda}, /*strict=*/true);  // every node on the GPU
    Gpt2Model m2 = trainable(tag);
    StepRunner on_cpu(build_train_graph(m2, seqs, t), {cpu}, true);
    const Batch b = random_batch(seqs * t, m.config.vocab_size, seed);
    const double lg = on_gpu.run(b.ids.data(), b.targets.data());
    const double lc = on_cpu.run(b.ids.data(), b.targets.data());
    EXPECT_NEAR(lg, lc, 1e-5 * std::abs(lc));
    for (size_t i = 0; i < on_gpu.params().size(); ++i)
      EXPECT_LT(rel_err(on_gpu.grad(i), on_cpu.grad(i)), 1e-4) << on_gpu.params()[i].name;
    // The same step again: bit for bit (no atomics, fixed summation orders).
    std::vector<Tensor> first;
    for (size_t i = 0; i < on_gpu.params().size(); ++i) first.push_back(on_gpu.grad(i).to(DType::F32));
    EXPECT_EQ(on_gpu.run(b.ids.data(), b.targets.data()), lg);
    for (size_t i = 0; i < first.size(); ++i)
      EXPECT_EQ(std::memcmp(first[i].data, on_gpu.grad(i).data, first[i].nbytes()), 0) << on_gpu.params()[i].name;
  }
}

TEST(CudaTrain, EveryGradientGraphWithinTwiceNaive) {
  STRAND_NEED_GPU();
  // Every op's backward graph (the op, then the nodes of its gradient rule) on random odd shapes,
  // on the GPU, against the float64 reference with the 2x-naive rule (validate/gradcheck.h).
  const uint64_t seed = 20261133;
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<std::shared_ptr<Backend>> tiers = {make_cuda_backend()};
  int checked = 0;
  for (const OpCase& c : grad_cases(seed, 3)) {
    for (const OpCheck& chk : check_grad_tiers(c, tiers, seed)) {
      if (!chk.supported) {
        EXPECT_NE(chk.reason.find("no gradient rule"), std::string::npos) << chk.label << ": " << chk.reason;
        continue;
      }
      ++checked;
      EXPECT_TRUE(chk.pass) << chk.label << ": err " << chk.err << " > tol " << chk.tolerance
                            << (chk.unwritten ? " (unwritten output)" : "") << " " << chk.reason;
    }
  }
  EXPECT_GT(checked, 40);
}

TEST(CudaTrain, GoldenStepWithinTwiceNaive) {
  STRAND_NEED_GPU();
  // PyTorch's float64 GPT-2 step (tests/fixtures/train): the GPU's loss and every gradient no
  // further from it than twice the naive f32 tier's.
  const double floor = 4.0 * double(std::numeric_limits<float>::epsilon());
  for (const std::string tag : {"tied", "untied"}) {
    SCOPED_TRACE(tag);
    const StepErrors g = first_step_errors(tag, {make_cuda_backend()}, /*strict=*/true);
    const StepErrors n = first_step_errors(tag, {std::shared_ptr<Backend>(make_naive_backend())}, true);
    EXPECT_GT(n.grads, 0.0) << "f32 equal to float64: the comparison is broken";
    EXPECT_LE(g.grads, 2 * n.grads + floor);
    EXPECT_LE(g.loss, 2 * n.loss + floor);
  }
}

TEST(CudaTrain, AdamWStepsReachTheGpu) {
  STRAND_NEED_GPU();
  // The optimizer updates the weights on the host; the GPU must compute each step on the new
  // ones. Ten steps on the GPU and on the cpu tier follow the same loss curve; a stale copy of
  // the first weights would not (the curve moves by far more than the tolerance: checked).
  const uint64_t seed = 20261131;
  const std::vector<double> gpu = train_losses({make_cuda_backend()}, 10, seed);
  const std::vector<double> cpu = train_losses({make_cpu_backend()}, 10, seed);
  ASSERT_EQ(gpu.size(), cpu.size());
  double moved = 0;
  for (size_t s = 0; s < gpu.size(); ++s) {
    EXPECT_NEAR(gpu[s], cpu[s], 1e-3 * std::abs(cpu[s])) << "step " << s;
    moved = std::max(moved, std::abs(cpu[s] - cpu[0]) / std::abs(cpu[0]));
  }
  EXPECT_GT(moved, 1e-2) << "the losses did not move: the check is void";
}

TEST(CudaTrain, AdamWOnTheGpuTrainsAsOnTheHost) {
  STRAND_NEED_GPU();
  // Weights, gradients and moments on the GPU (only the loss and the gradient norm cross): the
  // same loss curve as the cpu tier with the optimizer on the host.
  const uint64_t seed = 20261132;
  const std::vector<double> gpu = train_losses({make_cuda_backend()}, 10, seed, /*on_device=*/true);
  const std::vector<double> cpu = train_losses({make_cpu_backend()}, 10, seed);
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t s = 0; s < gpu.size(); ++s) EXPECT_NEAR(gpu[s], cpu[s], 1e-3 * std::abs(cpu[s])) << "step " << s;
  EXPECT_GT(std::abs(cpu.back() - cpu.front()), 1e-2 * std::abs(cpu.front())) << "the losses did not move";
}

TEST(CudaTrain, Bf16ProductsTrainWithF32MasterWeights) {
  STRAND_NEED_GPU();
  // STRAND_CUDA_BF16: every product of a step (forward, dx and dw) on bf16 tensor cores with
  // both operands rounded, the rest f32. Against PyTorch's float64 golden step: the loss within
  // 1%, every gradient within 5%, and further from float64 than the f32 tier (the rounding
  // happened).
  CudaOptions o = cuda_options_from_env();
  o.bf16 = true;
  o.tf32 = false;
  for (const std::string tag : {"tied", "untied"}) {
    SCOPED_TRACE(tag);
    const StepErrors e16 = first_step_errors(tag, {make_cuda_backend(o)}, /*strict=*/true);
    CudaOptions f = o;
    f.bf16 = false;
    const StepErrors e32 = first_step_errors(tag, {make_cuda_backend(f)}, true);
    EXPECT_LT(e16.loss, 1e-2);
    EXPECT_LT(e16.grads, 5e-2) << "bf16 products: gradients far from PyTorch's";
    EXPECT_GT(e16.grads, 10 * e32.grads) << "no further from float64 than f32: the products did not round to bf16";
    EXPECT_LT(e32.grads, 1e-4);
  }
}

TEST(CudaTrain, TheTrainCommandRunsOnTheGpu) {
  STRAND_NEED_GPU();
  const std::filesystem::path out = std::filesystem::temp_directory_path() / "strand-cuda-train";
  std::filesystem::remove_all(out);
  const auto r = run_strand({"train", "--data", std::string(STRAND_SOURCE_DIR) + "/docs", "--tokenizer", "bytes",
                             "--layers", "2", "--heads", "2", "--embd", "64", "--ctx", "64", "--batch", "4", "--steps",
                             "30", "--eval-every", "10", "--seed", "7", "--backend", "cuda", "--no-fallback", "--out",
                             out.string()},
                            300);
  // The chain is the cuda tier alone and --no-fallback: a node it declined would be an error.
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.out << r.err;
  EXPECT_TRUE(std::filesystem::exists(out / "model.safetensors"));
  const auto g = run_strand({"perplexity", "--model", out.string(), "--backend", "cuda", "--file",
                             std::string(STRAND_SOURCE_DIR) + "/README.md", "--ctx", "64"});
  EXPECT_TRUE(g.exited && g.exit_code == 0) << g.out << g.err;
  std::filesystem::remove_all(out);
}
