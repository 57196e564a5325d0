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

// The softmax weights of attention as they are (see attention's round_w).
struct KeepWeights {
  template <class T>
  T operator()(T w) const { return w; }
};

// Causal multi-head attention, fused.     q [Tq, C], k and v [past + Tq, C], out [Tq, C]
// Head h uses columns [h*D, (h+1)*D); query i (absolute position past + i) attends to keys
// 0 .. past + i with weights softmax(q·k / sqrt(D)). `scores` is scratch of past + Tq.
// round_w(w) is applied to each weight before it multiplies v (validate/precision.h uses it to
// compute at the precision of a tier that rounds the weights; by default nothing changes).
template <class T, class RoundW = KeepWeights>
void attention(const T* q, const T* k, const T* v, int64_t Tq, int64_t C, int64_t H, int64_t past, T* scores,
               T* out, RoundW round_w = {}) {
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
        const T w = round_w(scores[j] / sum);
        for (int64_t d = 0; d < D; ++d) oi[d] += w * v[j * C + h * D + d];
      }
    }
}

// ---- training: the loss and the backward ops --------------------------------------------

// out = aᵀ · b                            a [K, M], b [K, N] (or [N, K] when trans_b), out [M, N]
// Each out[i, j] is summed over k in order 0..K-1.
template <class T>
void matmul_at(const T* a, const T* b, bool trans_b, int64_t M, int64_t K, int64_t N, T* out) {
  for (int64_t i = 0; i < M * N; ++i) out[i] = 0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < M; ++i) {
      const T aki = a[k * M + i];
      T* o = out + i * N;
      if (trans_b)
        for (int64_t j = 0; j < N; ++j) o[j] += aki * b[j * K + k];
      else
        for (int64_t j = 0; j < N; ++j) o[j] += aki * b[k * N + j];
    }
}

// out = g with 0 where key j is in the future of query i   g [Tq, past + Tq]
template <class T>
void causal_zero(const T* g, int64_t Tq, int64_t S, int64_t past, T* out) {
  for (int64_t i = 0; i < Tq; ++i)
    for (int64_t j = 0; j < S; ++j) out[i * S + j] = j > past + i ? T(0) : g[i * S + j];
}

// out = zeros [M, W] with x [M, n] at columns [start, start + n)
template <class T>
void pad_cols(const T* x, int64_t M, int64_t n, int64_t start, int64_t W, T* out) {
  for (int64_t i = 0; i < M * W; ++i) out[i] = 0;
  place_cols(x, M, n, start, W, out);
}

// out = zeros [H, N] with x [m, N] at rows [start, start + m)
template <class T>
void pad_rows(const T* x, int64_t m, int64_t N, int64_t start, int64_t H, T* out) {
  for (int64_t i = 0; i < H * N; ++i) out[i] = 0;
  for (int64_t i = 0; i < m * N; ++i) out[start * N + i] = x[i];
}

// out[j] = sum over i of x[i, j]          x [M, N], out [N]
template <class T>
void sum_rows(const T* x, int64_t M, int64_t N, T* out) {
  for (int64_t j = 0; j < N; ++j) out[j] = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) out[j] += x[i * N + j];
}

// out[i, :] = x                           x [N], out [M, N]
template <class T>
void broadcast_rows(const T* x, int64_t M, int64_t N, T* out) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) out[i * N + j] = x[j];
}

// out = zeros [V, C]; out[ids[t], :] += dy[t, :] for t in order     dy [n, C]
template <class T>
void scatter_add_rows(const T* dy, const int32_t* ids, int64_t n, int64_t C, int64_t V, T* out) {
  for (int64_t i = 0; i < V * C; ++i) out[i] = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = ids[t];
    if (id < 0 || id >= V) fail("token id {} is out of range [0, {})", id, V);
    for (int64_t c = 0; c < C; ++c) out[int64_t(id) * C + c] += dy[t * C + c];
  }
}

