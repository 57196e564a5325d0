// strand/backends/cpu/cpu_ops_avx512.cpp — the cpu tier's AVX-512 kernels.
//
// Compiled with -mavx512f/bw/vl/dq -mfma -mf16c and only called after cpu_ops.cpp checked the
// CPU. Everything here is file-local except avx512_table(); this file deliberately calls no
// inline function from a shared header (a copy compiled for AVX-512 could be picked by the
// linker for the portable code too).
//
// Math: exp by Cody-Waite range reduction and a degree-7 Taylor polynomial (about 1 ulp);
// GELU-tanh, SiLU and quick-GELU as x / (1 + exp(-a(x))); erf by two fitted polynomials
// (|z| <= 1: z P(z^2); 1 < |z| < 4: erfc(z) = exp(-z^2) R(1/z)), about 1e-7 absolute.
#include <immintrin.h>

#include <cstdint>

// GCC 12's AVX-512 headers trip its own uninitialised-value warnings (the reductions start
// from an undefined register on purpose).
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "backends/cpu/cpu_ops.h"
#include "reference/kernels.h"

namespace strand::cpu {

namespace {

constexpr int64_t kBlk = 32;  // kQ8Block (not read from the header, see above)

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline __mmask16 tail_mask(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1u); }

// ---- loads of 16 weights, widened to f32 -------------------------------------------------

enum WKind { kF32 = 0, kF16 = 1, kBF16 = 2 };

template <int W>
inline __m512 ldw(const void* base, int64_t i) {
  if constexpr (W == kF32) {
    return _mm512_loadu_ps(static_cast<const float*>(base) + i);
  } else if constexpr (W == kF16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i)));
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <int W>
inline __m512 ldw_mask(const void* base, int64_t i, __mmask16 m) {
  if constexpr (W == kF32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + i);
  } else if constexpr (W == kF16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i));
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

inline __m512 ld_q8(const int8_t* p) {  // 16 int8 -> f32
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// ---- math --------------------------------------------------------------------------------

inline __m512 exp512(__m512 x) {
  // max/min with the constant first: a NaN input comes out as NaN.
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  x = _mm512_min_ps(_mm512_set1_ps(88.7f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// x / (1 + exp(-a x'))  where a x' is given as `u` (the sigmoid argument).
inline __m512 x_sigmoid(__m512 x, __m512 u) {
  const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), u));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

inline __m512 gelu_erf512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
  const __m512 az = _mm512_abs_ps(z);
  // |z| <= 1: erf(z) = z P(z^2)
  const __m512 t = _mm512_mul_ps(z, z);
  __m512 p = _mm512_set1_ps(7.875875063e-5f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.0008016864287f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.005189087423f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.02685421201f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.1128359472f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.3761262667f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.128379166f));
  const __m512 small = _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_fmadd_ps(z, p, one));
  // |z| > 1: erfc(|z|) = exp(-z^2) R(1/|z|), R fitted on |z| in [1, 4]
  const __m512 u = _mm512_div_ps(one, _mm512_min_ps(_mm512_max_ps(az, one), _mm512_set1_ps(4.0f)));
  __m512 r = _mm512_set1_ps(-0.03289220854f);
  r = _mm512_fmadd_ps(r, u, _mm512_set1_ps(0.231610318f));
  r = _mm512_fmadd_ps(r, u, _mm512_set1_ps(-0.720168785f));
  r = _mm512_fmadd_ps(r, u, _mm512_set1_ps(1.280535405f));
  r = _mm512_fmadd_ps(r, u, _mm512_set1_ps(-1.378094806f));
  r = _mm512_fmadd_ps(r, u, _mm512_set1_ps(0.8001067331f));
  r = _mm512_fmadd_ps(r, u, _mm512_set1_ps(-0.02345957953f));
  r = _mm512_fmadd_ps(r, u, _mm512_set1_ps(-0.2992877677f));
  r = _mm512_fmadd_ps(r, u, _mm512_set1_ps(0.005787595838f));
  r = _mm512_fmadd_ps(r, u, _mm512_set1_ps(0.5634051381f));
  r = _mm512_fmadd_ps(r, u, _mm512_set1_ps(4.153312484e-5f));
  const __m512 erfc = _mm512_mul_ps(exp512(_mm512_sub_ps(_mm512_setzero_ps(), t)), r);
  const __m512 hx_erfc = _mm512_mul_ps(_mm512_mul_ps(half, x), erfc);
  // x > 0: x - x/2 erfc(z); x < 0: x/2 erfc(|z|)
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 large = _mm512_mask_blend_ps(neg, _mm512_sub_ps(x, hx_erfc), hx_erfc);
  const __mmask16 is_small = _mm512_cmp_ps_mask(az, one, _CMP_LE_OQ);
  __m512 y = _mm512_mask_blend_ps(is_small, large, small);
  // NaN in, NaN out (the compares above are false for NaN)
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  return _mm512_mask_blend_ps(nan, y, x);
}

