// Files from strangers: regular files only, size caps, and one line naming the file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "cli_util.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/progress.h"

namespace {

namespace fs = std::filesystem;
using strand::cli_test::error_of;
using strand::cli_test::ScratchDir;

TEST(FileIo, ReadsARegularFile) {
  ScratchDir d("fileio");
  { std::ofstream(d / "a.txt") << "hello"; }
  EXPECT_EQ(strand::read_regular_file((d / "a.txt").string(), "a.txt", 100), "hello");
}

TEST(FileIo, MissingFileIsNamed) {
  ScratchDir d("fileio");
  const std::string p = (d / "nope.json").string();
  const std::string e = error_of([&] { strand::read_regular_file(p, "config.json", 100); });
  EXPECT_NE(e.find("config.json " + p + ": no such file"), std::string::npos) << e;
}

TEST(FileIo, DirectoryIsRefused) {
  ScratchDir d("fileio");
  const std::string e = error_of([&] { strand::read_regular_file(d.str(), "vocab.json", 100); });
  EXPECT_NE(e.find("is a directory"), std::string::npos) << e;
}

TEST(FileIo, FifoIsRefusedWithoutBlocking) {
  ScratchDir d("fileio");
  const std::string p = (d / "fifo").string();
  ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = error_of([&] { strand::read_regular_file(p, "model.safetensors", 100); });
  EXPECT_NE(e.find("is a FIFO, not a regular file"), std::string::npos) << e;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

TEST(FileIo, SymlinkToDevZeroIsRefused) {
  ScratchDir d("fileio");
  const std::string p = (d / "config.json").string();
  ASSERT_EQ(::symlink("/dev/zero", p.c_str()), 0);
  const std::string e = error_of([&] { strand::read_regular_file(p, "config.json", 1 << 20); });
  EXPECT_NE(e.find("is a character device, not a regular file"), std::string::npos) << e;
  EXPECT_NE(e.find(p), std::string::npos) << e;
}

TEST(FileIo, SizeCapIsCheckedBeforeReading) {
  ScratchDir d("fileio");
  { std::ofstream(d / "big.txt") << std::string(5000, 'x'); }
  const std::string e = error_of([&] { strand::read_regular_file((d / "big.txt").string(), "merges.txt", 4096); });
  EXPECT_NE(e.find("merges.txt"), std::string::npos) << e;
  EXPECT_NE(e.find("5 kB, more than the 4.1 kB"), std::string::npos) << e;
  EXPECT_EQ(strand::read_regular_file((d / "big.txt").string(), "merges.txt", 5000).size(), 5000u);
}

TEST(FileIo, UnreadableFileSaysPermissionDenied) {
  ScratchDir d("fileio");
  { std::ofstream(d / "c.json") << "{}"; }
  ::chmod((d / "c.json").c_str(), 0);
  // As root, in a child that has become nobody (root passes every permission check).
  const std::string e = strand::cli_test::run_in_child(
      [&] { return error_of([&] { strand::read_regular_file((d / "c.json").string(), "config.json", 100); }); }, 30,
      /*as_normal_user=*/true);
  EXPECT_NE(e.find("config.json " + (d / "c.json").string() + ": permission denied"), std::string::npos) << e;
}

TEST(FileIo, PathExistsTellsAbsentFromUnsearchable) {
  ScratchDir d("fileio");
  fs::create_directories(d / "closed");
  { std::ofstream(d / "closed" / "config.json") << "{}"; }
  EXPECT_FALSE(strand::path_exists((d / "nope").string(), "x"));
  EXPECT_FALSE(strand::path_exists((d / "closed" / "config.json" / "below").string(), "x"));  // ENOTDIR
  EXPECT_TRUE(strand::path_exists((d / "closed" / "config.json").string(), "x"));
  ::chmod((d / "closed").c_str(), 0);
  const std::string p = (d / "closed" / "config.json").string();
  const std::string e = strand::cli_test::run_in_child(
      [&] { return error_of([&] { strand::path_exists(p, "config.json"); }); }, 30, /*as_normal_user=*/true);
  EXPECT_EQ(e, "config.json " + p + ": permission denied");
}

TEST(FileIo, HumanBytes) {
  EXPECT_EQ(strand::human_bytes(999), "999 bytes");
  EXPECT_EQ(strand::human_bytes(1350000000), "1.35 GB");
  EXPECT_EQ(strand::human_bytes(64ull << 20), "67.1 MB");
}

// Progress goes to stderr only, and only when enabled.
TEST(Progress, SilentWhenOff) {
  strand::set_progress_mode(strand::ProgressMode::Off);
  testing::internal::CaptureStderr();
  {
    strand::Progress p("work", 10, "steps");
    for (int i = 0; i <= 10; ++i) p.set(i);
  }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  strand::set_progress_mode(strand::ProgressMode::Auto);
}

TEST(Progress, ForcedOnPrintsRateAndEtaAfterHalfASecond) {
  strand::set_progress_mode(strand::ProgressMode::On);
  testing::internal::CaptureStderr();
  {
    strand::Progress p("scoring", 100, "tokens");
    p.set(10);  // too early: nothing
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    p.set(50);
  }
  const std::string err = testing::internal::GetCapturedStderr();
  strand::set_progress_mode(strand::ProgressMode::Auto);
  EXPECT_NE(err.find("scoring  50 / 100 tokens   50%"), std::string::npos) << err;
  EXPECT_NE(err.find("tokens/s"), std::string::npos) << err;
  EXPECT_NE(err.find("ETA"), std::string::npos) << err;
  EXPECT_NE(err.find("done in"), std::string::npos) << err;
}

}  // namespace
