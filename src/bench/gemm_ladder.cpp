// strand/bench/gemm_ladder.cpp — the rungs of the GEMM ladder and the benchmark that times them.
#include "bench/gemm_ladder.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "backends/cpu/gemm.h"
#include "backends/cpu/threadpool.h"
#include "bench/gemm_tiles.h"
#include "backends/onednn/onednn.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "devices/busy.h"
#include "devices/machine.h"
#include "devices/probe.h"
#include "core/rounding.h"

#ifdef STRAND_HAVE_OPENBLAS
#include <cblas.h>
#endif

// The blocked rung is meant to stay scalar (the vectors come one rung later): keep the
// compiler from vectorizing it on its own.
#if defined(__GNUC__) && !defined(__clang__)
#define STRAND_SCALAR_ONLY __attribute__((optimize("no-tree-vectorize")))
#else
#define STRAND_SCALAR_ONLY
#endif

// The simd rung is written once with vector types and compiled for AVX-512, AVX2 and the
// baseline; the loader picks the clone this CPU runs.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define STRAND_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define STRAND_SIMD_CLONES
#endif

using json = nlohmann::json;

namespace strand::bench {

namespace {

void require_f32(const GemmProblem& p, const char* rung) {
  if (p.b_dtype != DType::F32) fail("{} rung: B must be f32 (only the packed rung widens f16/bf16)", rung);
}

const float* bf32(const GemmProblem& p) { return static_cast<const float*>(p.B); }

// B^T as a [K, N] row-major copy (the teaching rungs read B by rows of N).
std::vector<float> untranspose(const GemmProblem& p) {
  std::vector<float> t(size_t(p.K * p.N));
  const float* B = bf32(p);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t k = 0; k < p.K; ++k) t[size_t(k * p.N + n)] = B[n * p.K + k];
  return t;
}

// ---- simd: blocked loops around a 6 x 16 register tile ----------------------------------------
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));  // for unaligned loads/stores

constexpr int64_t kSimdNB = 256, kSimdKB = 256;  // B block 256 x 256 floats = 256 KiB (L2)

// C[:, j0..j1) = A · B[:, j0..j1) for B [K, N] row-major. C's columns j0..j1 are overwritten.
STRAND_SIMD_CLONES
void simd_columns(const float* A, const float* B, float* C, int64_t M, int64_t N, int64_t K, int64_t j0, int64_t j1) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = j0; j < j1; ++j) C[i * N + j] = 0.0f;
  for (int64_t jc = j0; jc < j1; jc += kSimdNB) {
    const int64_t je = std::min(j1, jc + kSimdNB);
    for (int64_t kc = 0; kc < K; kc += kSimdKB) {
      const int64_t ke = std::min(K, kc + kSimdKB);
      int64_t i = 0;
      for (; i + 6 <= M; i += 6) {  // full 6-row tiles
        const float* a = A + i * K;
        int64_t j = jc;
        for (; j + 16 <= je; j += 16) {
          float* c = C + i * N + j;
          v16 c0 = *(const v16u*)(c), c1 = *(const v16u*)(c + N), c2 = *(const v16u*)(c + 2 * N);
          v16 c3 = *(const v16u*)(c + 3 * N), c4 = *(const v16u*)(c + 4 * N), c5 = *(const v16u*)(c + 5 * N);
          for (int64_t k = kc; k < ke; ++k) {
            const v16 b = *(const v16u*)(B + k * N + j);
            c0 += a[k] * b;
            c1 += a[K + k] * b;
            c2 += a[2 * K + k] * b;
            c3 += a[3 * K + k] * b;
            c4 += a[4 * K + k] * b;
            c5 += a[5 * K + k] * b;
          }
          *(v16u*)(c) = c0;
          *(v16u*)(c + N) = c1;
          *(v16u*)(c + 2 * N) = c2;
          *(v16u*)(c + 3 * N) = c3;
          *(v16u*)(c + 4 * N) = c4;
          *(v16u*)(c + 5 * N) = c5;
        }
        for (; j < je; ++j)  // the last < 16 columns
          for (int64_t r = 0; r < 6; ++r) {
            float s = C[(i + r) * N + j];
            for (int64_t k = kc; k < ke; ++k) s += a[r * K + k] * B[k * N + j];
            C[(i + r) * N + j] = s;
          }
      }
      for (; i < M; ++i) {  // the last < 6 rows, one at a time
        const float* a = A + i * K;
        int64_t j = jc;
        for (; j + 16 <= je; j += 16) {
          v16 c0 = *(const v16u*)(C + i * N + j);
          for (int64_t k = kc; k < ke; ++k) c0 += a[k] * *(const v16u*)(B + k * N + j);
          *(v16u*)(C + i * N + j) = c0;
        }
        for (; j < je; ++j) {
          float s = C[i * N + j];
          for (int64_t k = kc; k < ke; ++k) s += a[k] * B[k * N + j];
          C[i * N + j] = s;
        }
      }
    }
  }
}

// ---- timing helpers -------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string read_cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto c = line.find(':');
      if (c != std::string::npos) return line.substr(c + 2);
    }
  }
  return "unknown";
}

