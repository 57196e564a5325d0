// The AMX kernels (backends/amx/kernels.h) and the amx tier, on the C++ model of the tile
// instructions: the packing into the pair/quad-interleaved layouts, the activation rounding
// against the declared rule, the GEMM loops' blocking and tails in every dimension (against
// float64 on bf16- and int8-rounded inputs, the 2x rule against the naive f32 sum of the same
// rounded inputs, outputs poisoned), the tile epilogue, flash attention, the tier's placement
// answers, precision declarations, fusion and weight cache.
//
// The AmxHardware tests run the same kernels on the instructions: without AMX they are skipped
// with the reason (amx_status()); with STRAND_REQUIRE_AMX=1 they fail instead.
// Seeds are printed on failure; STRAND_SEED=<n> reruns one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "backends/amx/amx.h"
#include "backends/amx/gemm.h"
#include "backends/amx/kernels.h"
#include "backends/amx/pack.h"
#include "backends/cpu/cpu.h"
#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/threadpool.h"
#include "backends/naive/naive.h"
#include "backends/registry.h"
#include "cli_util.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/rounding.h"
#include "devices/probe.h"
#include "planner/planner.h"
#include "reference/kernels.h"
#include "runtime/runtime.h"
#include "validate/opcheck.h"
#include "validate/precision.h"

using namespace strand;

namespace {

std::vector<uint64_t> seeds() {
  if (const char* s = std::getenv("STRAND_SEED")) return {std::strtoull(s, nullptr, 10)};
  return {1, 2};
}

constexpr double kFloor = 4.0 * double(std::numeric_limits<float>::epsilon());

Tensor random_f32(const Shape& s, Rng& rng) {
  Tensor t = Tensor::empty(s, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = float(rng.normal());
  return t;
}

double bf16_value(float x) { return double(bf16_to_f32(f32_to_bf16(x))); }

std::shared_ptr<Backend> model_tier(int64_t min_rows = 1) {
  AmxOptions o;
  o.unit = AmxUnit::Model;
  o.min_rows_bf16 = o.min_rows_int8 = min_rows;
  return make_amx_backend(o);
}

// The 2x rule for a product: `got` and the naive f32 result against float64, relative to
// max_ij sum_k |a_ik| |b_kj| (+ |bias_j|), all on the same (already rounded) values.
struct ProductCheck {
  double err = 0, naive_err = 0;
  bool unwritten = false;
  bool pass() const { return !unwritten && err <= 2 * naive_err + kFloor; }
};

// A [M, K] and B [K, N] as doubles (the values the kernels compute with), C as the kernel wrote
// it (row stride ldc).
ProductCheck check_product(const std::vector<double>& A, const std::vector<double>& B, const std::vector<double>& bias,
                           int64_t M, int64_t K, int64_t N, const float* C, int64_t ldc) {
  ProductCheck pc;
  double scale = 0;
  std::vector<double> ref(size_t(M * N)), naive(size_t(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double r = bias.empty() ? 0 : bias[size_t(j)], mag = bias.empty() ? 0 : std::abs(bias[size_t(j)]);
      float nv = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double a = A[size_t(i * K + k)], b = B[size_t(k * N + j)];
        r += a * b;
        mag += std::abs(a * b);
        nv += float(a) * float(b);
      }
      if (!bias.empty()) nv += float(bias[size_t(j)]);
      ref[size_t(i * N + j)] = r;
      naive[size_t(i * N + j)] = nv;
      scale = std::max(scale, mag);
    }
  if (scale == 0) scale = 1;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      const double r = ref[size_t(i * N + j)], y = C[i * ldc + j];
      if (std::isnan(y)) pc.unwritten = true;
      pc.err = std::max(pc.err, std::abs(y - r) / scale);
      pc.naive_err = std::max(pc.naive_err, std::abs(naive[size_t(i * N + j)] - r) / scale);
    }
  return pc;
}

// Every unit of a product on the model, in two calls (a split between threads), C poisoned
// (NaN) with a gap of 3 columns per row that must stay untouched.
struct Poisoned {
  int64_t ldc;
  std::vector<float> c;
  Poisoned(int64_t M, int64_t N) : ldc(N + 3), c(size_t(std::max<int64_t>(M, 1) * (N + 3)), std::nanf("")) {}
  bool gap_untouched(int64_t M, int64_t N) const {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = N; j < ldc; ++j)
        if (!std::isnan(c[size_t(i * ldc + j)])) return false;
    return true;
  }
};

// A bf16 product on random inputs: A [M, K], B [K, N] and a bias, B packed into tiles and A
// packed by the kernel set under test; args() points a GemmBf16Args at them and at C.
struct Bf16Case {
  int64_t M, K, N;
  Tensor A, B, bias;
  amx::PackedBf16 pb;
  int64_t kp;
  std::vector<uint16_t> ap;
  Bf16Case(const amx::KernelSet& k, int64_t M_, int64_t K_, int64_t N_, Rng& rng)
      : M(M_), K(K_), N(N_), A(random_f32({M, K}, rng)), B(random_f32({K, N}, rng)), bias(random_f32({N}, rng)),
        pb(amx::pack_b_bf16(B, false)), kp(amx::round_up(K, 32)), ap(size_t(amx::round_up(M, 16) * kp)) {
    k.pack_a_bf16(A.ptr<float>(), K, M, K, kp, ap.data(), 0, amx::round_up(M, 16));
  }
  amx::GemmBf16Args args(Poisoned& C, bool with_bias) const {
    amx::GemmBf16Args g;
    g.M = M, g.N = N, g.K = K, g.A = ap.data(), g.kp = kp, g.B = &pb, g.C = C.c.data(), g.ldc = C.ldc;
    if (with_bias) g.ep.bias = bias.ptr<float>();
    return g;
  }
  // C against float64 on the bf16-rounded inputs (the bias as given).
  ProductCheck check(const Poisoned& C, bool with_bias) const {
    std::vector<double> a(size_t(M * K)), b(size_t(K * N)), bs;
    for (int64_t i = 0; i < M * K; ++i) a[size_t(i)] = bf16_value(A.ptr<float>()[i]);
    for (int64_t i = 0; i < K * N; ++i) b[size_t(i)] = bf16_value(B.ptr<float>()[i]);
    if (with_bias)
      for (int64_t j = 0; j < N; ++j) bs.push_back(bias.ptr<float>()[j]);
    return check_product(a, b, bs, M, K, N, C.c.data(), C.ldc);
  }
};

const int64_t kShapes[][3] = {{1, 1, 1}, {1, 40, 20}, {17, 33, 15}, {16, 32, 16}, {33, 64, 47}, {50, 100, 70}, {31, 95, 33}};

}  // namespace

// ---- packing ----------------------------------------------------------------------------------

