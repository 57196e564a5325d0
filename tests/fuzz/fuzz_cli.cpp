// Fuzz target: the command line, strand::cli::run (apps/cli.h), in-process. The input is the
// arguments after "strand", separated by NUL bytes. The commands run in a copy of the tiny
// fixture model (tests/fixtures/gpt2/tiny-f32), which is the working directory, so "-m ." and
// "-f ppl.txt" reach it. To keep every run short and on this directory, inputs are skipped when
// they name a command that writes files or does long work (demo, train, export, bench, devices,
// validate), contain a '/', or ask for more than 4 threads. Exit code 2 (an internal error) is
// a finding; 0 and 1 are answers. Run with -close_fd_mask=3 (scripts/fuzz.sh does) to keep the
// commands' own output quiet; libFuzzer's reports, and this target's, still reach stderr.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "fuzz_util.h"

using namespace strand;

namespace {

int g_stderr = -1;  // stderr as it was before libFuzzer's -close_fd_mask closed it

bool allowed(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.find('/') != std::string::npos) return false;
    for (const char* cmd : {"demo", "train", "export", "bench", "devices", "validate"})
      if (a == cmd) return false;
    // The thread count: --threads N, --threads=N, -t N, -tN.
    std::string threads;
    bool names_threads = false;
    if ((a == "--threads" || a == "-t") && i + 1 < args.size()) threads = args[i + 1], names_threads = true;
    if (a.rfind("--threads=", 0) == 0) threads = a.substr(10), names_threads = true;
    if (a.size() > 2 && a.rfind("-t", 0) == 0 && a[2] != '-') threads = a.substr(2), names_threads = true;
    if (names_threads && (threads.size() != 1 || threads[0] < '0' || threads[0] > '4')) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const fuzz::fs::path dir = fuzz::scratch_dir() / "model";
  fuzz::fs::create_directories(dir);
  fuzz::fs::copy(fuzz::source_dir() / "tests/fixtures/gpt2/tiny-f32", dir,
                 fuzz::fs::copy_options::recursive | fuzz::fs::copy_options::overwrite_existing);
  fuzz::fs::current_path(dir);
  g_stderr = ::dup(2);  // LLVMFuzzerInitialize runs before -close_fd_mask is applied
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args = {"strand"};
  std::string cur;
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      args.push_back(cur);
      cur.clear();
    } else {
      cur += char(data[i]);
    }
  }
  args.push_back(cur);
  if (args.size() > 64 || !allowed(args)) return 0;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int rc = cli::run(int(args.size()), argv.data());
  if ((rc != 0 && rc != 1) && g_stderr >= 0) {
    std::fflush(stderr);
    ::dup2(g_stderr, 2);
  }
  if (rc == 2) fuzz::finding("strand exited with 2, an internal error");
  if (rc != 0 && rc != 1) fuzz::finding("exit code " + std::to_string(rc));
  return 0;
}