int64_t cache_bytes(int level) {
  // sysfs first: inside some VMs sysconf reports the host's L3.
  {
    std::ifstream f(fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/size", level == 1 ? 0 : level));
    std::string s;
    if (f >> s && !s.empty()) {
      int64_t v = 0;
      size_t i = 0;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
      const char unit = i < s.size() ? s[i] : ' ';
      if (unit == 'K') v <<= 10;
      else if (unit == 'M') v <<= 20;
      if (v > 0) return v;
    }
  }
#if defined(_SC_LEVEL1_DCACHE_SIZE)
  const long v = sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
  if (v > 0) return v;
#endif
  return level == 1 ? 32 << 10 : level == 2 ? 1 << 20 : 32 << 20;
}

}  // namespace

// ---- the rungs ------------------------------------------------------------------------------

// Rung 1. The definition, as written in a textbook: for every C[i][j] a dot product of row i
// of A with column j of B. Walking B down a column touches a new cache line at every step.
void gemm_naive(const GemmProblem& p) {
  require_f32(p, "naive");
  const int64_t M = p.M, N = p.N, K = p.K;
  const float* A = p.A;
  const float* B = bf32(p);
  if (!p.trans_b) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        float s = 0.0f;
        for (int64_t k = 0; k < K; ++k) s += A[i * K + k] * B[k * N + j];
        p.C[i * N + j] = s;
      }
  } else {  // B is [N, K]: column j of the product is row j of B
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        float s = 0.0f;
        for (int64_t k = 0; k < K; ++k) s += A[i * K + k] * B[j * K + k];
        p.C[i * N + j] = s;
      }
  }
}

// Rung 2. Same multiply-adds, reordered: C is computed in blocks whose pieces of A and B fit
// in the caches, and inside a block the loop order is i-k-j, so the innermost loop runs along
// rows of B and C (unit stride). Still one scalar multiply-add at a time.
STRAND_SCALAR_ONLY void gemm_blocked(const GemmProblem& p) {
  require_f32(p, "blocked");
  constexpr int64_t MB = 64, NB = 256, KB = 256;  // B block 256 KiB (L2), A block 64 KiB
  const int64_t M = p.M, N = p.N, K = p.K;
  const float* A = p.A;
  const float* B = bf32(p);
  float* C = p.C;
  for (int64_t i = 0; i < M * N; ++i) C[i] = 0.0f;
  for (int64_t jc = 0; jc < N; jc += NB) {
    const int64_t je = std::min(N, jc + NB);
    for (int64_t kc = 0; kc < K; kc += KB) {
      const int64_t ke = std::min(K, kc + KB);
      for (int64_t ic = 0; ic < M; ic += MB) {
        const int64_t ie = std::min(M, ic + MB);
        if (!p.trans_b) {
          for (int64_t i = ic; i < ie; ++i)
            for (int64_t k = kc; k < ke; ++k) {
              const float a = A[i * K + k];
              for (int64_t j = jc; j < je; ++j) C[i * N + j] += a * B[k * N + j];
            }
        } else {  // B [N, K]: dot products along k are unit stride for both operands
          for (int64_t i = ic; i < ie; ++i)
            for (int64_t j = jc; j < je; ++j) {
              float s = C[i * N + j];
              for (int64_t k = kc; k < ke; ++k) s += A[i * K + k] * B[j * K + k];
              C[i * N + j] = s;
            }
        }
      }
    }
  }
}

// Rung 3. The blocked loops around a register tile: 6 rows x 16 columns of C live in vector
// registers while k runs through the block, so each element of B loaded is used 6 times and
// C is loaded and stored once per block instead of once per multiply-add. One thread.
void gemm_simd(const GemmProblem& p) {
  require_f32(p, "simd");
  if (p.trans_b) {
    const std::vector<float> b = untranspose(p);  // this rung reads B by rows of N
    simd_columns(p.A, b.data(), p.C, p.M, p.N, p.K, 0, p.N);
  } else {
    simd_columns(p.A, bf32(p), p.C, p.M, p.N, p.K, 0, p.N);
  }
}

// Rung 4. Rung 3 on every thread of the pool: each takes a slice of C's columns (a multiple of
// 16 wide), reading all of A and its own slice of B.
void gemm_threads(const GemmProblem& p, cpu::ThreadPool& pool) {
  require_f32(p, "threads");
  std::vector<float> tb;
  const float* B = bf32(p);
  if (p.trans_b) {
    tb.assign(size_t(p.K * p.N), 0.0f);
    const float* src = B;
    pool.parallel_for(p.N, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n)
        for (int64_t k = 0; k < p.K; ++k) tb[size_t(k * p.N + n)] = src[n * p.K + k];
    });
    B = tb.data();
  }
  const int64_t groups = (p.N + 15) / 16;
  pool.parallel_for(groups, [&](int64_t b, int64_t e) {
    simd_columns(p.A, B, p.C, p.M, p.N, p.K, b * 16, std::min(p.N, e * 16));
  });
}

// Rung 5. The production kernel (backends/cpu/gemm.cpp).
void gemm_packed(const GemmProblem& p, cpu::ThreadPool& pool) {
  cpu::GemmArgs g;
  g.M = p.M;
  g.N = p.N;
  g.K = p.K;
  g.A = p.A;
  g.lda = p.K;
  g.B = p.B;
  g.b_dtype = p.b_dtype;
  g.ldb = p.trans_b ? p.K : p.N;
  g.trans_b = p.trans_b;
  g.C = p.C;
  g.ldc = p.N;
  cpu::gemm(g, &pool);
}

