// strand/backends/cpu/cpu_ops_avx2.cpp — the cpu tier's AVX2 + FMA + F16C kernels.
//
// For x86 CPUs without AVX-512. The same algorithms as cpu_ops_avx512.cpp on 8-wide vectors
// (16 registers, no mask registers: tails go through small stack buffers or AVX2 masked
// moves). Compiled with -mavx2 -mfma -mf16c and only called after cpu_ops.cpp checked the
// CPU; like the AVX-512 file it calls no inline function from a shared header.
#include <immintrin.h>

#include <cstdint>

#include "backends/cpu/cpu_ops.h"
#include "reference/kernels.h"

namespace strand::cpu {

namespace {

constexpr int64_t kBlk = 32;  // kQ8Block

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline __m256i tail_mask(int64_t n) {  // lanes [0, n) set
  const int32_t k = int32_t(n >= 8 ? 8 : n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256 ldm(const float* p, int64_t n) { return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail_mask(n)); }
inline void stm(float* p, int64_t n, __m256 v) {
  if (n >= 8) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, tail_mask(n), v);
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---- loads of 8 weights, widened to f32 --------------------------------------------------

enum WKind { kF32 = 0, kF16 = 1, kBF16 = 2 };

template <int W>
inline __m256 ldw(const void* base, int64_t i) {
  if constexpr (W == kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
    if constexpr (W == kF16) return _mm256_cvtph_ps(h);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// The first n (< 8) weights, the rest zero.
template <int W>
inline __m256 ldw_tail(const void* base, int64_t i, int64_t n) {
  if constexpr (W == kF32) {
    return _mm256_maskload_ps(static_cast<const float*>(base) + i, tail_mask(n));
  } else {
    alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const uint16_t* s = static_cast<const uint16_t*>(base) + i;
    for (int64_t j = 0; j < n; ++j) tmp[j] = s[j];
    return ldw<W>(tmp, 0);
  }
}

inline __m256 ld_q8(const int8_t* p) {  // 8 int8 -> f32
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// ---- math (as in the AVX-512 file) ---------------------------------------------------------

inline __m256 exp256(__m256 x) {
  const __m256 orig = x;
  x = _mm256_max_ps(_mm256_set1_ps(-87.3f), x);  // NaN passes through
  x = _mm256_min_ps(_mm256_set1_ps(88.7f), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  // Below the clamp the result underflows to 0 (exp(-87.3) is 1.2e-38).
  return _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(orig, _mm256_set1_ps(-87.3f), _CMP_LT_OQ));
}

inline __m256 x_sigmoid(__m256 x, __m256 u) {
  const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), u));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

inline __m256 abs256(__m256 x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }

inline __m256 gelu_erf256(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
  const __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
  const __m256 az = abs256(z);
  const __m256 t = _mm256_mul_ps(z, z);
  __m256 p = _mm256_set1_ps(7.875875063e-5f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.0008016864287f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.005189087423f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.02685421201f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.1128359472f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.3761262667f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.128379166f));
  const __m256 small = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_fmadd_ps(z, p, one));
  const __m256 u = _mm256_div_ps(one, _mm256_min_ps(_mm256_max_ps(az, one), _mm256_set1_ps(4.0f)));
  __m256 r = _mm256_set1_ps(-0.03289220854f);
  r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(0.231610318f));
  r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(-0.720168785f));
  r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(1.280535405f));
  r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(-1.378094806f));
  r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(0.8001067331f));
  r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(-0.02345957953f));
  r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(-0.2992877677f));
  r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(0.005787595838f));
  r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(0.5634051381f));
  r = _mm256_fmadd_ps(r, u, _mm256_set1_ps(4.153312484e-5f));
  const __m256 erfc = _mm256_mul_ps(exp256(_mm256_sub_ps(_mm256_setzero_ps(), t)), r);
  const __m256 hx_erfc = _mm256_mul_ps(_mm256_mul_ps(half, x), erfc);
  const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 large = _mm256_blendv_ps(_mm256_sub_ps(x, hx_erfc), hx_erfc, neg);
  const __m256 is_small = _mm256_cmp_ps(az, one, _CMP_LE_OQ);
  const __m256 y = _mm256_blendv_ps(large, small, is_small);
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

