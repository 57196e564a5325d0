#include "backends/cpu/train_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/cpu/gemm.h"
#include "backends/cpu/threadpool.h"
#include "core/error.h"
#include "reference/kernels.h"

namespace strand::cpu {

namespace {

// Work below this many elements runs on the calling thread.
constexpr int64_t kMinParallel = 16384;

int64_t min_len_for(int64_t per_item) { return std::max<int64_t>(1, kMinParallel / std::max<int64_t>(1, per_item)); }

}  // namespace

void sum_rows(const float* x, int64_t M, int64_t N, float* out, ThreadPool* pool) {
  // Columns are split over the threads; every column is summed over rows 0..M-1 in order.
  parallel_ranges(pool, N, 16, min_len_for(M), [&](int64_t j0, int64_t j1) {
    float* o = out + j0;
    const int64_t w = j1 - j0;
    for (int64_t j = 0; j < w; ++j) o[j] = 0.0f;
    for (int64_t i = 0; i < M; ++i) {
      const float* r = x + i * N + j0;
      for (int64_t j = 0; j < w; ++j) o[j] += r[j];
    }
  });
}

void scatter_add_rows(const float* dy, const int32_t* ids, int64_t n, int64_t C, int64_t V, float* out,
                      ThreadPool* pool) {
  for (int64_t t = 0; t < n; ++t)
    if (ids[t] < 0 || ids[t] >= V) fail("token id {} is out of range [0, {})", ids[t], V);
  // Zero the table by rows, then add by column ranges (each thread adds every t into its columns).
  parallel_ranges(pool, V, 1, min_len_for(C), [&](int64_t r0, int64_t r1) {
    std::memset(out + r0 * C, 0, size_t((r1 - r0) * C) * sizeof(float));
  });
  parallel_ranges(pool, C, 16, min_len_for(n), [&](int64_t c0, int64_t c1) {
    const int64_t w = c1 - c0;
    for (int64_t t = 0; t < n; ++t) {
      float* o = out + int64_t(ids[t]) * C + c0;
      const float* d = dy + t * C + c0;
      for (int64_t j = 0; j < w; ++j) o[j] += d[j];
    }
  });
}

namespace {

// One row's softmax into p (vectorised kernel) and its -log p[target]. With m the row's maximum
// at index a, p[a] = 1 / sum_j exp(x_j - m) never underflows, so
//   -log p[target] = (m - x[target]) - log p[a]
// keeps full precision even where p[target] itself would round to 0.
double row_xent(const Kernels& k, const float* row, int64_t V, int32_t target, float* p) {
  int64_t am = 0;
  for (int64_t j = 1; j < V; ++j)
    if (row[j] > row[am]) am = j;
  k.softmax(row, 1, V, p);
  return double(row[am]) - double(row[target]) - std::log(double(p[am]));
}

void check_targets(const int32_t* targets, int64_t n, int64_t V) {
  for (int64_t t = 0; t < n; ++t)
    if (targets[t] < 0 || targets[t] >= V) fail("target id {} is out of range [0, {})", targets[t], V);
}

}  // namespace

void cross_entropy(const Kernels& k, const float* logits, const int32_t* targets, int64_t n, int64_t V, float* out,
                   ThreadPool* pool) {
  check_targets(targets, n, V);
  // Per-row losses first (any split), then one sum in row order: the same result on any thread count.
  std::vector<double> loss(static_cast<size_t>(n));
  const int threads = pool ? pool->size() : 1;
  std::vector<std::vector<float>> p(static_cast<size_t>(threads));
  parallel_ranges_t(pool, n, 1, min_len_for(V), [&](int th, int64_t t0, int64_t t1) {
    std::vector<float>& buf = p[size_t(th)];
    buf.resize(size_t(V));
    for (int64_t t = t0; t < t1; ++t) loss[size_t(t)] = row_xent(k, logits + t * V, V, targets[t], buf.data());
  });
  double total = 0;
  for (double l : loss) total += l;
  out[0] = float(total / double(n));
}

void cross_entropy_backward(const Kernels& k, const float* logits, const int32_t* targets, float dloss, int64_t n,
                            int64_t V, float* out, ThreadPool* pool) {
  check_targets(targets, n, V);
  const float s = dloss / float(n);
  parallel_ranges(pool, n, 1, min_len_for(V), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* o = out + t * V;
      k.softmax(logits + t * V, 1, V, o);
      k.scale(o, V, s, o);
      o[targets[t]] -= s;
    }
  });
}

namespace {

// Mean and 1/sqrt(var + eps) of one row, accumulated in double (as the forward kernel does).
void row_stats(const float* x, int64_t N, float eps, float* mean, float* rstd) {
  double sum = 0;
  for (int64_t j = 0; j < N; ++j) sum += x[j];
  const double m = sum / double(N);
  double ss = 0;
  for (int64_t j = 0; j < N; ++j) ss += (double(x[j]) - m) * (double(x[j]) - m);
  *mean = float(m);
  *rstd = float(1.0 / std::sqrt(ss / double(N) + double(eps)));
}

}  // namespace

void layernorm_backward(const float* x, const float* g, const float* dy, int64_t M, int64_t N, float eps, float* out,
                        ThreadPool* pool) {
  parallel_ranges(pool, M, 1, min_len_for(N), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const float* xr = x + i * N;
      const float* d = dy + i * N;
      float mean, rstd;
      row_stats(xr, N, eps, &mean, &rstd);
      float m1 = 0, m2 = 0;
      for (int64_t j = 0; j < N; ++j) {
        const float dh = d[j] * g[j];
        m1 += dh;
        m2 += dh * (xr[j] - mean) * rstd;
      }
      m1 /= float(N);
      m2 /= float(N);
      float* o = out + i * N;
      for (int64_t j = 0; j < N; ++j) o[j] = rstd * (d[j] * g[j] - m1 - (xr[j] - mean) * rstd * m2);
    }
  });
}

