// strand/backends/amx/gemm.h — the amx tier's matrix product: the tile kernels driven over the
// thread pool (the amx tier and `strand bench gemm` call these).
//
//   C[M, N] = A[M, K] · B, then the epilogue (bias, activation)
// A is f32, row-major with leading dimension lda; it is rounded to bf16 (matmul_bf16) or
// quantized per row in blocks of 32 (matmul_int8) into `scratch`, a row tile per piece of work,
// then the GEMM units (32 x 32 of C) are spread over `pool` (nullptr: the calling thread).
// B is already in tiles (amx/pack.h). C (row stride ldc) must not overlap A or B.
// With a_trans (matmul_bf16 only), A is given as [K, M] (row stride lda) and packed transposed:
// C = Aᵀ · B, the weight gradient of training (matmul_at).
#pragma once

#include <cstdint>

#include "backends/amx/kernels.h"
#include "backends/amx/pack.h"

namespace strand::cpu {
class ThreadPool;
}

namespace strand::amx {

struct GemmScratch {
  AlignedBytes a, scales;
};

void matmul_bf16(const KernelSet& k, const float* A, int64_t lda, int64_t M, int64_t K, const PackedBf16& B, float* C,
                 int64_t ldc, const Epilogue& ep, cpu::ThreadPool* pool, GemmScratch& scratch, bool a_trans = false);
// Rows [r0, r1) of the packed bf16 A ([Mp, kp], as pack_a_bf16 writes it) from A given as
// [K, M]: row m holds column m of A, rounded to bf16 (nearest even); rows >= M and columns >= K
// zero. r0 is a multiple of 16 (the row tiles), r1 one too or Mp.
void pack_a_bf16_transposed(const float* A, int64_t lda, int64_t M, int64_t K, int64_t kp, uint16_t* out, int64_t r0,
                            int64_t r1);
void matmul_int8(const KernelSet& k, const float* A, int64_t lda, int64_t M, int64_t K, const PackedInt8& B, float* C,
                 int64_t ldc, const Epilogue& ep, cpu::ThreadPool* pool, GemmScratch& scratch);

}  // namespace strand::amx
