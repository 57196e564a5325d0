// strand/backends/cpu/gemm_avx512.cpp — AVX-512 kernels of the cpu tier's GEMM.
//
// Compiled with -mavx512f/bw/vl/dq -mfma -mf16c; gemm.cpp calls into it only after checking
// that the CPU runs those instructions.
//
// Micro-kernel: a 14 x 32 tile of C in 28 zmm registers. Each step of k loads two vectors of
// packed B (32 columns), broadcasts 14 scalars of packed A, and issues 28 FMAs: 16 loads for
// 28 FMAs, and 28 independent accumulators hide the 4-cycle FMA latency with room to spare
// (Zen 4 retires one 512-bit FMA per cycle, as two 256-bit halves; Intel server cores two,
// which needs at least 8 chains). Edge tiles: m < 14 uses a smaller instantiation of the same template (no wasted
// FMAs); n < 32 computes on the zero-padded panel and stores through a mask.
//
// Packing: f16 is widened with vcvtph2ps, bf16 by zero-extending to 32 bits and shifting left
// by 16. Transposed B (and A, whose rows are strided) are packed by 16 x 16 in-register
// transposes. Edges use masked loads, which never touch memory outside the matrix.
//
// GEMV (M <= 8): B streamed once. For B [K, N] the rows of B are swept in long unit-stride runs
// with the partial sums of C in L1; for trans_b (B [N, K]) NB rows of B are dotted with the M
// rows of A at once, the sums in registers.

// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "backends/cpu/gemm.h"

namespace strand::cpu::detail {

namespace {

constexpr int MR = 14;
constexpr int NR = 32;
constexpr int64_t MC = 1008;  // rows of a packed A block: 1008 x 384 x 4 = 1.5 MiB (L3)
constexpr int64_t KC = 384;   // A micro-panel 14 x 384 x 4 = 21 KiB (L1)
constexpr int64_t NC = 512;   // B block 384 x 512 x 4 = 768 KiB (L2)

inline __mmask16 tail_mask(int64_t n) {  // the first min(n, 16) lanes
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}

// ---- loading 16 elements of B as f32 --------------------------------------------------------

template <DType D>
inline __m512 load16(const void* base, int64_t idx, __mmask16 m) {
  if constexpr (D == DType::F32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + idx);
  } else if constexpr (D == DType::F16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + idx));
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + idx);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <DType D>
inline __m512 load16(const void* base, int64_t idx) {
  if constexpr (D == DType::F32) {
    return _mm512_loadu_ps(static_cast<const float*>(base) + idx);
  } else if constexpr (D == DType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + idx)));
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + idx));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// In-place transpose of a 16 x 16 block held in r[0..15] (r[i] is row i).
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {  // interleave 32-bit elements of row pairs
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {  // interleave 64-bit pairs: lane L of u[4g+j] = column 4L+j of rows 4g..4g+3
    const __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int j = 0; j < 4; ++j) {  // 4 x 4 transpose of 128-bit lanes across the four groups
    const __m512 w0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
    const __m512 w1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
    const __m512 w2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
    const __m512 w3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
    r[j] = _mm512_shuffle_f32x4(w0, w2, 0x88);       // column j
    r[8 + j] = _mm512_shuffle_f32x4(w0, w2, 0xdd);   // column 8+j
    r[4 + j] = _mm512_shuffle_f32x4(w1, w3, 0x88);   // column 4+j
    r[12 + j] = _mm512_shuffle_f32x4(w1, w3, 0xdd);  // column 12+j
  }
}

// ---- micro-kernel ---------------------------------------------------------------------------

template <int M>
inline void tile(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float* C, int64_t ldc, int n, bool acc,
                 const float* bias) {
  __m512 c0[M], c1[M];
#pragma GCC unroll 14
  for (int i = 0; i < M; ++i) {
    c0[i] = _mm512_setzero_ps();
    c1[i] = _mm512_setzero_ps();
    _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + 31), _MM_HINT_T0);
  }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(Bp + k * NR);
    const __m512 b1 = _mm512_load_ps(Bp + k * NR + 16);
