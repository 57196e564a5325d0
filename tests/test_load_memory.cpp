// Load memory: loading a model directory the way `strand generate` does (map the file, check
// it, convert every tensor to the layout strand runs) peaks at the weights as run plus a small
// margin, not at the weights plus the whole mapped file. Measured in a child process, from a
// peak reset just before the load (/proc/self/clear_refs) to the high-water mark just after.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>

#include "cli_util.h"
#include "core/memory_stats.h"
#include "core/progress.h"
#include <nlohmann/json.hpp>

#include "model/gpt2_weights.h"
#include "model/weight_cast.h"

namespace {

namespace fs = std::filesystem;
using namespace strand;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

TEST(LoadMemory, PeakIsWithinATenthOfTheWeightsAsRun) {
  if (kAsan) GTEST_SKIP() << "under AddressSanitizer the resident set includes its shadow memory and redzones";
  // 4 layers of 1024 channels, vocabulary 4096, context 1024: 53 M parameters, 212 MB in f32.
  // Every matrix is a whole number of 2 MiB huge pages, so the converted copies hold no tails.
  Gpt2Config c;
  c.n_layer = 4;
  c.n_embd = 1024;
  c.n_head = 16;
  c.n_positions = 1024;
  c.vocab_size = 4096;
  c.n_inner = 4096;
  cli_test::ScratchDir s("loadmem");
  const std::string dir = (s / "model").string();
  save_gpt2_dir(dir, c, random_gpt2_weights(c, 0x10ad, DType::F32));
  const std::string log = (s / "stderr.txt").string();

  // "<rss at start> <peak> <weights as run> <seconds> <progress line seen>".
  const std::string out = cli_test::run_in_child(
      [&] {
        if (!std::freopen(log.c_str(), "w", stderr)) return std::string("(cannot redirect stderr)");
        set_progress_mode(ProgressMode::On);
        const uint64_t start = current_rss_bytes();
        if (!reset_peak_rss()) return std::string("(no /proc/self/clear_refs: peak RSS cannot be reset)");
        const auto t0 = std::chrono::steady_clock::now();
        Gpt2Model m = Gpt2Model::load(dir);
        m.weights = cast_gpt2_weights(m.weights, m.weights.dtype, MatrixLayout::ColMajor);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const uint64_t peak = peak_rss_bytes();
        std::fflush(stderr);
        const bool progress = cli_test::read_file(log).find("loading " + dir + "/model.safetensors") != std::string::npos;
        return fmt::format("{} {} {} {} {}", start, peak, gpt2_weight_bytes(m.weights), seconds, int(progress));
      },
      300);
  if (out.rfind("(no /proc/self/clear_refs", 0) == 0) GTEST_SKIP() << out;
  std::istringstream in(out);
  uint64_t start = 0, peak = 0, as_run = 0;
  double seconds = 0;
  int progress = 0;
  ASSERT_TRUE(in >> start >> peak >> as_run >> seconds >> progress) << out;
  const uint64_t C = 1024, F = 4096, V = 4096, P = 1024, L = 4;
  const uint64_t params = V * C + P * C + L * (4 * C * C + 2 * C * F + 9 * C + F) + 2 * C;
  ASSERT_EQ(as_run, params * 4) << "the weights as run: every tensor once (the tied lm_head is wte), in f32";
  const double used = double(peak - start);
  // The margin on top of 1.1x: code and data of the load path touched for the first time in
  // this process, the header's JSON, allocator arenas and page tables: a few MB, 16 MiB at most.
  const double allowed = 1.1 * double(as_run) + double(16 << 20);
  EXPECT_GE(used, double(as_run)) << "the load must hold the weights it converted";
  EXPECT_LE(used, allowed) << fmt::format("load peaked at {:.1f} MB over its start for {:.1f} MB of weights ({:.2f}x)",
                                          used / 1e6, double(as_run) / 1e6, used / double(as_run));
  // A load is never silent when progress is shown: after half a second the line is drawn.
  if (seconds > 0.6) EXPECT_EQ(progress, 1) << "no 'loading ...' progress line in " << cli_test::read_file(log);
  std::printf("load: %.1f MB peak over %.1f MB of weights as run (%.3fx), %.2f s\n", used / 1e6, double(as_run) / 1e6,
              used / double(as_run), seconds);
}

// `strand bench model -m DIR` reports the load: its seconds, the process's peak resident set
// after it, and the weights as run (the same bytes as a load converted in this process).
TEST(LoadMemory, BenchModelReportsTheLoad) {
  const std::string model = cli_test::fixture_dir("tiny-f16").string();
  const std::vector<std::string> args = {"bench", "model", "-m", model, "-p", "4", "-n", "0", "--reps", "1",
                                         "--backend", "naive", "--probe", "off"};
  std::vector<std::string> json_args = args;
  json_args.push_back("--json");
  const cli_test::RunResult r = cli_test::run_strand(json_args, 300);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const nlohmann::json load = nlohmann::json::parse(r.out).at("load");
  Gpt2Model m = Gpt2Model::load(model);
  const uint64_t as_run = gpt2_weight_bytes(cast_gpt2_weights(m.weights, m.weights.dtype, MatrixLayout::ColMajor));
  EXPECT_EQ(load.at("weights_as_run_bytes").get<uint64_t>(), as_run);
  EXPECT_GT(load.at("seconds").get<double>(), 0.0);
  EXPECT_GE(load.at("peak_rss_bytes").get<uint64_t>(), as_run);
  const cli_test::RunResult md = cli_test::run_strand(args, 300);
  ASSERT_EQ(md.exit_code, 0) << md.describe();
  EXPECT_NE(md.out.find("load: "), std::string::npos) << md.out;
  EXPECT_NE(md.out.find("peak resident set"), std::string::npos) << md.out;
  EXPECT_NE(md.out.find("weights as run"), std::string::npos) << md.out;
}

}  // namespace