void gemm_blas(const GemmProblem& p) {
  require_f32(p, "blas");
#ifdef STRAND_HAVE_OPENBLAS
  cblas_sgemm(CblasRowMajor, CblasNoTrans, p.trans_b ? CblasTrans : CblasNoTrans, blasint(p.M), blasint(p.N),
              blasint(p.K), 1.0f, p.A, blasint(p.K), bf32(p), blasint(p.trans_b ? p.K : p.N), 0.0f, p.C,
              blasint(p.N));
#else
  fail("blas rung: OpenBLAS was not found when strand was built");
#endif
}

void gemm_onednn(const GemmProblem& p) {
  require_f32(p, "onednn");
  onednn_sgemm(p.M, p.N, p.K, p.A, p.K, bf32(p), p.trans_b ? p.K : p.N, p.C, p.N, p.trans_b);
}

std::vector<Rung> gemm_rungs(cpu::ThreadPool& pool) {
  std::vector<Rung> r;
  r.push_back({"naive", "i-j-k triple loop, scalar", false, false, true, "", gemm_naive});
  r.push_back({"blocked", "cache blocks, i-k-j inside, scalar", false, false, true, "", gemm_blocked});
  r.push_back({"simd", "blocked + 6x16 register tile in vector registers, 1 thread", false, false, true, "", gemm_simd});
  r.push_back({"threads", "simd with C's columns split over the pool", true, false, true, "",
               [&pool](const GemmProblem& p) { gemm_threads(p, pool); }});
  r.push_back({"packed", "strand::cpu::gemm: packed panels, micro-kernel, GEMV path, all threads", true, true, true, "",
               [&pool](const GemmProblem& p) { gemm_packed(p, pool); }});
  Rung blas{"blas", "OpenBLAS cblas_sgemm", true, false, true, "", gemm_blas};
#ifndef STRAND_HAVE_OPENBLAS
  blas.available = false;
  blas.why_not = "OpenBLAS was not found when strand was built";
#endif
  r.push_back(blas);
  Rung dnn{"onednn", "oneDNN dnnl_sgemm", true, false, true, "", gemm_onednn};
  dnn.available = onednn_available(&dnn.why_not);
  r.push_back(dnn);
  for (Rung& t : tile_rungs(pool)) r.push_back(std::move(t));  // amx-bf16, amx-int8, onednn-bf16
  return r;
}

// ---- machine facts --------------------------------------------------------------------------

MachinePeak measure_peak(cpu::ThreadPool& pool) {
  MachinePeak pk;
  const BusyMeter busy;
  const cpu::GemmIsa isa = cpu::gemm_best_isa();
  pk.fma_1t_gflops = cpu::fma_loop_flops(isa, 0.25) * 1e-9;
  if (isa == cpu::GemmIsa::Avx512 && cpu::gemm_isa_available(cpu::GemmIsa::Avx2))
    pk.fma_1t_narrow_gflops = cpu::fma_loop_flops(cpu::GemmIsa::Avx2, 0.25) * 1e-9;
  double spread = 0;
  pk.fma_all_gflops = measure_fma_peak_gflops(pool.size(), 0.25, &spread);
  // A buffer far beyond the caches, read by every reader strand has; the best is the bound.
  const int64_t l3 = cache_bytes(3);
  ReadBandwidthMeter meter(size_t(std::clamp<int64_t>(8 * l3, int64_t(256) << 20, int64_t(512) << 20)), pool.size());
  pk.mem_read_gbs = meter.measure(0.5);
  pk.mem_reader = meter.best().name;
  const BusyVerdict v = judge_busy(busy.others_share(), std::max(spread, meter.best().spread));
  pk.busy = v.busy;
  pk.busy_detail = v.why;
  measure_tile_peaks(pool, pk);
  return pk;
}

json machine_info(cpu::ThreadPool& pool) {
  json m;
  m["cpu"] = read_cpu_model();
  m["hardware_threads"] = std::thread::hardware_concurrency();
  m["threads"] = pool.size();
  json simd = cpu_features().names();  // CPUID + XCR0 (core/cpu_features.h)
  m["simd"] = simd;
  m["cache_bytes"] = {{"l1d", cache_bytes(1)}, {"l2", cache_bytes(2)}, {"l3", cache_bytes(3)}};
  const cpu::GemmIsa isa = cpu::gemm_best_isa();
  const cpu::GemmBlocking b = cpu::gemm_blocking(isa);
  m["gemm_kernels"] = {{"isa", cpu::gemm_isa_name(isa)}, {"mr", b.mr}, {"nr", b.nr}, {"mc", b.mc}, {"kc", b.kc},
                       {"nc", b.nc}, {"gemv_max_rows", cpu::kGemvMaxRows}};
#ifdef STRAND_HAVE_OPENBLAS
  m["openblas"] = {{"core", openblas_get_corename()}, {"config", openblas_get_config()},
                   {"threads", openblas_get_num_threads()}};
#else
  m["openblas"] = nullptr;
#endif
  std::string why;
  m["onednn"] = onednn_available(&why) ? json(onednn_version()) : json(nullptr);
#if defined(__VERSION__)
  m["compiler"] = __VERSION__;
#endif
  return m;
}

