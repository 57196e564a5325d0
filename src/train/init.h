// strand/train/init.h — the weights a GPT-2 starts training from.
//
// GPT-2's initialisation (as in the GPT-2 paper and nanoGPT): every matrix and both embeddings
// drawn from N(0, 0.02²), the two projections that feed the residual stream (attn.c_proj and
// mlp.c_proj) from N(0, (0.02 / sqrt(2 · n_layer))²), biases 0, layer-norm gains 1. Owned f32
// tensors; lm_head is wte when cfg.tie_word_embeddings, else its own N(0, 0.02²) matrix.
// Deterministic for a seed.
#pragma once

#include <cstdint>

#include "model/gpt2_weights.h"

namespace strand {

Gpt2Weights init_gpt2_weights(const Gpt2Config& cfg, uint64_t seed);

}  // namespace strand