inline __m256 act256(__m256 x, Act act) {
  switch (act) {
    case Act::GeluTanh: {
      const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
      const __m256 inner = _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x);
      return x_sigmoid(x, _mm256_mul_ps(_mm256_set1_ps(2.0f * 0.7978845608028654f), inner));
    }
    case Act::GeluErf: return gelu_erf256(x);
    case Act::Relu: return _mm256_max_ps(_mm256_setzero_ps(), x);
    case Act::Silu: return x_sigmoid(x, x);
    case Act::QuickGelu: return x_sigmoid(x, _mm256_mul_ps(_mm256_set1_ps(1.702f), x));
  }
  return x;
}

// ---- element-wise and row kernels ---------------------------------------------------------

void v_layernorm(const float* x, const float* g, const float* b, int64_t rows, int64_t n, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
      s0 = _mm256_add_ps(s0, _mm256_loadu_ps(xr + j));
      s1 = _mm256_add_ps(s1, _mm256_loadu_ps(xr + j + 8));
    }
    for (; j < n; j += 8) s0 = _mm256_add_ps(s0, ldm(xr + j, n - j));
    const float mean = hsum(_mm256_add_ps(s0, s1)) / float(n);
    const __m256 vm = _mm256_set1_ps(mean);
    s0 = _mm256_setzero_ps();
    for (j = 0; j < n; j += 8) {
      const __m256 m = _mm256_castsi256_ps(tail_mask(n - j));
      const __m256 d = _mm256_and_ps(_mm256_sub_ps(ldm(xr + j, n - j), vm), m);
      s0 = _mm256_fmadd_ps(d, d, s0);
    }
    const float var = hsum(s0) / float(n);
    const __m256 vi = _mm256_set1_ps(1.0f / __builtin_sqrtf(var + eps));
    for (j = 0; j < n; j += 8) {
      const __m256 d = _mm256_mul_ps(_mm256_sub_ps(ldm(xr + j, n - j), vm), vi);
      stm(o + j, n - j, _mm256_fmadd_ps(d, ldm(g + j, n - j), ldm(b + j, n - j)));
    }
  }
}

void v_add(const float* a, const float* b, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 8) stm(out + i, n - i, _mm256_add_ps(ldm(a + i, n - i), ldm(b + i, n - i)));
}

void v_add_row(const float* a, const float* row, int64_t rows, int64_t n, float* out) {
  for (int64_t r = 0; r < rows; ++r) v_add(a + r * n, row, n, out + r * n);
}

void v_scale(const float* x, int64_t n, float s, float* out) {
  const __m256 vs = _mm256_set1_ps(s);
  for (int64_t i = 0; i < n; i += 8) stm(out + i, n - i, _mm256_mul_ps(ldm(x + i, n - i), vs));
}

void v_activation(const float* x, int64_t n, Act act, float* out) {
  for (int64_t i = 0; i < n; i += 8) stm(out + i, n - i, act256(ldm(x + i, n - i), act));
}

void v_softmax(const float* x, int64_t rows, int64_t n, float* out) {
  const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    __m256 mx = ninf;
    for (int64_t j = 0; j < n; j += 8) {
      const __m256 m = _mm256_castsi256_ps(tail_mask(n - j));
      mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, ldm(xr + j, n - j), m));
    }
    const __m256 vm = _mm256_set1_ps(hmax(mx));
    __m256 sum = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; j += 8) {
      const __m256 m = _mm256_castsi256_ps(tail_mask(n - j));
      const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(ldm(xr + j, n - j), vm)), m);
      sum = _mm256_add_ps(sum, e);
      stm(o + j, n - j, e);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
    for (int64_t j = 0; j < n; j += 8) stm(o + j, n - j, _mm256_mul_ps(ldm(o + j, n - j), inv));
  }
}

template <int W>
void widen_t(const void* src, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, ldw<W>(src, i));
  if (i < n) stm(out + i, n - i, ldw_tail<W>(src, i, n - i));
}

void v_widen(const void* src, DType dt, int64_t n, float* out) {
  if (dt == DType::F16) widen_t<kF16>(src, n, out);
  else if (dt == DType::BF16) widen_t<kBF16>(src, n, out);
  else widen_t<kF32>(src, n, out);
}

// ---- GEMV, B as [K, N] rows (y accumulates over k in order, four rows of B per pass) --------

template <int W>
inline __m256 ldw_n(const void* base, int64_t i, int64_t n) {
  return n >= 8 ? ldw<W>(base, i) : ldw_tail<W>(base, i, n);
}

