// strand/backends/cuda/embedding.cu — gather_rows: token and position embeddings.
#include "backends/cuda/device_util.cuh"

namespace strand::cuda {

namespace {

// One block per gathered row; threads stride over the C columns.
__global__ void gather_rows_kernel(const void* table, Elem te, int64_t V, int64_t C, const int32_t* ids, float* out) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  const bool ok = id >= 0 && id < V;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    out[t * C + c] = ok ? load_elem(table, te, int64_t(id) * C + c) : __int_as_float(0x7fc00000);
}

}  // namespace

void gather_rows(const void* table, Elem te, int64_t V, int64_t C, const int32_t* ids, int64_t n, float* out,
                 cudaStream_t stream) {
  if (n == 0 || C == 0) return;
  gather_rows_kernel<<<unsigned(n), 256, 0, stream>>>(table, te, V, C, ids, out);
  STRAND_CUDA_LAUNCHED("gather_rows");
}

}  // namespace strand::cuda