inline __m512 act512(__m512 x, Act act) {
  switch (act) {
    case Act::GeluTanh: {
      const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
      const __m512 inner = _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x);
      return x_sigmoid(x, _mm512_mul_ps(_mm512_set1_ps(2.0f * 0.7978845608028654f), inner));
    }
    case Act::GeluErf: return gelu_erf512(x);
    case Act::Relu: return _mm512_max_ps(_mm512_setzero_ps(), x);
    case Act::Silu: return x_sigmoid(x, x);
    case Act::QuickGelu: return x_sigmoid(x, _mm512_mul_ps(_mm512_set1_ps(1.702f), x));
  }
  return x;
}

// ---- element-wise and row kernels ---------------------------------------------------------

void v_layernorm(const float* x, const float* g, const float* b, int64_t rows, int64_t n, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
      s0 = _mm512_add_ps(s0, _mm512_loadu_ps(xr + j));
      s1 = _mm512_add_ps(s1, _mm512_loadu_ps(xr + j + 16));
    }
    for (; j < n; j += 16) s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(tail_mask(n - j), xr + j));
    const float mean = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / float(n);
    const __m512 vm = _mm512_set1_ps(mean);
    s0 = _mm512_setzero_ps();
    s1 = _mm512_setzero_ps();
    for (j = 0; j + 32 <= n; j += 32) {
      const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(xr + j), vm);
      const __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(xr + j + 16), vm);
      s0 = _mm512_fmadd_ps(d0, d0, s0);
      s1 = _mm512_fmadd_ps(d1, d1, s1);
    }
    for (; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xr + j), vm);
      s0 = _mm512_fmadd_ps(d, d, s0);
    }
    const float var = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / float(n);
    const float inv = 1.0f / __builtin_sqrtf(var + eps);
    const __m512 vi = _mm512_set1_ps(inv);
    for (j = 0; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + j), vm), vi);
      const __m512 y = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, g + j), _mm512_maskz_loadu_ps(m, b + j));
      _mm512_mask_storeu_ps(o + j, m, y);
    }
  }
}

void v_add(const float* a, const float* b, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
  }
}

void v_add_row(const float* a, const float* row, int64_t rows, int64_t n, float* out) {
  for (int64_t r = 0; r < rows; ++r) v_add(a + r * n, row, n, out + r * n);
}

void v_scale(const float* x, int64_t n, float s, float* out) {
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
  }
}

void v_activation(const float* x, int64_t n, Act act, float* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, act512(_mm512_loadu_ps(x + i), act));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, m, act512(_mm512_maskz_loadu_ps(m, x + i), act));
  }
}

void v_softmax(const float* x, int64_t rows, int64_t n, float* out) {
  const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    __m512 mx = ninf;
    for (int64_t j = 0; j < n; j += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, tail_mask(n - j), xr + j));
    const __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + j), vm));
      sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
      _mm512_mask_storeu_ps(o + j, m, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      _mm512_mask_storeu_ps(o + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, o + j), inv));
    }
  }
}

template <int W>
void widen_t(const void* src, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, m, ldw_mask<W>(src, i, m));
  }
}

void v_widen(const void* src, DType dt, int64_t n, float* out) {
  if (dt == DType::F16) widen_t<kF16>(src, n, out);
  else if (dt == DType::BF16) widen_t<kBF16>(src, n, out);
  else widen_t<kF32>(src, n, out);
}

// ---- GEMV, B as [K, N] rows ---------------------------------------------------------------
//
// y[m, c] accumulates over k in order (as the naive loops do), several rows of B at a time;
// the rows of y for the column range stay in L1 while B streams through once.