template <int W, int U>
void gemv_kn_t(const GemvArgs& a, int64_t n0, int64_t n1) {
  const int64_t K = a.K, M = a.M;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = n0; c < n1; c += 8) stm(a.y + m * a.ldy + c, n1 - c, _mm256_setzero_ps());
  auto row = [&](int64_t k) { return static_cast<const char*>(a.B) + (k * a.ldb) * (W == kF32 ? 4 : 2); };
  int64_t k = 0;
  for (; k + U <= K; k += U) {
    const void* r[U];
    for (int u = 0; u < U; ++u) r[u] = row(k + u);
    for (int64_t c = n0; c < n1; c += 8) {
      const int64_t nn = n1 - c;
      __m256 w[U];
      for (int u = 0; u < U; ++u) w[u] = ldw_n<W>(r[u], c, nn);
      for (int64_t m = 0; m < M; ++m) {
        const float* xm = a.x + m * a.ldx + k;
        float* y = a.y + m * a.ldy + c;
        __m256 acc = ldm(y, nn);
        for (int u = 0; u < U; ++u) acc = _mm256_fmadd_ps(_mm256_broadcast_ss(xm + u), w[u], acc);
        stm(y, nn, acc);
      }
    }
  }
  for (; k < K; ++k) {
    const void* r0 = row(k);
    for (int64_t c = n0; c < n1; c += 8) {
      const int64_t nn = n1 - c;
      const __m256 w0 = ldw_n<W>(r0, c, nn);
      for (int64_t m = 0; m < M; ++m) {
        float* y = a.y + m * a.ldy + c;
        stm(y, nn, _mm256_fmadd_ps(_mm256_broadcast_ss(a.x + m * a.ldx + k), w0, ldm(y, nn)));
      }
    }
  }
  if (a.bias)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t c = n0; c < n1; c += 8) {
        float* y = a.y + m * a.ldy + c;
        stm(y, n1 - c, _mm256_add_ps(ldm(y, n1 - c), ldm(a.bias + c, n1 - c)));
      }
}

// Rows of B in flight per pass: more concurrent streams for one row of x (see the AVX-512 file).
template <int W>
void gemv_kn_w(const GemvArgs& a, int64_t n0, int64_t n1) {
  if (a.M == 1) gemv_kn_t<W, 8>(a, n0, n1);
  else gemv_kn_t<W, 4>(a, n0, n1);
}

void v_gemv_kn(const GemvArgs& a, int64_t n0, int64_t n1) {
  if (a.b_dtype == DType::F16) gemv_kn_w<kF16>(a, n0, n1);
  else if (a.b_dtype == DType::BF16) gemv_kn_w<kBF16>(a, n0, n1);
  else gemv_kn_w<kF32>(a, n0, n1);
}

// ---- GEMV, B as [N, K] lines ---------------------------------------------------------------

template <int M, int R>
inline void store_dots(const GemvArgs& a, int64_t n, __m256 (&acc)[R][M], int64_t step) {
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m)
      a.y[m * a.ldy + n + r * step] = hsum(acc[r][m]) + (a.bias ? a.bias[n + r * step] : 0.0f);
}

template <int W, int M, int R>
void dot_lines(const GemvArgs& a, int64_t n, int64_t step) {
  const int64_t K = a.K;
  const int bytes = W == kF32 ? 4 : 2;
  const void* line[R];
  for (int r = 0; r < R; ++r) line[r] = static_cast<const char*>(a.B) + (n + r * step) * a.ldb * bytes;
  __m256 acc[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 8) {
    const int64_t nn = K - k;
    __m256 xv[M];
    for (int m = 0; m < M; ++m) xv[m] = ldm(a.x + m * a.ldx + k, nn);
    for (int r = 0; r < R; ++r) {
      const __m256 w = ldw_n<W>(line[r], k, nn);
      for (int m = 0; m < M; ++m) acc[r][m] = _mm256_fmadd_ps(w, xv[m], acc[r][m]);
    }
  }
  store_dots<M, R>(a, n, acc, step);
}

