// strand/backends/cuda/gemm.cu — matrix products: cuBLASLt for blocks of rows (gemm.h), and
// strand's own kernels: the GEMV that decode steps use (a few rows against a weight read
// once, in f32 with the weight widened), and the two teaching rungs of `bench gemm`.
#include <cublasLt.h>

#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "backends/cuda/device_util.cuh"
#include "backends/cuda/gemm.h"

namespace strand::cuda {

// ---- cuBLASLt ----------------------------------------------------------------------------------

namespace {

void lt_check(cublasStatus_t st, const char* call, const char* file, int line) {
  if (st != CUBLAS_STATUS_SUCCESS) cuda_fail(call, int(st), cublasLtGetStatusString(st), file, line);
}
#define STRAND_LT(call) lt_check((call), #call, __FILE__, __LINE__)

cudaDataType_t data_type(Elem e) {
  switch (e) {
    case Elem::F16: return CUDA_R_16F;
    case Elem::BF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

// The largest power of two (up to 256) dividing a pointer: what cuBLASLt may assume of it.
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al) al /= 2;
  return al;
}

}  // namespace

struct LtGemm::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::mutex mu;
  // (M, N, K, A type, lines, A transposed, bias, tf32, alignments) -> the algorithm cuBLASLt's heuristic picked.
  using Key = std::tuple<int64_t, int64_t, int64_t, int, bool, bool, bool, bool, uint32_t, uint32_t, uint32_t>;
  std::map<Key, cublasLtMatmulAlgo_t> algos;
  std::set<Key> none;  // shapes the heuristic had no algorithm for
};

LtGemm::LtGemm(size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  STRAND_LT(cublasLtCreate(&impl_->handle));
  impl_->workspace_bytes = workspace_bytes;
  STRAND_CUDA(cudaMalloc(&impl_->workspace, workspace_bytes));
}

LtGemm::~LtGemm() {
  if (impl_->workspace) cudaFree(impl_->workspace);
  if (impl_->handle) cublasLtDestroy(impl_->handle);
}

int LtGemm::heuristics_cached() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return int(impl_->algos.size());
}

bool LtGemm::matmul(const void* A, Elem ae, int64_t M, int64_t K, const void* B, bool lines, int64_t N,
                    const float* bias, float* C, bool tf32, cudaStream_t stream, bool a_trans) {
  Impl& im = *impl_;
  const cudaDataType_t t = data_type(ae);
  const bool f32 = ae == Elem::F32;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t lb = nullptr, la = nullptr, lc = nullptr;
  STRAND_LT(cublasLtMatmulDescCreate(&desc, f32 && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Column-major view: Cᵀ [N x M] = opB [N x K] · Aᵀ [K x M].
  const cublasOperation_t op_b = lines ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = a_trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  STRAND_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_b, sizeof(op_b)));
  STRAND_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_a, sizeof(op_a)));
  if (bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const int32_t bias_type = CUDA_R_32F;
    STRAND_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    STRAND_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    STRAND_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  }
  // B's storage: lines = [N, K] row-major = K x N column-major (ld K); else [K, N] row-major =
  // N x K column-major (ld N). A's: [M, K] row-major = K x M column-major (ld K); with a_trans,
  // [K, M] row-major = M x K column-major (ld M), read transposed.
  if (lines)
    STRAND_LT(cublasLtMatrixLayoutCreate(&lb, t, uint64_t(K), uint64_t(N), K));
  else
    STRAND_LT(cublasLtMatrixLayoutCreate(&lb, t, uint64_t(N), uint64_t(K), N));
  if (a_trans)
    STRAND_LT(cublasLtMatrixLayoutCreate(&la, t, uint64_t(M), uint64_t(K), M));
  else
    STRAND_LT(cublasLtMatrixLayoutCreate(&la, t, uint64_t(K), uint64_t(M), K));
  STRAND_LT(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, uint64_t(N), uint64_t(M), N));

  const uint32_t al_b = alignment_of(B), al_a = alignment_of(A), al_c = alignment_of(C);
  const Impl::Key key{M, N, K, int(ae), lines, a_trans, bias != nullptr, tf32, al_b, al_a, al_c};
  cublasLtMatmulAlgo_t algo;
  {
    std::lock_guard<std::mutex> lk(im.mu);
    auto it = im.algos.find(key);
    if (it == im.algos.end() && im.none.count(key)) {
      cublasLtMatrixLayoutDestroy(lb);
      cublasLtMatrixLayoutDestroy(la);
      cublasLtMatrixLayoutDestroy(lc);
      cublasLtMatmulDescDestroy(desc);
      return false;
    }
    if (it == im.algos.end()) {
      cublasLtMatmulPreference_t pref = nullptr;
      STRAND_LT(cublasLtMatmulPreferenceCreate(&pref));
      const uint64_t ws = im.workspace_bytes;
      STRAND_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
      // cuBLASLt's "A" is strand's B and its "B" is strand's A.
      STRAND_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_b, sizeof(al_b)));
      STRAND_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_a, sizeof(al_a)));
      STRAND_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof(al_c)));
      STRAND_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof(al_c)));
      cublasLtMatmulHeuristicResult_t res{};
      int found = 0;
      const cublasStatus_t st =
          cublasLtMatmulAlgoGetHeuristic(im.handle, desc, lb, la, lc, lc, pref, 1, &res, &found);
      cublasLtMatmulPreferenceDestroy(pref);
      if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(desc);
        im.none.insert(key);
        return false;
      }
      it = im.algos.emplace(key, res.algo).first;
    }
    algo = it->second;
  }
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t st = cublasLtMatmul(im.handle, desc, &alpha, B, lb, A, la, &beta, C, lc, C, lc, &algo,
                                           im.workspace, im.workspace_bytes, stream);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(desc);
  lt_check(st, "cublasLtMatmul", __FILE__, __LINE__);
  return true;
}

