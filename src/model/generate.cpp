#include "model/generate.h"

#include <chrono>
#include <cmath>

#include "core/error.h"

namespace strand {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::vector<float> row_f32(const Tensor& logits, int64_t row) {
  const int64_t V = logits.dim(1);
  std::vector<float> r(static_cast<size_t>(V));
  for (int64_t j = 0; j < V; ++j) r[size_t(j)] = float(load_as_double(logits, row * V + j));
  return r;
}

}  // namespace

GenerateResult generate(Gpt2Runner& runner, const std::vector<int32_t>& prompt, int n, const SamplerConfig& sc,
                        int32_t eot_id, const std::function<void(int32_t)>& on_token) {
  const int64_t ctx = runner.model().config.n_positions;
  if (prompt.empty()) fail("generate: the prompt has no tokens");
  if (int64_t(prompt.size()) > ctx)
    fail("the prompt is {} tokens, longer than the model's context of {} tokens", prompt.size(), ctx);
  if (n < 0) fail("-n must be >= 0, got {}", n);
  Sampler sampler(sc);
  KvCache cache = runner.new_cache();
  GenerateResult res;
  res.stop = "length";
  if (n == 0) return res;

  double t0 = now();
  Tensor logits = runner.forward(prompt, cache, false);
  res.prefill_seconds = now() - t0;
  t0 = now();
  for (int i = 0; i < n; ++i) {
    const int32_t next = sampler.sample(row_f32(logits, logits.dim(0) - 1));
    if (eot_id >= 0 && next == eot_id) {
      res.stop = "eot";
      break;
    }
    res.ids.push_back(next);
    if (on_token) on_token(next);
    if (i + 1 == n) break;
    if (cache.len >= ctx) {
      res.stop = "context";
      break;
    }
    const int32_t one[1] = {next};
    logits = runner.forward(one, cache, false);
  }
  res.decode_seconds = now() - t0;
  return res;
}

PerplexityResult perplexity(Gpt2Runner& runner, const std::vector<int32_t>& ids, int64_t stride) {
  const int64_t N = int64_t(ids.size());
  const int64_t W = runner.model().config.n_positions;
  if (N < 2) fail("perplexity needs at least 2 tokens, the text has {}", N);
  if (stride <= 0) stride = std::max<int64_t>(1, W / 2);
  if (stride > W - 1) fail("--stride {} must be below the context length {}", stride, W);

  PerplexityResult r;
  r.tokens = N;
  double total = 0;
  int64_t scored_up_to = 0;  // tokens [1, scored_up_to] are scored
  for (int64_t s = 0;; s += stride) {
    const int64_t end = std::min(s + W, N);
    std::vector<int32_t> win(ids.begin() + s, ids.begin() + end);
    KvCache cache = runner.new_cache();
    const Tensor logits = runner.forward(win, cache, true);
    const int64_t V = logits.dim(1);
    // Position i of the window predicts token s + i + 1.
    for (int64_t i = std::max<int64_t>(0, scored_up_to - s); i + 1 < end - s; ++i) {
      double mx = -INFINITY;
      for (int64_t j = 0; j < V; ++j) mx = std::max(mx, load_as_double(logits, i * V + j));
      double sum = 0;
      for (int64_t j = 0; j < V; ++j) sum += std::exp(load_as_double(logits, i * V + j) - mx);
      const double logp = load_as_double(logits, i * V + win[size_t(i + 1)]) - mx - std::log(sum);
      total -= logp;
      ++r.scored;
    }
    scored_up_to = end - 1;
    ++r.windows;
    if (end == N) break;
  }
  r.nll = total / double(r.scored);
  r.ppl = std::exp(r.nll);
  return r;
}

}  // namespace strand
