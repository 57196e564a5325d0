// The cuda tier running GPT-2: resident on the GPU (weights uploaded once, the KV cache on the
// device, three copies per step), decode steps replayed as CUDA graphs with the same logits
// as without, fallback of what it declines (q8) with its copies shown, and the commands
// (generate --explain, devices, bench model) on it.
#include <cmath>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "backends/cpu/cpu.h"
#include "backends/cuda/cuda.h"
#include "backends/naive/naive.h"
#include "backends/registry.h"
#include "cli_util.h"
#include "core/error.h"
#include "gpu_test.h"
#include "model/gpt2.h"
#include "model/weight_cast.h"

using namespace strand;
using json = nlohmann::json;
using strand::cli_test::run_strand;

namespace {

constexpr double kFloor = 4.0 * double(std::numeric_limits<float>::epsilon());
const std::string kTiny = std::string(STRAND_SOURCE_DIR) + "/tests/fixtures/gpt2/tiny-f32";
const std::vector<int32_t> kPrompt = {5, 262, 40, 299, 1, 17, 200, 3, 9};

// max |y - ref| / max |ref| over the logits.
double logit_err(const Tensor& y, const Tensor& ref) {
  double scale = 0, e = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) scale = std::max(scale, std::abs(load_as_double(ref, i)));
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double v = load_as_double(y, i);
    if (std::isnan(v)) return std::numeric_limits<double>::infinity();
    e = std::max(e, std::abs(v - load_as_double(ref, i)) / scale);
  }
  return e;
}

int32_t argmax(const Tensor& logits) {
  const int64_t V = logits.dim(1), row = logits.dim(0) - 1;
  int32_t best = 0;
  for (int64_t j = 1; j < V; ++j)
    if (load_as_double(logits, row * V + j) > load_as_double(logits, row * V + best)) best = int32_t(j);
  return best;
}

}  // namespace

TEST(CudaModel, Gpt2OnTheGpuMatchesTheReferenceAndReplaysDecodeGraphs) {
  STRAND_NEED_GPU();
  Gpt2Model model = Gpt2Model::load(kTiny);
  model.weights = cast_gpt2_weights(model.weights, DType::F32, MatrixLayout::ColMajor);  // as strand runs models
  CudaOptions with, without;
  without.graphs = false;
  Gpt2Runner ref(model, {reference_backend()});
  Gpt2Runner naive(model, {make_naive_backend()});
  Gpt2Runner gpu(model, {make_cuda_backend(with)}, {false, true});
  Gpt2Runner eager(model, {make_cuda_backend(without)}, {false, true});
  const int resident = cuda_resident_count();
  KvCache cr = ref.new_cache(), cn = naive.new_cache(), cg = gpu.new_cache(), ce = eager.new_cache();
  for (const Tensor& t : cg.k) {
    ASSERT_NE(device_buffer_of(t), nullptr);
    EXPECT_EQ(device_buffer_of(t)->tier, "cuda") << "the KV cache lives on the GPU";
  }

  // Prefill, every position's logits.
  Tensor lr = ref.forward(kPrompt, cr, true), ln = naive.forward(kPrompt, cn, true), lg = gpu.forward(kPrompt, cg, true),
         le = eager.forward(kPrompt, ce, true);
  EXPECT_EQ(memory_of(lg), nullptr);
  const double en = logit_err(ln, lr);
  EXPECT_LE(logit_err(lg, lr), 2 * en + kFloor) << "naive " << en;
  EXPECT_EQ(gpu.last_plan().segments.size(), 1u);
  EXPECT_EQ(gpu.last_plan().copies, 3) << gpu.last_plan().explain(gpu.last_graph());
  EXPECT_EQ(gpu.last_stats().copies, 3);

  // Decode steps, each fed the reference's greedy token: graph replay gives the very logits the
  // eager launches give, both within the 2x-naive rule.
  const CudaGraphStats g0 = cuda_graph_stats();
  const int steps = 8;
  for (int s = 0; s < steps; ++s) {
    const int32_t next[1] = {argmax(lr)};
    lr = ref.forward(next, cr, false);
    ln = naive.forward(next, cn, false);
    lg = gpu.forward(next, cg, false);
    le = eager.forward(next, ce, false);
    ASSERT_EQ(lg.nbytes(), le.nbytes());
    EXPECT_EQ(std::memcmp(lg.data, le.data, lg.nbytes()), 0) << "step " << s << ": graph replay changed the logits";
    const double e = logit_err(ln, lr);
    EXPECT_LE(logit_err(lg, lr), 2 * e + kFloor) << "step " << s << ", naive " << e;
    EXPECT_EQ(gpu.last_plan().copies, 3);
    EXPECT_EQ(gpu.last_stats().copies, 3) << "token id and position in, logits out";
  }
  const CudaGraphStats g1 = cuda_graph_stats();
  EXPECT_EQ(g1.launches - g0.launches, steps) << "every decode step is a graph launch";
  EXPECT_EQ((g1.instantiations - g0.instantiations) + (g1.updates - g0.updates), steps);
  EXPECT_LE(g1.instantiations - g0.instantiations, 2) << "later steps update the graph in place";
  EXPECT_EQ(cuda_resident_count(), resident) << "no weight uploaded twice";

  const std::string text = gpu.last_plan().explain(gpu.last_graph());
  for (const char* s : {"copies: 3", "host -> cuda", "cuda -> host", "weights resident on cuda", "fused f32 attention"})
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
}