template <int W, int M>
void gemv_kn_t(const GemvArgs& a, int64_t n0, int64_t n1) {
  const int64_t K = a.K;
  for (int m = 0; m < M; ++m) {
    float* y = a.y + m * a.ldy;
    for (int64_t c = n0; c < n1; c += 16) _mm512_mask_storeu_ps(y + c, tail_mask(n1 - c), _mm512_setzero_ps());
  }
  auto row = [&](int64_t k) { return static_cast<const char*>(a.B) + (k * a.ldb) * (W == kF32 ? 4 : 2); };
  // Rows of B in flight per pass: more concurrent streams, more memory parallelism (measured
  // on Zen 4, one thread: 4 rows 16 GB/s, 8 rows 20, 12 rows 21, 16 rows 19).
  constexpr int U = M == 1 ? 12 : 4;
  int64_t k = 0;
  for (; k + U <= K; k += U) {
    const void* r[U];
    __m512 xb[U][M];
    for (int u = 0; u < U; ++u) {
      r[u] = row(k + u);
      for (int m = 0; m < M; ++m) xb[u][m] = _mm512_set1_ps(a.x[m * a.ldx + k + u]);
    }
    int64_t c = n0;
    for (; c + 16 <= n1; c += 16) {
      __m512 w[U];
      for (int u = 0; u < U; ++u) w[u] = ldw<W>(r[u], c);
      for (int m = 0; m < M; ++m) {
        float* y = a.y + m * a.ldy + c;
        __m512 acc = _mm512_loadu_ps(y);
        for (int u = 0; u < U; ++u) acc = _mm512_fmadd_ps(xb[u][m], w[u], acc);
        _mm512_storeu_ps(y, acc);
      }
    }
    if (c < n1) {
      const __mmask16 mk = tail_mask(n1 - c);
      __m512 w[U];
      for (int u = 0; u < U; ++u) w[u] = ldw_mask<W>(r[u], c, mk);
      for (int m = 0; m < M; ++m) {
        float* y = a.y + m * a.ldy + c;
        __m512 acc = _mm512_maskz_loadu_ps(mk, y);
        for (int u = 0; u < U; ++u) acc = _mm512_fmadd_ps(xb[u][m], w[u], acc);
        _mm512_mask_storeu_ps(y, mk, acc);
      }
    }
  }
  for (; k < K; ++k) {
    const void* r0 = row(k);
    for (int m = 0; m < M; ++m) {
      const __m512 xk = _mm512_set1_ps(a.x[m * a.ldx + k]);
      float* y = a.y + m * a.ldy;
      for (int64_t c = n0; c < n1; c += 16) {
        const __mmask16 mk = tail_mask(n1 - c);
        _mm512_mask_storeu_ps(y + c, mk, _mm512_fmadd_ps(xk, ldw_mask<W>(r0, c, mk), _mm512_maskz_loadu_ps(mk, y + c)));
      }
    }
  }
  if (a.bias)
    for (int m = 0; m < M; ++m) {
      float* y = a.y + m * a.ldy;
      for (int64_t c = n0; c < n1; c += 16) {
        const __mmask16 mk = tail_mask(n1 - c);
        _mm512_mask_storeu_ps(y + c, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, y + c), _mm512_maskz_loadu_ps(mk, a.bias + c)));
      }
    }
}

template <int W>
void gemv_kn_w(const GemvArgs& a, int64_t n0, int64_t n1) {
  switch (a.M) {
    case 1: gemv_kn_t<W, 1>(a, n0, n1); break;
    case 2: gemv_kn_t<W, 2>(a, n0, n1); break;
    case 3: gemv_kn_t<W, 3>(a, n0, n1); break;
    default: gemv_kn_t<W, 4>(a, n0, n1); break;
  }
}

void v_gemv_kn(const GemvArgs& a, int64_t n0, int64_t n1) {
  if (a.b_dtype == DType::F16) gemv_kn_w<kF16>(a, n0, n1);
  else if (a.b_dtype == DType::BF16) gemv_kn_w<kBF16>(a, n0, n1);
  else gemv_kn_w<kF32>(a, n0, n1);
}

// ---- GEMV, B as [N, K] lines ---------------------------------------------------------------
//
// Each output is a dot product over one line of K. One row of x: four lines from the four
// quarters of the range at once (four streams); several rows: four adjacent lines per pass,
// x read once per pass.

template <int M, int R>
inline void store_dots(const GemvArgs& a, int64_t n, __m512 (&acc)[R][M], int64_t step = 1) {
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m)
      a.y[m * a.ldy + n + r * step] = _mm512_reduce_add_ps(acc[r][m]) + (a.bias ? a.bias[n + r * step] : 0.0f);
}