TEST(AmxPack, Bf16TilesHoldPairsOfConsecutiveK) {
  Rng rng(7);
  const int64_t K = 33, N = 17;  // a K tail of 1 in the second block, an N tail of 1 in the second tile
  const Tensor B = random_f32({K, N}, rng);
  const amx::PackedBf16 p = amx::pack_b_bf16(B, false);
  ASSERT_EQ(p.kb, 2);
  ASSERT_EQ(p.nt, 2);
  EXPECT_EQ(int64_t(p.bytes()), amx::packed_bf16_bytes(K, N));  // what bench model counts a decode reading
  for (int64_t t = 0; t < p.nt; ++t)
    for (int64_t kb = 0; kb < p.kb; ++kb) {
      const uint16_t* tile = p.tile(t, kb);
      for (int64_t r = 0; r < 16; ++r)
        for (int64_t j = 0; j < 16; ++j)
          for (int64_t h = 0; h < 2; ++h) {
            const int64_t k = kb * 32 + 2 * r + h, n = t * 16 + j;
            const uint16_t want = k < K && n < N ? f32_to_bf16(B.ptr<float>()[k * N + n]) : 0;
            ASSERT_EQ(tile[r * 32 + 2 * j + h], want) << "tile " << t << "," << kb << " row " << r << " col " << j;
          }
    }
  // The same logical B stored transposed (trans_b) or column-major packs to the same bytes.
  Tensor Bt = Tensor::empty({N, K}, DType::F32);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) Bt.ptr<float>()[n * K + k] = B.ptr<float>()[k * N + n];
  const amx::PackedBf16 pt = amx::pack_b_bf16(Bt, true);
  const amx::PackedBf16 pc = amx::pack_b_bf16(B.to_col_major(), false);
  EXPECT_EQ(std::memcmp(p.tiles.as<uint8_t>(), pt.tiles.as<uint8_t>(), p.bytes()), 0);
  EXPECT_EQ(std::memcmp(p.tiles.as<uint8_t>(), pc.tiles.as<uint8_t>(), p.bytes()), 0);
  // f16 weights are widened exactly, then rounded to bf16 once.
  const amx::PackedBf16 ph = amx::pack_b_bf16(B.to(DType::F16), false);
  const Tensor Bh = B.to(DType::F16).to(DType::F32);
  EXPECT_EQ(ph.tile(0, 0)[2], f32_to_bf16(Bh.ptr<float>()[1]));
}

// Every element of every tile, for each weight dtype and storage (row-major, transposed,
// column-major), with whole tiles (the fast path) and edges, packed serially and by a pool
// (large enough to be split between its threads): the tile holds B[k][n] rounded by the rule.
TEST(AmxPack, EveryDtypeAndStorageOnWholeAndEdgeTiles) {
  cpu::ThreadPool pool(2);
  const int64_t shapes[][2] = {{64, 48}, {96, 33}, {33, 80}, {64, 16 * 600 + 5}};
  for (const auto& sh : shapes)
    for (const DType dt : {DType::F32, DType::F16, DType::BF16})
      for (const int storage : {0, 1, 2}) {  // [K, N]; [N, K] read with trans_b; column-major [K, N]
        const int64_t K = sh[0], N = sh[1];
        Rng rng(uint64_t(K * 131 + N * 7 + storage));
        const Tensor B = random_f32({K, N}, rng).to(dt).to(DType::F32);  // values exact in dt
        Tensor w;
        if (storage == 1) {
          w = Tensor::empty({N, K}, DType::F32);
          for (int64_t k = 0; k < K; ++k)
            for (int64_t n = 0; n < N; ++n) w.ptr<float>()[n * K + k] = B.ptr<float>()[k * N + n];
          w = w.to(dt);
        } else {
          w = storage == 2 ? B.to_col_major(dt) : B.to(dt);
        }
        const bool trans = storage == 1;
        const amx::PackedBf16 serial = amx::pack_b_bf16(w, trans);
        const amx::PackedBf16 shared = amx::pack_b_bf16(w, trans, &pool);
        ASSERT_EQ(serial.bytes(), shared.bytes());
        EXPECT_EQ(std::memcmp(serial.tiles.as<uint8_t>(), shared.tiles.as<uint8_t>(), serial.bytes()), 0)
            << K << "x" << N << " " << dtype_name(dt) << " storage " << storage;
        int64_t wrong = 0;
        for (int64_t t = 0; t < serial.nt; ++t)
          for (int64_t kb = 0; kb < serial.kb; ++kb)
            for (int64_t r = 0; r < 16; ++r)
              for (int64_t j = 0; j < 16; ++j)
                for (int64_t h = 0; h < 2; ++h) {
                  const int64_t k = kb * 32 + 2 * r + h, n = t * 16 + j;
                  const uint16_t want = k < K && n < N ? f32_to_bf16(B.ptr<float>()[k * N + n]) : 0;
                  wrong += serial.tile(t, kb)[r * 32 + 2 * j + h] != want;
                }
        EXPECT_EQ(wrong, 0) << K << "x" << N << " " << dtype_name(dt) << " storage " << storage;
      }
}

TEST(AmxPack, Int8TilesHoldQuadsAndTheBlockScales) {
  Rng rng(8);
  const int64_t K = 70, N = 19;  // 3 blocks of 32 (the last 6 deep), 2 column tiles
  const Tensor Wf = random_f32({K, N}, rng);
  const Tensor W = Wf.to_q8(0);  // blocked along K
  const amx::PackedInt8 p = amx::pack_b_int8(W, false);
  ASSERT_EQ(p.kb, 3);
  ASSERT_EQ(p.nt, 2);
  EXPECT_EQ(int64_t(p.bytes()), amx::packed_int8_bytes(K, N));
  const int64_t lp = q8_padded(K);
  for (int64_t t = 0; t < p.nt; ++t)
    for (int64_t kb = 0; kb < p.kb; ++kb) {
      const int8_t* tile = p.tile(t, kb);
      const float* sc = p.scale(t, kb);
      for (int64_t j = 0; j < 16; ++j) {
        const int64_t n = t * 16 + j;
        ASSERT_EQ(sc[j], n < N ? W.q8_scales()[n * p.kb + kb] : 0.0f);
        for (int64_t r = 0; r < 8; ++r)
          for (int64_t h = 0; h < 4; ++h) {
            const int64_t k = kb * 32 + 4 * r + h;
            ASSERT_EQ(tile[r * 64 + 4 * j + h], n < N ? W.q8_data()[n * lp + k] : 0) << "n " << n << " k " << k;
          }
      }
    }
  // A q8 weight blocked along N is refused with the reason.
  try {
    amx::pack_b_int8(Wf.to_q8(1), false);
    FAIL() << "packed a q8 weight blocked along N";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocked along K"), std::string::npos) << e.what();
  }
}

