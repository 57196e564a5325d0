// strand/devices/peak_avx512fp16.cpp — the peak of vfmadd231ph (AVX512_FP16) on one thread.
//
// Compiled with -mavx512fp16 (CMakeLists.txt: files named *_avx512fp16.cpp); the loop runs only
// after CPUID says the CPU has AVX512_FP16 (and the OS saves the ZMM state).
#include <immintrin.h>

#include <chrono>

#include "core/cpu_features.h"
#include "devices/stranded.h"

namespace strand {

double fp16_fma_loop_flops(double seconds) {
  if (!cpu_features().avx512_fp16) return 0;
  using Clock = std::chrono::steady_clock;
  __m512h acc[12];
  for (__m512h& a : acc) a = _mm512_setzero_ph();
  const __m512h x = _mm512_set1_ph(_Float16(0.0078125f)), y = _mm512_set1_ph(_Float16(0.0078125f));
  constexpr int64_t kIters = 1 << 14;
  double best = 0;
  const auto start = Clock::now();
  do {
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < kIters; ++i)
      for (__m512h& a : acc) a = _mm512_fmadd_ph(x, y, a);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (dt > 0) best = std::max(best, double(kIters) * 12 * 64 / dt);  // 32 lanes x 2 FLOP
  } while (std::chrono::duration<double>(Clock::now() - start).count() < seconds);
  __m512h s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ph(s, acc[i]);
  alignas(64) _Float16 lanes[32];
  _mm512_store_ph(lanes, s);
  volatile float sink = float(lanes[0]) + float(lanes[31]);  // keeps the loop
  (void)sink;
  return best;
}

}  // namespace strand