std::vector<GemmShape> gpt2_shapes() {
  struct KN {
    int64_t K, N;
    bool t;
    const char* what;
  };
  const KN kn[] = {{768, 2304, false, "attn qkv"}, {768, 768, false, "attn proj"}, {768, 3072, false, "mlp fc"},
                   {3072, 768, false, "mlp proj"}, {768, 50257, true, "lm_head (wte^T)"}};
  std::vector<GemmShape> s;
  for (int64_t M : {1, 128, 512})
    for (const KN& x : kn)
      s.push_back({fmt::format("{} M={} K={} N={}", x.what, M, x.K, x.N), M, x.N, x.K, x.t, false});
  return s;
}

// ---- the benchmark --------------------------------------------------------------------------

namespace {

std::vector<uint16_t> to_half(const std::vector<float>& v, DType d) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = d == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
  return h;
}

double b_value(const void* B, DType d, size_t idx) {
  if (d == DType::F32) return static_cast<const float*>(B)[idx];
  const uint16_t h = static_cast<const uint16_t*>(B)[idx];
  return d == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// Values along K as a rung rounds them (row i of A, or column j of B): core/rounding.h's rules.
std::vector<double> rounded_line(std::vector<float> v, Rounding r) {
  const Tensor t = Tensor::view_of(v.data(), DType::F32, {int64_t(v.size())}, nullptr);
  const Tensor d = round_to_f64(t, r);
  return std::vector<double>(d.ptr<const double>(), d.ptr<const double>() + d.numel());
}

// Max error of C on sampled entries against float64 on the inputs rounded as the rung rounds
// them, relative to the largest |reference|.
double sampled_error(const GemmProblem& p, Rng& rng, Rounding ra = Rounding::None, Rounding rb = Rounding::None,
                     int samples = 48) {
  double max_err = 0, max_ref = 0;
  for (int s = 0; s < samples; ++s) {
    const int64_t i = int64_t(rng.below(uint64_t(p.M))), j = int64_t(rng.below(uint64_t(p.N)));
    std::vector<float> a(size_t(p.K)), b(size_t(p.K));
    for (int64_t k = 0; k < p.K; ++k) {
      a[size_t(k)] = p.A[i * p.K + k];
      b[size_t(k)] = float(b_value(p.B, p.b_dtype, size_t(p.trans_b ? j * p.K + k : k * p.N + j)));
    }
    const std::vector<double> ar = rounded_line(a, ra), br = rounded_line(b, rb);
    double ref = 0;
    for (int64_t k = 0; k < p.K; ++k) ref += ar[size_t(k)] * br[size_t(k)];
    const double c = p.C[i * p.N + j];
    max_err = std::max(max_err, std::isfinite(c) ? std::fabs(c - ref) : INFINITY);
    max_ref = std::max(max_ref, std::fabs(ref));
  }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

void set_library_threads(int n) {
#ifdef STRAND_HAVE_OPENBLAS
  openblas_set_num_threads(n);
#endif
  onednn_set_threads(n);
}

}  // namespace

double b_read_bytes_per_elem(const Rung& r, DType b_dtype) {
  return r.b_elem_bytes > 0 ? r.b_elem_bytes : double(dtype_size(r.any_dtype ? b_dtype : DType::F32));
}

json run_gemm_ladder(const LadderOptions& opt, const std::function<void(const std::string&)>& progress) {
  const auto t_start = Clock::now();
  auto say = [&](const std::string& s) {
    if (progress) progress(s);
  };
  cpu::ThreadPool& pool = cpu::ThreadPool::global();
  if (opt.threads > 0) cpu::ThreadPool::set_global_threads(opt.threads);
  const int threads = pool.size();
  set_library_threads(threads);

  // Which rungs.
  std::vector<Rung> all = gemm_rungs(pool);
  std::vector<Rung> rungs;
  if (opt.rungs.empty()) {
    rungs = all;
  } else {
    for (const std::string& name : opt.rungs) {
      auto it = std::find_if(all.begin(), all.end(), [&](const Rung& r) { return r.name == name; });
      if (it == all.end())
        fail("--rungs: unknown rung '{}' (naive, blocked, simd, threads, packed, blas, onednn, amx-bf16, amx-int8, "
             "avx512bf16, onednn-bf16)", name);
      rungs.push_back(*it);
    }
    // Ladder order, whatever order they were named in.
    std::sort(rungs.begin(), rungs.end(), [&](const Rung& a, const Rung& b) {
      auto pos = [&](const Rung& r) {
        return std::find_if(all.begin(), all.end(), [&](const Rung& x) { return x.name == r.name; }) - all.begin();
      };
      return pos(a) < pos(b);
    });
    rungs.erase(std::unique(rungs.begin(), rungs.end(), [](const Rung& a, const Rung& b) { return a.name == b.name; }),
                rungs.end());
  }

  json report;
  report["machine"] = machine_info(pool);
  MachinePeak pk;
  if (opt.measure_peak) {
    say("measuring the FMA peak, clock and memory bandwidth...");
    pk = measure_peak(pool);
  }
  report["peak"] = {{"fma_1thread_gflops", pk.fma_1t_gflops},
                    {"fma_1thread_256bit_gflops", pk.fma_1t_narrow_gflops},
                    {"fma_all_threads_gflops", pk.fma_all_gflops},
                    {"mem_read_gbs", pk.mem_read_gbs},
                    {"mem_reader", pk.mem_reader},
                    {"busy", pk.busy},
                    {"busy_detail", pk.busy_detail},
                    {"bf16_gflops", pk.bf16_gflops},
                    {"bf16_unit", pk.bf16_unit},
                    {"int8_gops", pk.int8_gops},
                    {"avx512_bf16_gflops", pk.avx512_bf16_gflops}};
  json rung_names = json::array();
  for (const Rung& r : rungs) rung_names.push_back(r.name);
  report["options"] = {{"threads", threads},          {"reps", opt.reps},
                       {"max_seconds", opt.max_seconds}, {"max_cell_seconds", opt.max_cell_seconds},
                       {"b_dtype", std::string(dtype_name(opt.b_dtype))}, {"rungs", rung_names}};

  std::vector<GemmShape> shapes;
  for (int64_t s : opt.sizes) shapes.push_back({fmt::format("{}x{}x{}", s, s, s), s, s, s, false, true});
  if (opt.gpt2)
    for (const GemmShape& s : gpt2_shapes()) shapes.push_back(s);

  Progress cells_progress("bench gemm", double(shapes.size() * rungs.size()), "cells");
  std::map<std::string, double> slowest_rate;  // rung/kind -> lowest GFLOP/s seen, for predictions
  const double default_rate[] = {0.2, 0.5, 2.0};  // naive, blocked, simd/threads before any measurement
  Rng rng(20240601);
  const int64_t l3 = cache_bytes(3);
  json results = json::array();

  for (const GemmShape& sh : shapes) {
    const double flops = 2.0 * double(sh.M) * double(sh.N) * double(sh.K);
    // Inputs. For decode shapes (M <= kGemvMaxRows) B is read from memory, as it is when a
    // model's weights are used one after the other: enough copies of B to overflow the L3,
    // used in turn.
    std::vector<float> A(size_t(sh.M * sh.K)), C(size_t(sh.M * sh.N));
    std::vector<float> B0(size_t(sh.K * sh.N));
    for (float& x : A) x = float(rng.uniform(-1.0, 1.0));
    for (float& x : B0) x = float(rng.uniform(-1.0, 1.0));
    // A rung that packs B reads its packed copy, which may be smaller than B (bf16, q8): the
    // copies are counted so that the smallest form among the rungs run still overflows the L3.
    const bool cold_b = sh.M <= cpu::kGemvMaxRows;
    auto elem_bytes = [&](const Rung& r) { return b_read_bytes_per_elem(r, opt.b_dtype); };
    double min_elem = 4.0;
    for (const Rung& r : rungs)
      if (r.available) min_elem = std::min(min_elem, elem_bytes(r));
    const double elems = double(B0.size());
    const int copies = cold_b ? copies_beyond_l3(elems * min_elem, double(l3)) : 1;
    std::vector<std::vector<float>> Bf(size_t(copies), B0);
    std::vector<std::vector<uint16_t>> Bh;
    if (opt.b_dtype != DType::F32)
      for (int c = 0; c < copies; ++c) Bh.push_back(to_half(B0, opt.b_dtype));
    // The copies are read in one rotation across the rungs, so that a rung does not start on
    // the copies the rung before it has just brought into the cache.
    int next_copy = 0;

    for (const Rung& r : rungs) {
      json cell = {{"shape", sh.label}, {"M", sh.M}, {"N", sh.N}, {"K", sh.K}, {"trans_b", sh.trans_b},
                   {"square", sh.square}, {"rung", r.name}, {"threaded", r.threaded}, {"threads", r.threaded ? threads : 1}};
      const DType dt = r.any_dtype ? opt.b_dtype : DType::F32;
      cell["b_dtype"] = std::string(dtype_name(dt));
      auto finish = [&](const std::string& status, const std::string& note) {
        cell["status"] = status;
        cell["note"] = note;
        results.push_back(cell);
        cells_progress.add(1);
        cells_progress.set_note(sh.label + " " + r.name);
        say(fmt::format("{:<32} {:<8} {}{}", sh.label, r.name, status, note.empty() ? "" : ": " + note));
      };
      if (!r.available) {
        finish("unavailable", r.why_not);
        continue;
      }
      const double elapsed = seconds_since(t_start);
      if (elapsed > opt.max_seconds) {
        finish("skipped", fmt::format("total time budget of {:.0f} s spent (--max-seconds)", opt.max_seconds));
        continue;
      }
      // The teaching rungs can take minutes on big shapes: predict one run from the slowest
      // rate this rung showed on shapes of the same kind (decode or not) and skip it if too long.
      const bool teaching = r.name == "naive" || r.name == "blocked" || r.name == "simd" || r.name == "threads";
      const std::string key = r.name + (sh.M <= cpu::kGemvMaxRows ? "/decode" : "/gemm");
      double rate = 0;  // predicted GFLOP/s
      if (teaching) {
        if (auto it = slowest_rate.find(key); it != slowest_rate.end()) rate = it->second;
        else if (r.name == "naive") rate = default_rate[0];
        else if (r.name == "blocked") rate = default_rate[1];
        else rate = default_rate[2];
      }
      const double predicted = rate > 0 ? flops / (rate * 1e9) : 0;
      if (predicted > opt.max_cell_seconds) {
        finish("skipped", fmt::format("one run would take ~{:.0f} s (over {:.0f} s, --max-cell-seconds)", predicted,
                                      opt.max_cell_seconds));
        continue;
      }
      GemmProblem p{sh.M, sh.N, sh.K, A.data(), nullptr, dt, sh.trans_b, C.data()};
      auto b_of = [&](int i) -> const void* {
        const size_t c = size_t(i % copies);
        return dt == DType::F32 ? static_cast<const void*>(Bf[c].data()) : static_cast<const void*>(Bh[c].data());
      };
      std::vector<double> times;
      try {
        int rep = next_copy;
        // A rung that packs B packs every copy first (untimed, as weights are packed at load),
        // in the order they are read: the first one read is the one packed longest ago, which
        // the others have pushed out of the cache when B is meant to come from memory.
        if (r.prepare)
          for (int c = 0; c < copies; ++c) {
            p.B = b_of(rep + c);
            r.prepare(p);
          }
        const auto cell_t0 = Clock::now();  // the cell's time budget starts after the packing
        if (predicted < 0.5) {  // warm-up (caches, page faults, thread wake-up); not timed
          p.B = b_of(rep++);
          r.run(p);
        }
        const double cell_budget = std::max(3.0, 2.0 * predicted);
        for (int i = 0; i < opt.reps; ++i) {
          std::fill(C.begin(), C.end(), std::nanf(""));
          p.B = b_of(rep++);
          const auto t0 = Clock::now();
          r.run(p);
          times.push_back(seconds_since(t0));
          if (seconds_since(cell_t0) > cell_budget && times.size() >= 1) break;
        }
        next_copy = rep % copies;
      } catch (const Error& e) {
        finish("error", e.what());
        continue;
      }
      const double err = sampled_error(p, rng, r.a_rounding, r.b_rounding);
      std::vector<double> gf;
      for (double t : times) gf.push_back(flops / t * 1e-9);
      const double med = median(gf);
      cell["reps"] = times.size();
      cell["median_s"] = median(times);
      cell["gflops"] = med;
      cell["gflops_min"] = *std::min_element(gf.begin(), gf.end());
      cell["gflops_max"] = *std::max_element(gf.begin(), gf.end());
      const double peak = r.peak == Rung::Peak::Bf16         ? pk.bf16_gflops
                          : r.peak == Rung::Peak::Int8       ? pk.int8_gops
                          : r.peak == Rung::Peak::Avx512Bf16 ? pk.avx512_bf16_gflops
                          : r.threaded                       ? pk.fma_all_gflops
                                                             : pk.fma_1t_gflops;
      cell["pct_peak"] = peak > 0 ? json(100.0 * med / peak) : json(nullptr);
      cell["peak_of"] = r.peak == Rung::Peak::Bf16         ? pk.bf16_unit
                        : r.peak == Rung::Peak::Int8       ? "AMX tiles (tdpbssd)"
                        : r.peak == Rung::Peak::Avx512Bf16 ? "AVX-512-BF16 (vdpbf16ps)"
                                                           : "FMA";
      const double b_read = elem_bytes(r) * elems;  // B as this rung reads it
      const double bytes = b_read + 4.0 * double(sh.M * sh.K + sh.M * sh.N);
      cell["b_bytes"] = b_read;
      cell["b_copies"] = copies;
      cell["gbs"] = bytes / median(times) * 1e-9;
      cell["b_from_dram"] = cold_b && double(copies) * b_read > double(l3);
      cell["pct_mem_bw"] = pk.mem_read_gbs > 0 ? json(100.0 * (bytes / median(times) * 1e-9) / pk.mem_read_gbs) : json(nullptr);
      cell["max_rel_err"] = err;
      // f32 rounding over K terms stays far below this; a wrong kernel lands far above.
      const double tol = (dt == DType::F32 ? 1e-5 : 1e-4) * std::max(1.0, std::sqrt(double(sh.K) / 64.0));
      if (auto it = slowest_rate.find(key); it == slowest_rate.end() || med < it->second) slowest_rate[key] = med;
      finish(err <= tol ? "ok" : "WRONG",
             err <= tol ? fmt::format("{:.1f} GFLOP/s", med)
                        : fmt::format("max relative error {:.2e} on sampled entries (tolerance {:.1e})", err, tol));
      // OpenBLAS and OpenMP workers spin for a while after a call: let them go to sleep
      // before the next rung is timed.
      if (r.name == "blas" || r.name.rfind("onednn", 0) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(150));
    }
  }

  cells_progress.finish();
  // Speedups over naive.
  for (json& c : results) {
    if (c["status"] != "ok") continue;
    for (const json& n : results)
      if (n["rung"] == "naive" && n["shape"] == c["shape"] && n["status"] == "ok")
        c["speedup_vs_naive"] = c["gflops"].get<double>() / n["gflops"].get<double>();
  }

  // Crossovers on the square sizes: the smallest size from which a rung beats every rung
  // before it in the ladder, at that size and every larger one measured.
  json cross = json::array();
  std::vector<int64_t> sizes = opt.sizes;
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  auto gflops_at = [&](const std::string& rung, int64_t s) -> double {
    for (const json& c : results)
      if (c["square"] == true && c["M"] == s && c["rung"] == rung && c["status"] == "ok") return c["gflops"];
    return -1;
  };
  for (size_t ri = 1; ri < rungs.size() && !sizes.empty(); ++ri) {
    int64_t from = -1;
    std::string beaten;
    bool any = false;
    for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
      const double mine = gflops_at(rungs[ri].name, *it);
      if (mine < 0) continue;
      double best = -1;
      std::string best_name;
      for (size_t j = 0; j < ri; ++j) {
        const double v = gflops_at(rungs[j].name, *it);
        if (v > best) {
          best = v;
          best_name = rungs[j].name;
        }
      }
      if (best < 0) continue;
      any = true;
      if (mine > best) {
        from = *it;
        beaten = best_name;
      } else {
        break;
      }
    }
    json x = {{"rung", rungs[ri].name}};
    if (!any) {
      x["from_size"] = nullptr;
      x["note"] = "not comparable (no earlier rung measured at the same sizes)";
    } else if (from < 0) {
      x["from_size"] = nullptr;
      x["note"] = "does not beat the earlier rungs at the largest size measured";
    } else {
      x["from_size"] = from;
      x["beats"] = beaten;
      x["note"] = fmt::format("beats the best earlier rung ({} at {}) from {} up", beaten, from, from);
    }
    cross.push_back(x);
  }
  report["results"] = results;
  report["crossovers"] = cross;
  report["seconds"] = seconds_since(t_start);
  return report;
}

