// strand/backends/cuda/layernorm.cu — layer normalization, one block per row.
//
// Two passes over the row (it stays in L1/L2 between them): the mean, then the variance as
// the mean of (x - mean)^2, each summed per thread and then over the block (a tree, so the
// f32 error grows with log N, not N). Then one pass writes the normalized row.
#include "backends/cuda/device_util.cuh"

namespace strand::cuda {

namespace {

__global__ void layernorm_kernel(const float* x, const void* g, Elem ge, const void* b, Elem be, int64_t N, float eps,
                                 float* out) {
  __shared__ float red[32];
  const float* row = x + int64_t(blockIdx.x) * N;
  float* o = out + int64_t(blockIdx.x) * N;
  float mean, inv;
  row_norm_stats(row, N, eps, red, &mean, &inv);
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x)
    o[j] = (row[j] - mean) * inv * load_elem(g, ge, j) + load_elem(b, be, j);
}

}  // namespace

void layernorm(const float* x, const void* g, Elem ge, const void* b, Elem be, int64_t M, int64_t N, float eps,
               float* out, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  const int threads = N >= 1024 ? 512 : N >= 256 ? 256 : 128;
  layernorm_kernel<<<unsigned(M), threads, 0, stream>>>(x, g, ge, b, be, N, eps, out);
  STRAND_CUDA_LAUNCHED("layernorm");
}

}  // namespace strand::cuda
