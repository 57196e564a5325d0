// The cpu tier's GEMM against a float64 GEMM on random and edge shapes — every B dtype,
// trans_b, bias, strided operands, 1-3 threads, both paths (packed, GEMV) and every ISA this
// CPU runs — plus the thread pool, and each rung of the GEMM ladder on a small size.
//
// Rule (as in src/validate/opcheck.h): error = max |C - ref| / max |ref|; a kernel passes when
// its error is at most twice the error of a naive f32 loop on the same inputs, plus 4 f32 ulps.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <stdexcept>
#include <thread>
#include <vector>

#include "backends/cpu/gemm.h"
#include "backends/cpu/threadpool.h"
#include "bench/gemm_ladder.h"
#include "devices/machine.h"
#include "core/error.h"
#include "core/rng.h"

using namespace strand;
using strand::cpu::GemmArgs;
using strand::cpu::GemmIsa;
using strand::cpu::GemmOptions;
using strand::cpu::GemmPath;
using strand::cpu::ThreadPool;

namespace {

uint64_t test_seed() {
  if (const char* s = std::getenv("STRAND_SEED")) return std::strtoull(s, nullptr, 10);
  return 20261126;
}

constexpr double kFloor = 4.0 * double(std::numeric_limits<float>::epsilon());
constexpr float kSentinel = 12345.0f;

struct Shape {
  int64_t M, N, K;
};

// One problem: inputs with padded leading dimensions, the float64 reference, and the error of
// a naive f32 loop on the same (widened) inputs.
struct Problem {
  Shape s;
  DType dt;
  bool trans, with_bias;
  int64_t lda, ldb, ldc;
  std::vector<float> A, bias, Bw;  // Bw: B widened to f32, stored like B
  std::vector<uint16_t> Bh;        // B as f16/bf16
  std::vector<double> ref;         // [M, N]
  double naive_err = 0;

  const void* B() const { return dt == DType::F32 ? static_cast<const void*>(Bw.data()) : static_cast<const void*>(Bh.data()); }
  float b(int64_t k, int64_t n) const { return trans ? Bw[size_t(n * ldb + k)] : Bw[size_t(k * ldb + n)]; }

