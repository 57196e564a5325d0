// strand/model/sampler.h — pick the next token from logits.
//
// The steps, in Hugging Face's order (its RepetitionPenaltyLogitsProcessor, then the
// temperature, top-k, top-p and min-p warpers):
//   1. repetition penalty: every distinct token among the last `repeat_last_n` tokens of the
//      context (prompt + generated so far; -1: the whole context) has its logit divided by
//      `repeat_penalty` when positive and multiplied by it when negative (1: off);
//   2. temperature 0 is greedy: the argmax (lowest id on ties) of the penalized logits;
//   3. otherwise divide by the temperature, keep the top_k largest (0: all), keep the smallest
//      set whose probability reaches top_p (1: all), then drop every token whose probability
//      is below min_p × the most likely token's (0: off); renormalise and draw with the seeded
//      generator.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace strand {

struct SamplerConfig {
  double temperature = 1.0;
  int top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  double min_p = 0.0;           // in [0, 1]
  double repeat_penalty = 1.0;  // > 0; 1 is off
  int repeat_last_n = 64;       // the penalty's window in context tokens; -1: all of them, 0: off
  void validate() const;        // throws strand::Error naming the bad option
};

// Step 1 on its own: `logits` penalized in place for the tokens of `context`'s window.
void apply_repeat_penalty(std::span<float> logits, std::span<const int32_t> context, double penalty, int last_n);

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& cfg);
  // `context`: the tokens so far (prompt + generated), read by the repetition penalty only.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> context = {});
  // The distribution sample() draws from: (token, probability), most likely first, the kept
  // tokens only, probabilities summing to 1. Greedy: the argmax with probability 1.
  std::vector<std::pair<int32_t, double>> distribution(std::span<const float> logits,
                                                       std::span<const int32_t> context = {}) const;

 private:
  SamplerConfig cfg_;
  Rng rng_;
};

}  // namespace strand