TEST(AmxPack, ActivationRoundingIsTheDeclaredRule) {
  const amx::KernelSet& k = amx::model_kernels();
  Rng rng(9);
  const int64_t M = 5, K = 75, kp = 96;
  Tensor A = random_f32({M, K}, rng);
  for (int64_t j = 32; j < 64; ++j) A.ptr<float>()[1 * K + j] = 0;  // an all-zero block: scale 0
  A.ptr<float>()[2 * K + 3] = 1e-30f;                                  // a tiny value next to ordinary ones
  const int64_t mp = 16;
  std::vector<int8_t> q(size_t(mp * kp), 99);
  std::vector<float> s(size_t(mp * kp / 32), -1);
  k.pack_a_q8(A.ptr<float>(), K, M, K, kp, q.data(), s.data(), 0, mp);
  std::vector<int8_t> q_ref(size_t(q8_padded(K)));
  std::vector<float> s_ref(size_t(q8_blocks(K)));
  const Tensor rounded = round_to_f64(A, Rounding::Q8);
  for (int64_t m = 0; m < mp; ++m) {
    if (m < M) {
      quantize_row_q8(A.ptr<float>() + m * K, K, q_ref.data(), s_ref.data());
      for (int64_t j = 0; j < kp; ++j) ASSERT_EQ(q[size_t(m * kp + j)], q_ref[size_t(j)]) << "row " << m << " col " << j;
      for (int64_t b = 0; b < kp / 32; ++b) ASSERT_EQ(s[size_t(m * kp / 32 + b)], s_ref[size_t(b)]);
      for (int64_t j = 0; j < K; ++j)
        ASSERT_EQ(rounded.ptr<double>()[m * K + j], double(q_ref[size_t(j)]) * double(s_ref[size_t(j / 32)]));
    } else {  // padding rows: zero, scale 0
      for (int64_t j = 0; j < kp; ++j) ASSERT_EQ(q[size_t(m * kp + j)], 0);
      for (int64_t b = 0; b < kp / 32; ++b) ASSERT_EQ(s[size_t(m * kp / 32 + b)], 0.0f);
    }
  }
  // bf16: nearest even, padding zero.
  std::vector<uint16_t> h(size_t(mp * kp), 0xffff);
  k.pack_a_bf16(A.ptr<float>(), K, M, K, kp, h.data(), 0, mp);
  for (int64_t m = 0; m < mp; ++m)
    for (int64_t j = 0; j < kp; ++j)
      ASSERT_EQ(h[size_t(m * kp + j)], m < M && j < K ? f32_to_bf16(A.ptr<float>()[m * K + j]) : 0);
  // The Q8 rule equals Tensor::to_q8's on the same row (both are "q8 blocks of 32").
  const Tensor row = A.rows(0, 1).reshape({K});
  const Tensor q8 = row.to_q8(0);
  quantize_row_q8(A.ptr<float>(), K, q_ref.data(), s_ref.data());
  EXPECT_EQ(std::memcmp(q8.q8_data(), q_ref.data(), size_t(q8_padded(K))), 0);
  EXPECT_EQ(std::memcmp(q8.q8_scales(), s_ref.data(), s_ref.size() * 4), 0);
}

// ---- the GEMM loops on the model --------------------------------------------------------------

TEST(AmxKernels, Bf16GemmEveryTailAgainstFloat64OnRoundedInputs) {
  const amx::KernelSet& k = amx::model_kernels();
  for (uint64_t seed : seeds())
    for (const auto& sh : kShapes) {
      const int64_t M = sh[0], K = sh[1], N = sh[2];
      Rng rng(seed * 1000 + uint64_t(M * 7 + K * 3 + N));
      const Bf16Case bc(k, M, K, N, rng);
      for (bool with_bias : {false, true}) {
        Poisoned C(M, N);
        const amx::GemmBf16Args g = bc.args(C, with_bias);
        const int64_t units = amx::gemm_units(M, N);
        k.gemm_bf16(g, 0, units / 2);  // two ranges, as two threads would take them
        k.gemm_bf16(g, units / 2, units);
        const ProductCheck pc = bc.check(C, with_bias);
        EXPECT_TRUE(pc.pass()) << fmt::format("bf16 {}x{}x{}{}: err {:.3g} > 2 x naive {:.3g} (unwritten {}) STRAND_SEED={}",
                                              M, K, N, with_bias ? " +bias" : "", pc.err, pc.naive_err, pc.unwritten, seed);
        EXPECT_TRUE(C.gap_untouched(M, N)) << "wrote past column N";
      }
    }
}

// The weight gradient's A is given transposed ([K, M]) and packed as the transpose: the same
// bytes as pack_a_bf16 of the explicit transpose, however the rows are split between calls, and
// so the same product bit for bit.
TEST(AmxKernels, TransposedAPacksAsTheTransposeAndMultipliesAlike) {
  const amx::KernelSet& k = amx::model_kernels();
  cpu::ThreadPool pool(2);
  const int64_t N = 19;
  for (const auto& [M, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {17, 33}, {40, 70}, {600, 40}}) {
    Rng rng(uint64_t(M * 31 + K));
    const Tensor At = random_f32({K, M}, rng), B = random_f32({K, N}, rng);
    Tensor A = Tensor::empty({M, K}, DType::F32);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < K; ++j) A.ptr<float>()[i * K + j] = At.ptr<float>()[j * M + i];
    const int64_t kp = amx::round_up(K, 32), mp = amx::round_up(M, 16), cut = mp / 32 * 16;
    std::vector<uint16_t> want(size_t(mp * kp), 0xffff), got(size_t(mp * kp), 0xffff);
    k.pack_a_bf16(A.ptr<float>(), K, M, K, kp, want.data(), 0, mp);
    amx::pack_a_bf16_transposed(At.ptr<float>(), M, M, K, kp, got.data(), 0, cut);
    amx::pack_a_bf16_transposed(At.ptr<float>(), M, M, K, kp, got.data(), cut, mp);
    EXPECT_EQ(got, want) << M << "x" << K;
    const amx::PackedBf16 pb = amx::pack_b_bf16(B, false);
    amx::GemmScratch s1, s2;
    Poisoned C1(M, N), C2(M, N);
    amx::matmul_bf16(k, At.ptr<float>(), M, M, K, pb, C1.c.data(), C1.ldc, {}, &pool, s1, true);
    amx::matmul_bf16(k, A.ptr<float>(), K, M, K, pb, C2.c.data(), C2.ldc, {}, &pool, s2);
    EXPECT_EQ(std::memcmp(C1.c.data(), C2.c.data(), C1.c.size() * 4), 0) << M << "x" << K;
    EXPECT_TRUE(C1.gap_untouched(M, N));
  }
}

