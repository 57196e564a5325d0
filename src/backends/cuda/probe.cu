// strand/backends/cuda/probe.cu — inputs for the GPU measurements: random values made on the
// device (a hash of seed and index), so that no timing runs on zeros.
#include "backends/cuda/device_util.cuh"

namespace strand::cuda {

namespace {

__device__ __forceinline__ uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

__global__ void fill_random_kernel(float* x, int64_t n, uint32_t seed) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t h = hash32(uint32_t(i) ^ hash32(seed + uint32_t(i >> 32)));
    x[i] = float(h >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
}

}  // namespace

void fill_random(float* x, int64_t n, uint32_t seed, cudaStream_t stream) {
  if (n == 0) return;
  fill_random_kernel<<<grid_for(n, 256), 256, 0, stream>>>(x, n, seed);
  STRAND_CUDA_LAUNCHED("fill_random");
}

}  // namespace strand::cuda