template <int W, int M, int R>
void dot_lines(const GemvArgs& a, int64_t n, int64_t step = 1) {
  const int64_t K = a.K;
  const int bytes = W == kF32 ? 4 : 2;
  const void* line[R];
  for (int r = 0; r < R; ++r) line[r] = static_cast<const char*>(a.B) + (n + r * step) * a.ldb * bytes;
  __m512 acc[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 xv[M];
    for (int m = 0; m < M; ++m) xv[m] = _mm512_loadu_ps(a.x + m * a.ldx + k);
    for (int r = 0; r < R; ++r) {
      const __m512 w = ldw<W>(line[r], k);
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_fmadd_ps(w, xv[m], acc[r][m]);
    }
  }
  if (k < K) {
    const __mmask16 mk = tail_mask(K - k);
    __m512 xv[M];
    for (int m = 0; m < M; ++m) xv[m] = _mm512_maskz_loadu_ps(mk, a.x + m * a.ldx + k);
    for (int r = 0; r < R; ++r) {
      const __m512 w = ldw_mask<W>(line[r], k, mk);
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_fmadd_ps(w, xv[m], acc[r][m]);
    }
  }
  store_dots<M, R>(a, n, acc, step);
}

// Q8 lines: per block, the int8 x f32 products summed in lanes, times the block's scale.
template <int M, int R>
void dot_lines_q8(const GemvArgs& a, int64_t n, int64_t step = 1) {
  const int64_t K = a.K, nb = (K + kBlk - 1) / kBlk;
  const int8_t* line[R];
  const float* sc[R];
  for (int r = 0; r < R; ++r) {
    line[r] = static_cast<const int8_t*>(a.B) + (n + r * step) * a.ldb;
    sc[r] = a.scales + (n + r * step) * nb;
  }
  __m512 acc[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
  const int64_t full = K / kBlk;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t k = b * kBlk;
    __m512 xl[M], xh[M];
    if (b < full) {
      for (int m = 0; m < M; ++m) {
        xl[m] = _mm512_loadu_ps(a.x + m * a.ldx + k);
        xh[m] = _mm512_loadu_ps(a.x + m * a.ldx + k + 16);
      }
    } else {  // the last, partial block: x beyond K reads as 0 (the payload is zero-padded)
      const __mmask16 ml = tail_mask(K - k), mh = tail_mask(K - k - 16 > 0 ? K - k - 16 : 0);
      for (int m = 0; m < M; ++m) {
        xl[m] = _mm512_maskz_loadu_ps(ml, a.x + m * a.ldx + k);
        xh[m] = _mm512_maskz_loadu_ps(mh, a.x + m * a.ldx + k + 16);
      }
    }
    for (int r = 0; r < R; ++r) {
      const __m512 s = _mm512_set1_ps(sc[r][b]);
      if constexpr (M == 1) {
        // The block's 32 products q * x in 16 lanes, then scaled once into the accumulator:
        // one multiply fewer per block than scaling every weight (this kernel is bound by
        // its vector ops, not memory, as soon as the cores are shared).
        const __m512 t = _mm512_fmadd_ps(ld_q8(line[r] + k + 16), xh[0], _mm512_mul_ps(ld_q8(line[r] + k), xl[0]));
        acc[r][0] = _mm512_fmadd_ps(s, t, acc[r][0]);
      } else {  // several rows: scale the weights once, reuse them for every row
        const __m512 wl = _mm512_mul_ps(ld_q8(line[r] + k), s), wh = _mm512_mul_ps(ld_q8(line[r] + k + 16), s);
        for (int m = 0; m < M; ++m) acc[r][m] = _mm512_fmadd_ps(wh, xh[m], _mm512_fmadd_ps(wl, xl[m], acc[r][m]));
      }
    }
  }
  store_dots<M, R>(a, n, acc, step);
}

// One row of x against one line: a single front-to-back stream, four (f32/f16/bf16) or two
// (q8) independent accumulators. Reading one line at a time streams memory faster than
// interleaving several lines (measured: 2x for q8 on Zen 4).
template <int W>
void dot_line1(const GemvArgs& a, int64_t n) {
  const int64_t K = a.K;
  const void* line = static_cast<const char*>(a.B) + n * a.ldb * (W == kF32 ? 4 : 2);
  const float* x = a.x;
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    a0 = _mm512_fmadd_ps(ldw<W>(line, k), _mm512_loadu_ps(x + k), a0);
    a1 = _mm512_fmadd_ps(ldw<W>(line, k + 16), _mm512_loadu_ps(x + k + 16), a1);
    a2 = _mm512_fmadd_ps(ldw<W>(line, k + 32), _mm512_loadu_ps(x + k + 32), a2);
    a3 = _mm512_fmadd_ps(ldw<W>(line, k + 48), _mm512_loadu_ps(x + k + 48), a3);
  }
  for (; k < K; k += 16) {
    const __mmask16 mk = tail_mask(K - k);
    a0 = _mm512_fmadd_ps(ldw_mask<W>(line, k, mk), _mm512_maskz_loadu_ps(mk, x + k), a0);
  }
  a.y[n] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))) + (a.bias ? a.bias[n] : 0.0f);
}

