// strand/model/sampler.h — pick the next token from logits.
//
// temperature 0 is greedy (argmax, lowest id on ties). Otherwise: divide by temperature,
// keep the top_k largest (0 = all), keep the smallest set whose probability reaches top_p
// (1 = all), renormalise, draw with the seeded generator.
#pragma once

#include <cstdint>
#include <span>

#include "core/rng.h"

namespace strand {

struct SamplerConfig {
  double temperature = 1.0;
  int top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  void validate() const;  // throws strand::Error naming the bad option
};

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& cfg);
  int32_t sample(std::span<const float> logits);

 private:
  SamplerConfig cfg_;
  Rng rng_;
};

}  // namespace strand
