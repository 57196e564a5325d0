// strand/backends/cpu/gemm.cpp — the driver of the cpu tier's GEMM, and its portable kernels.
//
// The packed path (M > kGemvMaxRows), per thread, on its own rectangle of C:
//
//   for ic over the thread's rows, MC at a time
//     for pc over K, KC at a time
//       pack A[ic.., pc..] into MR x KC micro-panels              A block  MC x KC -> L3
//       for jc over the thread's columns, NC at a time
//         pack B[pc.., jc..] into KC x NR panels (f16/bf16 widened, trans_b transposed)
//                                                                 B block  KC x NC -> L2
//         for each A micro-panel (MR rows)                        A panel  MR x KC -> L1
//           for jr over the B block's panels, NR columns at a time
//             micro-kernel: C tile (+)= A panel . B panel         (MR x NR in registers)
//
// An A micro-panel stays in L1 while the B block streams past it from L2: each step of k reads
// NR floats of B from L2 and MR floats of A from L1. A and B are each packed once (B once per
// MC rows: twice for 1024 rows); the C tile is read (pc > 0) and written once per KC block, and
// the bias is added on the first.
//
// Block sizes of the AVX-512 kernels (Zen 4: 32 KiB L1d, 1 MiB L2 per core, 32 MiB L3):
//   MR x NR = 14 x 32  28 zmm accumulators + 2 for B + 1 broadcast of A
//   KC = 384           A micro-panel 14*384*4 = 21 KiB, in L1d with room for the B stream
//   NC = 512           B block 384*512*4 = 768 KiB, inside the 1 MiB L2
//   MC = 1008          A block 1008*384*4 = 1.5 MiB, in L3 (each of its panels is then used
//                      for NC/NR = 16 micro-kernel calls in a row, from L1)
// Blocks are cut equal, none a sliver (K = 1000 is 3 blocks of 334, not 384 + 384 + 232), and
// so are the row panels: 128 rows are 8 panels of 13 and 2 of 12, not 9 of 14 and a 2-row
// panel that would run at a fraction of the speed.
//
// Threads: the C matrix is cut into Tm x Tn rectangles, Tm * Tn = threads, choosing the cut
// whose largest rectangle costs least (multiply-adds, including the padding of edge tiles,
// plus the packing each thread does). Mostly that is a split of N (each thread packs only
// its own part of B; A is shared read-only), and a split of M when N is narrow.
// No thread waits for another until the end of the call.
//
// The GEMV path (M <= kGemvMaxRows, decode) does not pack: each thread takes a slice of N
// and streams its part of B once, widening f16/bf16 on the fly, with all M rows of A reused
// from L1. It is memory-bound: its speed is the memory bandwidth divided by B's size.
#include "backends/cpu/gemm.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <string>
#include <vector>

#include "backends/cpu/threadpool.h"
#include "core/cpu_features.h"
#include "core/error.h"

#if defined(__x86_64__) || defined(_M_X64)
#define STRAND_GEMM_X86 1
#else
#define STRAND_GEMM_X86 0
#endif