// ---- strand's GEMV -------------------------------------------------------------------------------

namespace {

constexpr int kGemvWarps = 8;

template <class E>
__device__ __forceinline__ float widen(E v);
template <>
__device__ __forceinline__ float widen<float>(float v) { return v; }
template <>
__device__ __forceinline__ float widen<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float widen<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// B as N lines of K: one warp per output column; with `vec`, each lane reads 16 bytes of the
// line at a time (the line start and K allow it), else one element.
template <int M, class E>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_lines_kernel(const float* x, int64_t K, const E* B, int64_t N,
                                                                     const float* bias, float* y, bool vec) {
  const int64_t n = int64_t(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  const E* line = B + n * K;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  if (vec) {
    constexpr int V = 16 / int(sizeof(E));
    for (int64_t k = int64_t(lane) * V; k < K; k += 32 * V) {
      const uint4 raw = *reinterpret_cast<const uint4*>(line + k);
      const E* w = reinterpret_cast<const E*>(&raw);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float wv = widen<E>(w[e]);
#pragma unroll
        for (int m = 0; m < M; ++m) acc[m] += x[m * K + k + e] * wv;
      }
    }
  } else {
    for (int64_t k = lane; k < K; k += 32) {
      const float wv = widen<E>(line[k]);
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] += x[m * K + k] * wv;
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const float s = warp_sum(acc[m]);
    if (lane == 0) y[m * N + n] = s + (bias ? bias[n] : 0.0f);
  }
}

// B as K rows of N: one thread per output column, walking K (neighbouring threads read
// neighbouring columns of a row: coalesced).
template <int M, class E>
__global__ void gemv_rows_kernel(const float* x, int64_t K, const E* B, int64_t N, const float* bias, float* y) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    const float wv = widen<E>(B[k * N + n]);
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] += x[m * K + k] * wv;
  }
#pragma unroll
  for (int m = 0; m < M; ++m) y[m * N + n] = acc[m] + (bias ? bias[n] : 0.0f);
}

template <int M, class E>
void gemv_launch(const float* x, int64_t K, const void* B, bool lines, int64_t N, const float* bias, float* y,
                 cudaStream_t stream) {
  const E* b = static_cast<const E*>(B);
  if (lines) {
    const bool vec = K % (16 / int64_t(sizeof(E))) == 0 && reinterpret_cast<uintptr_t>(B) % 16 == 0;
    gemv_lines_kernel<M, E><<<unsigned((N + kGemvWarps - 1) / kGemvWarps), kGemvWarps * 32, 0, stream>>>(
        x, K, b, N, bias, y, vec);
  } else {
    gemv_rows_kernel<M, E><<<unsigned((N + 127) / 128), 128, 0, stream>>>(x, K, b, N, bias, y);
  }
}

template <int M>
void gemv_rows_of(const float* x, int64_t K, const void* B, Elem be, bool lines, int64_t N, const float* bias,
                  float* y, cudaStream_t stream) {
  switch (be) {
    case Elem::F16: gemv_launch<M, __half>(x, K, B, lines, N, bias, y, stream); break;
    case Elem::BF16: gemv_launch<M, __nv_bfloat16>(x, K, B, lines, N, bias, y, stream); break;
    default: gemv_launch<M, float>(x, K, B, lines, N, bias, y, stream); break;
  }
}

}  // namespace

void gemv(const float* x, int64_t M, int64_t K, const void* B, Elem be, bool lines, int64_t N, const float* bias,
          float* y, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  switch (M) {
    case 1: gemv_rows_of<1>(x, K, B, be, lines, N, bias, y, stream); break;
    case 2: gemv_rows_of<2>(x, K, B, be, lines, N, bias, y, stream); break;
    case 3: gemv_rows_of<3>(x, K, B, be, lines, N, bias, y, stream); break;
    case 4: gemv_rows_of<4>(x, K, B, be, lines, N, bias, y, stream); break;
    default: cuda_fail("gemv", 0, "more rows than kGemvMaxRows", __FILE__, __LINE__);
  }
  STRAND_CUDA_LAUNCHED("gemv");
}

