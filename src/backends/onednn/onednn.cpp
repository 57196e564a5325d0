// strand/backends/onednn/onednn.cpp — oneDNN's SGEMM behind strand's small wrapper.
#include "backends/onednn/onednn.h"

#include <dlfcn.h>

#include <dnnl.h>
#include <fmt/format.h>

#include "core/error.h"

namespace strand {

bool onednn_available(std::string* why) {
  if (why) why->clear();
  return true;
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  const char* rt = "?";
  switch (v->cpu_runtime) {
    case DNNL_RUNTIME_OMP: rt = "OpenMP"; break;
    case DNNL_RUNTIME_TBB: rt = "TBB"; break;
    case DNNL_RUNTIME_SEQ: rt = "sequential"; break;
    case DNNL_RUNTIME_THREADPOOL: rt = "threadpool"; break;
    default: break;
  }
  return fmt::format("{}.{}.{} (cpu runtime: {})", v->major, v->minor, v->patch, rt);
}

void onednn_sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                  float* C, int64_t ldc, bool trans_b) {
  const dnnl_status_t st =
      dnnl_sgemm('N', trans_b ? 'T' : 'N', M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
  if (st != dnnl_success) fail("onednn: dnnl_sgemm failed with status {} for M={} N={} K={}", int(st), M, N, K);
}

bool onednn_set_threads(int n) {
  using SetFn = void (*)(int);
  // oneDNN's OpenMP runtime is loaded with libdnnl; look it up instead of linking OpenMP.
  auto fn = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (!fn || n <= 0) return false;
  fn(n);
  return true;
}

}  // namespace strand
