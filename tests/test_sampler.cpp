// The sampler's steps against distributions worked by hand from the definitions (Hugging
// Face's RepetitionPenaltyLogitsProcessor, temperature, top-k, top-p and min-p warpers, in that
// order), stop strings fed in pieces, and generation with stop strings and a context limit.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backends/naive/naive.h"
#include "core/error.h"
#include "model/generate.h"
#include "model/gpt2.h"
#include "model/sampler.h"

using namespace strand;

namespace {

const std::string kFixtures = std::string(STRAND_SOURCE_DIR) + "/tests/fixtures/gpt2/";

SamplerConfig cfg(double temp, int top_k = 0, double top_p = 1.0, double min_p = 0.0, double penalty = 1.0,
                  int last_n = -1) {
  SamplerConfig c;
  c.temperature = temp;
  c.top_k = top_k;
  c.top_p = top_p;
  c.min_p = min_p;
  c.repeat_penalty = penalty;
  c.repeat_last_n = last_n;
  c.seed = 1;
  return c;
}

// Expects `d` to be exactly the tokens `ids` with probabilities proportional to `weights`.
void expect_distribution(const std::vector<std::pair<int32_t, double>>& d, const std::vector<int32_t>& ids,
                         const std::vector<double>& weights) {
  ASSERT_EQ(d.size(), ids.size());
  double z = 0;
  for (double w : weights) z += w;
  for (size_t i = 0; i < d.size(); ++i) {
    EXPECT_EQ(d[i].first, ids[i]) << "rank " << i;
    EXPECT_NEAR(d[i].second, weights[i] / z, 1e-12) << "token " << ids[i];
  }
}

}  // namespace

TEST(Sampler, RepeatPenaltyDividesPositiveAndMultipliesNegativeLogitsOncePerToken) {
  // HF: score < 0 ? score * penalty : score / penalty, over the distinct tokens of the window.
  std::vector<float> l = {2.0f, -1.0f, 0.5f, 3.0f};
  apply_repeat_penalty(l, std::vector<int32_t>{0, 1, 1}, 2.0, -1);
  EXPECT_EQ(l, (std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f}));  // token 1 twice in the context: penalized once
  // The window: only the last token of the context.
  std::vector<float> w = {2.0f, -1.0f, 0.5f, 3.0f};
  apply_repeat_penalty(w, std::vector<int32_t>{1, 0}, 2.0, 1);
  EXPECT_EQ(w, (std::vector<float>{1.0f, -1.0f, 0.5f, 3.0f}));
  // Off: penalty 1, or a window of 0.
  std::vector<float> o = {2.0f, -1.0f};
  apply_repeat_penalty(o, std::vector<int32_t>{0, 1}, 1.0, -1);
  apply_repeat_penalty(o, std::vector<int32_t>{0, 1}, 2.0, 0);
  EXPECT_EQ(o, (std::vector<float>{2.0f, -1.0f}));
}

TEST(Sampler, RepeatPenaltyChangesTheGreedyChoice) {
  const std::vector<int32_t> ctx = {0};
  // Positive: 3.0 / 2 = 1.5 < 2.0.
  const std::vector<float> pos = {3.0f, 2.0f, -1.0f};
  EXPECT_EQ(Sampler(cfg(0)).sample(pos, ctx), 0);
  EXPECT_EQ(Sampler(cfg(0, 0, 1.0, 0.0, 2.0)).sample(pos, ctx), 1);
  // Negative: -0.5 * 2 = -1.0 < -0.8 (dividing would have raised it to -0.25 and kept it first).
  const std::vector<float> neg = {-0.5f, -1.0f, -0.8f};
  EXPECT_EQ(Sampler(cfg(0)).sample(neg, ctx), 0);
  EXPECT_EQ(Sampler(cfg(0, 0, 1.0, 0.0, 2.0)).sample(neg, ctx), 2);
}

TEST(Sampler, TemperatureTopKTopPMinPByHand) {
  const std::vector<float> l = {0.0f, -1.0f, -2.0f, -3.0f};
  const double e1 = std::exp(-1.0), e2 = std::exp(-2.0), e3 = std::exp(-3.0);
  // All four at temperature 1: softmax.
  expect_distribution(Sampler(cfg(1.0)).distribution(l), {0, 1, 2, 3}, {1, e1, e2, e3});
  // Temperature 2 halves the logits.
  expect_distribution(Sampler(cfg(2.0)).distribution(l), {0, 1, 2, 3},
                      {1, std::exp(-0.5), std::exp(-1.0), std::exp(-1.5)});
  // top-k 2.
  expect_distribution(Sampler(cfg(1.0, 2)).distribution(l), {0, 1}, {1, e1});
  // top-p 0.8: 1/Z = 0.644 < 0.8, (1 + e^-1)/Z = 0.881 >= 0.8: two tokens.
  expect_distribution(Sampler(cfg(1.0, 0, 0.8)).distribution(l), {0, 1}, {1, e1});
  // min-p 0.2 at temperature 1: p/p_max = 1, 0.368, 0.135, 0.050: two tokens.
  expect_distribution(Sampler(cfg(1.0, 0, 1.0, 0.2)).distribution(l), {0, 1}, {1, e1});
  // min-p 0.3 after temperature 2 (Hugging Face's order): ratios 1, 0.607, 0.368, 0.223: three
  // tokens (before the temperature, as some samplers do, it would keep two).
  expect_distribution(Sampler(cfg(2.0, 0, 1.0, 0.3)).distribution(l), {0, 1, 2},
                      {1, std::exp(-0.5), std::exp(-1.0)});
  // Greedy: the argmax, probability 1.
  expect_distribution(Sampler(cfg(0)).distribution(l), {0}, {1});
  // The repetition penalty comes first: token 1's logit -1 becomes -2, tied with token 2 (ties
  // go to the lower id).
  expect_distribution(Sampler(cfg(1.0, 0, 1.0, 0.0, 2.0)).distribution(l, std::vector<int32_t>{1}), {0, 1, 2, 3},
                      {1, e2, e2, e3});
}

