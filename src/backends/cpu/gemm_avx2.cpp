// strand/backends/cpu/gemm_avx2.cpp — AVX2 + FMA kernels of the cpu tier's GEMM.
//
// Compiled with -mavx2 -mfma -mf16c; gemm.cpp calls into it only after checking that the CPU
// runs those instructions.
//
// Micro-kernel: a 6 x 16 tile of C in 12 ymm registers (16 registers in all: 12 accumulators,
// 2 vectors of B, 1 broadcast of A). Packing widens f16 with vcvtph2ps and bf16 with a shift;
// transposed B is packed by the portable code. GEMV as in the AVX-512 file, 8 lanes wide.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "backends/cpu/gemm.h"

namespace strand::cpu::detail {

namespace {

constexpr int MR = 6;
constexpr int NR = 16;
constexpr int64_t MC = 1008;  // rows of a packed A block (L3)
constexpr int64_t KC = 256;   // A micro-panel 6 x 256 x 4 = 6 KiB (L1)
constexpr int64_t NC = 512;   // B block 256 x 512 x 4 = 512 KiB (L2)

// Lane mask for the first min(n, 8) lanes, for vmaskmovps.
inline __m256i tail_mask8(int64_t n) {
  const int c = int(std::clamp<int64_t>(n, 0, 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <DType D>
inline __m256 load8(const void* base, int64_t idx) {
  if constexpr (D == DType::F32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + idx);
  } else if constexpr (D == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + idx)));
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + idx));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// First n (< 8) elements, the rest zero; reads nothing past them.
template <DType D>
inline __m256 load8_partial(const void* base, int64_t idx, int64_t n) {
  alignas(32) float tmp[8] = {};
  for (int64_t i = 0; i < std::min<int64_t>(n, 8); ++i) {
    if constexpr (D == DType::F32) tmp[i] = static_cast<const float*>(base)[idx + i];
    else if constexpr (D == DType::F16) tmp[i] = f16_to_f32(static_cast<const uint16_t*>(base)[idx + i]);
    else tmp[i] = bf16_to_f32(static_cast<const uint16_t*>(base)[idx + i]);
  }
  return _mm256_load_ps(tmp);
}

template <int M>
inline void tile(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float* C, int64_t ldc, int n,
                 bool acc, const float* bias) {
  __m256 c0[M], c1[M];
#pragma GCC unroll 6
  for (int i = 0; i < M; ++i) {
    c0[i] = _mm256_setzero_ps();
    c1[i] = _mm256_setzero_ps();
  }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(Bp);
    const __m256 b1 = _mm256_load_ps(Bp + 8);
#pragma GCC unroll 6
    for (int i = 0; i < M; ++i) {
      const __m256 a = _mm256_broadcast_ss(Ap + i);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
    Ap += MR;
    Bp += NR;
  }
  if (n == NR) {
    __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
    if (!acc && bias) {
      bias0 = _mm256_loadu_ps(bias);
      bias1 = _mm256_loadu_ps(bias + 8);
    }
    for (int i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      if (acc) {
        _mm256_storeu_ps(c, _mm256_add_ps(c0[i], _mm256_loadu_ps(c)));
        _mm256_storeu_ps(c + 8, _mm256_add_ps(c1[i], _mm256_loadu_ps(c + 8)));
      } else {
        _mm256_storeu_ps(c, _mm256_add_ps(c0[i], bias0));
        _mm256_storeu_ps(c + 8, _mm256_add_ps(c1[i], bias1));
      }
    }
  } else {
    alignas(32) float t[NR];
    for (int i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      _mm256_store_ps(t, c0[i]);
      _mm256_store_ps(t + 8, c1[i]);
      for (int j = 0; j < n; ++j) c[j] = acc ? t[j] + c[j] : t[j] + (bias ? bias[j] : 0.0f);
    }
  }
}

void micro(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int m, int n, bool acc,
           const float* bias) {
  switch (m) {
    case 6: tile<6>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 5: tile<5>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 4: tile<4>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 3: tile<3>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 2: tile<2>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    default: tile<1>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
  }
}

void pack_a(const float* A, int64_t lda, int m, int64_t kc, float* Ap) {
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < m; ++i) Ap[k * MR + i] = A[i * lda + k];
    for (int i = m; i < MR; ++i) Ap[k * MR + i] = 0.0f;
  }
}

