#include "train/init.h"

#include <cmath>

#include "core/rng.h"

namespace strand {

namespace {

Tensor normal(const Shape& s, double std, Rng& rng) {
  Tensor t = Tensor::empty(s, DType::F32, true);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = float(std * rng.normal());
  return t;
}

Tensor constant(const Shape& s, float v) {
  Tensor t = Tensor::empty(s, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = v;
  return t;
}

}  // namespace

Gpt2Weights init_gpt2_weights(const Gpt2Config& cfg, uint64_t seed) {
  cfg.validate("init_gpt2_weights");
  Rng rng(seed);
  const int64_t C = cfg.n_embd, F = cfg.n_inner;
  const double std = 0.02, proj_std = 0.02 / std::sqrt(2.0 * cfg.n_layer);
  Gpt2Weights w;
  w.dtype = DType::F32;
  w.wte = normal({cfg.vocab_size, C}, std, rng);
  w.wpe = normal({cfg.n_positions, C}, std, rng);
  for (int l = 0; l < cfg.n_layer; ++l) {
    Gpt2Layer L;
    L.ln_1_w = constant({C}, 1.0f);
    L.ln_1_b = constant({C}, 0.0f);
    L.attn_w = normal({C, 3 * C}, std, rng);
    L.attn_b = constant({3 * C}, 0.0f);
    L.attn_proj_w = normal({C, C}, proj_std, rng);
    L.attn_proj_b = constant({C}, 0.0f);
    L.ln_2_w = constant({C}, 1.0f);
    L.ln_2_b = constant({C}, 0.0f);
    L.fc_w = normal({C, F}, std, rng);
    L.fc_b = constant({F}, 0.0f);
    L.fc_proj_w = normal({F, C}, proj_std, rng);
    L.fc_proj_b = constant({C}, 0.0f);
    w.layers.push_back(L);
  }
  w.ln_f_w = constant({C}, 1.0f);
  w.ln_f_b = constant({C}, 0.0f);
  w.tied = cfg.tie_word_embeddings;
  w.lm_head = w.tied ? w.wte : normal({cfg.vocab_size, C}, std, rng);
  return w;
}

}  // namespace strand