TEST(AmxKernels, Int8GemmKeepsTheBlockScales) {
  const amx::KernelSet& k = amx::model_kernels();
  for (uint64_t seed : seeds())
    for (const auto& sh : kShapes) {
      const int64_t M = sh[0], K = sh[1], N = sh[2];
      Rng rng(seed * 2000 + uint64_t(M * 7 + K * 3 + N));
      const Tensor A = random_f32({M, K}, rng), Wf = random_f32({K, N}, rng);
      const Tensor W = Wf.to_q8(0);
      const amx::PackedInt8 pw = amx::pack_b_int8(W, false);
      const int64_t kp = q8_padded(K), mp = amx::round_up(M, 16);
      std::vector<int8_t> q(size_t(mp * kp));
      std::vector<float> s(size_t(mp * kp / 32));
      k.pack_a_q8(A.ptr<float>(), K, M, K, kp, q.data(), s.data(), 0, mp);
      Poisoned C(M, N);
      amx::GemmInt8Args g;
      g.M = M, g.N = N, g.K = K, g.A = q.data(), g.a_scales = s.data(), g.kp = kp, g.B = &pw, g.C = C.c.data();
      g.ldc = C.ldc;
      const int64_t units = amx::gemm_units(M, N);
      k.gemm_int8(g, 0, (units + 1) / 2);
      k.gemm_int8(g, (units + 1) / 2, units);
      // The values the kernel computes with: activations as Rounding::Q8, the weight as stored.
      const Tensor ar = round_to_f64(A, Rounding::Q8), wr = W.to(DType::F64);
      std::vector<double> a(ar.ptr<double>(), ar.ptr<double>() + M * K), b(wr.ptr<double>(), wr.ptr<double>() + K * N);
      const ProductCheck pc = check_product(a, b, {}, M, K, N, C.c.data(), C.ldc);
      EXPECT_TRUE(pc.pass()) << fmt::format("int8 {}x{}x{}: err {:.3g} > 2 x naive {:.3g} (unwritten {}) STRAND_SEED={}", M,
                                            K, N, pc.err, pc.naive_err, pc.unwritten, seed);
      EXPECT_TRUE(C.gap_untouched(M, N)) << "wrote past column N";
    }
}

TEST(AmxKernels, EpilogueAppliesBiasThenTheActivation) {
  const amx::KernelSet& k = amx::model_kernels();
  Rng rng(11);
  const int64_t M = 19, K = 40, N = 35;
  const Tensor A = random_f32({M, K}, rng), B = random_f32({K, N}, rng), bias = random_f32({N}, rng);
  const amx::PackedBf16 pb = amx::pack_b_bf16(B, false);
  const int64_t kp = 64, mp = 32;
  std::vector<uint16_t> ap(size_t(mp * kp));
  k.pack_a_bf16(A.ptr<float>(), K, M, K, kp, ap.data(), 0, mp);
  std::vector<float> plain(size_t(M * N), std::nanf("")), fused(size_t(M * N), std::nanf(""));
  amx::GemmBf16Args g;
  g.M = M, g.N = N, g.K = K, g.A = ap.data(), g.kp = kp, g.B = &pb, g.ldc = N;
  g.ep.bias = bias.ptr<float>();
  g.C = plain.data();
  k.gemm_bf16(g, 0, amx::gemm_units(M, N));
  g.ep.has_act = true;
  g.ep.act = Act::GeluTanh;
  g.ep.act_fn = cpu::portable_kernels().activation;
  g.C = fused.data();
  k.gemm_bf16(g, 0, amx::gemm_units(M, N));
  // The fused epilogue is the activation kernel applied to the plain result: the same floats.
  std::vector<float> want(plain.size());
  cpu::portable_kernels().activation(plain.data(), int64_t(plain.size()), Act::GeluTanh, want.data());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(fused[i], want[i]) << "element " << i;
}

// ---- the tier, on the model -------------------------------------------------------------------

TEST(AmxTier, ProbeSaysWhichCheckFailed) {
  const AmxStatus s = amx_status();
  std::shared_ptr<Backend> tier;
  for (const auto& b : all_backends())
    if (b->name() == "amx") tier = b;
  ASSERT_TRUE(tier) << "the registry has no amx tier";
  const Verdict v = tier->probe();
  EXPECT_EQ(v.ok, s.usable);
  if (s.usable) return;
  EXPECT_EQ(v.reason, s.reason);
  const CpuFeatures& f = cpu_features();
  if (amx::hw_kernels() && !f.amx_tile) EXPECT_NE(v.reason.find("CPUID lacks AMX-TILE"), std::string::npos) << v.reason;
  else if (amx::hw_kernels() && !f.os_amx) EXPECT_NE(v.reason.find("XCR0"), std::string::npos) << v.reason;
  // Running it anyway is an error with that reason, not a crash.
  {
    Graph g;
    const ValueId a = g.input("a", {32, 8}, DType::F32), b = g.input("b", {8, 4}, DType::F32);
    g.mark_output(g.add(OpKind::MatMul, {a, b}, Attrs{}, "mm"));
    std::vector<Tensor> v(g.values().size());
    v[size_t(a)] = Tensor::empty({32, 8}, DType::F32);
    v[size_t(b)] = Tensor::empty({8, 4}, DType::F32);
    v[2] = Tensor::empty({32, 4}, DType::F32);
    const NodeId n = 0;
    try {
      tier->run(g, std::span<const NodeId>(&n, 1), v);
      FAIL() << "an unusable amx tier ran";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), "amx: not usable here: " + s.reason);
    }
  }
  // Asking for it by name is an error with that reason.
  try {
    make_chain("amx,cpu");
    FAIL() << "an unusable amx tier was accepted in a chain";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "--backend: tier 'amx' is not usable here: " + s.reason);
  }
}

namespace {

struct OneNode {
  Graph g;
  NodeId node = 0;
};

OneNode product_graph(int64_t M, int64_t K, int64_t N, DType w, bool linear, int q8_axis = 0) {
  OneNode o;
  const ValueId a = o.g.input("a", {M, K}, DType::F32);
  const ValueId b = o.g.weight("w", q8_axis == 1 ? Shape{N, K} : Shape{K, N}, w);
  Attrs at;
  at.trans_b = q8_axis == 1;
  ValueId out;
  if (linear) {
    const ValueId bias = o.g.weight("bias", {N}, DType::F32);
    out = o.g.add(OpKind::Linear, {a, b, bias}, at, "lin");
  } else {
    out = o.g.add(OpKind::MatMul, {a, b}, at, "mm");
  }
  o.g.mark_output(out);
  o.node = NodeId(o.g.nodes().size() - 1);
  return o;
}

}  // namespace

