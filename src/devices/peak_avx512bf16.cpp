// strand/devices/peak_avx512bf16.cpp — the peak of vdpbf16ps (AVX512_BF16) on one thread.
//
// Compiled with -mavx512bf16 (CMakeLists.txt: files named *_avx512bf16.cpp); the loop runs only
// after CPUID says the CPU has AVX512_BF16 (and the OS saves the ZMM state).
#include <immintrin.h>

#include <chrono>

#include "core/cpu_features.h"
#include "devices/stranded.h"

namespace strand {

double bf16_dot_loop_flops(double seconds) {
  if (!cpu_features().avx512_bf16) return 0;
  using Clock = std::chrono::steady_clock;
  // Twelve independent accumulators: each vdpbf16ps waits only for its own previous result.
  __m512 acc[12];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3c00);  // bf16 2^-7: the sums stay ordinary numbers
  const __m512bh y = (__m512bh)_mm512_set1_epi16(0x3c00);
  constexpr int64_t kIters = 1 << 14;
  double best = 0;
  const auto start = Clock::now();
  do {
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < kIters; ++i)
      for (__m512& a : acc) a = _mm512_dpbf16_ps(a, x, y);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (dt > 0) best = std::max(best, double(kIters) * 12 * 64 / dt);
  } while (std::chrono::duration<double>(Clock::now() - start).count() < seconds);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  volatile float sink = lanes[0] + lanes[15];  // keeps the loop
  (void)sink;
  return best;
}

}  // namespace strand
