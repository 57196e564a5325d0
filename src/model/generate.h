// strand/model/generate.h — text generation with the KV cache, and perplexity.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "model/gpt2.h"
#include "model/sampler.h"

namespace strand {

struct GenerateResult {
  std::vector<int32_t> ids;  // generated tokens only
  std::string stop;          // "length" (n reached), "eot" (end-of-text sampled), "context" (context full)
  double prefill_seconds = 0, decode_seconds = 0;
};

// Runs the prompt once (prefill), then one token at a time against the KV cache. Stops after
// n tokens, at end-of-text (eot_id >= 0; the eot token is not included), or when the context
// is full. on_token, if set, is called with each new id as it is produced.
GenerateResult generate(Gpt2Runner& runner, const std::vector<int32_t>& prompt, int n, const SamplerConfig& sc,
                        int32_t eot_id, const std::function<void(int32_t)>& on_token = {});

struct PerplexityResult {
  int64_t tokens = 0;  // tokens in the text
  int64_t scored = 0;  // tokens predicted (tokens - 1)
  double nll = 0;      // mean negative log-likelihood, nats
  double ppl = 0;      // exp(nll)
  int windows = 0;
};

// Every token after the first is predicted from the tokens before it. A text longer than the
// context W is scored in windows of W tokens that start every `stride` tokens (default W/2):
// the first window scores its tokens 1..W-1, each later one only the tokens no earlier window
// scored, so each token is scored once, with at least W - stride tokens of context once past
// the first window.
PerplexityResult perplexity(Gpt2Runner& runner, const std::vector<int32_t>& ids, int64_t stride = 0);

}  // namespace strand