// The crossovers `strand devices` measures per weight kind: with f32 weights the tiles read half
// the bytes the cpu tier does, with f16/bf16 weights the same, so each has its own row count.
TEST(AmxTier, CrossoversPerWeightKindComeFromTheDeviceCache) {
  cli_test::TempCacheDir cache;
  DeviceReport r;
  r.machine = machine_info();
  r.threads = default_thread_count();
  for (const char* tier : {"avx512bf16", "amx"})
    for (const auto& [path, rows] : std::vector<std::pair<std::string, long long>>{{"bf16", 1}, {"bf16-w16", 64}, {"int8", 8}}) {
      RowCrossover c;
      c.tier = tier, c.path = path, c.vs = "cpu", c.rows = rows;
      r.row_crossovers.push_back(c);
    }
  ASSERT_EQ(write_device_cache(r), "");
  for (const char* tier : {"avx512bf16", "amx"}) {
    const AmxCrossover c = amx_crossover_for(r.threads, tier);
    EXPECT_TRUE(c.measured) << c.source;
    EXPECT_EQ(c.source.rfind("measured, cache ", 0), 0u) << c.source;
    EXPECT_EQ(c.rows_bf16, 1) << tier;
    EXPECT_EQ(c.rows_bf16_w16, 64) << tier;
    EXPECT_EQ(c.rows_int8, 8) << tier;
  }
  // The tier applies them: a decode product with f32 weights taken, with bf16 weights left to
  // the cpu tier.
  if (avx512bf16_status().usable) {
    AmxOptions o;
    o.unit = AmxUnit::Avx512Bf16;
    const auto t = make_amx_backend(o);
    const OneNode f32 = product_graph(1, 768, 768, DType::F32, true);
    const OneNode b16 = product_graph(1, 768, 768, DType::BF16, true);
    const Verdict yes = t->supports(f32.g, f32.g.node(f32.node));
    EXPECT_TRUE(yes.ok) << yes.reason;
    const Verdict no = t->supports(b16.g, b16.g.node(b16.node));
    EXPECT_FALSE(no.ok);
    EXPECT_NE(no.reason.find("M = 1 rows, below the crossover of 64 rows (measured"), std::string::npos) << no.reason;
  }
  // A cache written before the f16/bf16 path was measured: that path keeps the default.
  std::erase_if(r.row_crossovers, [](const RowCrossover& x) { return x.path == "bf16-w16"; });
  ASSERT_EQ(write_device_cache(r), "");
  const AmxCrossover old = amx_crossover_for(r.threads, "avx512bf16");
  EXPECT_EQ(old.rows_bf16, 1);
  EXPECT_EQ(old.rows_bf16_w16, kAmxDefaultMinRows);
  EXPECT_EQ(old.source.rfind("measured, cache ", 0), 0u) << old.source;
  EXPECT_NE(old.source.find("f16/bf16 weights: the default of 32 rows"), std::string::npos) << old.source;
  // No cache at all: the default, saying so.
  std::filesystem::remove(cache.file());
  const AmxCrossover none = amx_crossover_for(r.threads, "avx512bf16");
  EXPECT_FALSE(none.measured);
  EXPECT_EQ(none.source, "built-in default; `strand devices` measures it");
}

TEST(AmxTier, TakesProductsFromTheCrossoverAndPrefillAttention) {
  const auto t = model_tier(32);
  const OneNode decode = product_graph(1, 768, 768, DType::F32, true);
  const Verdict vd = t->supports(decode.g, decode.g.node(decode.node));
  EXPECT_FALSE(vd.ok);
  EXPECT_NE(vd.reason.find("M = 1 rows, below the crossover of 32 rows"), std::string::npos) << vd.reason;
  const OneNode prefill = product_graph(32, 768, 768, DType::F16, true);
  const Verdict vp = t->supports(prefill.g, prefill.g.node(prefill.node));
  EXPECT_TRUE(vp.ok) << vp.reason;
  EXPECT_NE(vp.reason.find("bf16 tiles"), std::string::npos) << vp.reason;
  const OneNode q8 = product_graph(64, 96, 40, DType::Q8, false);
  EXPECT_NE(t->supports(q8.g, q8.g.node(q8.node)).reason.find("int8 tiles"), std::string::npos);
  // Attention: prefill only.
  for (int64_t T : {15, 16}) {
    Graph g;
    const ValueId q = g.input("q", {T, 64}, DType::F32), k = g.input("k", {T, 64}, DType::F32),
                  v = g.input("v", {T, 64}, DType::F32);
    Attrs a;
    a.heads = 2;
    g.add(OpKind::Attention, {q, k, v}, a, "attn");
    const Verdict va = t->supports(g, g.node(0));
    EXPECT_EQ(va.ok, T >= kAmxAttnMinQueries) << T << ": " << va.reason;
  }
  // Several sequences in one attention (a training batch): declined.
  {
    Graph g;
    const ValueId q = g.input("q", {32, 64}, DType::F32), k = g.input("k", {32, 64}, DType::F32),
                  v = g.input("v", {32, 64}, DType::F32);
    Attrs a;
    a.heads = 2;
    a.seqs = 2;
    g.add(OpKind::Attention, {q, k, v}, a, "attn");
    const Verdict va = t->supports(g, g.node(0));
    EXPECT_FALSE(va.ok);
    EXPECT_NE(va.reason.find("several sequences"), std::string::npos) << va.reason;
  }
  // A graph with a loss is a training step: products are taken (bf16 operands, the weights
  // rounded on every run, as they change in place); attention and fused activations are not.
  {
    Graph g;
    const ValueId x = g.input("x", {64, 32}, DType::F32), w = g.weight("w", {32, 16}, DType::F32);
    const ValueId y = g.add(OpKind::MatMul, {x, w}, Attrs{}, "mm");
    const ValueId tgt = g.input("targets", {64}, DType::I32);
    g.add(OpKind::CrossEntropy, {y, tgt}, Attrs{}, "loss");
    const ValueId q = g.input("q", {64, 32}, DType::F32);
    Attrs a;
    a.heads = 2;
    g.add(OpKind::Attention, {q, q, q}, a, "attn");
    const Verdict vt = t->supports(g, g.node(0));
    EXPECT_TRUE(vt.ok) << vt.reason;
    EXPECT_NE(vt.reason.find("on every run"), std::string::npos) << vt.reason;
    const Verdict va = t->supports(g, g.node(2));
    EXPECT_FALSE(va.ok);
    EXPECT_NE(va.reason.find("training step"), std::string::npos) << va.reason;
  }
  // A layernorm is not a tile operation.
  Graph g;
  const ValueId x = g.input("x", {64, 8}, DType::F32), gm = g.weight("g", {8}, DType::F32), bt = g.weight("b", {8}, DType::F32);
  g.add(OpKind::LayerNorm, {x, gm, bt}, Attrs{}, "ln");
  EXPECT_FALSE(t->supports(g, g.node(0)).ok);
}

TEST(AmxTier, DeclaresWhatItRounds) {
  const auto t = model_tier();
  const OneNode f = product_graph(32, 64, 64, DType::F32, true);
  const Precision pf = t->precision(f.g, f.g.node(f.node));
  EXPECT_EQ(pf.input(0), Rounding::BF16);
  EXPECT_EQ(pf.input(1), Rounding::BF16);
  EXPECT_EQ(pf.input(2), Rounding::None);
  EXPECT_EQ(pf.summary({"x", "w", "bias"}), "x bf16, w bf16");
  const OneNode q = product_graph(32, 64, 64, DType::Q8, false);
  const Precision pq = t->precision(q.g, q.g.node(q.node));
  EXPECT_EQ(pq.input(0), Rounding::Q8);
  EXPECT_EQ(pq.input(1), Rounding::None);
  Graph g;
  const ValueId a = g.input("q", {16, 8}, DType::F32), b = g.input("k", {16, 8}, DType::F32), c = g.input("v", {16, 8}, DType::F32);
  g.add(OpKind::Attention, {a, b, c}, Attrs{}, "attn");
  const Precision pa = t->precision(g, g.node(0));
  EXPECT_EQ(pa.summary({"q", "k", "v"}), "q bf16, k bf16, v bf16; P bf16");
  // The cpu tier rounds nothing.
  EXPECT_TRUE(make_cpu_backend()->precision(f.g, f.g.node(f.node)).exact());
}