template <int M, int R>
void dot_lines_q8(const GemvArgs& a, int64_t n, int64_t step) {
  const int64_t K = a.K, nb = (K + kBlk - 1) / kBlk;
  const int8_t* line[R];
  const float* sc[R];
  for (int r = 0; r < R; ++r) {
    line[r] = static_cast<const int8_t*>(a.B) + (n + r * step) * a.ldb;
    sc[r] = a.scales + (n + r * step) * nb;
  }
  __m256 acc[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t k = b * kBlk, left = K - k;  // x beyond K reads as 0; the payload is zero-padded
    for (int r = 0; r < R; ++r) {
      const __m256 s = _mm256_broadcast_ss(sc[r] + b);
      if constexpr (M == 1) {
        __m256 t = _mm256_mul_ps(ld_q8(line[r] + k), ldm(a.x + k, left));
        t = _mm256_fmadd_ps(ld_q8(line[r] + k + 8), ldm(a.x + k + 8, left - 8), t);
        t = _mm256_fmadd_ps(ld_q8(line[r] + k + 16), ldm(a.x + k + 16, left - 16), t);
        t = _mm256_fmadd_ps(ld_q8(line[r] + k + 24), ldm(a.x + k + 24, left - 24), t);
        acc[r][0] = _mm256_fmadd_ps(s, t, acc[r][0]);
      } else {
        for (int p = 0; p < 4; ++p) {
          const __m256 w = _mm256_mul_ps(ld_q8(line[r] + k + 8 * p), s);
          for (int m = 0; m < M; ++m)
            acc[r][m] = _mm256_fmadd_ps(w, ldm(a.x + m * a.ldx + k + 8 * p, left - 8 * p), acc[r][m]);
        }
      }
    }
  }
  store_dots<M, R>(a, n, acc, step);
}

// One row of x: four lines from the four quarters of the range at once (four streams far
// apart); several rows: adjacent lines, x read once per pass.
template <int W, int M>
void gemv_nk_t(const GemvArgs& a, int64_t n0, int64_t n1) {
  constexpr int R = M <= 2 ? 4 : 2;
  const int64_t q = M == 1 ? (n1 - n0) / R : 1;
  int64_t n = n0;
  if (M == 1) {
    for (int64_t i = 0; i < q; ++i) {
      if constexpr (W < 0) dot_lines_q8<M, R>(a, n0 + i, q);
      else dot_lines<W, M, R>(a, n0 + i, q);
    }
    n = n0 + R * q;
  } else {
    for (; n + R <= n1; n += R) {
      if constexpr (W < 0) dot_lines_q8<M, R>(a, n, 1);
      else dot_lines<W, M, R>(a, n, 1);
    }
  }
  for (; n < n1; ++n) {
    if constexpr (W < 0) dot_lines_q8<M, 1>(a, n, 1);
    else dot_lines<W, M, 1>(a, n, 1);
  }
}

template <int W>
void gemv_nk_w(const GemvArgs& a, int64_t n0, int64_t n1) {
  switch (a.M) {
    case 1: gemv_nk_t<W, 1>(a, n0, n1); break;
    case 2: gemv_nk_t<W, 2>(a, n0, n1); break;
    case 3: gemv_nk_t<W, 3>(a, n0, n1); break;
    default: gemv_nk_t<W, 4>(a, n0, n1); break;
  }
}

void v_gemv_nk(const GemvArgs& a, int64_t n0, int64_t n1) {
  switch (a.b_dtype) {
    case DType::Q8: gemv_nk_w<-1>(a, n0, n1); break;
    case DType::F16: gemv_nk_w<kF16>(a, n0, n1); break;
    case DType::BF16: gemv_nk_w<kBF16>(a, n0, n1); break;
    default: gemv_nk_w<kF32>(a, n0, n1); break;
  }
}

void v_q8_dequant(const int8_t* q, const float* scales, int64_t ldq, int64_t len, int64_t l0, int64_t l1, float* out,
                  int64_t ldo) {
  const int64_t nb = (len + kBlk - 1) / kBlk;
  for (int64_t l = l0; l < l1; ++l) {
    const int8_t* ql = q + l * ldq;
    float* o = out + (l - l0) * ldo;
    for (int64_t p = 0; p < len; p += 8) stm(o + p, len - p, _mm256_mul_ps(ld_q8(ql + p), _mm256_broadcast_ss(scales + l * nb + p / kBlk)));
  }
}

// ---- attention, prefill: lanes are queries (32 per unit: four vectors) ------------------------

