// strand/backends/cuda/kernels.h — the cuda tier's kernels, as the host calls them.
//
// One file per job, named as in the cpu tier: embedding.cu (gather_rows), elementwise.cu
// (add, scale, causal mask, column copies, dtype conversion, fill), layernorm.cu,
// activation.cu, softmax.cu, attention.cu (fused causal attention: exact f32 for any query
// count, flash-style tensor-core prefill), gemm.cu (cuBLASLt products and strand's GEMV),
// train.cu (the loss and the backward ops).
// Every launcher queues work on `stream` and returns; none synchronizes, none allocates, so a
// sequence of them can be captured into a CUDA graph. Pointers are device pointers, arrays
// contiguous and row-major unless a stride says otherwise; shapes are in the comments.
// This header is plain C++ (no CUDA syntax): the backend's .cpp files include it too.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace strand::cuda {

// Element types the kernels read.
enum class Elem : int { F32 = 0, F16 = 1, BF16 = 2 };

// Stops with a strand::Error naming the call, file and line (context.cpp).
[[noreturn]] void cuda_fail(const char* call, int code, const char* message, const char* file, int line);
// Checks the last launch (cudaGetLastError).
void check_launch(const char* kernel, const char* file, int line);

#define STRAND_CUDA(call)                                                                   \
  do {                                                                                      \
    const cudaError_t strand_cuda_err_ = (call);                                            \
    if (strand_cuda_err_ != cudaSuccess)                                                    \
      ::strand::cuda::cuda_fail(#call, int(strand_cuda_err_), cudaGetErrorString(strand_cuda_err_), __FILE__, __LINE__); \
  } while (0)
#define STRAND_CUDA_LAUNCHED(name) ::strand::cuda::check_launch(name, __FILE__, __LINE__)

// ---- embedding.cu ----------------------------------------------------------------------------
// out[t, :] = table[ids[t], :] widened to f32     table [V, C] (f32/f16/bf16), ids [n], out [n, C]
// An id outside [0, V) writes a row of NaN (the host checks ids before they reach the device).
void gather_rows(const void* table, Elem te, int64_t V, int64_t C, const int32_t* ids, int64_t n, float* out,
                 cudaStream_t stream);

// ---- elementwise.cu --------------------------------------------------------------------------
// out = a + b      a [M, N] f32; b [M, N] f32, or one row [N] (f32/f16/bf16) added to every row
void add(const float* a, const void* b, Elem be, bool b_is_row, int64_t M, int64_t N, float* out,
         cudaStream_t stream);
// out = x * s      n elements
void scale(const float* x, int64_t n, float s, float* out, cudaStream_t stream);
// out = s with -inf where key j > past + i        s, out [T, S]
void causal_mask(const float* s, int64_t T, int64_t S, int64_t past, float* out, cudaStream_t stream);
// out[i, out_col + j] = x[i, x_col + j] for i < M, j < n (slices and concatenation)
//   x rows of ld_x floats, out rows of ld_out floats
void copy_cols(const float* x, int64_t ld_x, int64_t x_col, int64_t M, int64_t n, float* out, int64_t ld_out,
               int64_t out_col, cudaStream_t stream);
// out[i] = x[i] rounded to f16/bf16 (nearest even)      n elements
void to_half(const float* x, int64_t n, Elem to, void* out, cudaStream_t stream);
// out[i] = x[i] widened to f32                          n elements of f32/f16/bf16
void to_f32(const void* x, Elem from, int64_t n, float* out, cudaStream_t stream);

// ---- layernorm.cu ----------------------------------------------------------------------------
// out[i, :] = (x[i, :] - mean) / sqrt(var + eps) * g + b     x, out [M, N] f32; g, b [N]
void layernorm(const float* x, const void* g, Elem ge, const void* b, Elem be, int64_t M, int64_t N, float eps,
               float* out, cudaStream_t stream);

// ---- activation.cu ---------------------------------------------------------------------------
// out = act(x), act numbered as strand::Act (gelu_tanh, gelu_erf, relu, silu, quick_gelu)
void activation(const float* x, int64_t n, int act, float* out, cudaStream_t stream);

// ---- softmax.cu ------------------------------------------------------------------------------
// out[i, :] = softmax(x[i, :])      x, out [M, N]
void softmax(const float* x, int64_t M, int64_t N, float* out, cudaStream_t stream);

// ---- attention.cu ----------------------------------------------------------------------------
// Causal multi-head attention: q [T, C], k and v [past + T, C], out [T, C]; head h uses
// columns [h*D, (h+1)*D); query i attends to keys 0 .. past + i with softmax(q·k · scale).
// With seqs > 1 (a training batch), q and out are seqs blocks of T rows and k, v seqs blocks
// of past + T rows, each sequence attending only to its own keys.
struct AttnArgs {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  float* out = nullptr;
  int64_t T = 0, C = 0, H = 0, D = 0, past = 0, seqs = 1;
  float scale = 1;
};
// Exact f32 (any T, D <= kAttnMaxD, any seqs): one block per (head, query, sequence); its
// warps take keys in turn, each keeping an online softmax over its keys, merged at the end.
// The decode kernel, and training's forward.
constexpr int64_t kAttnMaxD = 256;
void attention_f32(const AttnArgs& a, cudaStream_t stream);
// Flash-style prefill on tensor cores (one sequence, D a multiple of 16, at most kFlashMaxD): blocks of 64
// queries of one head sweep the keys in tiles of 64 with an online softmax; q, k, v and the
// probabilities are rounded to `tc` (f16 or bf16), scores and sums are f32.
constexpr int64_t kFlashMaxD = 128;
bool attention_flash_fits(int64_t D);
void attention_flash(const AttnArgs& a, Elem tc, cudaStream_t stream);

// ---- gemm.cu (strand's own kernels; cuBLASLt lives in gemm.h) ---------------------------------
// y[M, N] = x[M, K] · B (+ bias[N]) for a few rows (decode), in f32 with B widened: B is f32,
// f16 or bf16, either as N lines of K values (lines = true: a column-major [K, N] weight, or a
// trans_b [N, K] one) or as K rows of N values. One warp per output column (lines) or one
// thread per column (rows). M <= kGemvMaxRows.
constexpr int64_t kGemvMaxRows = 4;
void gemv(const float* x, int64_t M, int64_t K, const void* B, Elem be, bool lines, int64_t N, const float* bias,
          float* y, cudaStream_t stream);
// Any shape cuBLASLt declines: y[M, N] = A[M, K] · B (+ bias), A and B both in `e` (f32, f16
// or bf16; B as lines or rows, as for gemv; A as K rows of M with `a_trans`), products summed
// in f32, one thread per output.
void gemm_fallback(const void* A, const void* B, Elem e, bool lines, int64_t M, int64_t N, int64_t K,
                   const float* bias, float* C, cudaStream_t stream, bool a_trans = false);
// The GEMM ladder's own rungs (bench gemm): f32, C[M, N] = A[M, K] · B[K, N], all row-major.
void gemm_naive_f32(const float* A, const float* B, float* C, int64_t M, int64_t N, int64_t K, cudaStream_t stream);
void gemm_tiled_f32(const float* A, const float* B, float* C, int64_t M, int64_t N, int64_t K, cudaStream_t stream);

// ---- train.cu: the loss and the backward ops of the op table (src/ops/ops.h) ---------------------
// Every sum runs in an order fixed by the shapes (no atomics): a training step on the GPU is
// reproducible bit for bit. Shapes as in ops.h; all f32 except ids and targets (i32).
// out = x with 0 where j > past + i                  x, out [T, S]
void causal_zero(const float* x, int64_t T, int64_t S, int64_t past, float* out, cudaStream_t stream);
// out [M, W] = zeros with x [M, n] at columns [start, start + n)
void pad_cols(const float* x, int64_t M, int64_t n, int64_t start, int64_t W, float* out, cudaStream_t stream);
// out [L, N] = zeros with x [m, N] at rows [start, start + m)
void pad_rows(const float* x, int64_t m, int64_t N, int64_t start, int64_t L, float* out, cudaStream_t stream);
// out [N] = column sums of x [M, N]: blocks of 128 rows summed per column, then the blocks'
// sums in order (deterministic); `part` is scratch of column_sum_chunks(M) * N floats
int64_t column_sum_chunks(int64_t M);
void sum_rows(const float* x, int64_t M, int64_t N, float* part, float* out, cudaStream_t stream);
// out [L, N] = x [N] in every row
void broadcast_rows(const float* x, int64_t L, int64_t N, float* out, cudaStream_t stream);
// out [V, C] = zeros; out[ids[t]] += dy[t] for t = 0..n-1 in order (an id outside [0, V) adds
// nothing; its forward gather wrote a NaN row, so the loss says so)
void scatter_add_rows(const float* dy, const int32_t* ids, int64_t n, int64_t C, int64_t V, float* out,
                      cudaStream_t stream);
// out[0] = mean_t -log softmax(logits[t])[targets[t]]     logits [n, V]; `rows` is scratch of n
// floats. A target outside [0, V) makes the loss NaN.
void cross_entropy(const float* logits, const int32_t* targets, int64_t n, int64_t V, float* rows, float* out,
                   cudaStream_t stream);
// out[t] = (softmax(logits[t]) - onehot(targets[t])) * dloss[0] / n
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* dloss, int64_t n, int64_t V,
                            float* out, cudaStream_t stream);