  double error_of(const std::vector<float>& C) const {
    double max_err = 0, max_ref = 0;
    for (int64_t i = 0; i < s.M; ++i)
      for (int64_t j = 0; j < s.N; ++j) {
        const double r = ref[size_t(i * s.N + j)], c = C[size_t(i * ldc + j)];
        max_err = std::max(max_err, std::isfinite(c) ? std::fabs(c - r) : INFINITY);
        max_ref = std::max(max_ref, std::fabs(r));
      }
    return max_ref > 0 ? max_err / max_ref : max_err;
  }
};

Problem make_problem(Shape s, DType dt, bool trans, bool with_bias, uint64_t seed) {
  Rng rng(seed);
  Problem p{s, dt, trans, with_bias, s.K + 3, (trans ? s.K : s.N) + 5, s.N + 7, {}, {}, {}, {}, {}, 0};
  p.A.assign(size_t(s.M * p.lda), kSentinel);
  for (int64_t i = 0; i < s.M; ++i)
    for (int64_t k = 0; k < s.K; ++k) p.A[size_t(i * p.lda + k)] = float(rng.uniform(-1, 1));
  const int64_t brows = trans ? s.N : s.K, bcols = trans ? s.K : s.N;
  p.Bw.assign(size_t(brows * p.ldb), kSentinel);
  p.Bh.assign(p.Bw.size(), 0x7e00);  // NaN in f16 (and a large bf16): padding must never be read
  for (int64_t r = 0; r < brows; ++r)
    for (int64_t c = 0; c < bcols; ++c) {
      const float v = float(rng.uniform(-1, 1));
      const size_t i = size_t(r * p.ldb + c);
      if (dt == DType::F32) {
        p.Bw[i] = v;
      } else {
        p.Bh[i] = dt == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
        p.Bw[i] = dt == DType::F16 ? f16_to_f32(p.Bh[i]) : bf16_to_f32(p.Bh[i]);
      }
    }
  if (with_bias) {
    p.bias.resize(size_t(s.N));
    for (float& x : p.bias) x = float(rng.uniform(-1, 1));
  }
  p.ref.assign(size_t(s.M * s.N), 0.0);
  std::vector<float> naive(size_t(s.M * p.ldc), 0.0f);
  for (int64_t i = 0; i < s.M; ++i)
    for (int64_t j = 0; j < s.N; ++j) {
      double r = 0;
      float f = 0;
      for (int64_t k = 0; k < s.K; ++k) {
        const float a = p.A[size_t(i * p.lda + k)], b = p.b(k, j);
        r += double(a) * double(b);
        f += a * b;
      }
      if (with_bias) {
        r += p.bias[size_t(j)];
        f += p.bias[size_t(j)];
      }
      p.ref[size_t(i * s.N + j)] = r;
      naive[size_t(i * p.ldc + j)] = f;
    }
  p.naive_err = p.error_of(naive);
  return p;
}

// Runs the production GEMM on `p` into a NaN-poisoned C whose padding holds a sentinel.
std::vector<float> run_gemm(const Problem& p, ThreadPool* pool, const GemmOptions& opt) {
  std::vector<float> C(size_t(p.s.M * p.ldc), kSentinel);
  for (int64_t i = 0; i < p.s.M; ++i)
    for (int64_t j = 0; j < p.s.N; ++j) C[size_t(i * p.ldc + j)] = std::nanf("");
  GemmArgs g;
  g.M = p.s.M;
  g.N = p.s.N;
  g.K = p.s.K;
  g.A = p.A.data();
  g.lda = p.lda;
  g.B = p.B();
  g.b_dtype = p.dt;
  g.ldb = p.ldb;
  g.trans_b = p.trans;
  g.C = C.data();
  g.ldc = p.ldc;
  g.bias = p.with_bias ? p.bias.data() : nullptr;
  GemmOptions o = opt;
  o.min_parallel_work = 0;  // split over the pool even on these small shapes
  cpu::gemm(g, pool, o);
  return C;
}

bool padding_intact(const Problem& p, const std::vector<float>& C) {
  for (int64_t i = 0; i < p.s.M; ++i)
    for (int64_t j = p.s.N; j < p.ldc; ++j)
      if (C[size_t(i * p.ldc + j)] != kSentinel) return false;
  return true;
}

std::vector<GemmIsa> isas_here() {
  std::vector<GemmIsa> v;
  for (GemmIsa i : {GemmIsa::Generic, GemmIsa::Avx2, GemmIsa::Avx512})
    if (cpu::gemm_isa_available(i)) v.push_back(i);
  return v;
}

// Every shape x trans_b x ISA x thread count x path, for one B dtype.
void check_dtype(DType dt) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed << " (rerun with STRAND_SEED=" << seed << ")");
  std::vector<Shape> shapes = {
      {1, 1, 1},    {1, 17, 3},    {3, 1, 17},    {2, 4097, 5},  {5, 3, 4097},   {8, 64, 100},  {8, 33, 16},
      {9, 50, 70},  {14, 32, 384}, {13, 31, 383}, {15, 33, 385}, {17, 33, 9},    {29, 530, 40}, {20, 40, 800},
      {64, 17, 1},  {33, 1100, 20}, {28, 64, 769},
  };
  Rng rng(seed);
  for (int r = 0; r < 5; ++r)
    shapes.push_back({int64_t(1 + rng.below(48)), int64_t(1 + rng.below(160)), int64_t(1 + rng.below(300))});

  ThreadPool pool2(2), pool3(3);
  ThreadPool* pools[] = {nullptr, &pool2, &pool3};
  const std::vector<GemmIsa> isas = isas_here();
  ASSERT_FALSE(isas.empty());
  int checked = 0;
  for (size_t si = 0; si < shapes.size(); ++si) {
    const Shape s = shapes[si];
    for (bool trans : {false, true}) {
      const bool with_bias = (si + size_t(trans)) % 2 == 0;
      const uint64_t pseed = seed * 1000003 + si * 31 + size_t(dt) * 7 + size_t(trans);
      const Problem p = make_problem(s, dt, trans, with_bias, pseed);
      const double tol = 2.0 * p.naive_err + kFloor;
      for (GemmIsa isa : isas) {
        // Every path on several thread counts; the small blocks (several MC, KC and NC blocks
        // even on these small shapes) and the forced paths on one count each. The portable
        // kernels (slow under the sanitizers) on fewer runs: they share the driver.
        std::vector<std::pair<GemmOptions, ThreadPool*>> runs = {
            {{isa, GemmPath::Auto}, pools[0]},
            {{isa, GemmPath::Gemv}, pools[2]},
            {{isa, GemmPath::Packed, 30, 20, 40}, pools[1]},
        };
        if (isa != GemmIsa::Generic)
          runs.insert(runs.end(), {{{isa, GemmPath::Auto}, pools[1]},
                                   {{isa, GemmPath::Auto}, pools[2]},
                                   {{isa, GemmPath::Packed}, pools[1]},
                                   {{isa, GemmPath::Gemv}, pools[0]},
                                   {{isa, GemmPath::Packed, 30, 20, 40}, pools[2]}});
        for (const auto& [opt, pool] : runs) {
          const std::vector<float> C = run_gemm(p, pool, opt);
          const double err = p.error_of(C);
          ++checked;
          SCOPED_TRACE(testing::Message() << "problem seed " << pseed);
          EXPECT_LE(err, tol) << "M=" << s.M << " N=" << s.N << " K=" << s.K << " B " << dtype_name(dt)
                              << (trans ? " trans" : "") << (with_bias ? " bias" : "") << " isa "
                              << cpu::gemm_isa_name(isa) << " threads " << (pool ? pool->size() : 1) << " path "
                              << int(opt.path) << (opt.kc ? " small blocks" : "") << ": error " << err
                              << " (naive f32 " << p.naive_err << ")";
          EXPECT_TRUE(padding_intact(p, C)) << "wrote outside C's N columns: M=" << s.M << " N=" << s.N;
        }
      }
    }
  }
  EXPECT_GT(checked, 150);
}

}  // namespace

