#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace strand {

void SamplerConfig::validate() const {
  if (!(temperature >= 0) || !std::isfinite(temperature)) fail("--temp must be >= 0, got {}", temperature);
  if (top_k < 0) fail("--top-k must be >= 0, got {}", top_k);
  if (!(top_p > 0 && top_p <= 1)) fail("--top-p must be in (0, 1], got {}", top_p);
}

Sampler::Sampler(const SamplerConfig& cfg) : cfg_(cfg), rng_(cfg.seed) { cfg_.validate(); }

int32_t Sampler::sample(std::span<const float> logits) {
  const int32_t n = int32_t(logits.size());
  if (n == 0) fail("sampler: empty logits");
  for (float l : logits)
    if (std::isnan(l)) fail("sampler: the logits contain NaN");
  if (cfg_.temperature == 0) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());

  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  // Highest logit first; ties by lower id so that the order is reproducible.
  auto higher = [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b); };
  const int32_t k = cfg_.top_k > 0 ? std::min(cfg_.top_k, n) : n;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), higher);
  idx.resize(size_t(k));

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
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += p[i];
  double r = rng_.uniform() * total;
  for (size_t i = 0; i < keep; ++i) {
    r -= p[i];
    if (r < 0) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace strand
