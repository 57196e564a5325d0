// GPT-2 end to end: logits against golden values from an independent float64
// implementation (tools/gen_gpt2_golden.py), KV-cache decoding against full recomputation,
// perplexity against the golden sliding-window rule.
#include <gtest/gtest.h>

#include "logit_error.h"

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "backends/naive/naive.h"
#include "core/error.h"
#include "backends/registry.h"
#include "model/generate.h"
#include "model/gpt2.h"

using namespace strand;
using strand::test::rel_error;
using json = nlohmann::json;

namespace {

const std::string kFixtures = std::string(STRAND_SOURCE_DIR) + "/tests/fixtures/gpt2/";

const json& golden() {
  static const json g = [] {
    std::ifstream f(kFixtures + "golden.json");
    return json::parse(f);
  }();
  return g;
}

std::shared_ptr<Backend> naive() { return make_naive_backend(); }
std::shared_ptr<Backend> ref() { return make_reference_backend(); }

class GoldenModel : public testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(GoldenModel, LogitsMatchIndependentFloat64) {
  const std::string name = GetParam();
  const json& m = golden()["models"][name];
  const Gpt2Model model = Gpt2Model::load(kFixtures + name);
  EXPECT_EQ(model.weights.tied, m["tied"].get<bool>());
  for (const json& c : m["cases"]) {
    const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE(testing::Message() << name << ", " << ids.size() << " tokens");
    // The float64 reference tier agrees with the independent float64 implementation to
    // double rounding: the graph computes GPT-2 exactly.
    Gpt2Runner r64(model, {ref()}, {false, true});
    KvCache c64 = r64.new_cache();
    const Tensor l64 = r64.forward(ids, c64, true);
    EXPECT_LT(rel_error(l64, c["logits"]), 1e-11);
    // The naive f32 tier agrees to f32 rounding.
    Gpt2Runner r32(model, {naive()}, {false, true});
    KvCache c32 = r32.new_cache();
    const Tensor l32 = r32.forward(ids, c32, true);
    const double e32 = rel_error(l32, c["logits"]);
    EXPECT_LT(e32, 2e-5);
    EXPECT_GT(e32, 0.0);  // f32 really is f32
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenModel, testing::Values("tiny-f32", "tiny-f16", "tiny-bf16", "tiny-gelu"));

TEST(Model, KvCacheDecodingEqualsFullRecomputation) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  const std::vector<int32_t> ids = golden()["models"]["tiny-f32"]["cases"][1]["ids"].get<std::vector<int32_t>>();
  ASSERT_GE(ids.size(), 7u);
  for (const auto& tier : {naive(), ref()}) {
    SCOPED_TRACE(tier->name());
    Gpt2Runner r(model, {tier}, {false, true});
    KvCache full = r.new_cache();
    const Tensor all = r.forward(ids, full, true);
    // Chunks of 3, 1, 1, 2 tokens through the cache.
    KvCache inc = r.new_cache();
    size_t at = 0;
    for (size_t chunk : {3u, 1u, 1u, 2u}) {
      const std::vector<int32_t> part(ids.begin() + long(at), ids.begin() + long(at + chunk));
      const Tensor l = r.forward(part, inc, true);
      ASSERT_EQ(l.dim(0), int64_t(chunk));
      const Tensor want = all.rows(int64_t(at), int64_t(chunk)).to(all.dtype);
      EXPECT_LT(rel_error(l, want), tier->name() == "naive" ? 1e-6 : 1e-13) << "chunk at " << at;
      at += chunk;
    }
    EXPECT_EQ(inc.len, int64_t(ids.size()));
    // Last-token logits equal the last row of the all-token logits.
    KvCache one = r.new_cache();
    const Tensor last = r.forward(ids, one, false);
    ASSERT_EQ(last.dim(0), 1);
    EXPECT_LT(rel_error(last, all.rows(all.dim(0) - 1, 1).to(all.dtype)), 1e-13);
  }
}

TEST(Model, ContextOverflowIsAnError) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-gelu");
  Gpt2Runner r(model, {naive()});
  KvCache c = r.new_cache();
  std::vector<int32_t> ids(size_t(model.config.n_positions) + 1, 5);
  EXPECT_THROW(r.forward(ids, c, false), Error);
  std::vector<int32_t> bad = {1, 300};
  EXPECT_THROW(r.forward(bad, c, false), Error);  // id outside the vocabulary
}

