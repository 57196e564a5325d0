// strand/backends/cuda/elementwise.cu — one pass over memory each: add (with a broadcast row),
// scale, the causal mask, column copies (slices, concatenation), dtype conversions.
#include "backends/cuda/device_util.cuh"

namespace strand::cuda {

namespace {

constexpr int kThreads = 256;

#define GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__global__ void add_kernel(const float* a, const void* b, Elem be, bool b_is_row, int64_t M, int64_t N, float* out) {
  GRID_STRIDE(i, M * N) out[i] = a[i] + load_elem(b, be, b_is_row ? i % N : i);
}

__global__ void scale_kernel(const float* x, int64_t n, float s, float* out) {
  GRID_STRIDE(i, n) out[i] = x[i] * s;
}

__global__ void causal_mask_kernel(const float* s, int64_t T, int64_t S, int64_t past, float* out) {
  GRID_STRIDE(idx, T * S) {
    const int64_t i = idx / S, j = idx % S;
    out[idx] = j > past + i ? -INFINITY : s[idx];
  }
}

__global__ void copy_cols_kernel(const float* x, int64_t ld_x, int64_t x_col, int64_t M, int64_t n, float* out,
                                 int64_t ld_out, int64_t out_col) {
  GRID_STRIDE(idx, M * n) {
    const int64_t i = idx / n, j = idx % n;
    out[i * ld_out + out_col + j] = x[i * ld_x + x_col + j];
  }
}

__global__ void to_half_kernel(const float* x, int64_t n, Elem to, void* out) {
  GRID_STRIDE(i, n) {
    if (to == Elem::BF16)
      static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(x[i]);
    else
      static_cast<__half*>(out)[i] = __float2half_rn(x[i]);
  }
}

__global__ void to_f32_kernel(const void* x, Elem from, int64_t n, float* out) {
  GRID_STRIDE(i, n) out[i] = load_elem(x, from, i);
}

}  // namespace

void add(const float* a, const void* b, Elem be, bool b_is_row, int64_t M, int64_t N, float* out, cudaStream_t stream) {
  if (M * N == 0) return;
  add_kernel<<<grid_for(M * N, kThreads), kThreads, 0, stream>>>(a, b, be, b_is_row, M, N, out);
  STRAND_CUDA_LAUNCHED("add");
}

void scale(const float* x, int64_t n, float s, float* out, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, n, s, out);
  STRAND_CUDA_LAUNCHED("scale");
}

void causal_mask(const float* s, int64_t T, int64_t S, int64_t past, float* out, cudaStream_t stream) {
  if (T * S == 0) return;
  causal_mask_kernel<<<grid_for(T * S, kThreads), kThreads, 0, stream>>>(s, T, S, past, out);
  STRAND_CUDA_LAUNCHED("causal_mask");
}

void copy_cols(const float* x, int64_t ld_x, int64_t x_col, int64_t M, int64_t n, float* out, int64_t ld_out,
               int64_t out_col, cudaStream_t stream) {
  if (M * n == 0) return;
  copy_cols_kernel<<<grid_for(M * n, kThreads), kThreads, 0, stream>>>(x, ld_x, x_col, M, n, out, ld_out, out_col);
  STRAND_CUDA_LAUNCHED("copy_cols");
}

void to_half(const float* x, int64_t n, Elem to, void* out, cudaStream_t stream) {
  if (n == 0) return;
  to_half_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, n, to, out);
  STRAND_CUDA_LAUNCHED("to_half");
}

void to_f32(const void* x, Elem from, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return;
  to_f32_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, from, n, out);
  STRAND_CUDA_LAUNCHED("to_f32");
}

}  // namespace strand::cuda
