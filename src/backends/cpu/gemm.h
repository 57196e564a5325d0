// strand/backends/cpu/gemm.h — the cpu tier's matrix product (interface).
//
//   C[M, N] = A[M, K] · B  (+ bias[N])
// A and C are f32, row-major with leading dimensions lda / ldc. B is [K, N] row-major (ldb),
// or [N, K] when trans_b (ldb is then its row stride), stored as f32, f16 or bf16; B is
// widened to f32 while it is packed, so products are always computed in f32.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace strand::cpu {

class ThreadPool;

struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;
  int64_t lda = 0;
  const void* B = nullptr;
  DType b_dtype = DType::F32;
  int64_t ldb = 0;
  bool trans_b = false;
  float* C = nullptr;
  int64_t ldc = 0;
  const float* bias = nullptr;  // optional, added to every row
};

// The production kernel: packed, cache-blocked, register-tiled, SIMD chosen at run time,
// spread over `pool` (nullptr: the calling thread only).
void gemm(const GemmArgs& g, ThreadPool* pool);

}  // namespace strand::cpu