TEST(AmxTier, OpCasesWithin2xNaiveAtItsPrecision) {
  const auto t = model_tier();
  for (uint64_t seed : seeds()) {
    std::vector<OpCase> cases = random_op_cases(seed, 3);
    for (const OpCase& c : large_op_cases(seed)) cases.push_back(c);
    int ran = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      const OpCase& c = cases[i];
      if (c.op != OpKind::MatMul && c.op != OpKind::Linear && c.op != OpKind::Attention) continue;
      if (c.op != OpKind::Attention && double(c.shapes[0][0]) * double(numel(c.shapes[1])) > 4e7) continue;  // too slow on the model
      const OpCheck r = check_op(c, t, seed + i);
      if (!r.supported) continue;
      ++ran;
      EXPECT_TRUE(r.pass) << r.label << ": err " << r.err << " > tolerance " << r.tolerance << " (naive at "
                          << r.precision << ": " << r.naive_err << ")" << (r.unwritten ? " [unwritten]" : "")
                          << (r.reason.empty() ? "" : " " + r.reason) << " STRAND_SEED=" << seed;
      EXPECT_FALSE(r.precision.empty()) << r.label;
    }
    EXPECT_GT(ran, 20) << "too few cases reached the amx tier";
  }
}

TEST(AmxTier, AttentionOnOddHeadSizesAndACache) {
  const auto t = model_tier();
  for (uint64_t seed : seeds()) {
    const int64_t cfg[][4] = {{16, 1, 8, 0}, {17, 3, 24, 5}, {40, 2, 64, 37}, {33, 4, 40, 0}, {16, 1, 72, 100}};
    for (const auto& x : cfg) {
      const int64_t T = x[0], H = x[1], D = x[2], P = x[3];
      Attrs a;
      a.heads = H;
      a.past = P;
      OpCase c{OpKind::Attention, {{T, H * D}, {P + T, H * D}, {P + T, H * D}}, {DType::F32, DType::F32, DType::F32}, a,
               fmt::format("attention T={} heads={} D={} past={}", T, H, D, P)};
      const OpCheck r = check_op(c, t, seed);
      ASSERT_TRUE(r.supported) << r.reason;
      EXPECT_TRUE(r.pass) << r.label << ": err " << r.err << " > " << r.tolerance << " (naive at its precision "
                          << r.naive_err << ")" << (r.unwritten ? " [unwritten]" : "") << " STRAND_SEED=" << seed;
      EXPECT_EQ(r.precision, "q bf16, k bf16, v bf16; P bf16");
    }
  }
}

TEST(AmxTier, FusesTheActivationAfterAProduct) {
  // x -> linear -> gelu on {amx, cpu}: both nodes on amx, in one segment; the linear's own
  // output is never written (it stays poisoned), the activation's meets the 2x rule at the
  // tier's precision.
  Rng rng(5);
  const int64_t M = 40, K = 70, N = 50;
  Graph g;
  const ValueId x = g.input("x", {M, K}, DType::F32), w = g.weight("w", {K, N}, DType::F32),
                b = g.weight("b", {N}, DType::F32);
  const ValueId h = g.add(OpKind::Linear, {x, w, b}, Attrs{}, "fc");
  Attrs ga;
  ga.act = Act::GeluTanh;
  const ValueId y = g.add(OpKind::Activation, {h}, ga, "gelu");
  g.mark_output(y);
  const auto amx_t = model_tier();
  const Plan plan = make_plan(g, {amx_t, std::shared_ptr<Backend>(make_cpu_backend())}, false);
  ASSERT_EQ(plan.segments.size(), 1u) << plan.explain(g);
  EXPECT_EQ(plan.placement[1].tier, 0) << plan.explain(g);
  std::vector<Tensor> vals(g.values().size());
  vals[size_t(x)] = random_f32({M, K}, rng);
  vals[size_t(w)] = random_f32({K, N}, rng);
  vals[size_t(b)] = random_f32({N}, rng);
  std::vector<Tensor> ref_vals = vals, naive_vals = vals;
  RunOptions ro;
  ro.poison = true;
  execute(g, plan, vals, ro);
  for (int64_t i = 0; i < M * N; ++i) ASSERT_TRUE(std::isnan(vals[size_t(h)].ptr<float>()[i])) << "the linear's output was written";
  // The bar: float64 on the rounded inputs, the naive tier at the tier's precision.
  const Precision p = amx_t->precision(g, g.node(0));
  ref_vals[size_t(x)] = round_to_f64(vals[size_t(x)], p.input(0));
  ref_vals[size_t(w)] = round_to_f64(vals[size_t(w)], p.input(1));
  execute_on(g, make_reference_backend(), ref_vals, ro);
  execute_on(g, make_precision_naive(amx_t), naive_vals, ro);
  double scale = 0, err = 0, naive_err = 0;
  const Tensor r = ref_vals[size_t(y)];
  for (int64_t i = 0; i < M * N; ++i) scale = std::max(scale, std::abs(r.ptr<double>()[i]));
  for (int64_t i = 0; i < M * N; ++i) {
    err = std::max(err, std::abs(vals[size_t(y)].ptr<float>()[i] - r.ptr<double>()[i]) / scale);
    naive_err = std::max(naive_err, std::abs(naive_vals[size_t(y)].ptr<float>()[i] - r.ptr<double>()[i]) / scale);
  }
  EXPECT_LE(err, 2 * naive_err + kFloor);
  EXPECT_GT(naive_err, 0);
}

