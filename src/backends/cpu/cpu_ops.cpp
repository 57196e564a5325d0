// strand/backends/cpu/cpu_ops.cpp — the portable kernel table and the run-time ISA choice.
//
// Plain loops written so that a compiler can vectorise them for whatever the build targets;
// they are what the cpu tier runs on a CPU without AVX-512 (and on non-x86 builds).
#include "backends/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>

#include "backends/cpu/threadpool.h"
#include "core/cpu_features.h"
#include "reference/kernels.h"

namespace strand::cpu {

#if defined(__x86_64__) || defined(_M_X64)
const Kernels* avx512_table();  // cpu_ops_avx512.cpp
const Kernels* avx2_table();    // cpu_ops_avx2.cpp
#endif

int64_t attn_scratch_floats(const AttnArgs& a) {
  const int64_t keys = a.past + a.T;
  const int64_t prefill = keys * kAttnQueryBlock + 2 * a.D * kAttnQueryBlock + 4 * kAttnQueryBlock;
  const int64_t decode = keys + a.D + 16;
  return (std::max(prefill, decode) + 15) / 16 * 16;
}

namespace {

float widen_one(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

void p_layernorm(const float* x, const float* g, const float* b, int64_t rows, int64_t n, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += xr[j];
    const float mean = float(sum / double(n));
    double ss = 0;
    for (int64_t j = 0; j < n; ++j) {
      const float d = xr[j] - mean;
      ss += double(d) * double(d);
    }
    const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    for (int64_t j = 0; j < n; ++j) o[j] = (xr[j] - mean) * inv * g[j] + b[j];
  }
}

void p_add(const float* a, const float* b, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void p_add_row(const float* a, const float* row, int64_t rows, int64_t n, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) out[r * n + j] = a[r * n + j] + row[j];
}

void p_scale(const float* x, int64_t n, float s, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * s;
}

void p_activation(const float* x, int64_t n, Act act, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = kernels::activate(x[i], act);
}

void p_softmax(const float* x, int64_t rows, int64_t n, float* out) { kernels::softmax(x, rows, n, out); }

void p_widen(const void* src, DType dt, int64_t n, float* out) {
  if (dt == DType::F32) {
    std::memcpy(out, src, size_t(n) * 4);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = widen_one(src, dt, i);
}

void p_gemv_kn(const GemvArgs& a, int64_t n0, int64_t n1) {
  for (int64_t m = 0; m < a.M; ++m) {
    float* y = a.y + m * a.ldy;
    for (int64_t j = n0; j < n1; ++j) y[j] = 0;
    for (int64_t k = 0; k < a.K; ++k) {
      const float xk = a.x[m * a.ldx + k];
      const int64_t row = k * a.ldb;
      if (a.b_dtype == DType::F32) {
        const float* w = static_cast<const float*>(a.B) + row;
        for (int64_t j = n0; j < n1; ++j) y[j] += xk * w[j];
      } else {
        for (int64_t j = n0; j < n1; ++j) y[j] += xk * widen_one(a.B, a.b_dtype, row + j);
      }
    }
    if (a.bias)
      for (int64_t j = n0; j < n1; ++j) y[j] += a.bias[j];
  }
}

void p_gemv_nk(const GemvArgs& a, int64_t n0, int64_t n1) {
  const int64_t nb = q8_blocks(a.K);
  for (int64_t m = 0; m < a.M; ++m) {
    const float* x = a.x + m * a.ldx;
    for (int64_t n = n0; n < n1; ++n) {
      float acc = 0;
      if (a.b_dtype == DType::Q8) {
        const int8_t* q = static_cast<const int8_t*>(a.B) + n * a.ldb;
        for (int64_t b = 0; b < nb; ++b) {
          const float s = a.scales[n * nb + b];
          const int64_t end = std::min(a.K, (b + 1) * kQ8Block);
          for (int64_t k = b * kQ8Block; k < end; ++k) acc += x[k] * (float(q[k]) * s);
        }
      } else if (a.b_dtype == DType::F32) {
        const float* w = static_cast<const float*>(a.B) + n * a.ldb;
        for (int64_t k = 0; k < a.K; ++k) acc += x[k] * w[k];
      } else {
        for (int64_t k = 0; k < a.K; ++k) acc += x[k] * widen_one(a.B, a.b_dtype, n * a.ldb + k);
      }
      a.y[m * a.ldy + n] = acc + (a.bias ? a.bias[n] : 0.0f);
    }
  }
}

void p_q8_dequant(const int8_t* q, const float* scales, int64_t ldq, int64_t len, int64_t l0, int64_t l1, float* out,
                  int64_t ldo) {
  const int64_t nb = q8_blocks(len);
  for (int64_t l = l0; l < l1; ++l)
    for (int64_t p = 0; p < len; ++p) out[(l - l0) * ldo + p] = float(q[l * ldq + p]) * scales[l * nb + p / kQ8Block];
}

// One query of one head: scores, softmax, weighted sum of values. scores: past + T floats.
void attn_one(const AttnArgs& a, int64_t h, int64_t i, float* scores) {
  const int64_t n = a.past + i + 1, C = a.C, D = a.D;
  const float* qi = a.q + i * C + h * D;
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = a.k + j * C + h * D;
    float dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
    scores[j] = dot * a.scale;
    mx = std::max(mx, scores[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    scores[j] = std::exp(scores[j] - mx);
    sum += scores[j];
  }
  float* o = a.out + i * C + h * D;
  for (int64_t d = 0; d < D; ++d) o[d] = 0;
  for (int64_t j = 0; j < n; ++j) {
    const float w = scores[j];
    const float* vj = a.v + j * C + h * D;
    for (int64_t d = 0; d < D; ++d) o[d] += w * vj[d];
  }
  const float inv = 1.0f / sum;
  for (int64_t d = 0; d < D; ++d) o[d] *= inv;
}

void p_attn_prefill(const AttnArgs& a, int64_t u0, int64_t u1, float* scratch) {
  const int64_t blocks = (a.T + kAttnQueryBlock - 1) / kAttnQueryBlock;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t h = u / blocks, i0 = (u % blocks) * kAttnQueryBlock;
    for (int64_t i = i0; i < std::min(a.T, i0 + kAttnQueryBlock); ++i) attn_one(a, h, i, scratch);
  }
}

void p_attn_decode(const AttnArgs& a, int64_t u0, int64_t u1, float* scratch) {
  for (int64_t u = u0; u < u1; ++u) attn_one(a, u / a.T, u % a.T, scratch);
}

void p_activation_backward(const float* x, const float* dy, int64_t n, Act act, float* out) {
  kernels::activation_backward(x, dy, n, act, out);
}

const Kernels kPortable = {
    "portable", p_layernorm, p_add,   p_add_row,   p_scale,        p_activation,  p_softmax,
    p_widen,    p_gemv_kn,   p_gemv_nk, p_q8_dequant, p_attn_prefill, p_attn_decode, p_activation_backward,
};

}  // namespace

void parallel_ranges_t(ThreadPool* pool, int64_t n, int64_t align, int64_t min_len,
                       const std::function<void(int thread, int64_t begin, int64_t end)>& fn) {
  if (n <= 0) return;
  align = std::max<int64_t>(1, align);
  const int64_t units = (n + align - 1) / align;  // aligned pieces
  const int64_t min_units = std::max<int64_t>(1, (min_len + align - 1) / align);
  int64_t parts = pool ? std::min<int64_t>(pool->size(), units / min_units) : 1;
  if (parts <= 1) {
    fn(0, 0, n);
    return;
  }
  pool->run([&](int t) {
    if (t >= parts) return;
    const int64_t b = std::min(n, units * t / parts * align), e = std::min(n, units * (t + 1) / parts * align);
    if (b < e) fn(t, b, e);
  });
}

void parallel_ranges(ThreadPool* pool, int64_t n, int64_t align, int64_t min_len,
                     const std::function<void(int64_t begin, int64_t end)>& fn) {
  parallel_ranges_t(pool, n, align, min_len, [&](int, int64_t b, int64_t e) { fn(b, e); });
}

const Kernels& portable_kernels() { return kPortable; }

const Kernels* avx512_kernels() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool ok = cpu_features().has_avx512_set();
  return ok ? avx512_table() : nullptr;
#else
  return nullptr;
#endif
}

const Kernels* avx2_kernels() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool ok = cpu_features().has_avx2_set();
  return ok ? avx2_table() : nullptr;
#else
  return nullptr;
#endif
}

const Kernels* kernels_named(const std::string& isa) {
  if (isa.empty() || isa == "auto") return &best_kernels();
  if (isa == "portable") return &kPortable;
  if (isa == "avx2") return avx2_kernels();
  if (isa == "avx512") return avx512_kernels();
  return nullptr;
}

const Kernels& best_kernels() {
  static const Kernels* k = [] {
    const char* env = std::getenv("STRAND_CPU_ISA");
    const std::string want = env ? env : "";
    const Kernels* v = nullptr;
    if (want != "portable") {
      if (want != "avx2") v = avx512_kernels();
      if (!v) v = avx2_kernels();
    }
    return v ? v : &kPortable;
  }();
  return *k;
}

}  // namespace strand::cpu