void dot_line1_q8(const GemvArgs& a, int64_t n) {
  const int64_t K = a.K, nb = (K + kBlk - 1) / kBlk, full = K / kBlk;
  const int8_t* q = static_cast<const int8_t*>(a.B) + n * a.ldb;
  const float* sc = a.scales + n * nb;
  const float* x = a.x;
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  int64_t b = 0;
  for (; b + 2 <= full; b += 2) {
    const int64_t k = b * kBlk;
    const __m512 t0 = _mm512_fmadd_ps(ld_q8(q + k + 16), _mm512_loadu_ps(x + k + 16), _mm512_mul_ps(ld_q8(q + k), _mm512_loadu_ps(x + k)));
    const __m512 t1 = _mm512_fmadd_ps(ld_q8(q + k + 48), _mm512_loadu_ps(x + k + 48), _mm512_mul_ps(ld_q8(q + k + 32), _mm512_loadu_ps(x + k + 32)));
    a0 = _mm512_fmadd_ps(_mm512_set1_ps(sc[b]), t0, a0);
    a1 = _mm512_fmadd_ps(_mm512_set1_ps(sc[b + 1]), t1, a1);
  }
  for (; b < nb; ++b) {  // x beyond K reads as 0 (the payload is zero-padded)
    const int64_t k = b * kBlk;
    const __mmask16 ml = tail_mask(K - k), mh = tail_mask(K - k - 16 > 0 ? K - k - 16 : 0);
    const __m512 t = _mm512_fmadd_ps(ld_q8(q + k + 16), _mm512_maskz_loadu_ps(mh, x + k + 16),
                                     _mm512_mul_ps(ld_q8(q + k), _mm512_maskz_loadu_ps(ml, x + k)));
    a0 = _mm512_fmadd_ps(_mm512_set1_ps(sc[b]), t, a0);
  }
  a.y[n] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + (a.bias ? a.bias[n] : 0.0f);
}

template <int W, int M>
void gemv_nk_t(const GemvArgs& a, int64_t n0, int64_t n1) {
  int64_t n = n0;
  if constexpr (M == 1) {
    // Four lines from four quarters of the range at a time: four independent streams far
    // apart (measured faster than adjacent lines or one line at a time).
    const int64_t q = (n1 - n0) / 4;
    for (int64_t i = 0; i < q; ++i) {
      if constexpr (W < 0) dot_lines_q8<1, 4>(a, n0 + i, q);
      else dot_lines<W, 1, 4>(a, n0 + i, q);
    }
    for (n = n0 + 4 * q; n < n1; ++n) {
      if constexpr (W < 0) dot_line1_q8(a, n);
      else dot_line1<W>(a, n);
    }
    return;
  }
  constexpr int R = 4;  // several rows of x: four lines per pass, x read once per pass
  if constexpr (W < 0) {
    for (; n + R <= n1; n += R) dot_lines_q8<M, R>(a, n);
    for (; n < n1; ++n) dot_lines_q8<M, 1>(a, n);
  } else {
    for (; n + R <= n1; n += R) dot_lines<W, M, R>(a, n);
    for (; n < n1; ++n) dot_lines<W, M, 1>(a, n);
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
    for (int64_t b = 0; b < nb; ++b) {
      const __m512 s = _mm512_set1_ps(scales[l * nb + b]);
      const int64_t p = b * kBlk;
      if (p + kBlk <= len) {
        _mm512_storeu_ps(o + p, _mm512_mul_ps(ld_q8(ql + p), s));
        _mm512_storeu_ps(o + p + 16, _mm512_mul_ps(ld_q8(ql + p + 16), s));
      } else {
        _mm512_mask_storeu_ps(o + p, tail_mask(len - p), _mm512_mul_ps(ld_q8(ql + p), s));
        if (len - p > 16) _mm512_mask_storeu_ps(o + p + 16, tail_mask(len - p - 16), _mm512_mul_ps(ld_q8(ql + p + 16), s));
      }
    }
  }
}

// ---- attention, prefill: lanes are queries ---------------------------------------------------
//
// One unit is (head h, queries i0 .. i0+nq, nq <= 32). With Q^T packed as qt[d][i] (scaled by
// 1/sqrt(D)), the scores of key j for all queries are a row st[j][0..32) = sum_d k[j][d] qt[d],
// built 8 keys at a time from broadcasts of k; the causal mask, max, exp and sum then run down
// the columns; the output O^T[d] = sum_j v[j][d] P[j] is built 8 dims at a time the same way.