TEST(AmxTier, PackedWeightsFollowTheirTensor) {
  // The tier keeps a weight's tiles while the weight lives; a new weight (even at a freed
  // address) is packed again, and an input (not a weight) is packed on every call.
  const auto t = model_tier();
  Rng rng(3);
  const int64_t M = 16, K = 32, N = 16;
  auto run = [&](const Tensor& a, const Tensor& w, bool as_weight) {
    Graph g;
    const ValueId ia = g.input("a", {M, K}, DType::F32);
    const ValueId iw = as_weight ? g.weight("w", {K, N}, DType::F32) : g.input("w", {K, N}, DType::F32);
    const ValueId o = g.add(OpKind::MatMul, {ia, iw}, Attrs{}, "mm");
    g.mark_output(o);
    std::vector<Tensor> v(g.values().size());
    v[size_t(ia)] = a;
    v[size_t(iw)] = w;
    execute_on(g, t, v);
    return v[size_t(o)];
  };
  // Small integers: every product is exact in bf16 and f32, so results compare exactly.
  auto ints = [&](const Shape& s) {
    Tensor x = Tensor::empty(s, DType::F32);
    for (int64_t i = 0; i < x.numel(); ++i) x.ptr<float>()[i] = float(int(rng.below(7)) - 3);
    return x;
  };
  auto expect_product = [&](const Tensor& a, const Tensor& w, const Tensor& c, const char* what) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        float s = 0;
        for (int64_t k = 0; k < K; ++k) s += a.ptr<float>()[i * K + k] * w.ptr<float>()[k * N + j];
        ASSERT_EQ(c.ptr<float>()[i * N + j], s) << what << " at " << i << "," << j;
      }
  };
  const Tensor a = ints({M, K});
  {
    const Tensor w1 = ints({K, N});
    expect_product(a, w1, run(a, w1, true), "first weight");
    expect_product(a, w1, run(a, w1, true), "first weight again");
  }
  // A weight that goes away, and a new one at the very same address: packed again.
  std::vector<float> mem(size_t(K * N));
  auto weight_at_mem = [&](std::shared_ptr<void> owner) {
    const Tensor v = ints({K, N});
    std::memcpy(mem.data(), v.data, mem.size() * 4);
    return Tensor::view_of(mem.data(), DType::F32, {K, N}, std::move(owner));
  };
  {
    const Tensor w2 = weight_at_mem(std::make_shared<int>(1));
    expect_product(a, w2, run(a, w2, true), "a weight");
  }
  const Tensor w3 = weight_at_mem(std::make_shared<int>(2));  // the first owner is gone
  expect_product(a, w3, run(a, w3, true), "a new weight at the old one's address");
  Tensor in = ints({K, N});
  expect_product(a, in, run(a, in, false), "an input");
  for (int64_t i = 0; i < in.numel(); ++i) in.ptr<float>()[i] = -in.ptr<float>()[i];  // same memory, new values
  expect_product(a, in, run(a, in, false), "the input changed in place");
}

// ---- on the instructions --------------------------------------------------------------------

// Skips the test where there is no AMX, with the reason; fails instead with STRAND_REQUIRE_AMX=1.
#define STRAND_REQUIRE_AMX_OR_SKIP()                                                                   \
  do {                                                                                                 \
    const AmxStatus st_ = amx_status();                                                                \
    if (!st_.usable) {                                                                                 \
      const char* req_ = std::getenv("STRAND_REQUIRE_AMX");                                            \
      if (req_ && std::string(req_) == "1") FAIL() << "STRAND_REQUIRE_AMX=1, but: " << st_.reason;     \
      GTEST_SKIP() << "no AMX here: " << st_.reason;                                                   \
    }                                                                                                  \
  } while (0)

TEST(AmxHardware, KernelsMatchTheInstructionModelBitwise) {
  STRAND_REQUIRE_AMX_OR_SKIP();
  const amx::KernelSet& hw = *amx::hw_kernels();
  const amx::KernelSet& mo = amx::model_kernels();
  for (uint64_t seed : seeds())
    for (const auto& sh : kShapes) {
      const int64_t M = sh[0], K = sh[1], N = sh[2];
      Rng rng(seed * 31 + uint64_t(M + K + N));
      const Tensor A = random_f32({M, K}, rng), B = random_f32({K, N}, rng);
      const amx::PackedBf16 pb = amx::pack_b_bf16(B, false);
      const amx::PackedInt8 pq = amx::pack_b_int8(B.to_q8(0), false);
      const int64_t kp = amx::round_up(K, 32), mp = amx::round_up(M, 16);
      std::vector<uint16_t> ah(size_t(mp * kp)), am(size_t(mp * kp));
      hw.pack_a_bf16(A.ptr<float>(), K, M, K, kp, ah.data(), 0, mp);
      mo.pack_a_bf16(A.ptr<float>(), K, M, K, kp, am.data(), 0, mp);
      ASSERT_EQ(ah, am) << "bf16 activation packing differs";
      std::vector<int8_t> qh(size_t(mp * kp)), qm(size_t(mp * kp));
      std::vector<float> sh_(size_t(mp * kp / 32)), sm(size_t(mp * kp / 32));
      hw.pack_a_q8(A.ptr<float>(), K, M, K, kp, qh.data(), sh_.data(), 0, mp);
      mo.pack_a_q8(A.ptr<float>(), K, M, K, kp, qm.data(), sm.data(), 0, mp);
      ASSERT_EQ(qh, qm) << "int8 activation packing differs";
      ASSERT_EQ(sh_, sm);
      std::vector<float> ch(size_t(M * N)), cm(size_t(M * N));
      amx::GemmBf16Args g;
      g.M = M, g.N = N, g.K = K, g.A = ah.data(), g.kp = kp, g.B = &pb, g.ldc = N;
      g.C = ch.data();
      hw.gemm_bf16(g, 0, amx::gemm_units(M, N));
      g.C = cm.data();
      mo.gemm_bf16(g, 0, amx::gemm_units(M, N));
      EXPECT_EQ(std::memcmp(ch.data(), cm.data(), ch.size() * 4), 0)
          << fmt::format("TDPBF16PS differs from the model at {}x{}x{} (seed {})", M, K, N, seed);
      amx::GemmInt8Args gi;
      gi.M = M, gi.N = N, gi.K = K, gi.A = qh.data(), gi.a_scales = sh_.data(), gi.kp = kp, gi.B = &pq, gi.ldc = N;
      gi.C = ch.data();
      hw.gemm_int8(gi, 0, amx::gemm_units(M, N));
      gi.C = cm.data();
      mo.gemm_int8(gi, 0, amx::gemm_units(M, N));
      EXPECT_EQ(std::memcmp(ch.data(), cm.data(), ch.size() * 4), 0)
          << fmt::format("TDPBSSD path differs from the model at {}x{}x{} (seed {})", M, K, N, seed);
    }
}

TEST(AmxHardware, OpCasesWithin2xNaiveAtItsPrecision) {
  STRAND_REQUIRE_AMX_OR_SKIP();
  AmxOptions o;
  o.min_rows_bf16 = o.min_rows_int8 = 1;
  const std::shared_ptr<Backend> t = make_amx_backend(o);
  ASSERT_TRUE(t->probe().ok) << t->probe().reason;
  for (uint64_t seed : seeds()) {
    std::vector<OpCase> cases = random_op_cases(seed, 4);
    for (const OpCase& c : large_op_cases(seed)) cases.push_back(c);
    for (size_t i = 0; i < cases.size(); ++i) {
      const OpCheck r = check_op(cases[i], t, seed + i);
      if (!r.supported) continue;
      EXPECT_TRUE(r.pass) << r.label << ": err " << r.err << " > " << r.tolerance << (r.unwritten ? " [unwritten]" : "")
                          << " " << r.reason << " STRAND_SEED=" << seed;
    }
  }
}

