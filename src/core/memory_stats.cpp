#include "core/memory_stats.h"

#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace strand {

namespace {

// "<key>:   1234 kB" from /proc/self/status, in bytes (0 when absent).
uint64_t status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':')
      return uint64_t(std::strtoull(line.c_str() + n + 1, nullptr, 10)) * 1024;
  return 0;
}

}  // namespace

uint64_t peak_rss_bytes() {
  if (const uint64_t hwm = status_kb("VmHWM")) return hwm;
  struct rusage ru {};
  if (::getrusage(RUSAGE_SELF, &ru) != 0) return 0;
#ifdef __APPLE__
  return uint64_t(ru.ru_maxrss);  // bytes on macOS
#else
  return uint64_t(ru.ru_maxrss) * 1024;  // KiB elsewhere
#endif
}

uint64_t current_rss_bytes() { return status_kb("VmRSS"); }

bool reset_peak_rss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

}  // namespace strand