template <DType D>
void pack_b_nt(const GemmArgs& g, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* Bp, int64_t ps) {
  const int64_t panels = (nc + NR - 1) / NR;
  const int64_t full = nc / NR;
  for (int64_t k = 0; k < kc; ++k) {
    const int64_t row = (k0 + k) * g.ldb + n0;
    float* dst = Bp + k * NR;
    for (int64_t p = 0; p < full; ++p) {
      _mm256_store_ps(dst + p * ps, load8<D>(g.B, row + p * NR));
      _mm256_store_ps(dst + p * ps + 8, load8<D>(g.B, row + p * NR + 8));
    }
    if (full < panels) {
      const int64_t rem = nc - full * NR;
      _mm256_store_ps(dst + full * ps, load8_partial<D>(g.B, row + full * NR, rem));
      _mm256_store_ps(dst + full * ps + 8, load8_partial<D>(g.B, row + full * NR + 8, rem - 8));
    }
  }
}

void pack_b(const GemmArgs& g, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* Bp, int64_t ps) {
  if (g.trans_b) return pack_b_generic(g, NR, k0, kc, n0, nc, Bp, ps);
  switch (g.b_dtype) {
    case DType::F16: pack_b_nt<DType::F16>(g, k0, kc, n0, nc, Bp, ps); break;
    case DType::BF16: pack_b_nt<DType::BF16>(g, k0, kc, n0, nc, Bp, ps); break;
    default: pack_b_nt<DType::F32>(g, k0, kc, n0, nc, Bp, ps); break;
  }
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// B [K, N]: C[0..M, n0..n1), B read in long unit-stride runs over 4 rows at a time with the
// partial sums of C in L1 (as in the AVX-512 file). Columns past the last multiple of 8 go to
// the portable code.
template <DType D, int M>
void gemv_nt(const GemmArgs& g, int64_t n0, int64_t n1) {
  constexpr int64_t W = 4096 / M / 8 * 8;  // columns per chunk: M * W floats = 16 KiB
  constexpr int KU = 4;
  alignas(32) float acc[M * W];
  const int64_t n8 = n0 + (n1 - n0) / 8 * 8;
  for (int64_t j0 = n0; j0 < n8; j0 += W) {
    const int64_t w = std::min(W, n8 - j0);
    std::memset(acc, 0, sizeof(float) * size_t(M * W));
    int64_t k = 0;
    for (; k + KU <= g.K; k += KU) {
      const int64_t row = k * g.ldb + j0;
      for (int64_t j = 0; j < w; j += 8) {
        __m256 b[KU];
        for (int u = 0; u < KU; ++u) b[u] = load8<D>(g.B, row + u * g.ldb + j);
        for (int m = 0; m < M; ++m) {
          __m256 c = _mm256_load_ps(acc + m * W + j);
          for (int u = 0; u < KU; ++u) c = _mm256_fmadd_ps(_mm256_broadcast_ss(g.A + m * g.lda + k + u), b[u], c);
          _mm256_store_ps(acc + m * W + j, c);
        }
      }
    }
    for (; k < g.K; ++k) {
      const int64_t row = k * g.ldb + j0;
      for (int64_t j = 0; j < w; j += 8) {
        const __m256 b = load8<D>(g.B, row + j);
        for (int m = 0; m < M; ++m)
          _mm256_store_ps(acc + m * W + j, _mm256_fmadd_ps(_mm256_broadcast_ss(g.A + m * g.lda + k), b,
                                                           _mm256_load_ps(acc + m * W + j)));
      }
    }
    for (int64_t j = 0; j < w; j += 8) {
      const __m256 bias = g.bias ? _mm256_loadu_ps(g.bias + j0 + j) : _mm256_setzero_ps();
      for (int m = 0; m < M; ++m)
        _mm256_storeu_ps(g.C + m * g.ldc + j0 + j, _mm256_add_ps(_mm256_load_ps(acc + m * W + j), bias));
    }
  }
  if (n8 < n1) gemv_generic(g, n8, n1);
}

template <DType D, int M, int NB>
inline void gemv_t_block(const GemmArgs& g, int64_t n) {
  __m256 acc[M][NB];
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < NB; ++j) acc[m][j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= g.K; k += 8) {
    __m256 b[NB];
    for (int j = 0; j < NB; ++j) b[j] = load8<D>(g.B, (n + j) * g.ldb + k);
    for (int m = 0; m < M; ++m) {
      const __m256 a = _mm256_loadu_ps(g.A + m * g.lda + k);
      for (int j = 0; j < NB; ++j) acc[m][j] = _mm256_fmadd_ps(a, b[j], acc[m][j]);
    }
  }
  if (k < g.K) {
    const __m256i km = tail_mask8(g.K - k);
    __m256 b[NB];
    for (int j = 0; j < NB; ++j) b[j] = load8_partial<D>(g.B, (n + j) * g.ldb + k, g.K - k);
    for (int m = 0; m < M; ++m) {
      const __m256 a = _mm256_maskload_ps(g.A + m * g.lda + k, km);
      for (int j = 0; j < NB; ++j) acc[m][j] = _mm256_fmadd_ps(a, b[j], acc[m][j]);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < NB; ++j) g.C[m * g.ldc + n + j] = hsum(acc[m][j]) + (g.bias ? g.bias[n + j] : 0.0f);
}

template <DType D, int M>
void gemv_t(const GemmArgs& g, int64_t n0, int64_t n1) {
  constexpr int NB = M <= 2 ? 4 : M <= 4 ? 2 : 1;
  int64_t n = n0;
  for (; n + NB <= n1; n += NB) gemv_t_block<D, M, NB>(g, n);
  for (; n < n1; ++n) gemv_t_block<D, M, 1>(g, n);
}

template <DType D>
void gemv_dtype(const GemmArgs& g, int64_t n0, int64_t n1) {
  if (g.trans_b) {
    switch (g.M) {
      case 1: gemv_t<D, 1>(g, n0, n1); break;
      case 2: gemv_t<D, 2>(g, n0, n1); break;
      case 3: gemv_t<D, 3>(g, n0, n1); break;
      case 4: gemv_t<D, 4>(g, n0, n1); break;
      case 5: gemv_t<D, 5>(g, n0, n1); break;
      case 6: gemv_t<D, 6>(g, n0, n1); break;
      case 7: gemv_t<D, 7>(g, n0, n1); break;
      default: gemv_t<D, 8>(g, n0, n1); break;
    }
  } else {
    switch (g.M) {
      case 1: gemv_nt<D, 1>(g, n0, n1); break;
      case 2: gemv_nt<D, 2>(g, n0, n1); break;
      case 3: gemv_nt<D, 3>(g, n0, n1); break;
      case 4: gemv_nt<D, 4>(g, n0, n1); break;
      case 5: gemv_nt<D, 5>(g, n0, n1); break;
      case 6: gemv_nt<D, 6>(g, n0, n1); break;
      case 7: gemv_nt<D, 7>(g, n0, n1); break;
      default: gemv_nt<D, 8>(g, n0, n1); break;
    }
  }
}

void gemv(const GemmArgs& g, int64_t n0, int64_t n1) {
  switch (g.b_dtype) {
    case DType::F16: gemv_dtype<DType::F16>(g, n0, n1); break;
    case DType::BF16: gemv_dtype<DType::BF16>(g, n0, n1); break;
    default: gemv_dtype<DType::F32>(g, n0, n1); break;
  }
}

double fma_loop(int64_t iters) {
  constexpr int kChains = 12;  // > latency (4) x 256-bit FMAs per cycle (2)
  __m256 x[kChains];
  for (int i = 0; i < kChains; ++i) x[i] = _mm256_set1_ps(1.0f + 1e-3f * float(i));
  const __m256 mul = _mm256_set1_ps(0.99999f), add = _mm256_set1_ps(1e-6f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) x[i] = _mm256_fmadd_ps(x[i], mul, add);
  }
  __m256 s = x[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, x[i]);
  volatile float sink = hsum(s);
  (void)sink;
  return 2.0 * 8.0 * kChains * double(iters);
}

const GemmKernels kAvx2 = {GemmIsa::Avx2, MR, NR, MC, KC, NC, micro, pack_a, pack_b, gemv, fma_loop};

}  // namespace

const GemmKernels* kernels_avx2() { return &kAvx2; }

}  // namespace strand::cpu::detail