TEST(AmxHardware, TilePeakLoopsRun) {
  STRAND_REQUIRE_AMX_OR_SKIP();
  const amx::KernelSet& hw = *amx::hw_kernels();
  EXPECT_EQ(hw.peak_bf16(10), 10.0 * 4 * 16 * 16 * 32 * 2);
  EXPECT_EQ(hw.peak_int8(10), 10.0 * 4 * 16 * 16 * 64 * 2);
}

// ---- the bf16 kernels on AVX-512-BF16 (the avx512bf16 tier) -----------------------------------

#define STRAND_SKIP_UNLESS_AVX512BF16()                                       \
  do {                                                                         \
    const AmxStatus st_ = avx512bf16_status();                                 \
    if (!st_.usable) GTEST_SKIP() << "no AVX-512-BF16 kernels here: " << st_.reason; \
  } while (0)

TEST(Avx512Bf16, GemmEveryTailAgainstFloat64OnRoundedInputs) {
  STRAND_SKIP_UNLESS_AVX512BF16();
  const amx::KernelSet& k = *amx::avx512bf16_kernels();
  EXPECT_EQ(k.gemm_int8, nullptr);  // bf16 only
  for (uint64_t seed : seeds())
    for (const auto& sh : kShapes) {
      const int64_t M = sh[0], K = sh[1], N = sh[2];
      Rng rng(seed * 3000 + uint64_t(M * 7 + K * 3 + N));
      const Bf16Case bc(k, M, K, N, rng);
      Poisoned C(M, N);
      const amx::GemmBf16Args g = bc.args(C, true);
      const int64_t units = amx::gemm_units(M, N);
      k.gemm_bf16(g, 0, units / 2);
      k.gemm_bf16(g, units / 2, units);
      const ProductCheck pc = bc.check(C, true);
      EXPECT_TRUE(pc.pass()) << fmt::format("vdpbf16ps {}x{}x{}: err {:.3g} > 2 x naive {:.3g} (unwritten {}) STRAND_SEED={}",
                                            M, K, N, pc.err, pc.naive_err, pc.unwritten, seed);
      EXPECT_TRUE(C.gap_untouched(M, N)) << "wrote past column N";
    }
}

// The product kernel keeps blocks of C in registers; the tile layer runs the amx tier's tile
// kernel with each accumulator tile in memory. Both issue the same vdpbf16ps lane by lane, so
// the results must be equal bit for bit, on every tail of rows (blocks of 8 inside units of 32),
// columns (one or two tiles of 16) and K, with the units split between two calls.
TEST(Avx512Bf16, ProductKernelEqualsTheTileLayerBitForBit) {
  STRAND_SKIP_UNLESS_AVX512BF16();
  const amx::KernelSet& k = *amx::avx512bf16_kernels();
  const amx::KernelSet& tl = *amx::avx512bf16_tile_layer_kernels();
  ASSERT_NE(k.gemm_bf16, tl.gemm_bf16);
  const int64_t shapes[][3] = {{1, 1, 1}, {7, 31, 17}, {8, 64, 32}, {9, 33, 48}, {33, 64, 47},
                               {50, 100, 70}, {70, 130, 97}, {3, 768, 50}, {96, 96, 96}};
  for (uint64_t seed : seeds())
    for (const auto& sh : shapes)
      for (const bool act : {false, true}) {
        const int64_t M = sh[0], K = sh[1], N = sh[2];
        Rng rng(seed * 5000 + uint64_t(M * 7 + K * 3 + N));
        const Bf16Case bc(k, M, K, N, rng);
        Poisoned C1(M, N), C2(M, N);
        amx::GemmBf16Args g = bc.args(C1, true);
        g.ep.has_act = act;
        g.ep.act = Act::Relu;
        g.ep.act_fn = [](const float* x, int64_t n, Act, float* out) {
          for (int64_t i = 0; i < n; ++i) out[i] = x[i] > 0 ? x[i] : 0.0f;
        };
        const int64_t units = amx::gemm_units(M, N), cut = units / 3;
        k.gemm_bf16(g, 0, cut);
        k.gemm_bf16(g, cut, units);
        g.C = C2.c.data();
        tl.gemm_bf16(g, 0, units);
        int64_t differ = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            const float x = C1.c[size_t(i * C1.ldc + j)], y = C2.c[size_t(i * C2.ldc + j)];
            if (std::memcmp(&x, &y, 4) != 0) ++differ;
          }
        EXPECT_EQ(differ, 0) << M << "x" << K << "x" << N << (act ? " relu" : "") << " STRAND_SEED=" << seed;
        EXPECT_TRUE(C1.gap_untouched(M, N)) << "wrote past column N";
      }
}

TEST(Avx512Bf16, TierWithin2xNaiveAtItsPrecisionOnEveryCase) {
  STRAND_SKIP_UNLESS_AVX512BF16();
  AmxOptions o;
  o.unit = AmxUnit::Avx512Bf16;
  o.min_rows_bf16 = 1;
  o.min_attention_queries = 1;
  const std::shared_ptr<Backend> t = make_amx_backend(o);
  ASSERT_TRUE(t->probe().ok) << t->probe().reason;
  EXPECT_EQ(t->name(), "avx512bf16");
  for (uint64_t seed : seeds()) {
    std::vector<OpCase> cases = random_op_cases(seed, 4);
    for (const OpCase& c : large_op_cases(seed)) cases.push_back(c);
    int ran = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      const OpCheck r = check_op(cases[i], t, seed + i);
      if (!r.supported) continue;
      ++ran;
      EXPECT_TRUE(r.pass) << r.label << ": err " << r.err << " > " << r.tolerance << " (naive at " << r.precision
                          << ": " << r.naive_err << ")" << (r.unwritten ? " [unwritten]" : "") << " " << r.reason
                          << " STRAND_SEED=" << seed;
    }
    EXPECT_GT(ran, 20);
  }
}

TEST(Avx512Bf16, RunsOnlyWhenNamedAndDeclinesInt8) {
  for (const auto& b : make_chain("auto")) EXPECT_NE(b->name(), "avx512bf16");
  std::shared_ptr<Backend> tier;
  for (const auto& b : all_backends())
    if (b->name() == "avx512bf16") tier = b;
  ASSERT_TRUE(tier) << "the registry has no avx512bf16 tier";
  EXPECT_FALSE(tier->in_default_chain());
  const AmxStatus s = avx512bf16_status();
  EXPECT_EQ(tier->probe().ok, s.usable) << tier->probe().reason;
  if (!s.usable) return;
  const auto chain = make_chain("avx512bf16,cpu");
  ASSERT_EQ(chain.size(), 2u);
  const OneNode q8 = product_graph(64, 96, 40, DType::Q8, false);
  const Verdict v = chain[0]->supports(q8.g, q8.g.node(q8.node));
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.reason.find("no int8 tile product"), std::string::npos) << v.reason;
}