template <int R, int NV>
inline void scores_tile(const float* kbase, int64_t C, int64_t D, const float* qt, float* st) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    __m512 qv[NV];
    for (int v = 0; v < NV; ++v) qv[v] = _mm512_loadu_ps(qt + d * 32 + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 kb = _mm512_set1_ps(kbase[r * C + d]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(kb, qv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(st + r * 32 + 16 * v, acc[r][v]);
}

template <int NV>
void scores_any(int R, const float* kbase, int64_t C, int64_t D, const float* qt, float* st) {
  switch (R) {
    case 8: scores_tile<8, NV>(kbase, C, D, qt, st); break;
    case 7: scores_tile<7, NV>(kbase, C, D, qt, st); break;
    case 6: scores_tile<6, NV>(kbase, C, D, qt, st); break;
    case 5: scores_tile<5, NV>(kbase, C, D, qt, st); break;
    case 4: scores_tile<4, NV>(kbase, C, D, qt, st); break;
    case 3: scores_tile<3, NV>(kbase, C, D, qt, st); break;
    case 2: scores_tile<2, NV>(kbase, C, D, qt, st); break;
    default: scores_tile<1, NV>(kbase, C, D, qt, st); break;
  }
}

template <int R, int NV>
inline void pv_tile(const float* vbase, int64_t C, int64_t nk, const float* st, const __m512* inv, float* ot) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t j = 0; j < nk; ++j) {
    __m512 pv[NV];
    for (int v = 0; v < NV; ++v) pv[v] = _mm512_loadu_ps(st + j * 32 + 16 * v);
    const float* vj = vbase + j * C;
    for (int r = 0; r < R; ++r) {
      const __m512 vb = _mm512_set1_ps(vj[r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(vb, pv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(ot + r * 32 + 16 * v, _mm512_mul_ps(acc[r][v], inv[v]));
}

template <int NV>
void pv_any(int R, const float* vbase, int64_t C, int64_t nk, const float* st, const __m512* inv, float* ot) {
  switch (R) {
    case 8: pv_tile<8, NV>(vbase, C, nk, st, inv, ot); break;
    case 7: pv_tile<7, NV>(vbase, C, nk, st, inv, ot); break;
    case 6: pv_tile<6, NV>(vbase, C, nk, st, inv, ot); break;
    case 5: pv_tile<5, NV>(vbase, C, nk, st, inv, ot); break;
    case 4: pv_tile<4, NV>(vbase, C, nk, st, inv, ot); break;
    case 3: pv_tile<3, NV>(vbase, C, nk, st, inv, ot); break;
    case 2: pv_tile<2, NV>(vbase, C, nk, st, inv, ot); break;
    default: pv_tile<1, NV>(vbase, C, nk, st, inv, ot); break;
  }
}

template <int NV>
void attn_block(const AttnArgs& a, int64_t h, int64_t i0, int64_t nq, float* scratch) {
  const int64_t C = a.C, D = a.D, nk = a.past + i0 + nq;
  float* qt = scratch;          // [D][32]
  float* ot = qt + D * 32;      // [D][32]
  float* st = ot + D * 32;      // [nk][32]
  // Q^T, scaled: rows of q read front to back, 16 dims at a time, written down the columns.
  for (int64_t i = 0; i < 32; ++i) {
    const float* qi = a.q + (i0 + i) * C + h * D;
    for (int64_t d0 = 0; d0 < D; d0 += 16) {
      alignas(64) float t[16];
      const __mmask16 m = tail_mask(D - d0);
      _mm512_store_ps(t, i < nq ? _mm512_mul_ps(_mm512_maskz_loadu_ps(m, qi + d0), _mm512_set1_ps(a.scale)) : _mm512_setzero_ps());
      for (int64_t d = d0; d < min64(D, d0 + 16); ++d) qt[d * 32 + i] = t[d - d0];
    }
  }
  const float* kh = a.k + h * D;
  for (int64_t j = 0; j < nk; j += 8) scores_any<NV>(int(min64(8, nk - j)), kh + j * C, C, D, qt, st + j * 32);
  // Causal mask: query i (position past + i0 + i) sees keys j <= past + i0 + i.
  const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t j = a.past + i0 + 1; j < nk; ++j) {
    const int32_t t = int32_t(j - a.past - i0);  // lanes i < t are in the past of key j
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = _mm512_cmplt_epi32_mask(_mm512_add_epi32(iota, _mm512_set1_epi32(16 * v)), _mm512_set1_epi32(t));
      _mm512_mask_storeu_ps(st + j * 32 + 16 * v, m, ninf);
    }
  }
  __m512 mx[NV], sum[NV], inv[NV];
  for (int v = 0; v < NV; ++v) mx[v] = ninf;
  for (int64_t j = 0; j < nk; ++j)
    for (int v = 0; v < NV; ++v) mx[v] = _mm512_max_ps(mx[v], _mm512_loadu_ps(st + j * 32 + 16 * v));
  for (int v = 0; v < NV; ++v) sum[v] = _mm512_setzero_ps();
  for (int64_t j = 0; j < nk; ++j)
    for (int v = 0; v < NV; ++v) {
      const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(st + j * 32 + 16 * v), mx[v]));
      sum[v] = _mm512_add_ps(sum[v], e);
      _mm512_storeu_ps(st + j * 32 + 16 * v, e);
    }
  for (int v = 0; v < NV; ++v) inv[v] = _mm512_div_ps(_mm512_set1_ps(1.0f), sum[v]);
  const float* vh = a.v + h * D;
  for (int64_t d = 0; d < D; d += 8) pv_any<NV>(int(min64(8, D - d)), vh + d, C, nk, st, inv, ot + d * 32);
  for (int64_t i = 0; i < nq; ++i) {
    float* o = a.out + (i0 + i) * C + h * D;
    for (int64_t d = 0; d < D; ++d) o[d] = ot[d * 32 + i];
  }
}

void v_attn_prefill(const AttnArgs& a, int64_t u0, int64_t u1, float* scratch) {
  const int64_t blocks = (a.T + 31) / 32;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t h = u / blocks, i0 = (u % blocks) * 32, nq = min64(32, a.T - i0);
    if (nq > 16) attn_block<2>(a, h, i0, nq, scratch);
    else attn_block<1>(a, h, i0, nq, scratch);
  }
}

