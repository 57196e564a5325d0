// tests/fuzz/fuzz_util.h — what every strand fuzz target shares.
//
// A target feeds one input to one loader. The input becomes files in a scratch directory of
// its own (under $TMPDIR, removed at exit). A strand::Error is the expected answer to a bad
// input; anything else that escapes (another exception, a wrong round trip) is a finding:
// the target prints it and aborts, and libFuzzer saves the input as a reproducer. Crashes,
// sanitizer reports, hangs (-timeout) and unbounded memory (-rss_limit_mb, -malloc_limit_mb)
// are findings by libFuzzer's own rules.
//
// Inputs that hold several files are sections separated by kSeparator (four bytes that no
// UTF-8 text or JSON contains), in the order each target documents.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace strand::fuzz {

namespace fs = std::filesystem;

constexpr std::string_view kSeparator("\xff\xfe\xfd\xfc", 4);

// Splits `data` at every kSeparator. Sections past `max` stay in the last one.
inline std::vector<std::string> sections(const uint8_t* data, size_t size, size_t max) {
  std::vector<std::string> out;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  while (out.size() + 1 < max) {
    const size_t at = rest.find(kSeparator);
    if (at == std::string_view::npos) break;
    out.emplace_back(rest.substr(0, at));
    rest.remove_prefix(at + kSeparator.size());
  }
  out.emplace_back(rest);
  return out;
}

// Joins files into one input (the seed corpus writer uses it).
inline std::string join_sections(const std::vector<std::string>& parts) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) s += kSeparator;
    s += parts[i];
  }
  return s;
}

// This target's scratch directory, made on first use and removed at exit.
inline const fs::path& scratch_dir() {
  static const fs::path dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    const fs::path d = fs::path(tmp && *tmp ? tmp : "/tmp") / ("strand-fuzz-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return dir;
}

inline void write_file(const fs::path& p, std::string_view bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "fuzz target: cannot write %s\n", p.c_str());
    std::abort();
  }
}

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A finding: say what, then abort so that libFuzzer keeps the input.
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "\nstrand fuzz finding: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Runs f; a strand::Error is a handled bad input (returns false), success returns true, and
// any other exception is a finding.
template <class F>
bool handled(F&& f) {
  try {
    f();
    return true;
  } catch (const Error&) {
    return false;
  } catch (const std::exception& e) {
    finding(std::string("an exception other than strand::Error escaped: ") + e.what());
  } catch (...) {
    finding("a non-standard exception escaped");
  }
}

// The source tree (for fixtures), set by CMake.
inline fs::path source_dir() { return fs::path(STRAND_SOURCE_DIR); }

}  // namespace strand::fuzz