namespace strand::cpu {

namespace detail {
namespace {

// ---- portable kernels ----------------------------------------------------------------------

constexpr int kGenMR = 4;
constexpr int kGenNR = 16;

void micro_generic(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int m, int n,
                   bool acc, const float* bias) {
  float c[kGenMR][kGenNR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float* b = Bp + k * kGenNR;
    for (int i = 0; i < kGenMR; ++i) {
      const float a = Ap[k * kGenMR + i];
      for (int j = 0; j < kGenNR; ++j) c[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < m; ++i) {
    float* crow = C + i * ldc;
    for (int j = 0; j < n; ++j) {
      float v = c[i][j];
      if (acc) v += crow[j];
      else if (bias) v += bias[j];
      crow[j] = v;
    }
  }
}

void pack_a_generic(const float* A, int64_t lda, int m, int64_t kc, float* Ap) {
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < m; ++i) Ap[k * kGenMR + i] = A[i * lda + k];
    for (int i = m; i < kGenMR; ++i) Ap[k * kGenMR + i] = 0.0f;
  }
}

void pack_b_generic16(const GemmArgs& g, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* Bp, int64_t ps) {
  pack_b_generic(g, kGenNR, k0, kc, n0, nc, Bp, ps);
}

double fma_loop_generic(int64_t iters) {
  // 32 independent chains; a plain multiply and add (the baseline ISA may have no FMA).
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = 1.0f + 1e-3f * float(i);
  const float mul = 0.99999f, add = 1e-6f;
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < 32; ++i) x[i] = x[i] * mul + add;
  }
  float s = 0;
  for (float v : x) s += v;
  volatile float sink = s;
  (void)sink;
  return 2.0 * 32.0 * double(iters);
}

template <class Load>
void pack_b_impl(const GemmArgs& g, int nr, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* Bp, int64_t ps,
                 Load load) {
  const int64_t panels = (nc + nr - 1) / nr;
  for (int64_t p = 0; p < panels; ++p) {
    float* dst = Bp + p * ps;
    const int64_t j0 = n0 + p * nr;
    const int cols = int(std::min<int64_t>(nr, n0 + nc - j0));
    if (!g.trans_b) {
      for (int64_t k = 0; k < kc; ++k) {
        const int64_t row = (k0 + k) * g.ldb + j0;
        for (int j = 0; j < cols; ++j) dst[k * nr + j] = load(row + j);
        for (int j = cols; j < nr; ++j) dst[k * nr + j] = 0.0f;
      }
    } else {
      for (int j = 0; j < cols; ++j) {
        const int64_t row = (j0 + j) * g.ldb + k0;
        for (int64_t k = 0; k < kc; ++k) dst[k * nr + j] = load(row + k);
      }
      for (int64_t k = 0; k < kc; ++k)
        for (int j = cols; j < nr; ++j) dst[k * nr + j] = 0.0f;
    }
  }
}

// Widens B[idx] to f32.
struct LoadF32 {
  const float* p;
  float operator()(int64_t i) const { return p[i]; }
};
struct LoadF16 {
  const uint16_t* p;
  float operator()(int64_t i) const { return f16_to_f32(p[i]); }
};
struct LoadBF16 {
  const uint16_t* p;
  float operator()(int64_t i) const { return bf16_to_f32(p[i]); }
};

template <class Load>
void gemv_impl(const GemmArgs& g, int64_t n0, int64_t n1, Load load) {
  constexpr int64_t kBlock = 256;
  float tmp[kBlock];
  if (!g.trans_b) {
    float acc[kGemvMaxRows][kBlock];
    for (int64_t j0 = n0; j0 < n1; j0 += kBlock) {
      const int64_t w = std::min(kBlock, n1 - j0);
      for (int64_t m = 0; m < g.M; ++m)
        for (int64_t j = 0; j < w; ++j) acc[m][j] = 0.0f;
      for (int64_t k = 0; k < g.K; ++k) {
        const int64_t row = k * g.ldb + j0;
        for (int64_t j = 0; j < w; ++j) tmp[j] = load(row + j);
        for (int64_t m = 0; m < g.M; ++m) {
          const float a = g.A[m * g.lda + k];
          for (int64_t j = 0; j < w; ++j) acc[m][j] += a * tmp[j];
        }
      }
      for (int64_t m = 0; m < g.M; ++m)
        for (int64_t j = 0; j < w; ++j) g.C[m * g.ldc + j0 + j] = acc[m][j] + (g.bias ? g.bias[j0 + j] : 0.0f);
    }
  } else {
    for (int64_t n = n0; n < n1; ++n) {
      float s[kGemvMaxRows] = {};
      for (int64_t k0 = 0; k0 < g.K; k0 += kBlock) {
        const int64_t w = std::min(kBlock, g.K - k0);
        const int64_t row = n * g.ldb + k0;
        for (int64_t k = 0; k < w; ++k) tmp[k] = load(row + k);
        for (int64_t m = 0; m < g.M; ++m) {
          const float* a = g.A + m * g.lda + k0;
          float t = 0.0f;
          for (int64_t k = 0; k < w; ++k) t += a[k] * tmp[k];
          s[m] += t;
        }
      }
      for (int64_t m = 0; m < g.M; ++m) g.C[m * g.ldc + n] = s[m] + (g.bias ? g.bias[n] : 0.0f);
    }
  }
}

const GemmKernels kGeneric = {
    GemmIsa::Generic, kGenMR, kGenNR, 64, 256, 1024,
    micro_generic,    pack_a_generic, pack_b_generic16, gemv_generic, fma_loop_generic,
};

}  // namespace