template <int R, int NV>
inline void scores_tile(const float* kbase, int64_t C, int64_t D, const float* qt, float* st) {
  __m256 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    __m256 qv[NV];
    for (int v = 0; v < NV; ++v) qv[v] = _mm256_loadu_ps(qt + d * 32 + 8 * v);
    for (int r = 0; r < R; ++r) {
      const __m256 kb = _mm256_broadcast_ss(kbase + r * C + d);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(kb, qv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(st + r * 32 + 8 * v, acc[r][v]);
}

template <int R, int NV>
inline void pv_tile(const float* vbase, int64_t C, int64_t nk, const float* st, const __m256* inv, float* ot) {
  __m256 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t j = 0; j < nk; ++j) {
    __m256 pv[NV];
    for (int v = 0; v < NV; ++v) pv[v] = _mm256_loadu_ps(st + j * 32 + 8 * v);
    for (int r = 0; r < R; ++r) {
      const __m256 vb = _mm256_broadcast_ss(vbase + j * C + r);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(vb, pv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(ot + r * 32 + 8 * v, _mm256_mul_ps(acc[r][v], inv[v]));
}

template <int NV>
void attn_block(const AttnArgs& a, int64_t h, int64_t i0, int64_t nq, float* scratch) {
  const int64_t C = a.C, D = a.D, nk = a.past + i0 + nq;
  float* qt = scratch;      // [D][32]
  float* ot = qt + D * 32;  // [D][32]
  float* st = ot + D * 32;  // [nk][32]
  for (int64_t d = 0; d < D; ++d)
    for (int64_t i = 0; i < 32; ++i) qt[d * 32 + i] = i < nq ? a.q[(i0 + i) * C + h * D + d] * a.scale : 0.0f;
  const float* kh = a.k + h * D;
  int64_t j = 0;
  for (; j + 2 <= nk; j += 2) scores_tile<2, NV>(kh + j * C, C, D, qt, st + j * 32);
  if (j < nk) scores_tile<1, NV>(kh + j * C, C, D, qt, st + j * 32);
  // Causal mask: query i (position past + i0 + i) sees keys j <= past + i0 + i.
  for (j = a.past + i0 + 1; j < nk; ++j)
    for (int64_t i = 0; i < j - a.past - i0; ++i) st[j * 32 + i] = -__builtin_inff();
  const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
  __m256 mx[NV], sum[NV], inv[NV];
  for (int v = 0; v < NV; ++v) mx[v] = ninf;
  for (j = 0; j < nk; ++j)
    for (int v = 0; v < NV; ++v) mx[v] = _mm256_max_ps(mx[v], _mm256_loadu_ps(st + j * 32 + 8 * v));
  for (int v = 0; v < NV; ++v) sum[v] = _mm256_setzero_ps();
  for (j = 0; j < nk; ++j)
    for (int v = 0; v < NV; ++v) {
      const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(st + j * 32 + 8 * v), mx[v]));
      sum[v] = _mm256_add_ps(sum[v], e);
      _mm256_storeu_ps(st + j * 32 + 8 * v, e);
    }
  for (int v = 0; v < NV; ++v) inv[v] = _mm256_div_ps(_mm256_set1_ps(1.0f), sum[v]);
  const float* vh = a.v + h * D;
  int64_t d = 0;
  for (; d + 2 <= D; d += 2) pv_tile<2, NV>(vh + d, C, nk, st, inv, ot + d * 32);
  if (d < D) pv_tile<1, NV>(vh + d, C, nk, st, inv, ot + d * 32);
  for (int64_t i = 0; i < nq; ++i) {
    float* o = a.out + (i0 + i) * C + h * D;
    for (d = 0; d < D; ++d) o[d] = ot[d * 32 + i];
  }
}

void v_attn_prefill(const AttnArgs& a, int64_t u0, int64_t u1, float* scratch) {
  const int64_t blocks = (a.T + 31) / 32;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t h = u / blocks, i0 = (u % blocks) * 32, nq = min64(32, a.T - i0);
    switch ((nq + 7) / 8) {
      case 1: attn_block<1>(a, h, i0, nq, scratch); break;
      case 2: attn_block<2>(a, h, i0, nq, scratch); break;
      case 3: attn_block<3>(a, h, i0, nq, scratch); break;
      default: attn_block<4>(a, h, i0, nq, scratch); break;
    }
  }
}

// ---- attention, decode: lanes are head dimensions ---------------------------------------------

void attn_query(const AttnArgs& a, int64_t h, int64_t i, float* scores) {
  const int64_t C = a.C, D = a.D, n = a.past + i + 1;
  const float* qi = a.q + i * C + h * D;
  const float* kh = a.k + h * D;
  const __m256 sc = _mm256_set1_ps(a.scale);
  float mx = -__builtin_inff();
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = kh + j * C;
    __m256 s = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) s = _mm256_fmadd_ps(ldm(qi + d, D - d), ldm(kj + d, D - d), s);
    scores[j] = hsum(_mm256_mul_ps(s, sc));
    mx = scores[j] > mx ? scores[j] : mx;
  }
  __m256 sum = _mm256_setzero_ps();
  const __m256 vm = _mm256_set1_ps(mx);
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 m = _mm256_castsi256_ps(tail_mask(n - j));
    const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(ldm(scores + j, n - j), vm)), m);
    sum = _mm256_add_ps(sum, e);
    stm(scores + j, n - j, e);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
  float* out = a.out + i * C + h * D;
  const float* vh = a.v + h * D;
  // Output held in registers 32 dims at a time; V rows read once per 32 dims.
  for (int64_t d0 = 0; d0 < D; d0 += 32) {
    __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
    const int64_t left = D - d0;
    for (int64_t j = 0; j < n; ++j) {
      const __m256 p = _mm256_broadcast_ss(scores + j);
      const float* vj = vh + j * C + d0;
      o0 = _mm256_fmadd_ps(p, ldm(vj, left), o0);
      if (left > 8) o1 = _mm256_fmadd_ps(p, ldm(vj + 8, left - 8), o1);
      if (left > 16) o2 = _mm256_fmadd_ps(p, ldm(vj + 16, left - 16), o2);
      if (left > 24) o3 = _mm256_fmadd_ps(p, ldm(vj + 24, left - 24), o3);
    }
    stm(out + d0, left, _mm256_mul_ps(o0, inv));
    if (left > 8) stm(out + d0 + 8, left - 8, _mm256_mul_ps(o1, inv));
    if (left > 16) stm(out + d0 + 16, left - 16, _mm256_mul_ps(o2, inv));
    if (left > 24) stm(out + d0 + 24, left - 24, _mm256_mul_ps(o3, inv));
  }
}

