// strand/backends/cuda/gemm.h — matrix products through cuBLASLt.
//
// C[M, N] (f32, row-major) = A[M, K] · B (+ bias[N], f32), A row-major in f32, f16 or bf16
// (or, with `a_trans`, stored as K rows of M values: C = Aᵀ·B for weight gradients),
// B in the same dtype as A, stored either as N lines of K values (`lines`: a column-major
// [K, N] weight or a trans_b [N, K] one) or as K rows of N values. f16/bf16 run on tensor
// cores with f32 accumulation; f32 runs on the FP32 units (CUBLAS_COMPUTE_32F) unless `tf32`
// asks for TF32 tensor cores (operands rounded to 10-bit mantissas). The bias is cuBLASLt's
// epilogue. cuBLASLt is column-major: C row-major is Cᵀ column-major, so the call computes
// Cᵀ[N, M] = op(B)ᵀ · Aᵀ with the operands' storage as it is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include <cuda_runtime_api.h>

#include "backends/cuda/kernels.h"

namespace strand::cuda {

class LtGemm {
 public:
  explicit LtGemm(size_t workspace_bytes = size_t(32) << 20);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // Queues the product; false (nothing queued) when cuBLASLt has no algorithm for this shape,
  // dtype and alignment (odd leading dimensions of 16-bit operands): then gemm_fallback does it.
  bool matmul(const void* A, Elem ae, int64_t M, int64_t K, const void* B, bool lines, int64_t N, const float* bias,
              float* C, bool tf32, cudaStream_t stream, bool a_trans = false);

  // How the last shape's algorithm was chosen, for reasons and benchmarks ("cuBLASLt heuristic #1").
  int heuristics_cached() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace strand::cuda