void pack_b_generic(const GemmArgs& g, int nr, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* Bp, int64_t ps) {
  switch (g.b_dtype) {
    case DType::F16: pack_b_impl(g, nr, k0, kc, n0, nc, Bp, ps, LoadF16{static_cast<const uint16_t*>(g.B)}); break;
    case DType::BF16: pack_b_impl(g, nr, k0, kc, n0, nc, Bp, ps, LoadBF16{static_cast<const uint16_t*>(g.B)}); break;
    default: pack_b_impl(g, nr, k0, kc, n0, nc, Bp, ps, LoadF32{static_cast<const float*>(g.B)}); break;
  }
}

void gemv_generic(const GemmArgs& g, int64_t n0, int64_t n1) {
  switch (g.b_dtype) {
    case DType::F16: gemv_impl(g, n0, n1, LoadF16{static_cast<const uint16_t*>(g.B)}); break;
    case DType::BF16: gemv_impl(g, n0, n1, LoadBF16{static_cast<const uint16_t*>(g.B)}); break;
    default: gemv_impl(g, n0, n1, LoadF32{static_cast<const float*>(g.B)}); break;
  }
}

const GemmKernels& kernels_generic() { return kGeneric; }

#if !STRAND_GEMM_X86
const GemmKernels* kernels_avx2() { return nullptr; }
const GemmKernels* kernels_avx512() { return nullptr; }
#endif

void pack_a_trans(const float* A, int64_t lda, int m, int mr, int64_t kc, float* Ap) {
  for (int64_t k = 0; k < kc; ++k) {
    const float* src = A + k * lda;
    float* dst = Ap + k * mr;
    int i = 0;
    for (; i < m; ++i) dst[i] = src[i];
    for (; i < mr; ++i) dst[i] = 0.0f;
  }
}

}  // namespace detail

namespace {

using detail::GemmKernels;

bool cpu_runs(GemmIsa isa) {
#if STRAND_GEMM_X86
  switch (isa) {
    case GemmIsa::Avx512: return cpu_features().has_avx512_set();
    case GemmIsa::Avx2: return cpu_features().has_avx2_set();
    default: return true;
  }
#else
  return isa == GemmIsa::Generic || isa == GemmIsa::Auto;
#endif
}

const GemmKernels* compiled(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::Generic: return &detail::kernels_generic();
    case GemmIsa::Avx2: return detail::kernels_avx2();
    case GemmIsa::Avx512: return detail::kernels_avx512();
    default: return nullptr;
  }
}

GemmIsa detect_best() {
  GemmIsa best = GemmIsa::Generic;
  for (GemmIsa i : {GemmIsa::Avx2, GemmIsa::Avx512})
    if (compiled(i) && cpu_runs(i)) best = i;
  // STRAND_GEMM_ISA=generic|avx2|avx512 lowers the choice (never raises it past the CPU).
  if (const char* s = std::getenv("STRAND_GEMM_ISA"); s && *s) {
    const std::string v(s);
    GemmIsa want = best;
    if (v == "generic") want = GemmIsa::Generic;
    else if (v == "avx2") want = GemmIsa::Avx2;
    else if (v == "avx512") want = GemmIsa::Avx512;
    if (compiled(want) && cpu_runs(want) && int(want) < int(best)) best = want;
  }
  return best;
}

const GemmKernels& kernels_for(GemmIsa isa) {
  if (isa == GemmIsa::Auto) isa = gemm_best_isa();
  const GemmKernels* k = compiled(isa);
  if (!k) fail("gemm: the {} kernels are not compiled into this build", gemm_isa_name(isa));
  if (!cpu_runs(isa)) fail("gemm: this CPU cannot run the {} kernels", gemm_isa_name(isa));
  return *k;
}