// log(sum_j exp(row[j])), shifted by the row's maximum.
template <class T>
T log_sum_exp(const T* row, int64_t V) {
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < V; ++j) mx = row[j] > mx ? row[j] : mx;
  T sum = 0;
  for (int64_t j = 0; j < V; ++j) sum += std::exp(row[j] - mx);
  return mx + std::log(sum);
}

inline void check_target(int32_t t, int64_t V) {
  if (t < 0 || t >= V) fail("target id {} is out of range [0, {})", t, V);
}

// out[0] = mean over rows t of -log softmax(logits[t, :])[targets[t]]     logits [n, V]
template <class T>
void cross_entropy(const T* logits, const int32_t* targets, int64_t n, int64_t V, T* out) {
  T total = 0;
  for (int64_t t = 0; t < n; ++t) {
    check_target(targets[t], V);
    const T* row = logits + t * V;
    total += log_sum_exp(row, V) - row[targets[t]];
  }
  out[0] = total / T(n);
}

// out[t, :] = (softmax(logits[t, :]) - onehot(targets[t])) * dloss / n
template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, T dloss, int64_t n, int64_t V, T* out) {
  const T s = dloss / T(n);
  for (int64_t t = 0; t < n; ++t) {
    check_target(targets[t], V);
    const T* row = logits + t * V;
    const T lse = log_sum_exp(row, V);
    for (int64_t j = 0; j < V; ++j) out[t * V + j] = std::exp(row[j] - lse) * s;
    out[t * V + targets[t]] -= s;
  }
}

// Per row of x [M, N]: x̂ = (x - mean) / sqrt(var + eps) with the biased variance, r = 1/sqrt(var + eps).
template <class T>
void layernorm_stats(const T* row, int64_t N, double eps, T* mean, T* rstd) {
  T m = 0;
  for (int64_t j = 0; j < N; ++j) m += row[j];
  m /= T(N);
  T var = 0;
  for (int64_t j = 0; j < N; ++j) var += (row[j] - m) * (row[j] - m);
  var /= T(N);
  *mean = m;
  *rstd = T(1) / std::sqrt(var + T(eps));
}

// dx of y = x̂ · g + b:  dx = r · (dy·g - mean(dy·g) - x̂ · mean(dy·g · x̂))     x, dy, out [M, N]
template <class T>
void layernorm_backward(const T* x, const T* g, const T* dy, int64_t M, int64_t N, double eps, T* out) {
  for (int64_t i = 0; i < M; ++i) {
    const T* row = x + i * N;
    const T* d = dy + i * N;
    T mean, rstd;
    layernorm_stats(row, N, eps, &mean, &rstd);
    T m1 = 0, m2 = 0;
    for (int64_t j = 0; j < N; ++j) {
      const T dh = d[j] * g[j];
      m1 += dh;
      m2 += dh * (row[j] - mean) * rstd;
    }
    m1 /= T(N);
    m2 /= T(N);
    for (int64_t j = 0; j < N; ++j) out[i * N + j] = rstd * (d[j] * g[j] - m1 - (row[j] - mean) * rstd * m2);
  }
}

// out[j] = sum over rows i of dy[i, j] · x̂[i, j]     x, dy [M, N], out [N]
template <class T>
void layernorm_gain_grad(const T* x, const T* dy, int64_t M, int64_t N, double eps, T* out) {
  for (int64_t j = 0; j < N; ++j) out[j] = 0;
  for (int64_t i = 0; i < M; ++i) {
    const T* row = x + i * N;
    T mean, rstd;
    layernorm_stats(row, N, eps, &mean, &rstd);
    for (int64_t j = 0; j < N; ++j) out[j] += dy[i * N + j] * (row[j] - mean) * rstd;
  }
}

