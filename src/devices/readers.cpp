// The portable memory readers, and the list of every reader this CPU runs (devices/readers.h).
#include "devices/readers.h"

#include "core/cpu_features.h"

namespace strand {

namespace {

// Sanitizers would check every load; the readers only stream a buffer strand allocated.
#if defined(__GNUC__)
#define STRAND_NO_ASAN __attribute__((no_sanitize_address))
#else
#define STRAND_NO_ASAN
#endif

// 12 interleaved streams (the buffer cut into 12 parts, a cache line of each in turn): one core
// keeps more misses in flight with several streams than with one.
constexpr int kStreams = 12;
STRAND_NO_ASAN uint64_t scalar_streams(const uint64_t* p, size_t n) {
  const size_t len = n / kStreams / 8 * 8;  // words per stream, whole lines
  uint64_t s[kStreams] = {};
  for (size_t i = 0; i < len; i += 8)
    for (int k = 0; k < kStreams; ++k) {
      const uint64_t* q = p + size_t(k) * len + i;
      s[k] += (q[0] + q[1]) + (q[2] + q[3]) + (q[4] + q[5]) + (q[6] + q[7]);
    }
  uint64_t t = 0;
  for (size_t i = kStreams * len; i < n; ++i) t += p[i];
  for (uint64_t v : s) t += v;
  return t;
}

// One sequential stream with a software prefetch 1 KiB ahead.
STRAND_NO_ASAN uint64_t scalar_prefetch(const uint64_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
#if defined(__GNUC__)
    __builtin_prefetch(p + i + 128, 0, 0);
#endif
    a += p[i] + p[i + 4];
    b += p[i + 1] + p[i + 5];
    c += p[i + 2] + p[i + 6];
    d += p[i + 3] + p[i + 7];
  }
  for (; i < n; ++i) a += p[i];
  return a + b + c + d;
}

}  // namespace

const std::vector<MemoryReader>& memory_readers() {
  static const std::vector<MemoryReader> all = [] {
    std::vector<MemoryReader> v = {
        {"scalar-12-streams", "64-bit loads, 12 interleaved streams", scalar_streams},
        {"scalar-prefetch", "64-bit loads, one stream, software prefetch 1 KiB ahead", scalar_prefetch},
    };
    const CpuFeatures& f = cpu_features();
    if (f.has_avx2_set())
      for (const MemoryReader& r : memory_readers_avx2()) v.push_back(r);
    if (f.has_avx512_set())
      for (const MemoryReader& r : memory_readers_avx512()) v.push_back(r);
    return v;
  }();
  return all;
}

#if !(defined(__x86_64__) || defined(_M_X64))
std::vector<MemoryReader> memory_readers_avx2() { return {}; }
std::vector<MemoryReader> memory_readers_avx512() { return {}; }
#endif

}  // namespace strand
