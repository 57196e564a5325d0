// strand/model/weight_cast.h — GPT-2 weights converted to another storage dtype.
//
// cast_gpt2_weights(w, to) returns owned tensors:
//   matrices (c_attn, attn.c_proj, c_fc, mlp.c_proj) -> `to`; for Q8 in blocks along K
//     (axis 0 of their Conv1D [in, out] layout);
//   lm_head (the vocabulary projection, [V, C] read transposed) -> `to`; for Q8 in blocks
//     along C (axis 1), so each logit reads one int8 line;
//   wte, wpe (only gathered, T rows per step) -> `to` for f32/f16/bf16 (a tied lm_head then
//     shares wte's memory); for Q8 they keep their loaded dtype (no rounding of embeddings);
//   layernorm gains/biases and every bias -> f32.
// `tied` keeps its meaning (lm_head is wte's values); `dtype` becomes `to`, the dtype of the
// matrices. Accepts f32, f16, bf16 and Q8 targets from any of f32/f16/bf16 sources.
#pragma once

#include "model/gpt2_weights.h"

namespace strand {

Gpt2Weights cast_gpt2_weights(const Gpt2Weights& w, DType to);

// "f32", "f16", "bf16", "int8"/"q8" -> the dtype (the --weights option); throws on others.
DType parse_weight_dtype(const std::string& s);

}  // namespace strand
