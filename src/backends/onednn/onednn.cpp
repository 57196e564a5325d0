// strand/backends/onednn/onednn.cpp — oneDNN's SGEMM behind strand's small wrapper.
#include "backends/onednn/onednn.h"

#include <dlfcn.h>

#include <dnnl.h>
#include <dnnl.hpp>
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

struct OnednnBf16Matmul::Impl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::memory::desc a_f32, a_bf16_md, c_md;
  dnnl::memory a_bf16, weights;
  dnnl::reorder to_bf16;
  dnnl::matmul mm;
  std::string impl;
};

OnednnBf16Matmul::OnednnBf16Matmul(int64_t M, int64_t N, int64_t K, const float* B, bool trans_b) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  auto* p = new Impl;
  try {
    p->a_f32 = dnnl::memory::desc({M, K}, dt::f32, tag::ab);
    p->a_bf16_md = dnnl::memory::desc({M, K}, dt::bf16, tag::ab);
    p->c_md = dnnl::memory::desc({M, N}, dt::f32, tag::ab);
    const dnnl::memory::desc w_any({K, N}, dt::bf16, tag::any);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p->a_bf16_md, w_any, p->c_md), p->eng);
    p->impl = pd.impl_info_str();
    // B as given (f32, [K, N] or its transpose), reordered once into oneDNN's bf16 layout.
    const dnnl::memory::desc b_user({K, N}, dt::f32, trans_b ? tag::ba : tag::ab);
    dnnl::memory b_mem(b_user, p->eng, const_cast<float*>(B));
    p->weights = dnnl::memory(pd.weights_desc(), p->eng);
    dnnl::reorder(b_mem, p->weights).execute(p->strm, b_mem, p->weights);
    p->a_bf16 = dnnl::memory(p->a_bf16_md, p->eng);
    p->to_bf16 = dnnl::reorder(dnnl::reorder::primitive_desc(p->eng, p->a_f32, p->eng, p->a_bf16_md));
    p->mm = dnnl::matmul(pd);
    p->strm.wait();
  } catch (const dnnl::error& e) {
    delete p;
    fail("onednn: bf16 matmul {}x{}x{}: {} (status {})", M, K, N, e.what(), int(e.status));
  }
  impl_ = p;
}

OnednnBf16Matmul::~OnednnBf16Matmul() { delete impl_; }

void OnednnBf16Matmul::run(const float* A, float* C) {
  Impl& p = *impl_;
  try {
    dnnl::memory a(p.a_f32, p.eng, const_cast<float*>(A));
    dnnl::memory c(p.c_md, p.eng, C);
    p.to_bf16.execute(p.strm, a, p.a_bf16);
    p.mm.execute(p.strm, {{DNNL_ARG_SRC, p.a_bf16}, {DNNL_ARG_WEIGHTS, p.weights}, {DNNL_ARG_DST, c}});
    p.strm.wait();
  } catch (const dnnl::error& e) {
    fail("onednn: bf16 matmul: {} (status {})", e.what(), int(e.status));
  }
}

std::string OnednnBf16Matmul::implementation() const { return impl_->impl; }

}  // namespace strand