TEST(Gemm, MatchesFloat64F32) { check_dtype(DType::F32); }
TEST(Gemm, MatchesFloat64F16) { check_dtype(DType::F16); }
TEST(Gemm, MatchesFloat64BF16) { check_dtype(DType::BF16); }

TEST(Gemm, BiasOnlyWhenKIsZeroAndEmptyShapesAreNoOps) {
  std::vector<float> bias = {1.5f, -2.0f, 3.25f};
  std::vector<float> C(6, std::nanf(""));
  GemmArgs g;
  g.M = 2;
  g.N = 3;
  g.K = 0;
  g.C = C.data();
  g.ldc = 3;
  g.bias = bias.data();
  cpu::gemm(g, nullptr);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(C[size_t(i * 3 + j)], bias[size_t(j)]);
  g.bias = nullptr;
  cpu::gemm(g, nullptr);
  for (float c : C) EXPECT_EQ(c, 0.0f);
  GemmArgs e;  // M = N = K = 0, null pointers: nothing to do
  EXPECT_NO_THROW(cpu::gemm(e, &ThreadPool::global()));
}

TEST(Gemm, BadArgumentsAreErrors) {
  std::vector<float> A(64, 1.0f), B(64, 1.0f), C(64, 0.0f);
  auto base = [&] {
    GemmArgs g;
    g.M = 4;
    g.N = 4;
    g.K = 4;
    g.A = A.data();
    g.lda = 4;
    g.B = B.data();
    g.ldb = 4;
    g.C = C.data();
    g.ldc = 4;
    return g;
  };
  EXPECT_NO_THROW(cpu::gemm(base(), nullptr));
  GemmArgs g = base();
  g.lda = 3;
  EXPECT_THROW(cpu::gemm(g, nullptr), Error);
  g = base();
  g.ldb = 3;
  EXPECT_THROW(cpu::gemm(g, nullptr), Error);
  g = base();
  g.ldc = 2;
  EXPECT_THROW(cpu::gemm(g, nullptr), Error);
  g = base();
  g.M = -1;
  EXPECT_THROW(cpu::gemm(g, nullptr), Error);
  g = base();
  g.B = nullptr;
  EXPECT_THROW(cpu::gemm(g, nullptr), Error);
  g = base();
  g.C = nullptr;
  EXPECT_THROW(cpu::gemm(g, nullptr), Error);
  g = base();
  g.b_dtype = DType::I32;
  EXPECT_THROW(cpu::gemm(g, nullptr), Error);
  g = base();
  g.trans_b = true;
  g.N = 8;  // B [8, 4] with ldb 4 is fine when transposed; C needs ldc >= 8
  g.ldc = 8;
  EXPECT_NO_THROW(cpu::gemm(g, nullptr));
  for (GemmIsa isa : {GemmIsa::Avx2, GemmIsa::Avx512})
    if (!cpu::gemm_isa_available(isa)) EXPECT_THROW(cpu::gemm(base(), nullptr, {isa, GemmPath::Auto}), Error);
}