// ---- printing -------------------------------------------------------------------------------

namespace {

std::string fmt_num(const json& v, const char* f = "{:.1f}") {
  if (v.is_null() || !v.is_number()) return "–";
  return fmt::format(fmt::runtime(f), v.get<double>());
}

}  // namespace

std::string ladder_markdown(const json& rep) {
  std::ostringstream o;
  const json& m = rep["machine"];
  const json& pk = rep["peak"];
  o << "# strand bench gemm\n\n";
  o << fmt::format("- machine: {}, {} hardware threads, {} used; SIMD: ", m["cpu"].get<std::string>(),
                   m["hardware_threads"].get<int>(), rep["options"]["threads"].get<int>());
  for (size_t i = 0; i < m["simd"].size(); ++i) o << (i ? " " : "") << m["simd"][i].get<std::string>();
  o << "\n";
  o << fmt::format("- caches: L1d {} KiB, L2 {} KiB, L3 {} MiB\n", m["cache_bytes"]["l1d"].get<int64_t>() >> 10,
                   m["cache_bytes"]["l2"].get<int64_t>() >> 10, m["cache_bytes"]["l3"].get<int64_t>() >> 20);
  const json& gk = m["gemm_kernels"];
  o << fmt::format(
      "- strand gemm: {} kernels, register tile MR x NR = {} x {}, MC = {}, KC = {}, NC = {}, GEMV path for M <= {}\n",
      gk["isa"].get<std::string>(), gk["mr"].get<int>(), gk["nr"].get<int>(), gk["mc"].get<int64_t>(),
      gk["kc"].get<int64_t>(), gk["nc"].get<int64_t>(), gk["gemv_max_rows"].get<int64_t>());
  if (m["openblas"].is_null()) o << "- OpenBLAS: not built\n";
  else
    o << fmt::format("- OpenBLAS: core {}, config `{}`\n", m["openblas"]["core"].get<std::string>(),
                     m["openblas"]["config"].get<std::string>());
  o << "- oneDNN: " << (m["onednn"].is_null() ? std::string("not built") : m["onednn"].get<std::string>()) << "\n";
  if (pk["fma_1thread_gflops"].get<double>() > 0) {
    o << fmt::format("- peak (measured, FMA loops): 1 thread {} GFLOP/s", fmt_num(pk["fma_1thread_gflops"]));
    if (pk["fma_1thread_256bit_gflops"].get<double>() > 0)
      o << fmt::format(" (256-bit vectors: {})", fmt_num(pk["fma_1thread_256bit_gflops"]));
    o << fmt::format("; all {} threads at once {} GFLOP/s; memory read {} GB/s (best reader: {})\n",
                     rep["options"]["threads"].get<int>(), fmt_num(pk["fma_all_threads_gflops"]),
                     fmt_num(pk["mem_read_gbs"]), pk.value("mem_reader", std::string("?")));
    if (pk.value("busy", false))
      o << "- **measured on a BUSY machine** (" << pk.value("busy_detail", std::string()) << "): every figure reads low\n";
  }
  if (pk.value("bf16_gflops", 0.0) > 0)
    o << fmt::format("- bf16 peak (measured): {} {} GFLOP/s on all threads; the bf16 rungs' % peak is of it\n",
                     pk["bf16_unit"].get<std::string>(), fmt_num(pk["bf16_gflops"]));
  if (pk.value("avx512_bf16_gflops", 0.0) > 0 && pk["bf16_unit"] != "AVX-512-BF16 (vdpbf16ps)")
    o << fmt::format("- AVX-512-BF16 peak (measured): {} GFLOP/s on all threads (the avx512bf16 rung's % peak)\n",
                     fmt_num(pk["avx512_bf16_gflops"]));
  if (pk.value("int8_gops", 0.0) > 0)
    o << fmt::format("- int8 peak (measured): AMX tiles (tdpbssd) {} GOP/s on all threads; amx-int8's % peak is of it\n",
                     fmt_num(pk["int8_gops"]));
  o << fmt::format(
      "- each cell: median GFLOP/s over the timed repetitions (up to {}; fewer when a cell passes 3 s), min–max "
      "spread, % of the FMA peak (1-thread peak for 1-thread rungs, all-thread peak for the others), speedup over "
      "naive. Decode shapes (M <= {}) read B from memory (copies of B overflow the L3); GB/s counts B (as the rung "
      "reads it: bf16 2 bytes an element, q8 1.125), A and C once.\n\n",
      rep["options"]["reps"].get<int>(), gk["gemv_max_rows"].get<int64_t>());

  // Summary: shapes x rungs.
  const json& names = rep["options"]["rungs"];
  std::vector<std::string> shapes;
  for (const json& c : rep["results"]) {
    const std::string s = c["shape"];
    if (std::find(shapes.begin(), shapes.end(), s) == shapes.end()) shapes.push_back(s);
  }
  auto cell_of = [&](const std::string& shape, const std::string& rung) -> const json* {
    for (const json& c : rep["results"])
      if (c["shape"] == shape && c["rung"] == rung) return &c;
    return nullptr;
  };
  o << "## GFLOP/s (median)\n\n| shape |";
  for (const json& n : names) o << " " << n.get<std::string>() << " |";
  o << "\n|---|";
  for (size_t i = 0; i < names.size(); ++i) o << "---:|";
  o << "\n";
  for (const std::string& s : shapes) {
    o << "| " << s << " |";
    for (const json& n : names) {
      const json* c = cell_of(s, n);
      if (!c) o << " |";
      else if ((*c)["status"] == "ok") o << " " << fmt_num((*c)["gflops"]) << " |";
      else if ((*c)["status"] == "WRONG") o << " WRONG |";
      else o << " – |";
    }
    o << "\n";
  }
  o << "\n";

  for (const std::string& s : shapes) {
    o << "## " << s << "\n\n| rung | GFLOP/s | min–max | % peak | × naive | GB/s | reps | note |\n"
      << "|---|---:|---:|---:|---:|---:|---:|---|\n";
    for (const json& n : names) {
      const json* c = cell_of(s, n);
      if (!c) continue;
      const json& x = *c;
      if (x["status"] == "ok" || x["status"] == "WRONG") {
        std::string note = x["status"] == "WRONG" ? x["note"].get<std::string>() : "";
        if (x.value("b_from_dram", false)) note += std::string(note.empty() ? "" : "; ") + "B from DRAM";
        if (x["b_dtype"] != "f32") note += std::string(note.empty() ? "" : "; ") + "B " + x["b_dtype"].get<std::string>();
        if (!x["threaded"].get<bool>()) note += std::string(note.empty() ? "" : "; ") + "1 thread";
        o << fmt::format("| {} | {} | {}–{} | {} | {} | {} | {} | {} |\n", n.get<std::string>(), fmt_num(x["gflops"]),
                         fmt_num(x["gflops_min"]), fmt_num(x["gflops_max"]), fmt_num(x["pct_peak"], "{:.0f}%"),
                         x.contains("speedup_vs_naive") ? fmt_num(x["speedup_vs_naive"], "{:.0f}×") : "–",
                         fmt_num(x["gbs"]), x["reps"].get<int>(), note);
      } else {
        o << fmt::format("| {} | – | – | – | – | – | – | {}: {} |\n", n.get<std::string>(), x["status"].get<std::string>(),
                         x["note"].get<std::string>());
      }
    }
    o << "\n";
  }
  if (!rep["crossovers"].empty()) {
    o << "## Crossovers (square sizes)\n\n| rung | from size | |\n|---|---:|---|\n";
    for (const json& x : rep["crossovers"])
      o << fmt::format("| {} | {} | {} |\n", x["rung"].get<std::string>(),
                       x["from_size"].is_null() ? std::string("–") : std::to_string(x["from_size"].get<int64_t>()),
                       x["note"].get<std::string>());
    o << "\n";
  }
  o << fmt::format("total time {:.1f} s\n", rep["seconds"].get<double>());
  return o.str();
}

