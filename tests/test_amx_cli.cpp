// The amx tier on the command line: where AMX is missing, naming the tier is one line saying
// which check failed and exit 1; the bf16/int8 rungs of `bench gemm` say why they are
// unavailable, and oneDNN's bf16 matmul (the bar) runs and is checked at bf16 precision.
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "backends/amx/amx.h"
#include "backends/onednn/onednn.h"
#include "cli_util.h"

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
