#include "backends/cpu/quant.h"

#include <algorithm>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/threadpool.h"
#include "core/error.h"

namespace strand::cpu {

Tensor quantize_q8(const Tensor& w, int block_axis) { return w.to_q8(block_axis); }

bool q8_blocked_along_k(const Tensor& b, bool trans_b) {
  return b.dtype == DType::Q8 && b.rank() == 2 && b.q8_axis() == (trans_b ? 1 : 0);
}

namespace {

constexpr int64_t kQ8GemvMaxRows = 16;
constexpr size_t kPanelBytes = size_t(4) << 20;  // f32 panel of dequantized lines

void grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

void q8_matmul(const Kernels& k, const float* A, int64_t M, int64_t K, int64_t lda, const Tensor& B, bool trans_b, const float* bias,
               float* C, int64_t ldc, ThreadPool* pool, std::vector<float>& scratch) {
  if (B.dtype != DType::Q8 || B.rank() != 2) fail("q8_matmul: B must be a rank-2 q8 tensor");
  const int64_t N = trans_b ? B.dim(0) : B.dim(1);
  const int64_t lines = B.q8_lines(), len = B.q8_len(), ldq = q8_padded(len);
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: bias or zeros
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = bias ? bias[j] : 0.0f;
    return;
  }
  if (q8_blocked_along_k(B, trans_b)) {  // lines are output columns, each K long
    if (M <= kQ8GemvMaxRows) {
      for (int64_t r = 0; r < M; r += kGemvRows) {
        GemvArgs g;
        g.M = std::min(kGemvRows, M - r);
        g.K = K;
        g.N = N;
        g.x = A + r * lda;
        g.ldx = lda;
        g.B = B.q8_data();
        g.b_dtype = DType::Q8;
        g.ldb = ldq;
        g.scales = B.q8_scales();
        g.y = C + r * ldc;
        g.ldy = ldc;
        g.bias = bias;
        parallel_ranges(pool, N, 4, std::max<int64_t>(4, 16384 / std::max<int64_t>(1, K)),
                        [&](int64_t b, int64_t e) { k.gemv_nk(g, b, e); });
      }
      return;
    }
    const int64_t panel = std::max<int64_t>(16, int64_t(kPanelBytes / (4 * size_t(K))) / 16 * 16);
    grow(scratch, size_t(std::min(panel, N) * K));
    for (int64_t l0 = 0; l0 < N; l0 += panel) {
      const int64_t l1 = std::min(N, l0 + panel);
      float* out = scratch.data();
      parallel_ranges(pool, l1 - l0, 1, 8, [&](int64_t b, int64_t e) {
        k.q8_dequant(B.q8_data(), B.q8_scales(), ldq, len, l0 + b, l0 + e, out + b * K, K);
      });
      GemmArgs g;
      g.M = M;
      g.N = l1 - l0;
      g.K = K;
      g.A = A;
      g.lda = lda;
      g.B = out;
      g.b_dtype = DType::F32;
      g.ldb = K;
      g.trans_b = true;
      g.C = C + l0;
      g.ldc = ldc;
      g.bias = bias ? bias + l0 : nullptr;
      gemm(g, pool);
    }
    return;
  }
  // Blocked along N: the lines are the K rows of a [K, N] matrix.
  grow(scratch, size_t(lines * len));
  float* out = scratch.data();
  parallel_ranges(pool, lines, 1, 8,
                  [&](int64_t b, int64_t e) { k.q8_dequant(B.q8_data(), B.q8_scales(), ldq, len, b, e, out + b * len, len); });
  GemmArgs g;
  g.M = M;
  g.N = N;
  g.K = K;
  g.A = A;
  g.lda = lda;
  g.B = out;
  g.b_dtype = DType::F32;
  g.ldb = N;
  g.trans_b = false;
  g.C = C;
  g.ldc = ldc;
  g.bias = bias;
  gemm(g, pool);
}

}  // namespace strand::cpu