TEST(Gemm, BestIsaAndBlockingAreReported) {
  const GemmIsa best = cpu::gemm_best_isa();
  EXPECT_TRUE(cpu::gemm_isa_available(best));
  const cpu::GemmBlocking b = cpu::gemm_blocking(best);
  EXPECT_GT(b.mr, 0);
  EXPECT_GT(b.nr, 0);
  EXPECT_GE(b.kc, 16);
  EXPECT_GE(b.nc, b.nr);
  for (GemmIsa isa : isas_here()) EXPECT_GT(cpu::fma_loop_flops(isa, 0.01), 1e6) << cpu::gemm_isa_name(isa);
}

// ---- thread pool ----------------------------------------------------------------------------

TEST(ThreadPool, RunCallsEveryIndexOnceAndParallelForCoversTheRange) {
  for (int n : {1, 2, 3, 5}) {
    ThreadPool pool(n);
    ASSERT_EQ(pool.size(), n);
    for (int rep = 0; rep < 200; ++rep) {  // back-to-back runs: the spin/wake path
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      pool.run([&](int t) { hits[size_t(t)].fetch_add(1); });
      for (int t = 0; t < n; ++t) ASSERT_EQ(hits[size_t(t)].load(), 1) << "n=" << n << " t=" << t;
    }
    for (int64_t len : {int64_t(0), int64_t(1), int64_t(2), int64_t(7), int64_t(1000)}) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(len));
      pool.parallel_for(len, [&](int64_t b, int64_t e) {
        ASSERT_LT(b, e);
        for (int64_t i = b; i < e; ++i) seen[size_t(i)].fetch_add(1);
      });
      for (int64_t i = 0; i < len; ++i) ASSERT_EQ(seen[size_t(i)].load(), 1) << "n=" << n << " len=" << len;
    }
  }
}

TEST(ThreadPool, WakesAfterSleepingAndRethrows) {
  ThreadPool pool(2);
  std::atomic<int> sum{0};
  pool.run([&](int t) { sum += t + 1; });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // workers go from spinning to blocked
  pool.run([&](int t) { sum += t + 1; });
  EXPECT_EQ(sum.load(), 6);
  EXPECT_THROW(pool.run([](int t) {
    if (t == 1) throw std::runtime_error("worker failed");
  }),
               std::runtime_error);
  EXPECT_THROW(pool.run([](int t) {
    if (t == 0) throw Error("caller failed");
  }),
               Error);
  pool.run([&](int) { sum += 1; });  // still usable
  EXPECT_EQ(sum.load(), 8);
}

TEST(ThreadPool, NestedAndConcurrentRunsComplete) {
  ThreadPool pool(2);
  std::atomic<int> inner{0};
  pool.run([&](int) { pool.run([&](int) { inner += 1; }); });
  EXPECT_EQ(inner.load(), 4);  // each of 2 shares ran a nested (serial) run of 2 shares
  std::atomic<int> total{0};
  auto hammer = [&] {
    for (int i = 0; i < 300; ++i) pool.run([&](int) { total += 1; });
  };
  std::thread a(hammer), b(hammer);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 300 * 2);
}

TEST(ThreadPool, ResizeAndGlobal) {
  ThreadPool pool(1);
  pool.resize(3);
  EXPECT_EQ(pool.size(), 3);
  std::atomic<int> n{0};
  pool.run([&](int) { n += 1; });
  EXPECT_EQ(n.load(), 3);
  pool.resize(2);
  EXPECT_EQ(pool.size(), 2);
  const int before = ThreadPool::global().size();
  EXPECT_GE(before, 1);
  ThreadPool::set_global_threads(2);
  EXPECT_EQ(ThreadPool::global().size(), 2);
  ThreadPool::set_global_threads(before);
  EXPECT_EQ(ThreadPool::global().size(), before);
  EXPECT_GE(ThreadPool::default_threads(), 1);
}

// ---- the ladder -----------------------------------------------------------------------------

