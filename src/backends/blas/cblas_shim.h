// strand/backends/blas/cblas_shim.h — the only file that names the CBLAS provider.
//
// blas.cpp calls these few functions and nothing else from the library. To build the tier on
// Apple's Accelerate instead of OpenBLAS, flip STRAND_BLAS_ACCELERATE to 1 (and link the
// Accelerate framework); the rest of the tier does not change.
#pragma once

#ifndef STRAND_BLAS_ACCELERATE  // CMake defines it to 1 on Apple builds without OpenBLAS
#define STRAND_BLAS_ACCELERATE 0
#endif

#if STRAND_BLAS_ACCELERATE
#include <Accelerate/Accelerate.h>
#else
#include <cblas.h>
#endif

namespace strand::cblas {

// C[M,N] = A[M,K] · op(B) + beta · C, row-major; op(B) = B[K,N], or B[N,K]ᵀ when trans_b.
inline void sgemm(bool trans_b, int M, int N, int K, const float* A, int lda, const float* B, int ldb, float beta,
                  float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta,
              C, ldc);
}

// y[N] = x[K] · op(B) + beta · y: the one-row product as a matrix-vector product (OpenBLAS's
// sgemm packs all of B even for one row; sgemv streams it once).
inline void sgemv_row(bool trans_b, int N, int K, const float* x, const float* B, int ldb, float beta, float* y) {
  if (trans_b)  // B is [N, K]: y = B x
    cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, B, ldb, x, 1, beta, y, 1);
  else  // B is [K, N]: y = Bᵀ x
    cblas_sgemv(CblasRowMajor, CblasTrans, K, N, 1.0f, B, ldb, x, 1, beta, y, 1);
}

#if STRAND_BLAS_ACCELERATE
inline const char* library_name() { return "Accelerate"; }
inline const char* version() { return ""; }
inline const char* corename() { return ""; }
inline const char* config() { return ""; }
inline void set_threads(int) {}  // Accelerate manages its own threads
inline int threads() { return 0; }
#else
inline const char* library_name() { return "OpenBLAS"; }
inline const char* version() { return OPENBLAS_VERSION; }  // " OpenBLAS 0.3.21 "
inline const char* corename() { return openblas_get_corename(); }
inline const char* config() { return openblas_get_config(); }
inline void set_threads(int n) { openblas_set_num_threads(n); }
inline int threads() { return openblas_get_num_threads(); }
#endif

}  // namespace strand::cblas
