// strand/core/rounding.h — what a tier rounds a value to before it computes with it.
//
// Most tiers compute on their inputs as given (f32 activations; weights widened exactly from
// their stored f16/bf16/q8 values). A tier built on a matrix unit does not: AMX multiplies
// bf16 (or int8) tiles, a GPU's tensor cores bf16/tf32, the ANE fp16. Such a tier declares,
// per node, the Rounding it applies to each input (backends/backend.h, Backend::precision),
// and validate judges it against the float64 reference evaluated on inputs rounded the same
// way (round_to_f64 below), so that a tier is proven on the function it really computes.
//
// The rounding rules are exact and shared: the kernels call the same functions (or bitwise
// equal vector versions of them) that validate uses to build the reference's inputs.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/tensor.h"

namespace strand {

enum class Rounding : uint8_t {
  None,  // used as given
  BF16,  // every element rounded to bfloat16, nearest even (f32_to_bf16)
  F16,   // every element rounded to IEEE binary16, nearest even (f32_to_f16)
  TF32,  // every element's mantissa rounded to 10 bits, nearest even (f32's range kept)
  // Every row (last axis) quantized in blocks of kQ8Block values, as q8 weights are: per block
  // scale = amax / 127 (f32), q = nearbyint(x / scale) clamped to [-127, 127]; the value the
  // tier computes with is q * scale (quantize_row_q8).
  Q8,
};

// "none", "bf16", "f16", "int8 in blocks of 32 per row".
std::string_view rounding_name(Rounding r);
// Short form for tables: "", "bf16", "f16", "q8".
std::string_view rounding_short(Rounding r);

// One row of n values quantized as Rounding::Q8 does: q[q8_padded(n)] (the padding zero) and
// scales[q8_blocks(n)]. The same arithmetic as Tensor::to_q8 (core/tensor.h), but it never
// throws: a non-finite value gives a non-finite scale, so the row's results are NaN rather
// than an error in the middle of a kernel.
void quantize_row_q8(const float* x, int64_t n, int8_t* q, float* scales);

// One f32 value as Rounding r leaves it (Q8 needs the whole row: use round_to_f64).
float round_value(float x, Rounding r);

// The values of `t` (rank 1 or 2, any float dtype or Q8, any layout the tensor supports) as a
// tier that applies `r` computes with them: a contiguous row-major f64 tensor of the same
// logical shape. Rounding::None returns the values unchanged (widened to f64). Q8 quantizes
// along the last axis (rows of a rank-2 tensor).
Tensor round_to_f64(const Tensor& t, Rounding r);

}  // namespace strand
