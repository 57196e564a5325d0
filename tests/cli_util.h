// Helpers for the command-line tests: run the built `strand` binary as a child process
// with stdout and stderr captured separately, and scratch directories to build broken
// model directories in.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"

namespace strand::cli_test {

namespace fs = std::filesystem;

inline std::string strand_binary() { return STRAND_BINARY; }
inline fs::path source_dir() { return fs::path(STRAND_SOURCE_DIR); }
inline fs::path fixture_dir(const std::string& name) { return source_dir() / "tests" / "fixtures" / "gpt2" / name; }

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  f.close();
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

// The outcome of one run of the binary.
struct RunResult {
  std::vector<std::string> args;
  bool exited = false;  // false: killed by a signal (or could not be started)
  int exit_code = -1;   // when exited
  int signal = 0;       // when !exited
  std::string out, err;
  double seconds = 0;

  // The command line, shell-quoted enough to paste into a report.
  std::string command() const {
    std::string s = "strand";
    for (const std::string& a : args) {
      bool plain = !a.empty();
      for (unsigned char c : a)
        if (!(std::isalnum(c) || std::strchr("-_./=,:+", c))) plain = false;
      if (plain) {
        s += " " + a;
      } else {
        s += " $'";
        for (unsigned char c : a) {
          if (c == '\'' || c == '\\')
            s += fmt::format("\\{}", char(c));
          else if (c < 0x20 || c >= 0x7f)
            s += fmt::format("\\x{:02x}", c);
          else
            s += char(c);
        }
        s += "'";
      }
    }
    return s;
  }

  // Everything a failing assertion should show.
  std::string describe() const {
    std::string how = exited ? fmt::format("exit code {}", exit_code)
                             : fmt::format("killed by signal {} ({})", signal, ::strsignal(signal));
    return fmt::format("command: {}\n{} after {:.2f} s\n--- stdout ---\n{}\n--- stderr ---\n{}", command(), how,
                       seconds, out.size() > 4000 ? out.substr(0, 4000) + "..." : out, err);
  }