#pragma GCC unroll 14
    for (int i = 0; i < M; ++i) {
      const __m512 a = _mm512_set1_ps(Ap[i]);
      c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
    }
    Ap += MR;
  }
  if (n == NR) {
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (!acc && bias) {
      bias0 = _mm512_loadu_ps(bias);
      bias1 = _mm512_loadu_ps(bias + 16);
    }
#pragma GCC unroll 14
    for (int i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      if (acc) {
        _mm512_storeu_ps(c, _mm512_add_ps(c0[i], _mm512_loadu_ps(c)));
        _mm512_storeu_ps(c + 16, _mm512_add_ps(c1[i], _mm512_loadu_ps(c + 16)));
      } else {
        _mm512_storeu_ps(c, _mm512_add_ps(c0[i], bias0));
        _mm512_storeu_ps(c + 16, _mm512_add_ps(c1[i], bias1));
      }
    }
  } else {
    const __mmask16 m0 = tail_mask(n), m1 = tail_mask(n - 16);
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (!acc && bias) {
      bias0 = _mm512_maskz_loadu_ps(m0, bias);
      bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
    for (int i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      if (acc) {
        _mm512_mask_storeu_ps(c, m0, _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, c)));
        _mm512_mask_storeu_ps(c + 16, m1, _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, c + 16)));
      } else {
        _mm512_mask_storeu_ps(c, m0, _mm512_add_ps(c0[i], bias0));
        _mm512_mask_storeu_ps(c + 16, m1, _mm512_add_ps(c1[i], bias1));
      }
    }
  }
}

void micro(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int m, int n, bool acc,
           const float* bias) {
  switch (m) {
    case 14: tile<14>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 13: tile<13>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 12: tile<12>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 11: tile<11>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 10: tile<10>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 9: tile<9>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 8: tile<8>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 7: tile<7>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 6: tile<6>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 5: tile<5>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 4: tile<4>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 3: tile<3>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    case 2: tile<2>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
    default: tile<1>(kc, Ap, Bp, C, ldc, n, acc, bias); break;
  }
}

// ---- packing --------------------------------------------------------------------------------

// Ap[k*MR + i] = A[i*lda + k]: 16 columns of k at a time through a transpose.
void pack_a(const float* A, int64_t lda, int m, int64_t kc, float* Ap) {
  constexpr __mmask16 kRowMask = (1u << MR) - 1u;
  __m512 r[16];
  int64_t k = 0;
  for (; k < kc; k += 16) {
    const int64_t w = std::min<int64_t>(16, kc - k);
    const __mmask16 km = tail_mask(w);
    for (int i = 0; i < 16; ++i) r[i] = i < m ? _mm512_maskz_loadu_ps(km, A + i * lda + k) : _mm512_setzero_ps();
    transpose16(r);
    if (w == 16) {
      for (int j = 0; j < 16; ++j) _mm512_mask_storeu_ps(Ap + (k + j) * MR, kRowMask, r[j]);
    } else {
      for (int j = 0; j < w; ++j) _mm512_mask_storeu_ps(Ap + (k + j) * MR, kRowMask, r[j]);
    }
  }
}

template <DType D>
void pack_b_nt(const GemmArgs& g, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* Bp, int64_t ps) {
  const int64_t panels = (nc + NR - 1) / NR;
  const int64_t full = nc / NR;  // panels with all 32 columns
  for (int64_t k = 0; k < kc; ++k) {
    const int64_t row = (k0 + k) * g.ldb + n0;
    float* dst = Bp + k * NR;
    for (int64_t p = 0; p < full; ++p) {
      _mm512_store_ps(dst + p * ps, load16<D>(g.B, row + p * NR));
      _mm512_store_ps(dst + p * ps + 16, load16<D>(g.B, row + p * NR + 16));
    }
    if (full < panels) {
      const int64_t rem = nc - full * NR;
      _mm512_store_ps(dst + full * ps, load16<D>(g.B, row + full * NR, tail_mask(rem)));
      _mm512_store_ps(dst + full * ps + 16, load16<D>(g.B, row + full * NR + 16, tail_mask(rem - 16)));
    }
  }
}

