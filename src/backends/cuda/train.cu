// strand/backends/cuda/train.cu — the loss and the backward ops of the op table on the GPU.
//
// Same formulas as the reference (src/reference/kernels.h) and the cpu tier
// (src/backends/cpu/train_ops.cpp), in f32. No atomics: every sum runs in an order fixed by the
// shapes, so a training step is reproducible bit for bit. Column sums (a bias's gradient, a
// layer norm gain's) are two passes: blocks of kSumRows rows summed per column into scratch,
// then those partial sums added in order; a scattered embedding's rows give each column to one
// thread, which walks the ids in order. Row reductions are one block per row, tree-summed as
// the forward kernels do.
#include "backends/cuda/device_util.cuh"

namespace strand::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kSumRows = 128;                           // rows per partial column sum
constexpr int64_t kAttnBwdScratchBytes = int64_t(256) << 20;  // P and dS of the heads of one pass

#define GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

int row_threads(int64_t N) { return N >= 1024 ? 512 : N >= 256 ? 256 : 128; }

// Blocks of kThreads threads covering n columns, one thread each.
unsigned column_blocks(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

__global__ void causal_zero_kernel(const float* x, int64_t T, int64_t S, int64_t past, float* out) {
  GRID_STRIDE(idx, T * S) {
    const int64_t i = idx / S, j = idx % S;
    out[idx] = j > past + i ? 0.0f : x[idx];
  }
}

__global__ void pad_cols_kernel(const float* x, int64_t M, int64_t n, int64_t start, int64_t W, float* out) {
  GRID_STRIDE(idx, M * W) {
    const int64_t i = idx / W, j = idx % W - start;
    out[idx] = j >= 0 && j < n ? x[i * n + j] : 0.0f;
  }
}

__global__ void pad_rows_kernel(const float* x, int64_t m, int64_t N, int64_t start, int64_t L, float* out) {
  GRID_STRIDE(idx, L * N) {
    const int64_t i = idx / N - start, j = idx % N;
    out[idx] = i >= 0 && i < m ? x[i * N + j] : 0.0f;
  }
}

__global__ void broadcast_rows_kernel(const float* x, int64_t L, int64_t N, float* out) {
  GRID_STRIDE(idx, L * N) out[idx] = x[idx % N];
}

// Column sums, pass 1: block (column block, row chunk c) sums rows [c*kSumRows, ...) of each of
// its columns into part[c, j]. Term(i, j) is the summed element.
template <class Term>
__global__ void column_partials_kernel(Term term, int64_t M, int64_t N, float* part) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t c = blockIdx.y;
  if (j >= N) return;
  const int64_t i1 = (c + 1) * kSumRows < M ? (c + 1) * kSumRows : M;
  float s = 0.0f;
  for (int64_t i = c * kSumRows; i < i1; ++i) s += term(i, j);
  part[c * N + j] = s;
}

// Pass 2: out[j] = sum over chunks c = 0, 1, ... of part[c, j], in order.
__global__ void column_total_kernel(const float* part, int64_t chunks, int64_t N, float* out) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= N) return;
  float s = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) s += part[c * N + j];
  out[j] = s;
}

struct PlainTerm {
  const float* x;
  int64_t N;
  __device__ float operator()(int64_t i, int64_t j) const { return x[i * N + j]; }
};

struct GainTerm {  // dy · x̂, with each row's mean and 1/std in stats
  const float* x;
  const float* dy;
  const float* stats;
  int64_t N;
  __device__ float operator()(int64_t i, int64_t j) const {
    return dy[i * N + j] * (x[i * N + j] - stats[2 * i]) * stats[2 * i + 1];
  }
};