// act'(x), the derivative of activate(x, act).
template <class T>
T activate_grad(T x, Act act) {
  constexpr T kSqrt2OverPi = T(0.7978845608028654);
  auto sigmoid = [](T z) { return T(1) / (T(1) + std::exp(-z)); };
  switch (act) {
    case Act::GeluTanh: {
      const T u = kSqrt2OverPi * (x + T(0.044715) * x * x * x);
      const T th = std::tanh(u);
      return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * kSqrt2OverPi * (T(1) + T(3 * 0.044715) * x * x);
    }
    case Act::GeluErf:
      return T(0.5) * (T(1) + std::erf(x * T(0.7071067811865476))) + x * std::exp(T(-0.5) * x * x) * T(0.3989422804014327);
    case Act::Relu: return x > T(0) ? T(1) : T(0);
    case Act::Silu: {
      const T s = sigmoid(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case Act::QuickGelu: {
      const T s = sigmoid(T(1.702) * x);
      return s + T(1.702) * x * s * (T(1) - s);
    }
  }
  return T(1);
}

// out = dy · act'(x)                      n elements
template <class T>
void activation_backward(const T* x, const T* dy, int64_t n, Act act, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = dy[i] * activate_grad(x[i], act);
}

// out = y · (dy - rowsum(dy · y))         y = softmax(x), y, dy, out [M, N]
template <class T>
void softmax_backward(const T* y, const T* dy, int64_t M, int64_t N, T* out) {
  for (int64_t i = 0; i < M; ++i) {
    T dot = 0;
    for (int64_t j = 0; j < N; ++j) dot += dy[i * N + j] * y[i * N + j];
    for (int64_t j = 0; j < N; ++j) out[i * N + j] = y[i * N + j] * (dy[i * N + j] - dot);
  }
}

// The gradient of attention() for one sequence.   q, dy [Tq, C]; k, v [past + Tq, C];
// out [past + Tq, 3C] (row stride 3C) gets dq in rows past.. of columns [0, C), dk in [C, 2C),
// dv in [2C, 3C); out must be zero on entry. For query i and key j <= past + i, with
// p = softmax_j(q·k / sqrt(D)) and dp_j = dy_i · v_j:
//   dv_j += p_j dy_i;   ds_j = p_j (dp_j - sum_j' p_j' dp_j');   dq_i += ds_j k_j / sqrt(D);
//   dk_j += ds_j q_i / sqrt(D).          `scratch` holds 2 (past + Tq).
template <class T>
void attention_backward(const T* q, const T* k, const T* v, const T* dy, int64_t Tq, int64_t C, int64_t H,
                        int64_t past, T* scratch, T* out) {
  const int64_t D = C / H, W = 3 * C;
  const T scale = T(1) / std::sqrt(T(D));
  T* p = scratch;
  T* dp = scratch + past + Tq;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < Tq; ++i) {
      const int64_t n = past + i + 1;
      const T* qi = q + i * C + h * D;
      const T* di = dy + i * C + h * D;
      T mx = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < n; ++j) {
        T dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qi[d] * k[j * C + h * D + d];
        p[j] = dot * scale;
        mx = p[j] > mx ? p[j] : mx;
      }
      T sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        p[j] = std::exp(p[j] - mx);
        sum += p[j];
      }
      T pdp = 0;
      for (int64_t j = 0; j < n; ++j) {
        p[j] /= sum;
        T dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += di[d] * v[j * C + h * D + d];
        dp[j] = dot;
        pdp += p[j] * dot;
      }
      T* dqi = out + (past + i) * W + h * D;
      for (int64_t j = 0; j < n; ++j) {
        const T ds = p[j] * (dp[j] - pdp) * scale;
        T* dkj = out + j * W + C + h * D;
        T* dvj = out + j * W + 2 * C + h * D;
        for (int64_t d = 0; d < D; ++d) {
          dqi[d] += ds * k[j * C + h * D + d];
          dkj[d] += ds * qi[d];
          dvj[d] += p[j] * di[d];
        }
      }
    }
}

}  // namespace strand::kernels
