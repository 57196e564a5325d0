// strand/backends/amx/gemm.cpp — the tile GEMM kernels over the thread pool (see amx/gemm.h).
#include "backends/amx/gemm.h"

#include <algorithm>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/threadpool.h"
#include "core/dtype.h"
#include "core/error.h"

namespace strand::amx {

namespace {

// Work below this many multiply-adds per thread is not split over the pool.
constexpr int64_t kMinMacsPerThread = int64_t(1) << 21;

void check(const char* what, int64_t K, int64_t N, int64_t kb, int64_t bn, int64_t lda, int64_t ldc) {
  if (kb * kTileDepth < K || bn != N) fail("amx: {}: the packed weight ({} blocks of K, N = {}) does not fit K = {}, N = {}", what, kb, bn, K, N);
  if (lda < K || ldc < N) fail("amx: {}: leading dimensions {} / {} below K = {} / N = {}", what, lda, ldc, K, N);
}

}  // namespace

void pack_a_bf16_transposed(const float* A, int64_t lda, int64_t M, int64_t K, int64_t kp, uint16_t* out, int64_t r0,
                            int64_t r1) {
  // In blocks of 16 rows x 64 columns of the output: each row of A read is 16 contiguous floats.
  for (int64_t m0 = r0; m0 < r1; m0 += 16) {
    const int64_t m1 = std::min(m0 + 16, r1), mv = std::min(m1, M);
    for (int64_t k0 = 0; k0 < kp; k0 += 64)
      for (int64_t k = k0; k < std::min(k0 + 64, kp); ++k) {
        if (k >= K) {
          for (int64_t m = m0; m < m1; ++m) out[m * kp + k] = 0;
          continue;
        }
        const float* a = A + k * lda;
        for (int64_t m = m0; m < mv; ++m) out[m * kp + k] = f32_to_bf16(a[m]);
        for (int64_t m = mv; m < m1; ++m) out[m * kp + k] = 0;
      }
  }
}

void matmul_bf16(const KernelSet& k, const float* A, int64_t lda, int64_t M, int64_t K, const PackedBf16& B, float* C,
                 int64_t ldc, const Epilogue& ep, cpu::ThreadPool* pool, GemmScratch& scratch, bool a_trans) {
  const int64_t N = B.N;
  if (a_trans) {
    if (B.K != K || lda < M || ldc < N)
      fail("amx: bf16 product with A transposed: shapes do not fit (K = {}, M = {}, lda = {}, N = {}, ldc = {})", K, M,
           lda, N, ldc);
  } else {
    check("bf16 product", K, N, B.kb, B.N, lda, ldc);
  }
  if (M == 0 || N == 0) return;
  const int64_t kp = B.kb * kTileDepth, mp = round_up(M, kTileRows);
  scratch.a.resize(size_t(mp * kp) * 2);
  uint16_t* a = scratch.a.as<uint16_t>();
  const int64_t min_rows = std::max<int64_t>(16, kMinMacsPerThread / 16 / std::max<int64_t>(1, 8 * K));
  cpu::parallel_ranges(pool, mp, 16, min_rows, [&](int64_t r0, int64_t r1) {
    if (a_trans)
      pack_a_bf16_transposed(A, lda, M, K, kp, a, r0, r1);
    else
      k.pack_a_bf16(A, lda, M, K, kp, a, r0, r1);
  });
  GemmBf16Args g;
  g.M = M, g.N = N, g.K = K, g.A = a, g.kp = kp, g.B = &B, g.C = C, g.ldc = ldc, g.ep = ep;
  const int64_t min_units = std::max<int64_t>(1, kMinMacsPerThread / std::max<int64_t>(1, 32 * 32 * K));
  cpu::parallel_ranges(pool, gemm_units(M, N), 1, min_units, [&](int64_t u0, int64_t u1) { k.gemm_bf16(g, u0, u1); });
}

void matmul_int8(const KernelSet& k, const float* A, int64_t lda, int64_t M, int64_t K, const PackedInt8& B, float* C,
                 int64_t ldc, const Epilogue& ep, cpu::ThreadPool* pool, GemmScratch& scratch) {
  const int64_t N = B.N;
  check("int8 product", K, N, B.kb, B.N, lda, ldc);
  if (M == 0 || N == 0) return;
  const int64_t kp = B.kb * kTileDepth, mp = round_up(M, kTileRows);
  scratch.a.resize(size_t(mp * kp));
  scratch.scales.resize(size_t(mp * B.kb) * sizeof(float));
  int8_t* q = scratch.a.as<int8_t>();
  float* s = scratch.scales.as<float>();
  const int64_t min_rows = std::max<int64_t>(16, kMinMacsPerThread / 16 / std::max<int64_t>(1, 8 * K));
  cpu::parallel_ranges(pool, mp, 16, min_rows, [&](int64_t r0, int64_t r1) { k.pack_a_q8(A, lda, M, K, kp, q, s, r0, r1); });
  GemmInt8Args g;
  g.M = M, g.N = N, g.K = K, g.A = q, g.a_scales = s, g.kp = kp, g.B = &B, g.C = C, g.ldc = ldc, g.ep = ep;
  const int64_t min_units = std::max<int64_t>(1, kMinMacsPerThread / std::max<int64_t>(1, 32 * 32 * K));
  cpu::parallel_ranges(pool, gemm_units(M, N), 1, min_units, [&](int64_t u0, int64_t u1) { k.gemm_int8(g, u0, u1); });
}

}  // namespace strand::amx
