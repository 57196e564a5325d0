// Memory readers with 512-bit loads (compiled with -mavx512f; called only when the CPU has AVX-512).
#include <immintrin.h>

#include "devices/readers.h"

namespace strand {

namespace {

#if defined(__GNUC__)
#define STRAND_NO_ASAN __attribute__((no_sanitize_address))
#else
#define STRAND_NO_ASAN
#endif

uint64_t fold(__m512i a, __m512i b, __m512i c, __m512i d) {
  alignas(64) uint64_t w[8];
  _mm512_store_si512(w, _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d)));
  return ((w[0] + w[1]) + (w[2] + w[3])) + ((w[4] + w[5]) + (w[6] + w[7]));
}

// One sequential stream, a cache line per load, four accumulators.
STRAND_NO_ASAN uint64_t avx512_stream(const uint64_t* p, size_t n) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  const size_t nv = n / 8;
  for (size_t i = 0; i + 4 <= nv; i += 4) {
    a = _mm512_add_epi64(a, _mm512_load_si512(p + 8 * i));
    b = _mm512_add_epi64(b, _mm512_load_si512(p + 8 * (i + 1)));
    c = _mm512_add_epi64(c, _mm512_load_si512(p + 8 * (i + 2)));
    d = _mm512_add_epi64(d, _mm512_load_si512(p + 8 * (i + 3)));
  }
  return fold(a, b, c, d);
}

// The same with a software prefetch 2 KiB ahead.
STRAND_NO_ASAN uint64_t avx512_prefetch(const uint64_t* p, size_t n) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  const size_t nv = n / 8;
  for (size_t i = 0; i + 4 <= nv; i += 4) {
    _mm_prefetch(reinterpret_cast<const char*>(p + 8 * (i + 32)), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + 8 * (i + 34)), _MM_HINT_T0);
    a = _mm512_add_epi64(a, _mm512_load_si512(p + 8 * i));
    b = _mm512_add_epi64(b, _mm512_load_si512(p + 8 * (i + 1)));
    c = _mm512_add_epi64(c, _mm512_load_si512(p + 8 * (i + 2)));
    d = _mm512_add_epi64(d, _mm512_load_si512(p + 8 * (i + 3)));
  }
  return fold(a, b, c, d);
}

// Non-temporal 512-bit loads (vmovntdqa).
STRAND_NO_ASAN uint64_t avx512_nt(const uint64_t* p, size_t n) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  void* v = const_cast<uint64_t*>(p);
  const size_t nv = n / 8;
  for (size_t i = 0; i + 4 <= nv; i += 4) {
    a = _mm512_add_epi64(a, _mm512_stream_load_si512(static_cast<__m512i*>(v) + i));
    b = _mm512_add_epi64(b, _mm512_stream_load_si512(static_cast<__m512i*>(v) + i + 1));
    c = _mm512_add_epi64(c, _mm512_stream_load_si512(static_cast<__m512i*>(v) + i + 2));
    d = _mm512_add_epi64(d, _mm512_stream_load_si512(static_cast<__m512i*>(v) + i + 3));
  }
  return fold(a, b, c, d);
}

// Eight interleaved streams (the slice cut in eight), one cache line of each per step: as a
// GEMV over column-major weights reads several output lines at once.
STRAND_NO_ASAN uint64_t avx512_8_streams(const uint64_t* p, size_t n) {
  constexpr int S = 8;
  const size_t len = n / S / 8 * 8;  // words per stream, whole lines
  __m512i acc[S];
  for (int k = 0; k < S; ++k) acc[k] = _mm512_setzero_si512();
  for (size_t i = 0; i < len; i += 8)
    for (int k = 0; k < S; ++k) acc[k] = _mm512_add_epi64(acc[k], _mm512_load_si512(p + size_t(k) * len + i));
  return fold(_mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3]), _mm512_add_epi64(acc[4], acc[5]),
              _mm512_add_epi64(acc[6], acc[7]));
}

}  // namespace

std::vector<MemoryReader> memory_readers_avx512() {
  return {{"avx512-stream", "512-bit loads, one stream", avx512_stream},
          {"avx512-prefetch", "512-bit loads, one stream, software prefetch 2 KiB ahead", avx512_prefetch},
          {"avx512-8-streams", "512-bit loads, 8 interleaved streams", avx512_8_streams},
          {"avx512-nt", "512-bit non-temporal loads (vmovntdqa), one stream", avx512_nt}};
}

}  // namespace strand