// 64-byte aligned scratch that grows as needed, one per thread (workers are persistent).
struct Scratch {
  float* p = nullptr;
  size_t cap = 0;  // floats
  ~Scratch() { std::free(p); }
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      const size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) throw std::bad_alloc();
      cap = bytes / sizeof(float);
    }
    return p;
  }
};

thread_local Scratch tls_a, tls_b;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// The packed path on the rectangle [m0, m1) x [n0, n1) of C.
void packed_range(const GemmArgs& g, const GemmKernels& kr, int64_t MC, int64_t KC, int64_t NC, int64_t m0,
                  int64_t m1, int64_t n0, int64_t n1) {
  if (m0 >= m1 || n0 >= n1) return;
  const int mr = kr.mr, nr = kr.nr;
  // Equal blocks, none a sliver: K = 1000 with KC = 384 is 3 blocks of 334 (the last 332).
  const int64_t kcb = ceil_div(g.K, ceil_div(g.K, KC));
  const int64_t ncols = n1 - n0;
  const int64_t ncb = round_up(ceil_div(ncols, ceil_div(ncols, NC)), nr);
  const int64_t mcb = ceil_div(m1 - m0, ceil_div(m1 - m0, std::max<int64_t>(MC, mr)));
  float* Bp = tls_b.get(size_t(kcb * ncb));
  float* Ap = tls_a.get(size_t(kcb * round_up(mcb + mr, mr)));
  for (int64_t ic = m0; ic < m1; ic += mcb) {
    // Row panels of (nearly) equal height: 128 rows with MR = 14 are 8 panels of 13 and 2 of
    // 12, not 9 of 14 and a 2-row sliver that would run at a fraction of the speed.
    const int64_t rows = std::min(mcb, m1 - ic);
    const int64_t panels = ceil_div(rows, mr);
    const int64_t base = rows / panels, extra = rows % panels;  // the first `extra` panels get a row more
    auto panel_row = [&](int64_t p) { return ic + p * base + std::min(p, extra); };
    for (int64_t pc = 0; pc < g.K; pc += kcb) {
      const int64_t kc = std::min(kcb, g.K - pc);
      const bool first = pc == 0;
      for (int64_t p = 0; p < panels; ++p) {  // A block: packed once, used for every column block
        const int m = int(panel_row(p + 1) - panel_row(p));
        if (g.trans_a)
          detail::pack_a_trans(g.A + pc * g.lda + panel_row(p), g.lda, m, mr, kc, Ap + p * kc * mr);
        else
          kr.pack_a(g.A + panel_row(p) * g.lda + pc, g.lda, m, kc, Ap + p * kc * mr);
      }
      for (int64_t jc = n0; jc < n1; jc += ncb) {
        const int64_t nc = std::min(ncb, n1 - jc);
        kr.pack_b(g, pc, kc, jc, nc, Bp, kc * nr);
        for (int64_t p = 0; p < panels; ++p) {
          const int64_t r = panel_row(p);
          const int m = int(panel_row(p + 1) - r);
          const float* ap = Ap + p * kc * mr;
          float* crow = g.C + r * g.ldc + jc;
          for (int64_t jr = 0; jr < nc; jr += nr) {
            const int n = int(std::min<int64_t>(nr, nc - jr));
            kr.micro(kc, ap, Bp + (jr / nr) * kc * nr, crow + jr, g.ldc, m, n, !first,
                     first && g.bias ? g.bias + jc + jr : nullptr);
          }
        }
      }
    }
  }
}

struct Split {
  int tm = 1, tn = 1;
};