template <class Term>
void column_sums(const Term& term, int64_t M, int64_t N, float* part, float* out, cudaStream_t stream,
                 const char* what) {
  const int64_t chunks = column_sum_chunks(M);
  if (chunks > 65535) cuda_fail(what, 0, "too many rows for the column sums", __FILE__, __LINE__);
  column_partials_kernel<<<dim3(column_blocks(N), unsigned(chunks)), kThreads, 0, stream>>>(term, M, N, part);
  STRAND_CUDA_LAUNCHED(what);
  column_total_kernel<<<column_blocks(N), kThreads, 0, stream>>>(part, chunks, N, out);
  STRAND_CUDA_LAUNCHED(what);
}

__global__ void scatter_add_rows_kernel(const float* dy, const int32_t* ids, int64_t n, int64_t C, int64_t V,
                                        float* out) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t id = ids[t];
    if (id >= 0 && id < V) out[id * C + c] += dy[t * C + c];
  }
}

// One row's max and sum of exp(x - max), returned to every thread of the block.
__device__ __forceinline__ void row_softmax_stats(const float* row, int64_t V, float* red, float* mx, float* sum) {
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_reduce<true>(m, red);
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(row[j] - m);
  *sum = block_reduce<false>(s, red);
  *mx = m;
}

// -log softmax(row)[target] = (max - row[target]) + log(sum_j exp(row[j] - max)): no p rounds to 0.
__global__ void cross_entropy_rows_kernel(const float* logits, const int32_t* targets, int64_t V, float* rows) {
  __shared__ float red[32];
  const float* row = logits + int64_t(blockIdx.x) * V;
  float mx, sum;
  row_softmax_stats(row, V, red, &mx, &sum);
  if (threadIdx.x != 0) return;
  const int64_t t = targets[blockIdx.x];
  rows[blockIdx.x] = t >= 0 && t < V ? (mx - row[t]) + logf(sum) : NAN;
}

// The mean of n row losses in double: thread k sums rows k, k + blockDim, ... in order, then a
// fixed tree over the threads.
__global__ void mean_kernel(const float* rows, int64_t n, float* out) {
  __shared__ double part[kThreads];
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += double(rows[i]);
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if (int(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = float(part[0] / double(n));
}

__global__ void cross_entropy_backward_kernel(const float* logits, const int32_t* targets, const float* dloss,
                                              int64_t n, int64_t V, float* out) {
  __shared__ float red[32];
  const float* row = logits + int64_t(blockIdx.x) * V;
  float* o = out + int64_t(blockIdx.x) * V;
  float mx, sum;
  row_softmax_stats(row, V, red, &mx, &sum);
  const float s = dloss[0] / float(n);
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) o[j] = expf(row[j] - mx) / sum * s;
  __syncthreads();
  const int64_t t = targets[blockIdx.x];
  if (threadIdx.x == 0) {
    if (t >= 0 && t < V)
      o[t] -= s;
    else
      o[0] = NAN;  // the loss of this row is NaN too
  }
}

__global__ void layernorm_backward_kernel(const float* x, const void* g, Elem ge, const float* dy, int64_t N, float eps,
                                          float* out) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const float* row = x + r * N;
  const float* d = dy + r * N;
  float* o = out + r * N;
  float mean, rstd;
  row_norm_stats(row, N, eps, red, &mean, &rstd);
  float m1 = 0, m2 = 0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    const float dh = d[j] * load_elem(g, ge, j);
    m1 += dh;
    m2 += dh * (row[j] - mean) * rstd;
  }
  m1 = block_reduce<false>(m1, red) / float(N);
  m2 = block_reduce<false>(m2, red) / float(N);
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x)
    o[j] = rstd * (d[j] * load_elem(g, ge, j) - m1 - (row[j] - mean) * rstd * m2);
}

__global__ void layernorm_stats_kernel(const float* x, int64_t N, float eps, float* stats) {
  __shared__ float red[32];
  float mean, rstd;
  row_norm_stats(x + int64_t(blockIdx.x) * N, N, eps, red, &mean, &rstd);
  if (threadIdx.x == 0) {
    stats[2 * int64_t(blockIdx.x)] = mean;
    stats[2 * int64_t(blockIdx.x) + 1] = rstd;
  }
}


