// strand/backends/cpu/train_ops.h — the cpu tier's kernels for training: the loss and the
// backward ops of the op table (ops.h), spread over the thread pool.
//
// Every function splits its work so that each output element is written by one thread, in an
// order that does not depend on the number of threads: a training run is reproducible bit for
// bit on the same thread count, and sums (column sums, scattered embedding rows) do not depend
// on how the rows were split. All tensors are f32, contiguous, row-major.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/cpu/cpu_ops.h"

namespace strand::cpu {

class ThreadPool;

// out[j] = sum_i x[i, j]                                    x [M, N], out [N]
void sum_rows(const float* x, int64_t M, int64_t N, float* out, ThreadPool* pool);

// out = zeros [V, C]; out[ids[t]] += dy[t] for t = 0..n-1 in order    dy [n, C]
void scatter_add_rows(const float* dy, const int32_t* ids, int64_t n, int64_t C, int64_t V, float* out,
                      ThreadPool* pool);

// out[0] = mean_t -log softmax(logits[t])[targets[t]]       logits [n, V]
void cross_entropy(const Kernels& k, const float* logits, const int32_t* targets, int64_t n, int64_t V, float* out,
                   ThreadPool* pool);
// out[t] = (softmax(logits[t]) - onehot(targets[t])) * dloss / n
void cross_entropy_backward(const Kernels& k, const float* logits, const int32_t* targets, float dloss, int64_t n,
                            int64_t V, float* out, ThreadPool* pool);

// dx of layernorm (x [M, N], gain g [N], dy [M, N]) and the gain's gradient (column sums of dy · x̂).
void layernorm_backward(const float* x, const float* g, const float* dy, int64_t M, int64_t N, float eps, float* out,
                        ThreadPool* pool);
void layernorm_gain_grad(const float* x, const float* dy, int64_t M, int64_t N, float eps, float* out,
                         ThreadPool* pool);

// out = dy · act'(x)                                        n elements
void activation_backward(const Kernels& k, const float* x, const float* dy, int64_t n, Act act, float* out,
                         ThreadPool* pool);

// out = y · (dy - rowsum(dy · y))                           y, dy, out [M, N]
void softmax_backward(const float* y, const float* dy, int64_t M, int64_t N, float* out, ThreadPool* pool);

// The gradient of causal attention for `seqs` sequences stacked by rows (see
// OpKind::AttentionBackward): a.q, a.out's dy are [seqs*T, C], k and v [seqs*(past+T), C];
// out [seqs*(past+T), 3C] = [dq | dk | dv]. Work is cut into (sequence, head) units; each
// recomputes its probabilities and runs five small products through cpu::gemm.
void attention_backward(const Kernels& k, const AttnArgs& a, const float* dy, int64_t seqs, float* out,
                        ThreadPool* pool, std::vector<std::vector<float>>& scratch);

}  // namespace strand::cpu