TEST(GemmLadder, EveryRungIsCorrectOnASmallSize) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  ThreadPool pool(2);
  for (bool trans : {false, true}) {
    const Shape s{37, 45, 53};
    Problem p = make_problem(s, DType::F32, trans, false, seed + 17 + trans);
    const double tol = 2.0 * p.naive_err + kFloor;
    for (const bench::Rung& r : bench::gemm_rungs(pool)) {
      if (!r.available) continue;
      // The bf16/int8 rungs round their inputs: judged at their precision in test_amx_cli.cpp.
      if (r.a_rounding != Rounding{} || r.b_rounding != Rounding{}) continue;  // Rounding{}: none
      // The rungs take contiguous operands: repack A and B without padding.
      std::vector<float> A(size_t(s.M * s.K)), B(size_t(s.K * s.N));
      for (int64_t i = 0; i < s.M; ++i)
        for (int64_t k = 0; k < s.K; ++k) A[size_t(i * s.K + k)] = p.A[size_t(i * p.lda + k)];
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t n = 0; n < s.N; ++n) B[size_t(trans ? n * s.K + k : k * s.N + n)] = p.b(k, n);
      std::vector<float> C(size_t(s.M * s.N), std::nanf(""));
      bench::GemmProblem gp{s.M, s.N, s.K, A.data(), B.data(), DType::F32, trans, C.data()};
      r.run(gp);
      std::vector<float> Cp(size_t(s.M * p.ldc), kSentinel);
      for (int64_t i = 0; i < s.M; ++i)
        for (int64_t j = 0; j < s.N; ++j) Cp[size_t(i * p.ldc + j)] = C[size_t(i * s.N + j)];
      EXPECT_LE(p.error_of(Cp), tol) << r.name << (trans ? " trans" : "");
    }
  }
}

// A rung that reads B in a packed lower-precision form is charged the bytes of that form, and a
// decode shape's copies of B overflow the L3 in the smallest form run (else a bf16 or q8 rung's
// B stays in cache and its GB/s passes the memory bound).
TEST(GemmLadder, DecodeBytesCountTheFormEachRungReads) {
  cpu::ThreadPool pool(1);
  std::map<std::string, double> want = {{"packed", 4}, {"amx-bf16", 2}, {"avx512bf16", 2}, {"onednn-bf16", 2},
                                        {"amx-int8", 1.125}};
  for (const bench::Rung& r : bench::gemm_rungs(pool)) {
    auto it = want.find(r.name);
    if (it == want.end()) continue;
    EXPECT_EQ(bench::b_read_bytes_per_elem(r, DType::F32), it->second) << r.name;
    if (r.name == "packed") EXPECT_EQ(bench::b_read_bytes_per_elem(r, DType::BF16), 2) << r.name;
    want.erase(it);
  }
  EXPECT_TRUE(want.empty()) << "rungs missing from the ladder: " << want.begin()->first;

  const int64_t l3 = int64_t(32) << 20;
  for (const double elems : {768.0 * 2304, 768.0 * 768, 3072.0 * 768})
    for (const double smallest : {1.125, 2.0, 4.0}) {
      const int c = copies_beyond_l3(elems * smallest, double(l3));
      EXPECT_GE(double(c) * elems * smallest, 2.0 * double(l3)) << elems << " elements, " << smallest << " bytes";
      EXPECT_LT(double(c - 1) * elems * smallest, 2.0 * double(l3)) << "more copies than needed";
    }
  EXPECT_EQ(copies_beyond_l3(768.0 * 50257 * 2.0, double(l3)), 1);  // the vocabulary projection overflows alone
  EXPECT_EQ(copies_beyond_l3(64 * 1.0, double(l3)), 128);           // tiny shapes: at most 128 copies
  EXPECT_EQ(copies_beyond_l3(1e6, 0), 1);                            // an L3 of unknown size: one copy

  // The report: each cell's B bytes are its rung's form.
  bench::LadderOptions o;
  o.sizes = {8};
  o.rungs = {"packed", "onednn-bf16", "avx512bf16"};
  o.reps = 1;
  o.measure_peak = false;
  const nlohmann::json rep = bench::run_gemm_ladder(o, {});
  int checked = 0;
  for (const auto& c : rep["results"]) {
    if (c["status"] != "ok") continue;
    EXPECT_EQ(c["b_bytes"].get<double>(), (c["rung"] == "packed" ? 4.0 : 2.0) * 64) << c.dump();
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

TEST(GemmLadder, BenchmarkReportHasEveryCell) {
  bench::LadderOptions o;
  o.sizes = {24};
  o.rungs = {"naive", "simd", "packed"};
  o.reps = 2;
  o.measure_peak = false;
  const nlohmann::json rep = bench::run_gemm_ladder(o, {});
  ASSERT_TRUE(rep.contains("results"));
  ASSERT_EQ(rep["results"].size(), 3u);
  for (const auto& c : rep["results"]) EXPECT_EQ(c["status"], "ok") << c.dump();
  EXPECT_FALSE(bench::ladder_markdown(rep).empty());
  EXPECT_NE(bench::ladder_csv(rep).find("packed"), std::string::npos);
  EXPECT_EQ(bench::gpt2_shapes().size(), 15u);
}
