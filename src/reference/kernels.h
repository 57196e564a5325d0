// strand/reference/kernels.h — every primitive and fused op written once, as plain loops.
//
// Templated on the number type T: instantiated with double these are strand's definition of
// correct (the float64 reference); instantiated with float they are the `naive` tier, the
// readable bottom rung of the ladder. All arrays are contiguous and row-major; shapes are in
// the comments. Accumulation happens in T, so the f32 instantiation shows plain f32 error.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "core/error.h"
#include "ops/ops.h"

namespace strand::kernels {

// out[t, :] = table[ids[t], :]            table [V, C], ids [n], out [n, C]
template <class T>
void gather_rows(const T* table, int64_t V, int64_t C, const int32_t* ids, int64_t n, T* out) {
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = ids[t];
    if (id < 0 || id >= V) fail("token id {} is out of range [0, {})", id, V);
    for (int64_t c = 0; c < C; ++c) out[t * C + c] = table[int64_t(id) * C + c];
  }
}

// out = a + b                             a [M, N], b [M, N] or [N] (broadcast over rows)
template <class T>
void add(const T* a, const T* b, bool b_is_row, int64_t M, int64_t N, T* out) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) out[i * N + j] = a[i * N + j] + b[b_is_row ? j : i * N + j];
}

// out[i, :] = (x[i, :] - mean) / sqrt(var + eps) * g + b     x [M, N]; biased variance
template <class T>
void layernorm(const T* x, const T* g, const T* b, int64_t M, int64_t N, double eps, T* out) {
  for (int64_t i = 0; i < M; ++i) {
    const T* row = x + i * N;
    T mean = 0;
    for (int64_t j = 0; j < N; ++j) mean += row[j];
    mean /= T(N);
    T var = 0;
    for (int64_t j = 0; j < N; ++j) var += (row[j] - mean) * (row[j] - mean);
    var /= T(N);
    const T inv = T(1) / std::sqrt(var + T(eps));
    for (int64_t j = 0; j < N; ++j) out[i * N + j] = (row[j] - mean) * inv * g[j] + b[j];
  }
}

// out = a · b                             a [M, K], b [K, N] (or [N, K] when trans_b), out [M, N]
// Each out[i, j] is summed over k in order 0..K-1 in both layouts; without trans_b the loop
// runs i-k-j so that b is read along its rows (same sums, cache-friendly).
template <class T>
void matmul(const T* a, const T* b, bool trans_b, int64_t M, int64_t K, int64_t N, T* out) {
  for (int64_t i = 0; i < M; ++i) {
    T* o = out + i * N;
    if (trans_b) {
      for (int64_t j = 0; j < N; ++j) {
        T acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += a[i * K + k] * b[j * K + k];
        o[j] = acc;
      }
      continue;
    }
    for (int64_t j = 0; j < N; ++j) o[j] = 0;
    for (int64_t k = 0; k < K; ++k) {
      const T aik = a[i * K + k];
      for (int64_t j = 0; j < N; ++j) o[j] += aik * b[k * N + j];
    }
  }
}

template <class T>
T activate(T x, Act act) {
  constexpr T kSqrt2OverPi = T(0.7978845608028654);
  switch (act) {
    case Act::GeluTanh: return T(0.5) * x * (T(1) + std::tanh(kSqrt2OverPi * (x + T(0.044715) * x * x * x)));
    case Act::GeluErf: return T(0.5) * x * (T(1) + std::erf(x * T(0.7071067811865476)));
    case Act::Relu: return x > T(0) ? x : T(0);
    case Act::Silu: return x / (T(1) + std::exp(-x));
    case Act::QuickGelu: return x / (T(1) + std::exp(T(-1.702) * x));
  }
  return x;
}

// out = act(x)                            any shape, n elements
template <class T>
void activation(const T* x, int64_t n, Act act, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = activate(x[i], act);
}

// out = x * s
template <class T>
void scale(const T* x, int64_t n, double s, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * T(s);
}

// out = s with -inf where key j is in the future of query i    s [Tq, past + Tq]
template <class T>
void causal_mask(const T* s, int64_t Tq, int64_t S, int64_t past, T* out) {
  for (int64_t i = 0; i < Tq; ++i)
    for (int64_t j = 0; j < S; ++j)
      out[i * S + j] = j > past + i ? -std::numeric_limits<T>::infinity() : s[i * S + j];
}

// out[i, :] = softmax(x[i, :])            x [M, N]; a row of -inf only gives NaN, as in math
template <class T>
void softmax(const T* x, int64_t M, int64_t N, T* out) {
  for (int64_t i = 0; i < M; ++i) {
    const T* row = x + i * N;
    T mx = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < N; ++j) mx = row[j] > mx ? row[j] : mx;
    T sum = 0;
    for (int64_t j = 0; j < N; ++j) {
      out[i * N + j] = std::exp(row[j] - mx);
      sum += out[i * N + j];
    }
    for (int64_t j = 0; j < N; ++j) out[i * N + j] /= sum;
  }
}

// out = x[:, start : start + len]          x [M, N], out [M, len]
template <class T>
void slice_cols(const T* x, int64_t M, int64_t N, int64_t start, int64_t len, T* out) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < len; ++j) out[i * len + j] = x[i * N + start + j];
}

// out = x[start : start + len, :]          x [M, N], out [len, N]
template <class T>
void slice_rows(const T* x, int64_t N, int64_t start, int64_t len, T* out) {
  for (int64_t i = 0; i < len; ++i)
    for (int64_t j = 0; j < N; ++j) out[i * N + j] = x[(start + i) * N + j];
}

// out[:, off : off + n] = x                x [M, n], out [M, N_total]
template <class T>
void place_cols(const T* x, int64_t M, int64_t n, int64_t off, int64_t N_total, T* out) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < n; ++j) out[i * N_total + off + j] = x[i * n + j];
}

// cache[past + t, :] = rows[t, :]          cache [L, C], rows [n, C]
template <class T>
void kv_store(T* cache, const T* rows, int64_t n, int64_t C, int64_t past) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < C; ++c) cache[(past + t) * C + c] = rows[t * C + c];
}

// Causal multi-head attention, fused.     q [Tq, C], k and v [past + Tq, C], out [Tq, C]
// Head h uses columns [h*D, (h+1)*D); query i (absolute position past + i) attends to keys
// 0 .. past + i with weights softmax(q·k / sqrt(D)). `scores` is scratch of past + Tq.
template <class T>
void attention(const T* q, const T* k, const T* v, int64_t Tq, int64_t C, int64_t H, int64_t past, T* scores,
               T* out) {
  const int64_t D = C / H;
  const T scale = T(1) / std::sqrt(T(D));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < Tq; ++i) {
      const int64_t n = past + i + 1;
      const T* qi = q + i * C + h * D;
      T mx = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < n; ++j) {
        T dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qi[d] * k[j * C + h * D + d];
        scores[j] = dot * scale;
        mx = scores[j] > mx ? scores[j] : mx;
      }
      T sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        scores[j] = std::exp(scores[j] - mx);
        sum += scores[j];
      }
      T* oi = out + i * C + h * D;
      for (int64_t d = 0; d < D; ++d) oi[d] = 0;
      for (int64_t j = 0; j < n; ++j) {
        const T w = scores[j] / sum;
        for (int64_t d = 0; d < D; ++d) oi[d] += w * v[j * C + h * D + d];
      }
    }
}

}  // namespace strand::kernels
