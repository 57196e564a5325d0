// Memory readers with 256-bit loads (compiled with -mavx2; called only when the CPU has AVX2).
#include <immintrin.h>

#include "devices/readers.h"

namespace strand {

namespace {

#if defined(__GNUC__)
#define STRAND_NO_ASAN __attribute__((no_sanitize_address))
#else
#define STRAND_NO_ASAN
#endif

uint64_t fold(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
  alignas(32) uint64_t w[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(w), s);
  return w[0] + w[1] + w[2] + w[3];
}

// One sequential stream, a cache line (two 256-bit loads) per step, four accumulators.
STRAND_NO_ASAN uint64_t avx2_stream(const uint64_t* p, size_t n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  const __m256i* v = reinterpret_cast<const __m256i*>(p);
  const size_t nv = n / 4;
  for (size_t i = 0; i + 4 <= nv; i += 4) {
    a = _mm256_add_epi64(a, _mm256_load_si256(v + i));
    b = _mm256_add_epi64(b, _mm256_load_si256(v + i + 1));
    c = _mm256_add_epi64(c, _mm256_load_si256(v + i + 2));
    d = _mm256_add_epi64(d, _mm256_load_si256(v + i + 3));
  }
  return fold(a, b, c, d);
}

// The same with non-temporal loads (vmovntdqa).
STRAND_NO_ASAN uint64_t avx2_nt(const uint64_t* p, size_t n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  __m256i* v = reinterpret_cast<__m256i*>(const_cast<uint64_t*>(p));
  const size_t nv = n / 4;
  for (size_t i = 0; i + 4 <= nv; i += 4) {
    a = _mm256_add_epi64(a, _mm256_stream_load_si256(v + i));
    b = _mm256_add_epi64(b, _mm256_stream_load_si256(v + i + 1));
    c = _mm256_add_epi64(c, _mm256_stream_load_si256(v + i + 2));
    d = _mm256_add_epi64(d, _mm256_stream_load_si256(v + i + 3));
  }
  return fold(a, b, c, d);
}

// Four interleaved streams (the slice cut in four), one cache line of each per step.
STRAND_NO_ASAN uint64_t avx2_4_streams(const uint64_t* p, size_t n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  const size_t len = n / 4 / 8 * 8;  // words per stream, whole lines
  const __m256i* s0 = reinterpret_cast<const __m256i*>(p);
  const __m256i* s1 = reinterpret_cast<const __m256i*>(p + len);
  const __m256i* s2 = reinterpret_cast<const __m256i*>(p + 2 * len);
  const __m256i* s3 = reinterpret_cast<const __m256i*>(p + 3 * len);
  for (size_t i = 0; i < len / 4; i += 2) {
    a = _mm256_add_epi64(a, _mm256_add_epi64(_mm256_load_si256(s0 + i), _mm256_load_si256(s0 + i + 1)));
    b = _mm256_add_epi64(b, _mm256_add_epi64(_mm256_load_si256(s1 + i), _mm256_load_si256(s1 + i + 1)));
    c = _mm256_add_epi64(c, _mm256_add_epi64(_mm256_load_si256(s2 + i), _mm256_load_si256(s2 + i + 1)));
    d = _mm256_add_epi64(d, _mm256_add_epi64(_mm256_load_si256(s3 + i), _mm256_load_si256(s3 + i + 1)));
  }
  return fold(a, b, c, d);
}

}  // namespace

std::vector<MemoryReader> memory_readers_avx2() {
  return {{"avx2-stream", "256-bit loads, one stream", avx2_stream},
          {"avx2-4-streams", "256-bit loads, 4 interleaved streams", avx2_4_streams},
          {"avx2-nt", "256-bit non-temporal loads (vmovntdqa), one stream", avx2_nt}};
}

}  // namespace strand