void v_attn_decode(const AttnArgs& a, int64_t u0, int64_t u1, float* scratch) {
  for (int64_t u = u0; u < u1; ++u) attn_query(a, u / a.T, u % a.T, scratch);
}

// The gradient of the tanh GELU (see cpu_ops_avx512.cpp); other activations take the scalar rule.
void v_activation_backward(const float* x, const float* dy, int64_t n, Act act, float* out) {
  if (act != Act::GeluTanh) {
    kernels::activation_backward(x, dy, n, act, out);
    return;
  }
  const __m256 k = _mm256_set1_ps(0.7978845608028654f), c = _mm256_set1_ps(0.044715f), c3 = _mm256_set1_ps(3 * 0.044715f);
  const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    const __m256 x2 = _mm256_mul_ps(xv, xv);
    const __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c, x2), xv, xv));
    // exp(-2u) capped at e^80: beyond it s is 0 to f32 and e s^2 must stay 0, not inf * 0.
    const __m256 e = exp256(_mm256_min_ps(_mm256_set1_ps(80.0f), _mm256_mul_ps(_mm256_set1_ps(-2.0f), u)));
    const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
    const __m256 du = _mm256_mul_ps(k, _mm256_fmadd_ps(c3, x2, one));
    // s (1 - s) = e s^2: no cancellation where s is close to 1.
    const __m256 g = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(two, xv), _mm256_mul_ps(e, _mm256_mul_ps(s, s))), du, s);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(g, _mm256_loadu_ps(dy + i)));
  }
  if (i < n) kernels::activation_backward(x + i, dy + i, n - i, act, out + i);
}

const Kernels kAvx2 = {
    "avx2", v_layernorm, v_add,   v_add_row,   v_scale,        v_activation,  v_softmax,
    v_widen, v_gemv_kn,  v_gemv_nk, v_q8_dequant, v_attn_prefill, v_attn_decode, v_activation_backward,
};

}  // namespace

const Kernels* avx2_table() { return &kAvx2; }

}  // namespace strand::cpu