template <DType D>
void pack_b_t(const GemmArgs& g, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* Bp, int64_t ps) {
  const int64_t panels = (nc + NR - 1) / NR;
  __m512 r[16];
  for (int64_t p = 0; p < panels; ++p) {
    float* dst = Bp + p * ps;
    for (int h = 0; h < 2; ++h) {
      const int64_t j0 = n0 + p * NR + h * 16;        // first B row (= column of C) of this half
      const int64_t rows = std::clamp<int64_t>(n0 + nc - j0, 0, 16);
      for (int64_t k = 0; k < kc; k += 16) {
        const int64_t w = std::min<int64_t>(16, kc - k);
        const __mmask16 km = tail_mask(w);
        for (int i = 0; i < 16; ++i)
          r[i] = i < rows ? load16<D>(g.B, (j0 + i) * g.ldb + k0 + k, km) : _mm512_setzero_ps();
        transpose16(r);
        for (int j = 0; j < w; ++j) _mm512_store_ps(dst + (k + j) * NR + h * 16, r[j]);
      }
    }
  }
}

void pack_b(const GemmArgs& g, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* Bp, int64_t ps) {
  switch (g.b_dtype) {
    case DType::F16:
      g.trans_b ? pack_b_t<DType::F16>(g, k0, kc, n0, nc, Bp, ps) : pack_b_nt<DType::F16>(g, k0, kc, n0, nc, Bp, ps);
      break;
    case DType::BF16:
      g.trans_b ? pack_b_t<DType::BF16>(g, k0, kc, n0, nc, Bp, ps) : pack_b_nt<DType::BF16>(g, k0, kc, n0, nc, Bp, ps);
      break;
    default:
      g.trans_b ? pack_b_t<DType::F32>(g, k0, kc, n0, nc, Bp, ps) : pack_b_nt<DType::F32>(g, k0, kc, n0, nc, Bp, ps);
      break;
  }
}

// ---- GEMV -----------------------------------------------------------------------------------

// B [K, N]: C[0..M, n0..n1). B is read row after row, KU rows at a time, each over the whole
// column range of a chunk: long unit-stride streams that the hardware prefetcher keeps ahead
// of. The M x W partial sums of a chunk (16 KiB) live in L1, loaded and stored once per KU
// rows of B. (Walking a narrow strip of columns down K instead reads a few lines per row and
// jumps ldb ahead: the prefetcher cannot follow, and the speed halves.)
template <DType D, int M>
void gemv_nt(const GemmArgs& g, int64_t n0, int64_t n1) {
  constexpr int64_t W = 4096 / M / 16 * 16;  // columns per chunk: M * W floats = 16 KiB
  constexpr int KU = 4;                      // rows of B per pass over the chunk
  alignas(64) float acc[M * W];
  for (int64_t j0 = n0; j0 < n1; j0 += W) {
    const int64_t w = std::min(W, n1 - j0);
    const int64_t wv = w / 16 * 16;  // whole vectors; the rest through a mask
    const __mmask16 tail = tail_mask(w - wv);
    std::memset(acc, 0, sizeof(float) * size_t(M * W));
    int64_t k = 0;
    for (; k + KU <= g.K; k += KU) {
      // Up to 4 rows of A: their KU scalars stay in registers, broadcast; more rows are
      // broadcast from memory by the FMA itself (L1 hits), or they would not fit in 32 zmm.
      constexpr int MA = M <= 4 ? M : 1;
      __m512 a[MA][KU];
      for (int m = 0; m < MA; ++m)
        for (int u = 0; u < KU; ++u) a[m][u] = _mm512_set1_ps(g.A[m * g.lda + k + u]);
      const int64_t row = k * g.ldb + j0;
      for (int64_t j = 0; j < w; j += 16) {
        const __mmask16 mk = j < wv ? __mmask16(0xFFFF) : tail;
        __m512 b[KU];
        for (int u = 0; u < KU; ++u) b[u] = load16<D>(g.B, row + u * g.ldb + j, mk);
        for (int m = 0; m < M; ++m) {
          __m512 c = _mm512_load_ps(acc + m * W + j);
          for (int u = 0; u < KU; ++u)
            c = _mm512_fmadd_ps(M <= 4 ? a[m < MA ? m : 0][u] : _mm512_set1_ps(g.A[m * g.lda + k + u]), b[u], c);
          _mm512_store_ps(acc + m * W + j, c);
        }
      }
    }
    for (; k < g.K; ++k) {
      const int64_t row = k * g.ldb + j0;
      for (int64_t j = 0; j < w; j += 16) {
        const __m512 b = load16<D>(g.B, row + j, j < wv ? __mmask16(0xFFFF) : tail);
        for (int m = 0; m < M; ++m)
          _mm512_store_ps(acc + m * W + j,
                          _mm512_fmadd_ps(_mm512_set1_ps(g.A[m * g.lda + k]), b, _mm512_load_ps(acc + m * W + j)));
      }
    }
    for (int64_t j = 0; j < w; j += 16) {
      const __mmask16 mk = j < wv ? __mmask16(0xFFFF) : tail;
      const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(mk, g.bias + j0 + j) : _mm512_setzero_ps();
      for (int m = 0; m < M; ++m)
        _mm512_mask_storeu_ps(g.C + m * g.ldc + j0 + j, mk, _mm512_add_ps(_mm512_load_ps(acc + m * W + j), bias));
    }
  }
}