// Chooses how to cut C among `threads` rectangles (see the header comment).
Split choose_split(const GemmArgs& g, const GemmKernels& kr, int64_t MC, int threads) {
  Split best;
  double best_cost = -1;
  for (int tm = 1; tm <= threads; ++tm)
    for (int tn = 1; tm * tn <= threads; ++tn) {
      if (g.M < tm || ceil_div(g.N, kr.nr) < tn) continue;  // a thread would get nothing
      const int64_t rows = round_up(ceil_div(g.M, tm), kr.mr);
      const int64_t cols = round_up(ceil_div(g.N, tn), kr.nr);
      // In units of one multiply-add lane: a packed element costs about as much as 16 (B: read
      // from memory, widened, written) or 8 (A) of them.
      const double k = double(g.K);
      const double compute = double(rows) * double(cols) * k;
      const double pack_b = 16.0 * double(cols) * k * double(ceil_div(rows, MC));  // once per MC rows
      const double pack_a = 8.0 * double(rows) * k;
      const double cost = compute + pack_b + pack_a;
      if (best_cost < 0 || cost < best_cost * 0.999) {  // a real gain, not a tie, to use more threads
        best_cost = cost;
        best = {tm, tn};
      }
    }
  return best;
}

void run_packed(const GemmArgs& g, const GemmKernels& kr, const GemmOptions& opt, ThreadPool* pool) {
  const int64_t MC = opt.mc > 0 ? opt.mc : kr.mc;
  const int64_t KC = opt.kc > 0 ? opt.kc : kr.kc;
  const int64_t NC = opt.nc > 0 ? round_up(opt.nc, kr.nr) : kr.nc;
  int threads = pool ? pool->size() : 1;
  // Below ~2 MFLOP (about 20 us on one core) waking the workers costs about as much as it saves.
  const double min_work = opt.min_parallel_work < 0 ? 1e6 : opt.min_parallel_work;
  if (double(g.M) * double(g.N) * double(g.K) < min_work) threads = 1;
  const Split s = threads > 1 ? choose_split(g, kr, MC, threads) : Split{};
  if (s.tm * s.tn == 1) {
    packed_range(g, kr, MC, KC, NC, 0, g.M, 0, g.N);
    return;
  }
  const int64_t nblocks = ceil_div(g.N, kr.nr);
  pool->run([&](int t) {
    if (t >= s.tm * s.tn) return;
    const int64_t ti = t / s.tn, tj = t % s.tn;
    const int64_t m0 = g.M * ti / s.tm, m1 = g.M * (ti + 1) / s.tm;
    const int64_t n0 = std::min(g.N, nblocks * tj / s.tn * kr.nr);
    const int64_t n1 = std::min(g.N, nblocks * (tj + 1) / s.tn * kr.nr);
    packed_range(g, kr, MC, KC, NC, m0, m1, n0, n1);
  });
}

void run_gemv(const GemmArgs& g, const GemmKernels& kr, const GemmOptions& opt, ThreadPool* pool) {
  int threads = pool ? pool->size() : 1;
  if (opt.min_parallel_work == 0) {
    threads = int(std::min<int64_t>(threads, ceil_div(g.N, 16)));  // tests: split whatever the size
  } else {
    // Each thread gets at least 64 columns and ~64 KiB of B, or the wake-up is not worth it.
    const double bbytes = double(g.N) * double(g.K) * double(dtype_size(g.b_dtype));
    threads = int(std::min<int64_t>({int64_t(threads), std::max<int64_t>(1, g.N / 64),
                                     std::max<int64_t>(1, int64_t(bbytes / 65536.0))}));
  }
  if (threads <= 1) {
    kr.gemv(g, 0, g.N);
    return;
  }
  const int64_t blocks = ceil_div(g.N, 16);
  pool->run([&](int t) {
    if (t >= threads) return;
    const int64_t n0 = std::min(g.N, blocks * t / threads * 16);
    const int64_t n1 = std::min(g.N, blocks * (t + 1) / threads * 16);
    if (n0 < n1) kr.gemv(g, n0, n1);
  });
}