// ---- attention, decode: lanes are head dimensions ---------------------------------------------
//
// One unit is (head h, query i): scores of its past + i + 1 keys (K streamed once), softmax,
// then the weighted sum of values (V streamed once), the output row held in ND registers.

template <int ND>
void attn_query(const AttnArgs& a, int64_t h, int64_t i, float* scores) {
  const int64_t C = a.C, D = a.D, n = a.past + i + 1;
  __mmask16 mk[ND];
  __m512 q[ND];
  const float* qi = a.q + i * C + h * D;
  for (int c = 0; c < ND; ++c) {
    mk[c] = tail_mask(D - 16 * c);
    q[c] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk[c], qi + 16 * c), _mm512_set1_ps(a.scale));
  }
  const float* kh = a.k + h * D;
  __m512 mx = _mm512_set1_ps(-__builtin_inff());
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const float* k0 = kh + j * C;
    for (int c = 0; c < ND; ++c) {
      s0 = _mm512_fmadd_ps(q[c], _mm512_maskz_loadu_ps(mk[c], k0 + 16 * c), s0);
      s1 = _mm512_fmadd_ps(q[c], _mm512_maskz_loadu_ps(mk[c], k0 + C + 16 * c), s1);
      s2 = _mm512_fmadd_ps(q[c], _mm512_maskz_loadu_ps(mk[c], k0 + 2 * C + 16 * c), s2);
      s3 = _mm512_fmadd_ps(q[c], _mm512_maskz_loadu_ps(mk[c], k0 + 3 * C + 16 * c), s3);
    }
    scores[j] = _mm512_reduce_add_ps(s0);
    scores[j + 1] = _mm512_reduce_add_ps(s1);
    scores[j + 2] = _mm512_reduce_add_ps(s2);
    scores[j + 3] = _mm512_reduce_add_ps(s3);
  }
  for (; j < n; ++j) {
    __m512 s0 = _mm512_setzero_ps();
    for (int c = 0; c < ND; ++c) s0 = _mm512_fmadd_ps(q[c], _mm512_maskz_loadu_ps(mk[c], kh + j * C + 16 * c), s0);
    scores[j] = _mm512_reduce_add_ps(s0);
  }
  for (j = 0; j < n; j += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail_mask(n - j), scores + j));
  const __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    const __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + j), vm)));
    sum = _mm512_add_ps(sum, e);
    _mm512_mask_storeu_ps(scores + j, m, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
  __m512 o[ND];
  for (int c = 0; c < ND; ++c) o[c] = _mm512_setzero_ps();
  const float* vh = a.v + h * D;
  for (j = 0; j < n; ++j) {
    const __m512 p = _mm512_set1_ps(scores[j]);
    const float* vj = vh + j * C;
    for (int c = 0; c < ND; ++c) o[c] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(mk[c], vj + 16 * c), o[c]);
  }
  float* out = a.out + i * C + h * D;
  for (int c = 0; c < ND; ++c) _mm512_mask_storeu_ps(out + 16 * c, mk[c], _mm512_mul_ps(o[c], inv));
}