  // Lines of stderr (split on '\n'; a final line without a newline counts too).
  std::vector<std::string> err_lines() const {
    std::vector<std::string> lines;
    std::string cur;
    for (char c : err) {
      if (c == '\n') {
        lines.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    if (!cur.empty()) lines.push_back(cur);
    return lines;
  }
};

// A scratch directory, removed with everything in it when the object goes away.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag = "cli") {
    static int counter = 0;
    path_ = fs::temp_directory_path() / fmt::format("strand_{}_test_{}_{}", tag, ::getpid(), counter++);
    std::error_code ec;
    fs::remove_all(path_, ec);
    fs::create_directories(path_);
    // Searchable by everyone whatever the umask: tests that drop to nobody work inside it.
    fs::permissions(path_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  fs::path operator/(const std::string& name) const { return path_ / name; }

  // Copies a fixture model directory into this one (as `name`) and returns its path.
  fs::path copy_fixture(const std::string& fixture, const std::string& name = "model") const {
    const fs::path dst = path_ / name;
    fs::create_directories(dst);
    fs::copy(fixture_dir(fixture), dst, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    return dst;
  }

 private:
  fs::path path_;
};

// STRAND_CACHE_DIR pointed at a fresh empty scratch directory for the life of the object (the
// devices cache, devices.json, then lives there); the old value is restored afterwards.
class TempCacheDir {
 public:
  TempCacheDir() : dir_("cache") {
    if (const char* old = std::getenv("STRAND_CACHE_DIR")) old_ = old, had_ = true;
    ::setenv("STRAND_CACHE_DIR", dir_.str().c_str(), 1);
  }
  ~TempCacheDir() {
    if (had_)
      ::setenv("STRAND_CACHE_DIR", old_.c_str(), 1);
    else
      ::unsetenv("STRAND_CACHE_DIR");
  }
  TempCacheDir(const TempCacheDir&) = delete;
  TempCacheDir& operator=(const TempCacheDir&) = delete;

  const fs::path& dir() const { return dir_.path(); }
  fs::path file() const { return dir_ / "devices.json"; }

 private:
  ScratchDir dir_;  // destroyed (removed) after the environment is restored
  std::string old_;
  bool had_ = false;
};

// How to run the binary beyond its arguments.
struct RunOptions {
  std::string stdin_text;       // what the child reads on stdin (default: nothing, as /dev/null)
  std::string cwd;              // working directory ("": the test's)
  bool merge_stderr = false;    // stderr into the same file as stdout (in `out`, in order)
  bool stderr_tty = false;      // stderr is a pseudo-terminal (what it printed comes back in `err`)
  std::vector<std::pair<std::string, std::string>> env;  // set in the child
};

// Runs the strand binary with `args`. stdin is /dev/null (or o.stdin_text); stdout and stderr
// go to two temporary files that are read back. The child gets an alarm after `timeout_s`
// seconds (SIGALRM then shows up as a signal in the result).
inline RunResult run_strand(const std::vector<std::string>& args, unsigned timeout_s = 60, const RunOptions& o = {}) {
  RunResult r;
  r.args = args;
  const fs::path tmp = fs::temp_directory_path();
  std::string out_path = (tmp / "strand_cli_out_XXXXXX").string();
  std::string err_path = (tmp / "strand_cli_err_XXXXXX").string();
  std::string in_path = (tmp / "strand_cli_in_XXXXXX").string();
  const int out_fd = ::mkstemp(out_path.data());
  const int err_fd = ::mkstemp(err_path.data());
  const int in_tmp = ::mkstemp(in_path.data());
  if (out_fd < 0 || err_fd < 0 || in_tmp < 0) {
    r.err = fmt::format("test harness: mkstemp failed: {}", std::strerror(errno));
    return r;
  }
  if (!o.stdin_text.empty() &&
      ::write(in_tmp, o.stdin_text.data(), o.stdin_text.size()) != ssize_t(o.stdin_text.size())) {
    r.err = "test harness: cannot write the stdin file";
    return r;
  }
  ::close(in_tmp);
  int pty_master = -1, pty_slave = -1;
  if (o.stderr_tty) {
    // The slave side is opened before the fork, so that it exists from the start of the child.
    pty_master = ::posix_openpt(O_RDWR | O_NOCTTY);
    if (pty_master < 0 || ::grantpt(pty_master) != 0 || ::unlockpt(pty_master) != 0 ||
        (pty_slave = ::open(::ptsname(pty_master), O_RDWR | O_NOCTTY)) < 0) {
      r.err = "test harness: no pseudo-terminal";
      return r;
    }
  }

  const std::string bin = strand_binary();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(bin.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int in_fd = ::open(o.stdin_text.empty() ? "/dev/null" : in_path.c_str(), O_RDONLY);
    if (in_fd >= 0) ::dup2(in_fd, 0);
    ::dup2(out_fd, 1);
    if (o.stderr_tty) {
      ::close(pty_master);
      ::dup2(pty_slave, 2);
      ::close(pty_slave);
    } else {
      ::dup2(o.merge_stderr ? out_fd : err_fd, 2);
    }
    for (const auto& [k, v] : o.env) ::setenv(k.c_str(), v.c_str(), 1);
    if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) ::_exit(126);
    ::alarm(timeout_s);
    ::execv(bin.c_str(), argv.data());
    const char msg[] = "test harness: execv of the strand binary failed\n";
    [[maybe_unused]] ssize_t n = ::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(out_fd);
  ::close(err_fd);
  if (pty_slave >= 0) ::close(pty_slave);
  std::string tty_text;
  if (pty_master >= 0) {
    // Read the terminal until the child's side closes (EIO), so that it never blocks on a full buffer.
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(pty_master, buf, sizeof buf);
      if (n > 0) {
        tty_text.append(buf, size_t(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    ::close(pty_master);
  }
  if (pid < 0) {
    r.err = fmt::format("test harness: fork failed: {}", std::strerror(errno));
  } else {
    int status = 0;
    pid_t w;
    do {
      w = ::waitpid(pid, &status, 0);
    } while (w < 0 && errno == EINTR);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (w == pid && WIFEXITED(status)) {
      r.exited = true;
      r.exit_code = WEXITSTATUS(status);
    } else if (w == pid && WIFSIGNALED(status)) {
      r.signal = WTERMSIG(status);
    }
    r.out = read_file(out_path);
    r.err = o.stderr_tty ? tty_text : read_file(err_path);
  }
  std::error_code ec;
  fs::remove(out_path, ec);
  fs::remove(err_path, ec);
  fs::remove(in_path, ec);
  return r;
}

// The message of the strand::Error that f throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const strand::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Runs f in a forked child and returns the string it returns, or a description of how the
// child failed ("(child killed by signal 14: Alarm clock)" after `timeout_s` seconds, "(child
// threw: ...)"), so that a test of something that could hang or exhaust memory fails instead.
// With as_normal_user, a child of root first drops to nobody (uid and gid 65534), so that
// permission bits apply to it as they do to a user (root passes every permission check).
inline std::string run_in_child(const std::function<std::string()>& f, unsigned timeout_s = 30,
                                bool as_normal_user = false) {
  int fds[2];
  if (::pipe(fds) != 0) return fmt::format("(pipe failed: {})", std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ::alarm(timeout_s);
    std::string out;
    if (as_normal_user && ::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
      out = fmt::format("(cannot become nobody: {})", std::strerror(errno));
    } else {
      try {
        out = f();
      } catch (const std::exception& e) {
        out = fmt::format("(child threw: {})", e.what());
      }
    }
    for (size_t at = 0; at < out.size();) {
      const ssize_t n = ::write(fds[1], out.data() + at, out.size() - at);
      if (n <= 0) break;
      at += size_t(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return fmt::format("(fork failed: {})", std::strerror(errno));
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status))
    return fmt::format("(child killed by signal {}: {})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  return out;
}

// True when stderr carries a report from AddressSanitizer, UBSan or LeakSanitizer.
inline bool has_sanitizer_report(const std::string& err) {
  for (const char* s : {"AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
                        "ThreadSanitizer", "MemorySanitizer"})
    if (err.find(s) != std::string::npos) return true;
  return false;
}

}  // namespace strand::cli_test