// act'(x) for strand::Act: 0 gelu_tanh, 1 gelu_erf, 2 relu, 3 silu, 4 quick_gelu.
__device__ __forceinline__ float activate_grad(float x, int act) {
  switch (act) {
    case 0: {
      const float k = 0.7978845608028654f;
      const float th = tanhf(k * (x + 0.044715f * x * x * x));
      return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * k * (1.0f + 3.0f * 0.044715f * x * x);
    }
    case 1: return 0.5f * (1.0f + erff(x * 0.7071067811865476f)) + x * expf(-0.5f * x * x) * 0.3989422804014327f;
    case 2: return x > 0.0f ? 1.0f : 0.0f;
    case 3: {
      const float s = 1.0f / (1.0f + expf(-x));
      return s * (1.0f + x * (1.0f - s));
    }
    case 4: {
      const float s = 1.0f / (1.0f + expf(-1.702f * x));
      return s + 1.702f * x * s * (1.0f - s);
    }
  }
  return 1.0f;
}

__global__ void activation_backward_kernel(const float* x, const float* dy, int64_t n, int act, float* out) {
  GRID_STRIDE(i, n) out[i] = dy[i] * activate_grad(x[i], act);
}

__global__ void softmax_backward_kernel(const float* y, const float* dy, int64_t N, float* out) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const float* yr = y + r * N;
  const float* d = dy + r * N;
  float dot = 0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) dot += d[j] * yr[j];
  dot = block_reduce<false>(dot, red);
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) out[r * N + j] = yr[j] * (d[j] - dot);
}

// ---- attention's gradient, one sequence at a time ---------------------------------------------
//
// Rows (block per head and query i): the scores of query i against its n = past + i + 1 keys
// (a warp per key, lanes over the head's dims), their softmax P, dP = dy_i · v_j, and the
// scores' gradient dS = P (dP - sum P dP) · scale, both rows kept in global scratch; then
// dq_i = dS · k. Columns (block per head and key j, a thread per dim): dk_j = sum_i dS[i, j] q_i
// and dv_j = sum_i P[i, j] dy_i over the queries that see key j, in query order.

constexpr int kRowThreads = 128;

__global__ void __launch_bounds__(kRowThreads) attn_bwd_rows_kernel(AttnArgs a, int h0, const float* dy, float* P,
                                                                     float* dS, float* out) {
  extern __shared__ float sh[];  // q_i [D], dy_i [D]
  __shared__ float red[32];
  const int hs = blockIdx.x;  // the head's slot in this pass's scratch
  const int h = h0 + hs;
  const int64_t i = blockIdx.y;
  const int64_t D = a.D, C = a.C, L = a.past + a.T, W = 3 * C, col = int64_t(h) * D, n = a.past + i + 1;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  float* qi = sh;
  float* di = sh + D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    qi[d] = a.q[i * C + col + d];
    di[d] = dy[i * C + col + d];
  }
  __syncthreads();
  float* prow = P + (int64_t(hs) * a.T + i) * L;
  float* srow = dS + (int64_t(hs) * a.T + i) * L;
  for (int64_t j = warp; j < n; j += warps) {
    const float* kj = a.k + j * C + col;
    const float* vj = a.v + j * C + col;
    float s = 0, dp = 0;
    for (int64_t d = lane; d < D; d += 32) {
      s += qi[d] * kj[d];
      dp += di[d] * vj[d];
    }
    s = warp_sum(s);
    dp = warp_sum(dp);
    if (lane == 0) {
      prow[j] = s * a.scale;
      srow[j] = dp;
    }
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, prow[j]);
  mx = block_reduce<true>(mx, red);
  float sum = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float e = expf(prow[j] - mx);
    prow[j] = e;
    sum += e;
  }
  sum = block_reduce<false>(sum, red);
  float pdp = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float p = prow[j] / sum;
    prow[j] = p;
    pdp += p * srow[j];
  }
  pdp = block_reduce<false>(pdp, red);
  for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
    if (j < n) {
      srow[j] = prow[j] * (srow[j] - pdp) * a.scale;
    } else {  // keys this query does not see: zeros, so the column kernel may read whole columns
      prow[j] = 0.0f;
      srow[j] = 0.0f;
    }
  }
  __syncthreads();
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0;
    for (int64_t j = 0; j < n; ++j) acc += srow[j] * a.k[j * C + col + d];
    out[(a.past + i) * W + col + d] = acc;
  }
}

