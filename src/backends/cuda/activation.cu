// strand/backends/cuda/activation.cu — the activations of the op table, elementwise, with the
// same formulas as the reference (src/reference/kernels.h), in f32 with CUDA's accurate
// tanhf/erff/expf (no fast-math intrinsics).
#include "backends/cuda/device_util.cuh"

namespace strand::cuda {

namespace {

// strand::Act: 0 gelu_tanh, 1 gelu_erf, 2 relu, 3 silu, 4 quick_gelu.
__device__ __forceinline__ float activate(float x, int act) {
  switch (act) {
    case 0: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case 1: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case 2: return x > 0.0f ? x : 0.0f;
    case 3: return x / (1.0f + expf(-x));
    case 4: return x / (1.0f + expf(-1.702f * x));
  }
  return x;
}

__global__ void activation_kernel(const float* x, int64_t n, int act, float* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = activate(x[i], act);
}

}  // namespace

void activation(const float* x, int64_t n, int act, float* out, cudaStream_t stream) {
  if (n == 0) return;
  activation_kernel<<<grid_for(n, 256), 256, 0, stream>>>(x, n, act, out);
  STRAND_CUDA_LAUNCHED("activation");
}

}  // namespace strand::cuda