// ---- the fallback for shapes cuBLASLt declines ------------------------------------------------------

namespace {

template <class E>
__global__ void gemm_fallback_kernel(const E* A, const E* B, bool lines, bool a_trans, int64_t M, int64_t N,
                                     int64_t K, const float* bias, float* C) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= N) return;
  for (int64_t i = blockIdx.y; i < M; i += gridDim.y) {
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k)
      acc += widen<E>(a_trans ? A[k * M + i] : A[i * K + k]) * widen<E>(lines ? B[j * K + k] : B[k * N + j]);
    C[i * N + j] = acc + (bias ? bias[j] : 0.0f);
  }
}

}  // namespace

void gemm_fallback(const void* A, const void* B, Elem e, bool lines, int64_t M, int64_t N, int64_t K,
                   const float* bias, float* C, cudaStream_t stream, bool a_trans) {
  if (M == 0 || N == 0) return;
  const dim3 grid(unsigned((N + 127) / 128), unsigned(M < 65535 ? M : 65535));  // rows beyond: grid-stride
  switch (e) {
    case Elem::F16:
      gemm_fallback_kernel<<<grid, 128, 0, stream>>>(static_cast<const __half*>(A), static_cast<const __half*>(B),
                                                     lines, a_trans, M, N, K, bias, C);
      break;
    case Elem::BF16:
      gemm_fallback_kernel<<<grid, 128, 0, stream>>>(static_cast<const __nv_bfloat16*>(A),
                                                     static_cast<const __nv_bfloat16*>(B), lines, a_trans, M, N, K, bias, C);
      break;
    default:
      gemm_fallback_kernel<<<grid, 128, 0, stream>>>(static_cast<const float*>(A), static_cast<const float*>(B), lines,
                                                     a_trans, M, N, K, bias, C);
  }
  STRAND_CUDA_LAUNCHED("gemm_fallback");
}

// ---- the teaching rungs of bench gemm -----------------------------------------------------------

namespace {

// Rung "cuda-naive": one thread per element of C, a dot product down K.
__global__ void gemm_naive_kernel(const float* A, const float* B, float* C, int64_t M, int64_t N, int64_t K) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i = int64_t(blockIdx.y) * blockDim.y + threadIdx.y;
  if (i >= M || j >= N) return;
  float acc = 0.0f;
  for (int64_t k = 0; k < K; ++k) acc += A[i * K + k] * B[k * N + j];
  C[i * N + j] = acc;
}

// Rung "cuda-tiled": 64 x 64 tiles of C per block of 256 threads, each thread a 4 x 4 register
// tile; A and B pass through shared memory 16 columns / rows at a time.
constexpr int kTile = 64, kTk = 16;
__global__ void __launch_bounds__(256) gemm_tiled_kernel(const float* A, const float* B, float* C, int64_t M, int64_t N,
                                                         int64_t K) {
  __shared__ float As[kTk][kTile + 1];  // As[k][i]: A's tile transposed
  __shared__ float Bs[kTk][kTile];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t i0 = int64_t(blockIdx.y) * kTile, j0 = int64_t(blockIdx.x) * kTile;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kTk) {
    for (int idx = threadIdx.x; idx < kTile * kTk; idx += 256) {
      const int r = idx / kTk, c = idx % kTk;  // A tile: 64 rows x 16 columns
      const int64_t gi = i0 + r, gk = k0 + c;
      As[c][r] = gi < M && gk < K ? A[gi * K + gk] : 0.0f;
      const int br = idx / kTile, bc = idx % kTile;  // B tile: 16 rows x 64 columns
      const int64_t bk = k0 + br, bj = j0 + bc;
      Bs[br][bc] = bk < K && bj < N ? B[bk * N + bj] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTk; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = As[k][ty * 4 + r];
#pragma unroll
      for (int c = 0; c < 4; ++c) b[c] = Bs[k][tx * 4 + c];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] += a[r] * b[c];
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t i = i0 + ty * 4 + r, j = j0 + tx * 4 + c;
      if (i < M && j < N) C[i * N + j] = acc[r][c];
    }
}

}  // namespace

void gemm_naive_f32(const float* A, const float* B, float* C, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  const dim3 block(16, 16);
  const dim3 grid(unsigned((N + 15) / 16), unsigned((M + 15) / 16));
  gemm_naive_kernel<<<grid, block, 0, stream>>>(A, B, C, M, N, K);
  STRAND_CUDA_LAUNCHED("gemm_naive_f32");
}

void gemm_tiled_f32(const float* A, const float* B, float* C, int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  const dim3 grid(unsigned((N + kTile - 1) / kTile), unsigned((M + kTile - 1) / kTile));
  gemm_tiled_kernel<<<grid, 256, 0, stream>>>(A, B, C, M, N, K);
  STRAND_CUDA_LAUNCHED("gemm_tiled_f32");
}

}  // namespace strand::cuda