__global__ void attn_bwd_cols_kernel(AttnArgs a, int h0, const float* dy, const float* P, const float* dS,
                                     float* out) {
  const int hs = blockIdx.x;
  const int h = h0 + hs;
  const int64_t j = blockIdx.y;
  const int64_t d = threadIdx.x;
  const int64_t D = a.D, C = a.C, L = a.past + a.T, W = 3 * C, col = int64_t(h) * D;
  if (d >= D) return;
  const int64_t i0 = j > a.past ? j - a.past : 0;  // the first query that sees key j
  float dk = 0, dv = 0;
  for (int64_t i = i0; i < a.T; ++i) {
    const int64_t r = (int64_t(hs) * a.T + i) * L + j;
    dk += dS[r] * a.q[i * C + col + d];
    dv += P[r] * dy[i * C + col + d];
  }
  out[j * W + C + col + d] = dk;
  out[j * W + 2 * C + col + d] = dv;
}

// The host's adamw_element operation for operation, each rounded on its own (no fused
// multiply-adds, IEEE division and square root): the same bits as the host's update.
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, AdamWArgs a) {
  GRID_STRIDE(i, n) {
    const float gs = __fmul_rn(g[i], a.grad_scale);
    const float mi = __fadd_rn(__fmul_rn(a.beta1, m[i]), __fmul_rn(__fsub_rn(1.0f, a.beta1), gs));
    const float vi = __fadd_rn(__fmul_rn(a.beta2, v[i]), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, a.beta2), gs), gs));
    m[i] = mi;
    v[i] = vi;
    const float den = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bc2_sqrt), a.eps);
    p[i] = __fsub_rn(__fmul_rn(p[i], a.decay), __fmul_rn(a.step_size, __fdiv_rn(mi, den)));
  }
}

constexpr int64_t kSquareBlock = 4096;