// B [N, K]: C[m, n..n+NB) = dot(A[m, :], B[n+j, :]).
template <DType D, int M, int NB>
inline void gemv_t_block(const GemmArgs& g, int64_t n) {
  __m512 acc[M][NB];
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < NB; ++j) acc[m][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= g.K; k += 16) {
    __m512 b[NB];
    for (int j = 0; j < NB; ++j) b[j] = load16<D>(g.B, (n + j) * g.ldb + k);
    for (int m = 0; m < M; ++m) {
      const __m512 a = _mm512_loadu_ps(g.A + m * g.lda + k);
      for (int j = 0; j < NB; ++j) acc[m][j] = _mm512_fmadd_ps(a, b[j], acc[m][j]);
    }
  }
  if (k < g.K) {
    const __mmask16 km = tail_mask(g.K - k);
    __m512 b[NB];
    for (int j = 0; j < NB; ++j) b[j] = load16<D>(g.B, (n + j) * g.ldb + k, km);
    for (int m = 0; m < M; ++m) {
      const __m512 a = _mm512_maskz_loadu_ps(km, g.A + m * g.lda + k);
      for (int j = 0; j < NB; ++j) acc[m][j] = _mm512_fmadd_ps(a, b[j], acc[m][j]);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < NB; ++j)
      g.C[m * g.ldc + n + j] = _mm512_reduce_add_ps(acc[m][j]) + (g.bias ? g.bias[n + j] : 0.0f);
}

template <DType D, int M>
void gemv_t(const GemmArgs& g, int64_t n0, int64_t n1) {
  constexpr int NB = M <= 2 ? 8 : M == 3 ? 6 : M <= 5 ? 4 : 3;
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

// ---- peak -----------------------------------------------------------------------------------

double fma_loop(int64_t iters) {
  constexpr int kChains = 12;  // > latency (4) x 512-bit FMAs per cycle, with room to spare
  __m512 x[kChains];
  for (int i = 0; i < kChains; ++i) x[i] = _mm512_set1_ps(1.0f + 1e-3f * float(i));
  const __m512 mul = _mm512_set1_ps(0.99999f), add = _mm512_set1_ps(1e-6f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) x[i] = _mm512_fmadd_ps(x[i], mul, add);
  }
  __m512 s = x[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, x[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return 2.0 * 16.0 * kChains * double(iters);
}

const GemmKernels kAvx512 = {GemmIsa::Avx512, MR, NR, MC, KC, NC, micro, pack_a, pack_b, gemv, fma_loop};

}  // namespace

const GemmKernels* kernels_avx512() { return &kAvx512; }

}  // namespace strand::cpu::detail