// Head sizes above 128: the same steps with the output accumulated in memory.
void attn_query_wide(const AttnArgs& a, int64_t h, int64_t i, float* scores) {
  const int64_t C = a.C, D = a.D, n = a.past + i + 1;
  const float* qi = a.q + i * C + h * D;
  float mx = -__builtin_inff();
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = a.k + j * C + h * D;
    __m512 s = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; d += 16) {
      const __mmask16 m = tail_mask(D - d);
      s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, qi + d), _mm512_maskz_loadu_ps(m, kj + d), s);
    }
    scores[j] = _mm512_reduce_add_ps(s) * a.scale;
    mx = scores[j] > mx ? scores[j] : mx;
  }
  float sum = 0;
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    const __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + j), _mm512_set1_ps(mx))));
    sum += _mm512_reduce_add_ps(e);
    _mm512_mask_storeu_ps(scores + j, m, e);
  }
  float* out = a.out + i * C + h * D;
  for (int64_t d = 0; d < D; d += 16) _mm512_mask_storeu_ps(out + d, tail_mask(D - d), _mm512_setzero_ps());
  for (int64_t j = 0; j < n; ++j) {
    const __m512 p = _mm512_set1_ps(scores[j]);
    const float* vj = a.v + j * C + h * D;
    for (int64_t d = 0; d < D; d += 16) {
      const __mmask16 m = tail_mask(D - d);
      _mm512_mask_storeu_ps(out + d, m, _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m, vj + d), _mm512_maskz_loadu_ps(m, out + d)));
    }
  }
  const __m512 inv = _mm512_set1_ps(1.0f / sum);
  for (int64_t d = 0; d < D; d += 16) {
    const __mmask16 m = tail_mask(D - d);
    _mm512_mask_storeu_ps(out + d, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, out + d), inv));
  }
}

void v_attn_decode(const AttnArgs& a, int64_t u0, int64_t u1, float* scratch) {
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t h = u / a.T, i = u % a.T;
    switch ((a.D + 15) / 16) {
      case 1: attn_query<1>(a, h, i, scratch); break;
      case 2: attn_query<2>(a, h, i, scratch); break;
      case 3: attn_query<3>(a, h, i, scratch); break;
      case 4: attn_query<4>(a, h, i, scratch); break;
      case 5: attn_query<5>(a, h, i, scratch); break;
      case 6: attn_query<6>(a, h, i, scratch); break;
      case 7: attn_query<7>(a, h, i, scratch); break;
      case 8: attn_query<8>(a, h, i, scratch); break;
      default: attn_query_wide(a, h, i, scratch); break;
    }
  }
}

// The gradient of the tanh GELU, with s = sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3):
//   gelu(x) = x s,  gelu'(x) = s + 2 x s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 x^2).
// Other activations take the scalar rule (they are not in GPT-2's training path).
void v_activation_backward(const float* x, const float* dy, int64_t n, Act act, float* out) {
  if (act != Act::GeluTanh) {
    kernels::activation_backward(x, dy, n, act, out);
    return;
  }
  const __m512 k = _mm512_set1_ps(0.7978845608028654f), c = _mm512_set1_ps(0.044715f), c3 = _mm512_set1_ps(3 * 0.044715f);
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 x2 = _mm512_mul_ps(xv, xv);
    const __m512 u = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_mul_ps(c, x2), xv, xv));
    // exp(-2u) capped at e^80: beyond it s is 0 to f32 and e s^2 must stay 0, not inf * 0.
    const __m512 e = exp512(_mm512_min_ps(_mm512_set1_ps(80.0f), _mm512_mul_ps(_mm512_set1_ps(-2.0f), u)));
    const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
    const __m512 du = _mm512_mul_ps(k, _mm512_fmadd_ps(c3, x2, one));
    // s (1 - s) = e s^2: no cancellation where s is close to 1.
    const __m512 g = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(two, xv), _mm512_mul_ps(e, _mm512_mul_ps(s, s))), du, s);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, dy + i)));
  }
}

const Kernels kAvx512 = {
    "avx512", v_layernorm, v_add,   v_add_row,   v_scale,        v_activation,  v_softmax,
    v_widen,  v_gemv_kn,   v_gemv_nk, v_q8_dequant, v_attn_prefill, v_attn_decode, v_activation_backward,
};

}  // namespace

const Kernels* avx512_table() { return &kAvx512; }

}  // namespace strand::cpu
