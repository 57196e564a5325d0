// strand/backends/cuda/device_util.cuh — small device helpers shared by the kernel files:
// reading f32/f16/bf16 elements as float, warp and block reductions, launch sizes.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/kernels.h"

namespace strand::cuda {

__device__ __forceinline__ float load_elem(const void* p, Elem e, int64_t i) {
  switch (e) {
    case Elem::F16: return __half2float(static_cast<const __half*>(p)[i]);
    case Elem::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum (or max) of `v` over the block, returned to every thread. `red` is 32 floats of
// shared memory; blockDim.x is a multiple of 32. Contains __syncthreads(): call from every thread.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // `red` may still be read by an earlier reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = lane < warps ? red[lane] : (kMax ? -INFINITY : 0.0f);
  r = kMax ? warp_max(r) : warp_sum(r);
  return r;
}

// A row's mean and 1/sqrt(var + eps) for layer norm, returned to every thread of the block:
// the mean, then the variance as the mean of (x - mean)^2, each tree-summed over the block (the
// f32 error grows with log N, not N). The forward kernel and both backward ones use it.
__device__ __forceinline__ void row_norm_stats(const float* row, int64_t N, float eps, float* red, float* mean,
                                               float* rstd) {
  float s = 0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) s += row[j];
  const float m = block_reduce<false>(s, red) / float(N);
  float v = 0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    const float d = row[j] - m;
    v += d * d;
  }
  const float var = block_reduce<false>(v, red) / float(N);
  *mean = m;
  *rstd = 1.0f / sqrtf(var + eps);
}

// Blocks for a grid-stride loop over n elements with `threads` per block (at least 1).
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : b > 65535 * 8 ? 65535 * 8 : b);
}

}  // namespace strand::cuda