TEST(Sampler, SamplesFollowTheDistribution) {
  // 20000 draws at min-p 0.2: only tokens 0 and 1, in the ratio 1 : e^-1.
  const std::vector<float> l = {0.0f, -1.0f, -2.0f, -3.0f};
  Sampler s(cfg(1.0, 0, 1.0, 0.2));
  int n0 = 0, n1 = 0;
  for (int i = 0; i < 20000; ++i) {
    const int32_t t = s.sample(l);
    ASSERT_TRUE(t == 0 || t == 1) << t;
    (t == 0 ? n0 : n1)++;
  }
  const double p1 = std::exp(-1.0) / (1 + std::exp(-1.0));  // 0.269
  // 4 standard deviations of a binomial of 20000 draws.
  EXPECT_NEAR(double(n1) / 20000, p1, 4 * std::sqrt(p1 * (1 - p1) / 20000));
}

TEST(Sampler, BadOptionsSayWhich) {
  auto message = [](const SamplerConfig& c) {
    try {
      c.validate();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  SamplerConfig inf = cfg(INFINITY);
  EXPECT_EQ(message(inf), "--temp inf: must be a finite number >= 0 (0 is greedy)");
  EXPECT_NE(message(cfg(-1)).find("--temp -1"), std::string::npos);
  EXPECT_NE(message(cfg(1, 0, 1, 1.5)).find("--min-p 1.5"), std::string::npos);
  EXPECT_NE(message(cfg(1, 0, 1, 0, 0.0)).find("--repeat-penalty 0"), std::string::npos);
  EXPECT_NE(message(cfg(1, 0, 1, 0, 1.0, -2)).find("--repeat-last-n -2"), std::string::npos);
}

TEST(StopStrings, HoldsBackAPossibleStartAndStopsAcrossPieces) {
  StopStrings s({"END", "\n\n"});
  EXPECT_EQ(s.feed("Hello E"), "Hello ");  // "E" could start "END"
  EXPECT_EQ(s.feed("N"), "");               // "EN" still could
  EXPECT_EQ(s.feed("Dx"), "");              // "END" complete: stop, nothing after it
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.matched(), "END");
  EXPECT_EQ(s.flush(), "");

  StopStrings t({"END"});
  EXPECT_EQ(t.feed("Hello E"), "Hello ");
  EXPECT_EQ(t.feed("x"), "Ex");  // not "END" after all: released
  EXPECT_EQ(t.feed("EN"), "");
  EXPECT_FALSE(t.stopped());
  EXPECT_EQ(t.flush(), "EN");  // generation ended for another reason: the tail is text

  StopStrings u({"b\n\nc", "\n\n"});
  EXPECT_EQ(u.feed("a\n"), "a");
  EXPECT_EQ(u.feed("\nb"), "");  // "\n\n" appears first
  EXPECT_TRUE(u.stopped());
  EXPECT_EQ(u.matched(), "\n\n");
}

TEST(Generate, StopStringSpanningTokensEndsTheTextBeforeIt) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  Gpt2Runner r(model, {make_naive_backend()});
  // The fixture's vocabulary: ids 0..255 are single bytes (shifted), longer ids are merges; the
  // test only needs the bytes of whatever greedy decoding produces.
  auto bytes = [](int32_t id) { return std::string(1, char('a' + id % 26)) + (id % 3 == 0 ? "z" : ""); };
  GenerateOptions o;
  o.n = 8;
  o.sampler = cfg(0);
  o.token_bytes = bytes;
  const std::vector<int32_t> prompt = {40, 41, 42};
  const GenerateResult free = generate(r, prompt, o);
  ASSERT_EQ(free.ids.size(), 8u);
  ASSERT_EQ(free.stop, "length");
  std::string all;
  for (int32_t id : free.ids) all += bytes(id);
  EXPECT_EQ(free.text, all);
  // A stop string made of the last byte of token 2 and the first of token 3.
  const std::string t2 = bytes(free.ids[2]), t3 = bytes(free.ids[3]);
  const std::string stop = t2.substr(t2.size() - 1) + t3.substr(0, 1);
  const size_t at = all.find(stop);
  ASSERT_NE(at, std::string::npos);
  o.stop = {stop};
  std::string streamed;
  const GenerateResult stopped = generate(r, prompt, o, {}, [&](std::string_view s) { streamed += s; });
  EXPECT_EQ(stopped.stop, "stop");
  EXPECT_EQ(stopped.stop_string, stop);
  EXPECT_EQ(stopped.text, all.substr(0, at));
  EXPECT_EQ(streamed, stopped.text);
  EXPECT_LE(stopped.ids.size(), 4u);  // it ended once the stop string was complete
}

TEST(Generate, ContextLimitStopsGeneration) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  Gpt2Runner r(model, {make_naive_backend()});
  GenerateOptions o;
  o.n = 50;
  o.sampler = cfg(0);
  o.context = 6;
  const GenerateResult g = generate(r, {40, 41, 42}, o);
  EXPECT_EQ(g.stop, "context");
  EXPECT_EQ(g.ids.size(), 4u);  // the cache fills at 6 tokens; the token sampled from the last position is kept
  o.context = 2;
  EXPECT_THROW(generate(r, {40, 41, 42}, o), Error);
}
