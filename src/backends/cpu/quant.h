// strand/backends/cpu/quant.h — int8 (Q8) weights: quantization and the cpu tier's Q8 product.
//
// Layout (core/dtype.h, core/tensor.h): blocks of 32 int8 along one axis with one f32 scale
// per block, the logical shape unchanged. A weight feeding a product should be blocked along
// its reduction axis K: axis 0 of a Conv1D / non-transposed [K, N] weight, axis 1 of a
// trans_b [N, K] one (the vocabulary projection over wte [V, C]). Then the int8 of output
// column n form one line of K values, read front to back with their scales, and a decode
// step streams every weight byte exactly once.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace strand::cpu {

class ThreadPool;
struct Kernels;

// Quantizes an f32/f16/bf16 weight (rank 1 or 2) in blocks along `block_axis`.
Tensor quantize_q8(const Tensor& w, int block_axis = 0);

// True when `b` (rank 2, Q8) is blocked along the reduction axis of a product with this
// trans_b: the layout the fast kernels read.
bool q8_blocked_along_k(const Tensor& b, bool trans_b);

// C[M, N] = A[M, K] · B (+ bias) with B a Q8 [K, N] (or [N, K] when trans_b) weight.
//   blocked along K, M <= 16:  int8 GEMV, four rows of A per pass over B (decode);
//   blocked along K, larger M: panels of B dequantized to f32 (a few MB at a time), each
//                              multiplied by the packed GEMM (prefill);
//   blocked along N:           B dequantized whole, then the f32 path (correct, slow; the
//                              cast in model/weight_cast never produces this layout).
// `k` is the kernel table to use; `scratch` is reused between calls (it only grows).
void q8_matmul(const Kernels& k, const float* A, int64_t M, int64_t K, int64_t lda, const Tensor& B, bool trans_b, const float* bias,
               float* C, int64_t ldc, ThreadPool* pool, std::vector<float>& scratch);

}  // namespace strand::cpu