TEST(Model, PerplexityMatchesGoldenSlidingWindow) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  for (const json& p : golden()["models"]["tiny-f32"]["perplexity"]) {
    const auto ids = p["ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE(p["text_file"].get<std::string>());
    Gpt2Runner r64(model, {ref()});
    const PerplexityResult a = perplexity(r64, ids);
    EXPECT_EQ(a.tokens, p["tokens"].get<int64_t>());
    EXPECT_EQ(a.windows, int(p["windows"].size()));
    EXPECT_NEAR(a.nll, p["nll"].get<double>(), 1e-10);
    EXPECT_NEAR(a.ppl, p["ppl"].get<double>(), 1e-9 * a.ppl);
    Gpt2Runner r32(model, {naive()});
    const PerplexityResult b = perplexity(r32, ids);
    EXPECT_NEAR(b.nll, p["nll"].get<double>(), 1e-5);
  }
}

TEST(Model, GreedyGenerationFollowsTheArgmaxOfFullRecomputation) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  Gpt2Runner r(model, {ref()});
  const std::vector<int32_t> prompt = {262, 17, 256};
  SamplerConfig greedy;
  greedy.temperature = 0;
  const GenerateResult g = generate(r, prompt, 10, greedy, -1);
  ASSERT_EQ(g.ids.size(), 10u);
  std::vector<int32_t> seq = prompt;
  for (int32_t id : g.ids) {
    KvCache c = r.new_cache();
    const Tensor l = r.forward(seq, c, false);
    int32_t best = 0;
    for (int32_t j = 1; j < l.dim(1); ++j)
      if (load_as_double(l, j) > load_as_double(l, best)) best = j;
    EXPECT_EQ(id, best);
    seq.push_back(id);
  }
}

TEST(Model, GenerationStopsAtEndOfTextAndAtTheContext) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-gelu");
  Gpt2Runner r(model, {naive()});
  SamplerConfig greedy;
  greedy.temperature = 0;
  const std::vector<int32_t> prompt = {1, 2, 3};
  const GenerateResult free_run = generate(r, prompt, 5, greedy, -1);
  ASSERT_EQ(free_run.ids.size(), 5u);
  // Declare the third greedy token the end-of-text id: generation stops before it.
  const GenerateResult stopped = generate(r, prompt, 5, greedy, free_run.ids[2]);
  EXPECT_EQ(stopped.stop, "eot");
  EXPECT_LE(stopped.ids.size(), 2u);
  // Asking for more tokens than the context holds stops when it is full.
  const GenerateResult full = generate(r, prompt, 100, greedy, -1);
  EXPECT_EQ(full.stop, "context");
  EXPECT_EQ(int64_t(prompt.size() + full.ids.size()), int64_t(model.config.n_positions) + 1);
}

TEST(Sampler, TopKOneIsGreedyAndSeedsReproduce) {
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f};
  SamplerConfig k1{1.0, 1, 1.0, 7};
  Sampler s(k1);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(logits), 1);
  SamplerConfig hot{1.5, 0, 1.0, 42};
  Sampler a(hot), b(hot);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < 2000; ++i) {
    const int32_t x = a.sample(logits);
    EXPECT_EQ(x, b.sample(logits));
    ++counts[size_t(x)];
  }
  for (int c : counts) EXPECT_GT(c, 0);  // every token is reachable at temperature 1.5
  // top_p small enough keeps only the best token.
  SamplerConfig p{1.0, 0, 0.3, 3};
  Sampler sp(p);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sp.sample(logits), 1);
  EXPECT_THROW(Sampler(SamplerConfig{-1.0, 0, 1.0, 0}), Error);
  EXPECT_THROW(Sampler(SamplerConfig{1.0, 0, 0.0, 0}), Error);
}
