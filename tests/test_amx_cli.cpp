// The amx tier on the command line: where AMX is missing, naming the tier is one line saying
// which check failed and exit 1; the bf16/int8 rungs of `bench gemm` say why they are
// unavailable, and those that run (oneDNN's bf16 matmul, the bar, here) are checked at their
// precision.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/amx/amx.h"
#include "backends/cpu/threadpool.h"
#include "backends/onednn/onednn.h"
#include "bench/gemm_ladder.h"
#include "cli_util.h"
#include "core/rng.h"
#include "core/rounding.h"

using namespace strand;
using json = nlohmann::json;
using strand::cli_test::run_strand;
using strand::cli_test::TempCacheDir;

namespace {

// The lines of s that are not empty.
int nonempty_lines(const std::string& s) {
  int n = 0;
  bool any = false;
  for (char c : s) {
    if (c == '\n') {
      n += any;
      any = false;
    } else {
      any = true;
    }
  }
  return n + any;
}

}  // namespace

TEST(AmxCli, NamingAnUnusableTierIsOneLineAndExit1) {
  const AmxStatus s = amx_status();
  if (s.usable) GTEST_SKIP() << "AMX is usable here: the tier runs instead of refusing";
  const std::string want = "--backend: tier 'amx' is not usable here: " + s.reason;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"validate", "--backend", "amx", "--no-write-docs"},
        std::vector<std::string>{"bench", "model", "--backend", "amx,cpu", "-p", "16", "-n", "0", "--probe", "off"},
        std::vector<std::string>{"generate", "-m", cli_test::fixture_dir("tiny-f32").string(), "-p", "hi", "-n", "1",
                                 "--backend", "amx,cpu"}}) {
    TempCacheDir cache;
    const auto r = run_strand(args);
    EXPECT_TRUE(r.exited) << r.describe();
    EXPECT_EQ(r.exit_code, 1) << r.describe();
    EXPECT_EQ(nonempty_lines(r.err), 1) << r.describe();
    EXPECT_NE(r.err.find(want), std::string::npos) << r.describe();
  }
}

TEST(AmxCli, BenchGemmTileRungs) {
  TempCacheDir cache;
  const auto r = run_strand({"bench", "gemm", "--sizes", "48", "--rungs", "amx-bf16,amx-int8,onednn-bf16", "--reps", "2",
                             "--json"},
                            120);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const json j = json::parse(r.out);
  ASSERT_EQ(j["results"].size(), 3u) << r.out;
  const AmxStatus s = amx_status();
  std::string why;
  const bool dnn = onednn_available(&why);
  for (const json& c : j["results"]) {
    const std::string rung = c["rung"];
    if (rung.rfind("amx", 0) == 0) {
      if (s.usable) {
        EXPECT_EQ(c["status"], "ok") << c.dump();
      } else {
        EXPECT_EQ(c["status"], "unavailable") << c.dump();
        EXPECT_EQ(c["note"], s.reason);
      }
    } else if (dnn) {
      // Checked against float64 on bf16-rounded inputs: "ok", never "WRONG".
      EXPECT_EQ(c["status"], "ok") << c.dump();
      EXPECT_GT(c["gflops"].get<double>(), 0);
    }
  }
  // An unknown rung is one line naming the new ones too.
  const auto bad = run_strand({"bench", "gemm", "--rungs", "amx-fp8"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("unknown rung 'amx-fp8'"), std::string::npos) << bad.describe();
  EXPECT_NE(bad.err.find("onednn-bf16"), std::string::npos) << bad.describe();
}

TEST(AmxCli, ReducedPrecisionRungsWithin2xNaiveAtTheirRounding) {
  // Every available bf16/int8 rung of the ladder against float64 on A's rows and B's columns
  // rounded as the rung declares, the bar twice the naive f32 sum of the same rounded values.
  cpu::ThreadPool pool(2);
  const int64_t M = 37, K = 70, N = 53;
  Rng rng(77);
  std::vector<float> A(size_t(M * K)), B(size_t(K * N));
  for (float& x : A) x = float(rng.normal());
  for (float& x : B) x = float(rng.normal());
  int ran = 0;
  for (const bench::Rung& r : bench::gemm_rungs(pool)) {
    if (!r.available || (r.a_rounding == Rounding::None && r.b_rounding == Rounding::None)) continue;
    ++ran;
    for (bool trans : {false, true}) {
      std::vector<float> Bs(B.size());
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N; ++n) Bs[size_t(trans ? n * K + k : k * N + n)] = B[size_t(k * N + n)];
      std::vector<float> C(size_t(M * N), std::nanf(""));
      bench::GemmProblem gp{M, N, K, A.data(), Bs.data(), DType::F32, trans, C.data()};
      if (r.prepare) r.prepare(gp);
      r.run(gp);
      // Rows of A and columns of B (both along K), rounded.
      const Tensor ar = round_to_f64(Tensor::view_of(A.data(), DType::F32, {M, K}, nullptr), r.a_rounding);
      std::vector<float> bt(size_t(N * K));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N; ++n) bt[size_t(n * K + k)] = B[size_t(k * N + n)];
      const Tensor br = round_to_f64(Tensor::view_of(bt.data(), DType::F32, {N, K}, nullptr), r.b_rounding);
      double err = 0, naive_err = 0, scale = 0;
      bool unwritten = false;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double ref = 0, mag = 0;
          float nv = 0;
          for (int64_t k = 0; k < K; ++k) {
            const double a = ar.ptr<double>()[i * K + k], b = br.ptr<double>()[j * K + k];
            ref += a * b;
            mag += std::abs(a * b);
            nv += float(a) * float(b);
          }
          scale = std::max(scale, mag);
          const float c = C[size_t(i * N + j)];
          unwritten = unwritten || std::isnan(c);
          err = std::max(err, std::abs(double(c) - ref));
          naive_err = std::max(naive_err, std::abs(double(nv) - ref));
        }
      EXPECT_FALSE(unwritten) << r.name;
      EXPECT_LE(err / scale, 2 * naive_err / scale + 4.0 * double(std::numeric_limits<float>::epsilon()))
          << r.name << (trans ? " trans" : "");
    }
  }
  std::string why;
  if (onednn_available(&why)) EXPECT_GE(ran, 1) << "onednn-bf16 did not run";
}
