// strand/backends/onednn/onednn.h — a thin wrapper over oneDNN's SGEMM, for the benchmarks.
//
// Built on oneDNN (libdnnl) when CMake finds it (onednn.cpp); otherwise onednn_stub.cpp,
// whose onednn_available() says so and whose onednn_sgemm() throws.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace strand {

// True when oneDNN was built in; otherwise false and *why (if given) says so.
bool onednn_available(std::string* why);
// "3.1.0 (cpu runtime: OpenMP)" or "not built".
std::string onednn_version();
// C[M, N] = A[M, K] · B, all f32 row-major; B is [K, N], or [N, K] when trans_b.
// Uses oneDNN's own threads (OpenMP in most builds; see onednn_set_threads).
void onednn_sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                  float* C, int64_t ldc, bool trans_b = false);
// Sets how many threads oneDNN's CPU runtime uses for the calls that follow (OpenMP runtime:
// omp_set_num_threads, looked up at run time). Returns false when it could not.
bool onednn_set_threads(int n);

// oneDNN's bf16 matrix product, the bar for strand's bf16 tiles: C[M, N] (f32) = bf16(A) ·
// bf16(B). B ([K, N], or [N, K] when trans_b, f32) is rounded to bf16 and reordered into the
// layout oneDNN prefers for this shape (its "packed" weights) once, when the object is made;
// run() converts A to bf16 with a oneDNN reorder, then runs the matmul primitive.
class OnednnBf16Matmul {
 public:
  // Throws strand::Error when oneDNN is not built in or refuses the primitive.
  OnednnBf16Matmul(int64_t M, int64_t N, int64_t K, const float* B, bool trans_b);
  ~OnednnBf16Matmul();
  OnednnBf16Matmul(const OnednnBf16Matmul&) = delete;
  OnednnBf16Matmul& operator=(const OnednnBf16Matmul&) = delete;
  void run(const float* A, float* C);  // A [M, K] row-major, C [M, N] row-major
  // The implementation oneDNN chose ("brg:avx512_core_amx", "brg:avx512_core_bf16", "ref:any").
  std::string implementation() const;

 private:
  struct Impl;
  Impl* impl_ = nullptr;
};

}  // namespace strand
