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
//
// `layout` is how the four per-layer matrices (f32/f16/bf16) are stored:
//   AsLoaded  row-major [in, out], as the checkpoint has them;
//   ColMajor  the same logical [in, out] tensors stored as `out` lines of `in` values
//             (Tensor::to_col_major, the layout Q8 matrices always have). Every output of a
//             matrix-vector product then reads one contiguous line: the cpu tier's decode
//             streams the weights at the memory's speed (2 threads, Zen 4, 768 x 768:
//             f32 33 vs 24 GB/s, f16 30 vs 18 GB/s), and its packed GEMM is as fast either
//             way. strand runs models in this layout; the graph does not change.
//
// Converting a model loaded from a file gives back each source tensor's mapped pages as soon as
// it is converted (SafeTensors::release): a load converts tensor by tensor and peaks near the
// size of the converted weights, not that plus the file. It shows progress (core/progress.h).
#pragma once

#include <cstdint>
#include <functional>

#include "model/gpt2_weights.h"

namespace strand {

enum class MatrixLayout { AsLoaded, ColMajor };

Gpt2Weights cast_gpt2_weights(const Gpt2Weights& w, DType to, MatrixLayout layout = MatrixLayout::AsLoaded);

// Calls f once for every distinct tensor of `w` (a tied lm_head is wte, visited once).
void for_each_gpt2_tensor(const Gpt2Weights& w, const std::function<void(const Tensor&)>& f);
// The bytes `w` holds: the storage of its distinct tensors (the weights as they run).
uint64_t gpt2_weight_bytes(const Gpt2Weights& w);

// "f32", "f16", "bf16", "int8"/"q8" -> the dtype (the --weights option); throws on others.
DType parse_weight_dtype(const std::string& s);

}  // namespace strand