TEST(CudaModel, Bf16ModelRunsWholeOnTheGpuWithFlashPrefill) {
  STRAND_NEED_GPU();
  Gpt2Config cfg;
  cfg.n_layer = 2;
  cfg.n_embd = 128;
  cfg.n_head = 2;
  cfg.n_positions = 256;
  cfg.vocab_size = 1000;
  cfg.n_inner = 512;
  Gpt2Model model;
  model.config = cfg;
  model.weights = cast_gpt2_weights(random_gpt2_weights(cfg, 7, DType::F32), DType::BF16, MatrixLayout::ColMajor);
  Gpt2Runner gpu(model, {make_cuda_backend()}, {true, true});  // strict: nothing may fall back
  KvCache c = gpu.new_cache();
  std::vector<int32_t> prompt;
  for (int i = 0; i < 100; ++i) prompt.push_back((i * 37) % 1000);
  const Tensor l = gpu.forward(prompt, c, true);
  for (int64_t i = 0; i < l.numel(); ++i) ASSERT_TRUE(std::isfinite(l.ptr<const float>()[i])) << i;
  const std::string text = gpu.last_plan().explain(gpu.last_graph());
  EXPECT_NE(text.find("flash attention on bf16 tensor cores"), std::string::npos) << text;
  EXPECT_NE(text.find("cuBLASLt on bf16 tensor cores"), std::string::npos) << text;
  const int32_t one[1] = {42};
  const Tensor d = gpu.forward(one, c, false);
  for (int64_t i = 0; i < d.numel(); ++i) ASSERT_TRUE(std::isfinite(d.ptr<const float>()[i])) << i;
}

TEST(CudaModel, Q8WeightsFallBackWithTheirCopiesShownAndStrictModeNamesTheNode) {
  STRAND_NEED_GPU();
  Gpt2Model model = Gpt2Model::load(kTiny);
  model.weights = cast_gpt2_weights(model.weights, DType::Q8);
  try {
    Gpt2Runner strict(model, {make_cuda_backend()}, {true, false});
    KvCache c = strict.new_cache();
    strict.forward(kPrompt, c, false);
    FAIL() << "q8 products ran on the cuda tier in strict mode";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--no-fallback"), std::string::npos) << m;
    EXPECT_NE(m.find("q8"), std::string::npos) << m;
  }
  Gpt2Runner mixed(model, {make_cuda_backend(), make_cpu_backend()}, {false, true});
  Gpt2Runner ref(model, {reference_backend()});
  Gpt2Runner naive(model, {make_naive_backend()});
  KvCache cm = mixed.new_cache(), cr = ref.new_cache(), cn = naive.new_cache();
  const Tensor lm = mixed.forward(kPrompt, cm, true), lr = ref.forward(kPrompt, cr, true),
               ln = naive.forward(kPrompt, cn, true);
  EXPECT_LE(logit_err(lm, lr), 2 * logit_err(ln, lr) + kFloor);
  const Plan& plan = mixed.last_plan();
  EXPECT_GT(plan.copies, 3);
  EXPECT_EQ(mixed.last_stats().copies, plan.copies);
  const std::string text = plan.explain(mixed.last_graph());
  for (const char* s : {"cuda declined", "q8", "-> cpu", "cuda -> host", "host -> cuda"})
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
}

TEST(CudaModel, CommandsOnTheGpu) {
  STRAND_NEED_GPU();
  const std::string tiny = cli_test::fixture_dir("tiny-f32").string();
  const auto g = run_strand({"generate", "-m", tiny, "-p", "hello", "-n", "4", "--temp", "0", "--backend", "cuda",
                             "--no-fallback", "--explain"},
                            300);
  ASSERT_TRUE(g.exited && g.exit_code == 0) << g.describe();
  for (const char* s : {"copies: 3", "weights resident on cuda", "host -> cuda"})
    EXPECT_NE(g.err.find(s), std::string::npos) << s << "\n" << g.err;

  cli_test::TempCacheDir cache;
  const auto d = run_strand({"devices", "--quick", "--json"}, 300);
  ASSERT_TRUE(d.exited && d.exit_code == 0) << d.describe();
  const json j = json::parse(d.out);
  bool found = false;
  for (const json& t : j["tiers"])
    if (t["tier"] == "cuda") {
      found = true;
      EXPECT_TRUE(t["usable"].get<bool>()) << t.dump();
      EXPECT_GT(t["measured_gflops"].get<double>(), 0) << t.dump();
      EXPECT_GT(t["measured_bandwidth_gbs"].get<double>(), 0) << t.dump();
      EXPECT_NE(t["device"].get<std::string>().find(cuda_device_info().name), std::string::npos) << t.dump();
    }
  EXPECT_TRUE(found) << d.out;

  const auto b = run_strand({"bench", "model", "-m", tiny, "--backend", "cuda", "-p", "16", "-n", "4", "--reps", "1",
                             "--probe", "quick", "--json"},
                            300);
  ASSERT_TRUE(b.exited && b.exit_code == 0) << b.describe();
  const json jb = json::parse(b.out);
  ASSERT_EQ(jb["results"].size(), 2u) << b.out;
  for (const json& r : jb["results"]) EXPECT_GT(r["tokens_per_s"]["median"].get<double>(), 0) << r.dump();
}