void check_args(const GemmArgs& g) {
  if (g.M < 0 || g.N < 0 || g.K < 0) fail("gemm: negative size M={} N={} K={}", g.M, g.N, g.K);
  if (g.b_dtype != DType::F32 && g.b_dtype != DType::F16 && g.b_dtype != DType::BF16)
    fail("gemm: B must be f32, f16 or bf16, not {}", dtype_name(g.b_dtype));
  if (g.M == 0 || g.N == 0) return;
  if (!g.C) fail("gemm: C is null");
  if (g.ldc < g.N) fail("gemm: ldc {} < N {}", g.ldc, g.N);
  if (g.K == 0) return;
  if (!g.A || !g.B) fail("gemm: A or B is null");
  if (g.lda < (g.trans_a ? g.M : g.K)) fail("gemm: lda {} < {} {}", g.lda, g.trans_a ? "M" : "K", g.trans_a ? g.M : g.K);
  const int64_t need_ldb = g.trans_b ? g.K : g.N;
  if (g.ldb < need_ldb) fail("gemm: ldb {} < {} {}", g.ldb, g.trans_b ? "K" : "N", need_ldb);
}

}  // namespace

bool gemm_isa_available(GemmIsa isa) {
  if (isa == GemmIsa::Auto) return true;
  return compiled(isa) && cpu_runs(isa);
}

GemmIsa gemm_best_isa() {
  static const GemmIsa best = detect_best();
  return best;
}

const char* gemm_isa_name(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::Auto: return "auto";
    case GemmIsa::Generic: return "generic";
    case GemmIsa::Avx2: return "avx2";
    case GemmIsa::Avx512: return "avx512";
  }
  return "?";
}

GemmBlocking gemm_blocking(GemmIsa isa) {
  const GemmKernels& k = kernels_for(isa);
  return {k.mr, k.nr, k.mc, k.kc, k.nc};
}

void gemm(const GemmArgs& g, ThreadPool* pool, const GemmOptions& opt) {
  check_args(g);
  const GemmKernels& kr = kernels_for(opt.isa);
  if (g.M == 0 || g.N == 0) return;
  if (g.K == 0) {
    for (int64_t i = 0; i < g.M; ++i)
      for (int64_t j = 0; j < g.N; ++j) g.C[i * g.ldc + j] = g.bias ? g.bias[j] : 0.0f;
    return;
  }
  const bool gemv = opt.path == GemmPath::Gemv || (opt.path == GemmPath::Auto && g.M <= kGemvMaxRows);
  if (gemv && g.trans_a) {
    // The GEMV kernels read rows of A: give them Aᵀ's few rows as a contiguous copy.
    std::vector<float> at(size_t(g.M * g.K));
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t i = 0; i < g.M; ++i) at[size_t(i * g.K + k)] = g.A[k * g.lda + i];
    GemmArgs s = g;
    s.A = at.data();
    s.lda = g.K;
    s.trans_a = false;
    gemm(s, pool, opt);
    return;
  }
  if (gemv) {
    // The GEMV kernels hold at most kGemvMaxRows rows of A at once: take taller A in slices.
    for (int64_t r = 0; r < g.M; r += kGemvMaxRows) {
      GemmArgs s = g;
      s.M = std::min(kGemvMaxRows, g.M - r);
      s.A = g.A + r * g.lda;
      s.C = g.C + r * g.ldc;
      run_gemv(s, kr, opt, pool);
    }
  } else {
    run_packed(g, kr, opt, pool);
  }
}

void gemm(const GemmArgs& g, ThreadPool* pool) { gemm(g, pool, GemmOptions{}); }

double fma_loop_flops(GemmIsa isa, double seconds) {
  const GemmKernels& kr = kernels_for(isa);
  // Timed in CPU time of this thread where the OS offers it, so that time given to other
  // processes on a shared machine does not count against the hardware.
  auto now = [] {
#if defined(CLOCK_THREAD_CPUTIME_ID)
    timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
#endif
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  auto timed = [&](int64_t iters, double* flops) {
    const double t0 = now();
    *flops = kr.fma_loop(iters);
    return now() - t0;
  };
  double flops = 0;
  int64_t iters = 1 << 12;
  double dt = timed(iters, &flops);
  while (dt < 0.02) {
    iters *= 4;
    dt = timed(iters, &flops);
  }
  // Several windows; the best is the one least disturbed by other processes.
  const int64_t win = std::max<int64_t>(1, int64_t(double(iters) * (seconds / 5.0) / dt));
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    const double t = timed(win, &flops);
    best = std::max(best, flops / t);
  }
  return best;
}

}  // namespace strand::cpu