std::string ladder_csv(const json& rep) {
  std::ostringstream o;
  o << "shape,M,N,K,trans_b,rung,threads,b_dtype,status,gflops,gflops_min,gflops_max,pct_peak,speedup_vs_naive,gbs,"
       "reps,max_rel_err,note\n";
  auto num = [](const json& c, const char* k) {
    return c.contains(k) && c[k].is_number() ? fmt::format("{:.6g}", c[k].get<double>()) : std::string();
  };
  for (const json& c : rep["results"]) {
    std::string note = c.value("note", "");
    std::replace(note.begin(), note.end(), '"', '\'');
    o << fmt::format("\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},\"{}\"\n", c["shape"].get<std::string>(),
                     c["M"].get<int64_t>(), c["N"].get<int64_t>(), c["K"].get<int64_t>(), c["trans_b"].get<bool>() ? 1 : 0,
                     c["rung"].get<std::string>(), c["threads"].get<int>(), c["b_dtype"].get<std::string>(),
                     c["status"].get<std::string>(), num(c, "gflops"), num(c, "gflops_min"), num(c, "gflops_max"),
                     num(c, "pct_peak"), num(c, "speedup_vs_naive"), num(c, "gbs"),
                     c.contains("reps") ? std::to_string(c["reps"].get<int>()) : std::string(), num(c, "max_rel_err"),
                     note);
  }
  return o.str();
}

}  // namespace strand::bench
