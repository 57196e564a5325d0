// strand/backends/cuda/softmax.cu — row-wise softmax, one block per row: the row's max, the
// sum of exp(x - max) (tree-summed over the block), then exp(x - max) / sum written out.
#include "backends/cuda/device_util.cuh"

namespace strand::cuda {

namespace {

__global__ void softmax_kernel(const float* x, int64_t N, float* out) {
  __shared__ float red[32];
  const float* row = x + int64_t(blockIdx.x) * N;
  float* o = out + int64_t(blockIdx.x) * N;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) mx = fmaxf(mx, row[j]);
  mx = block_reduce<true>(mx, red);
  float s = 0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) s += expf(row[j] - mx);
  s = block_reduce<false>(s, red);
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) o[j] = expf(row[j] - mx) / s;
}

}  // namespace

void softmax(const float* x, int64_t M, int64_t N, float* out, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  const int threads = N >= 1024 ? 512 : N >= 256 ? 256 : 128;
  softmax_kernel<<<unsigned(M), threads, 0, stream>>>(x, N, out);
  STRAND_CUDA_LAUNCHED("softmax");
}

}  // namespace strand::cuda