// A fixed tree over the block's 256 threads, in double.
__device__ __forceinline__ double block_sum_double(double s, double* part) {
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if (int(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  return part[0];
}

__global__ void sum_squares_kernel(const float* x, int64_t n, double* out) {
  __shared__ double part[kThreads];
  const int64_t b0 = int64_t(blockIdx.x) * kSquareBlock;
  const int64_t b1 = b0 + kSquareBlock < n ? b0 + kSquareBlock : n;
  double s = 0;
  for (int64_t i = b0 + threadIdx.x; i < b1; i += blockDim.x) s += double(x[i]) * double(x[i]);
  const double total = block_sum_double(s, part);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

__global__ void sum_in_order_kernel(const double* in, int64_t n, double* out) {
  __shared__ double part[kThreads];
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += in[i];
  const double total = block_sum_double(s, part);
  if (threadIdx.x == 0) out[0] = total;
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWArgs& a, cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(p, g, m, v, n, a);
  STRAND_CUDA_LAUNCHED("adamw_update");
}

int64_t sum_squares_blocks(int64_t n) { return (n + kSquareBlock - 1) / kSquareBlock; }

void sum_squares_partials(const float* x, int64_t n, double* part, cudaStream_t stream) {
  const int64_t blocks = sum_squares_blocks(n);
  if (blocks == 0) return;
  if (blocks > 0x7fffffff) cuda_fail("sum_squares", 0, "too many elements", __FILE__, __LINE__);
  sum_squares_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(x, n, part);
  STRAND_CUDA_LAUNCHED("sum_squares");
}

void sum_in_order(const double* part, int64_t n, double* out, cudaStream_t stream) {
  sum_in_order_kernel<<<1, kThreads, 0, stream>>>(part, n, out);
  STRAND_CUDA_LAUNCHED("sum_in_order");
}

void causal_zero(const float* x, int64_t T, int64_t S, int64_t past, float* out, cudaStream_t stream) {
  if (T * S == 0) return;
  causal_zero_kernel<<<grid_for(T * S, kThreads), kThreads, 0, stream>>>(x, T, S, past, out);
  STRAND_CUDA_LAUNCHED("causal_zero");
}

void pad_cols(const float* x, int64_t M, int64_t n, int64_t start, int64_t W, float* out, cudaStream_t stream) {
  if (M * W == 0) return;
  pad_cols_kernel<<<grid_for(M * W, kThreads), kThreads, 0, stream>>>(x, M, n, start, W, out);
  STRAND_CUDA_LAUNCHED("pad_cols");
}

void pad_rows(const float* x, int64_t m, int64_t N, int64_t start, int64_t L, float* out, cudaStream_t stream) {
  if (L * N == 0) return;
  pad_rows_kernel<<<grid_for(L * N, kThreads), kThreads, 0, stream>>>(x, m, N, start, L, out);
  STRAND_CUDA_LAUNCHED("pad_rows");
}

int64_t column_sum_chunks(int64_t M) { return M <= 0 ? 1 : (M + kSumRows - 1) / kSumRows; }

void sum_rows(const float* x, int64_t M, int64_t N, float* part, float* out, cudaStream_t stream) {
  if (N == 0) return;
  if (M == 0) {
    STRAND_CUDA(cudaMemsetAsync(out, 0, size_t(N) * sizeof(float), stream));
    return;
  }
  column_sums(PlainTerm{x, N}, M, N, part, out, stream, "sum_rows");
}

void broadcast_rows(const float* x, int64_t L, int64_t N, float* out, cudaStream_t stream) {
  if (L * N == 0) return;
  broadcast_rows_kernel<<<grid_for(L * N, kThreads), kThreads, 0, stream>>>(x, L, N, out);
  STRAND_CUDA_LAUNCHED("broadcast_rows");
}

void scatter_add_rows(const float* dy, const int32_t* ids, int64_t n, int64_t C, int64_t V, float* out,
                      cudaStream_t stream) {
  if (V * C == 0) return;
  STRAND_CUDA(cudaMemsetAsync(out, 0, size_t(V * C) * sizeof(float), stream));
  if (n == 0) return;
  scatter_add_rows_kernel<<<column_blocks(C), kThreads, 0, stream>>>(dy, ids, n, C, V, out);
  STRAND_CUDA_LAUNCHED("scatter_add_rows");
}

void cross_entropy(const float* logits, const int32_t* targets, int64_t n, int64_t V, float* rows, float* out,
                   cudaStream_t stream) {
  if (n == 0 || V == 0) {
    STRAND_CUDA(cudaMemsetAsync(out, 0xff, sizeof(float), stream));  // NaN: the mean of nothing
    return;
  }
  cross_entropy_rows_kernel<<<unsigned(n), row_threads(V), 0, stream>>>(logits, targets, V, rows);
  STRAND_CUDA_LAUNCHED("cross_entropy");
  mean_kernel<<<1, kThreads, 0, stream>>>(rows, n, out);
  STRAND_CUDA_LAUNCHED("cross_entropy (mean)");
}

void cross_entropy_backward(const float* logits, const int32_t* targets, const float* dloss, int64_t n, int64_t V,
                            float* out, cudaStream_t stream) {
  if (n == 0 || V == 0) return;
  cross_entropy_backward_kernel<<<unsigned(n), row_threads(V), 0, stream>>>(logits, targets, dloss, n, V, out);
  STRAND_CUDA_LAUNCHED("cross_entropy_backward");
}

void layernorm_backward(const float* x, const void* g, Elem ge, const float* dy, int64_t M, int64_t N, float eps,
                        float* out, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  layernorm_backward_kernel<<<unsigned(M), row_threads(N), 0, stream>>>(x, g, ge, dy, N, eps, out);
  STRAND_CUDA_LAUNCHED("layernorm_backward");
}

void layernorm_gain_grad(const float* x, const float* dy, int64_t M, int64_t N, float eps, float* stats, float* part,
                         float* out, cudaStream_t stream) {
  if (N == 0) return;
  if (M == 0) {
    STRAND_CUDA(cudaMemsetAsync(out, 0, size_t(N) * sizeof(float), stream));
    return;
  }
  layernorm_stats_kernel<<<unsigned(M), row_threads(N), 0, stream>>>(x, N, eps, stats);
  STRAND_CUDA_LAUNCHED("layernorm_gain_grad (stats)");
  column_sums(GainTerm{x, dy, stats, N}, M, N, part, out, stream, "layernorm_gain_grad");
}

void activation_backward(const float* x, const float* dy, int64_t n, int act, float* out, cudaStream_t stream) {
  if (n == 0) return;
  activation_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, dy, n, act, out);
  STRAND_CUDA_LAUNCHED("activation_backward");
}

void softmax_backward(const float* y, const float* dy, int64_t M, int64_t N, float* out, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  softmax_backward_kernel<<<unsigned(M), row_threads(N), 0, stream>>>(y, dy, N, out);
  STRAND_CUDA_LAUNCHED("softmax_backward");
}

namespace {

// Heads whose P and dS fit kAttnBwdScratchBytes together (at least one).
int64_t heads_per_pass(const AttnArgs& a) {
  const int64_t per_head = 2 * a.T * (a.past + a.T) * int64_t(sizeof(float));
  const int64_t h = per_head > 0 ? kAttnBwdScratchBytes / per_head : a.H;
  return h < 1 ? 1 : h > a.H ? a.H : h;
}

}  // namespace

int64_t attention_backward_scratch(const AttnArgs& a) { return 2 * heads_per_pass(a) * a.T * (a.past + a.T); }

void attention_backward(const AttnArgs& a, const float* dy, float* scratch, float* out, cudaStream_t stream) {
  const int64_t L = a.past + a.T, W = 3 * a.C;
  if (a.seqs * L * W == 0) return;
  STRAND_CUDA(cudaMemsetAsync(out, 0, size_t(a.seqs * L * W) * sizeof(float), stream));  // dq above row past
  if (a.T == 0 || a.H == 0 || a.D == 0) return;
  if (a.D > kAttnMaxD) cuda_fail("attention_backward", 0, "head size above 256", __FILE__, __LINE__);
  if (L > 65535) cuda_fail("attention_backward", 0, "more than 65535 queries or keys", __FILE__, __LINE__);
  const int64_t hp = heads_per_pass(a);
  float* P = scratch;
  float* dS = scratch + hp * a.T * L;
  const int col_threads = int((a.D + 31) / 32 * 32);
  for (int64_t s = 0; s < a.seqs; ++s)
    for (int64_t h0 = 0; h0 < a.H; h0 += hp) {
      const int64_t hn = a.H - h0 < hp ? a.H - h0 : hp;
      AttnArgs one = a;
      one.q += s * a.T * a.C;
      one.k += s * L * a.C;
      one.v += s * L * a.C;
      one.seqs = 1;
      const float* d = dy + s * a.T * a.C;
      float* o = out + s * L * W;
      attn_bwd_rows_kernel<<<dim3(unsigned(hn), unsigned(a.T)), kRowThreads, size_t(2 * a.D) * sizeof(float),
                             stream>>>(one, int(h0), d, P, dS, o);
      STRAND_CUDA_LAUNCHED("attention_backward (rows)");
      attn_bwd_cols_kernel<<<dim3(unsigned(hn), unsigned(L)), col_threads, 0, stream>>>(one, int(h0), d, P, dS, o);
      STRAND_CUDA_LAUNCHED("attention_backward (columns)");
    }
}

}  // namespace strand::cuda