void layernorm_gain_grad(const float* x, const float* dy, int64_t M, int64_t N, float eps, float* out,
                         ThreadPool* pool) {
  std::vector<float> mean(static_cast<size_t>(M)), rstd(static_cast<size_t>(M));
  parallel_ranges(pool, M, 1, min_len_for(N), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) row_stats(x + i * N, N, eps, &mean[size_t(i)], &rstd[size_t(i)]);
  });
  parallel_ranges(pool, N, 16, min_len_for(M), [&](int64_t j0, int64_t j1) {
    const int64_t w = j1 - j0;
    float* o = out + j0;
    for (int64_t j = 0; j < w; ++j) o[j] = 0.0f;
    for (int64_t i = 0; i < M; ++i) {
      const float* xr = x + i * N + j0;
      const float* d = dy + i * N + j0;
      const float m = mean[size_t(i)], r = rstd[size_t(i)];
      for (int64_t j = 0; j < w; ++j) o[j] += d[j] * (xr[j] - m) * r;
    }
  });
}

void activation_backward(const Kernels& k, const float* x, const float* dy, int64_t n, Act act, float* out,
                         ThreadPool* pool) {
  parallel_ranges(pool, n, 64, kMinParallel / 4,
                  [&](int64_t s, int64_t e) { k.activation_backward(x + s, dy + s, e - s, act, out + s); });
}

void softmax_backward(const float* y, const float* dy, int64_t M, int64_t N, float* out, ThreadPool* pool) {
  parallel_ranges(pool, M, 1, min_len_for(N), [&](int64_t r0, int64_t r1) {
    kernels::softmax_backward(y + r0 * N, dy + r0 * N, r1 - r0, N, out + r0 * N);
  });
}

void attention_backward(const Kernels& k, const AttnArgs& a, const float* dy, int64_t seqs, float* out,
                        ThreadPool* pool, std::vector<std::vector<float>>& scratch) {
  const int64_t T = a.T, C = a.C, D = a.D, H = a.H, keys = a.past + T, W = 3 * C;
  const int threads = pool ? pool->size() : 1;
  if (scratch.size() < size_t(threads)) scratch.resize(size_t(threads));
  for (auto& s : scratch)
    if (s.size() < size_t(2 * T * keys)) s.resize(size_t(2 * T * keys));
  // A unit is (sequence, head); small products run on the unit's thread (pool = nullptr).
  auto product = [](const float* A, int64_t lda, bool ta, const float* B, int64_t ldb, bool tb, int64_t M,
                    int64_t N, int64_t K, float* Cm, int64_t ldc) {
    GemmArgs g;
    g.M = M;
    g.N = N;
    g.K = K;
    g.A = A;
    g.lda = lda;
    g.trans_a = ta;
    g.B = B;
    g.ldb = ldb;
    g.trans_b = tb;
    g.C = Cm;
    g.ldc = ldc;
    gemm(g, nullptr);
  };
  const int64_t per_unit = 5 * T * keys * D;
  parallel_ranges_t(pool, seqs * H, 1, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, per_unit)),
                    [&](int th, int64_t u0, int64_t u1) {
    float* P = scratch[size_t(th)].data();  // [T, keys] probabilities
    float* dP = P + T * keys;                // [T, keys] dy·vᵀ, then the scores' gradient
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t s = u / H, h = u % H;
      const float* q = a.q + s * T * C + h * D;
      const float* kk = a.k + s * keys * C + h * D;
      const float* v = a.v + s * keys * C + h * D;
      const float* d = dy + s * T * C + h * D;
      float* o = out + s * keys * W + h * D;
      // P = softmax(q·kᵀ · scale) over each query's visible keys, zero beyond them.
      product(q, C, false, kk, C, true, T, keys, D, P, keys);
      for (int64_t i = 0; i < T; ++i) {
        float* row = P + i * keys;
        const int64_t n = a.past + i + 1;
        k.scale(row, n, a.scale, row);
        k.softmax(row, 1, n, row);
        for (int64_t j = n; j < keys; ++j) row[j] = 0.0f;
      }
      // dP = dy·vᵀ, then dS = P ∘ (dP - rowsum(P ∘ dP)) · scale, in place.
      product(d, C, false, v, C, true, T, keys, D, dP, keys);
      for (int64_t i = 0; i < T; ++i) {
        const float* p = P + i * keys;
        float* r = dP + i * keys;
        const int64_t n = a.past + i + 1;
        float dot = 0;
        for (int64_t j = 0; j < n; ++j) dot += p[j] * r[j];
        for (int64_t j = 0; j < n; ++j) r[j] = p[j] * (r[j] - dot) * a.scale;
        for (int64_t j = n; j < keys; ++j) r[j] = 0.0f;
      }
      // dv = Pᵀ·dy [keys, D], dq = dS·k [T, D] (rows past..), dk = dSᵀ·q [keys, D].
      product(P, keys, true, d, C, false, keys, D, T, o + 2 * C, W);
      product(dP, keys, false, kk, C, false, T, D, keys, o + a.past * W, W);
      product(dP, keys, true, q, C, false, keys, D, T, o + C, W);
      for (int64_t i = 0; i < a.past; ++i) std::memset(o + i * W, 0, size_t(D) * sizeof(float));
    }
  });
}

}  // namespace strand::cpu