// dx of layernorm: x, dy, out [M, N], gain g [N] (f32/f16/bf16)
void layernorm_backward(const float* x, const void* g, Elem ge, const float* dy, int64_t M, int64_t N, float eps,
                        float* out, cudaStream_t stream);
// out [N] = column sums of dy · x̂ (x normalized per row), as sum_rows sums; `stats` is scratch
// of 2M floats, `part` of column_sum_chunks(M) * N
void layernorm_gain_grad(const float* x, const float* dy, int64_t M, int64_t N, float eps, float* stats, float* part,
                         float* out, cudaStream_t stream);
// out = dy · act'(x), act numbered as strand::Act        n elements
void activation_backward(const float* x, const float* dy, int64_t n, int act, float* out, cudaStream_t stream);
// out = y · (dy - rowsum(dy · y))                        y, dy, out [M, N]
void softmax_backward(const float* y, const float* dy, int64_t M, int64_t N, float* out, cudaStream_t stream);
// The gradient of attention_f32 (a.q, a.k, a.v as there, a.seqs sequences; a.out unused):
// out [seqs * (past + T), 3C] gets, per sequence, [dq | dk | dv] in its past + T rows, dq in
// the last T (zeros above). `scratch` holds attention_backward_scratch(a) floats: the
// probabilities and score gradients, [heads, T, past + T] each, of as many heads of one
// sequence as fit 256 MiB (at least one); the heads and sequences are done in turn.
int64_t attention_backward_scratch(const AttnArgs& a);
void attention_backward(const AttnArgs& a, const float* dy, float* scratch, float* out, cudaStream_t stream);

// The optimizer on the device (the same update as strand::adamw_element in backends/backend.h):
//   g' = g * grad_scale; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
//   p = p * decay - step_size * (m / (sqrt(v) / bc2_sqrt + eps))          n elements, in place
struct AdamWArgs {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, step_size = 0, bc2_sqrt = 1, decay = 1, grad_scale = 1;
};
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWArgs& a, cudaStream_t stream);
// Sums of squares for a gradient norm, in double: sum_squares_partials writes one partial per
// block of 4096 elements of x (part[0 .. sum_squares_blocks(n))), sum_in_order adds n partials
// into out[0]; both in orders fixed by the sizes.
int64_t sum_squares_blocks(int64_t n);
void sum_squares_partials(const float* x, int64_t n, double* part, cudaStream_t stream);
void sum_in_order(const double* part, int64_t n, double* out, cudaStream_t stream);

// ---- probe.cu --------------------------------------------------------------------------------
// Fills n floats with values from a hash of (seed, index), uniform in [-1, 1) (probe inputs:
// never zeros, which run faster than real data on tensor cores).
void fill_random(float* x, int64_t n, uint32_t seed, cudaStream_t stream);

}  // namespace strand::cuda
