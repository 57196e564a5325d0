#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace strand {

void SamplerConfig::validate() const {
  if (!std::isfinite(temperature) || temperature < 0)
    fail("--temp {}: must be a finite number >= 0 (0 is greedy)", temperature);
  if (top_k < 0) fail("--top-k {}: must be >= 0 (0 keeps every token)", top_k);
  if (!(top_p > 0 && top_p <= 1)) fail("--top-p {}: must be in (0, 1]", top_p);
  if (!(min_p >= 0 && min_p <= 1)) fail("--min-p {}: must be in [0, 1] (0 is off)", min_p);
  if (!std::isfinite(repeat_penalty) || !(repeat_penalty > 0))
    fail("--repeat-penalty {}: must be a finite number > 0 (1 is off)", repeat_penalty);
  if (repeat_last_n < -1) fail("--repeat-last-n {}: must be >= -1 (-1: the whole context)", repeat_last_n);
}

void apply_repeat_penalty(std::span<float> logits, std::span<const int32_t> context, double penalty, int last_n) {
  if (penalty == 1.0 || last_n == 0 || context.empty()) return;
  const size_t n = last_n < 0 ? context.size() : std::min(context.size(), size_t(last_n));
  std::vector<int32_t> seen(context.end() - std::ptrdiff_t(n), context.end());
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());  // each token once, however often it occurs
  for (const int32_t id : seen) {
    if (id < 0 || size_t(id) >= logits.size()) continue;
    float& l = logits[size_t(id)];
    l = l > 0 ? float(double(l) / penalty) : float(double(l) * penalty);
  }
}

Sampler::Sampler(const SamplerConfig& cfg) : cfg_(cfg), rng_(cfg.seed) { cfg_.validate(); }

std::vector<std::pair<int32_t, double>> Sampler::distribution(std::span<const float> logits_in,
                                                              std::span<const int32_t> context) const {
  const int32_t n = int32_t(logits_in.size());
  if (n == 0) fail("sampler: empty logits");
  for (float l : logits_in)
    if (std::isnan(l)) fail("sampler: the logits contain NaN");
  std::vector<float> logits(logits_in.begin(), logits_in.end());
  apply_repeat_penalty(logits, context, cfg_.repeat_penalty, cfg_.repeat_last_n);
  if (cfg_.temperature == 0)
    return {{int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin()), 1.0}};

  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  // Highest logit first; ties by lower id so that the order is reproducible.
  auto higher = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };
  const int32_t k = cfg_.top_k > 0 ? std::min(cfg_.top_k, n) : n;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), higher);
  idx.resize(size_t(k));

  // Unnormalised probabilities relative to the top token: p[0] = 1.
  std::vector<double> p(idx.size());
  const double mx = logits[size_t(idx[0])];
  double sum = 0;
  for (size_t i = 0; i < idx.size(); ++i) {
    p[i] = std::exp((double(logits[size_t(idx[i])]) - mx) / cfg_.temperature);
    sum += p[i];
  }
  size_t keep = idx.size();
  if (cfg_.top_p < 1) {
    double acc = 0;
    for (size_t i = 0; i < idx.size(); ++i) {
      acc += p[i] / sum;
      if (acc >= cfg_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (cfg_.min_p > 0) {
    // p[i] / p[0] is token i's probability over the top token's, whatever the normalisation.
    size_t m = 1;
    while (m < keep && p[m] >= cfg_.min_p * p[0]) ++m;
    keep = m;
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += p[i];
  std::vector<std::pair<int32_t, double>> out(keep);
  for (size_t i = 0; i < keep; ++i) out[i] = {idx[i], p[i] / total};
  return out;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> context) {
  const std::vector<std::pair<int32_t, double>> d = distribution(logits, context);
  if (d.size() == 1) return d[0].first;
  double r = rng_.uniform();
  for (const auto& [id, prob] : d) {
    r -= prob;
    if (r < 0) return id;
  }
  return d.back().first;
}

}  // namespace strand
