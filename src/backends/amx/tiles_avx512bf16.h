// strand/backends/amx/tiles_avx512bf16.h — the tile operations of amx/tiles.h on AVX-512-BF16.
//
// CPUs without AMX but with AVX512_BF16 (Cooper Lake, Zen 4, ...) multiply bf16 pairs in ZMM
// registers (vdpbf16ps: 16 f32 lanes, each += a pair of bf16 products). This layer runs the amx
// tier's kernels on it, unchanged: a TDPBF16PS of C (16 x 16 f32) += A (16 x 16 pairs) · B
// (16 rows of 16 pairs) becomes, for each of B's rows k, one load of that row and sixteen
// vdpbf16ps — C's row m += broadcast(A[m][k]) · B[k] — with C's sixteen rows in registers.
//
// The accumulator tiles (tmm0..tmm3) are memory here; the A and B tiles (tmm4..tmm7) are not
// copied at all: load<T> keeps the address and stride, and the dot product reads through them
// (the kernels never write a tile's source between loading it and using it). Only bf16: there
// is no int8 tile product (AVX512_VNNI multiplies unsigned by signed bytes), so the int8
// kernels are not instantiated on this layer.
//
// Rounding: each lane adds its two products to the accumulator one after the other (round to
// nearest even, denormals flushed), not TDPBF16PS's two partial sums: results differ from the
// AMX model in the last bits, the declared precision (bf16 inputs, f32 accumulation) is the same.
//
// Include only from files named *_avx512bf16.cpp (compiled with -mavx512bf16 and the AVX-512
// flags), run only after CPUID reports AVX512_BF16.
#pragma once

#include <immintrin.h>

#include <cstring>

#include "backends/amx/tiles.h"

namespace strand::amx {

struct Avx512Bf16Tiles {
  void loadconfig(const TileConfig& c) { cfg_ = c; }
  void release() {}

  template <int T>
  void zero() {
    static_assert(T >= 0 && T < 4, "the accumulators are tmm0..tmm3");
    std::memset(c_[T], 0, sizeof c_[T]);
  }
  template <int T>
  void load(const void* base, int64_t stride) {
    static_assert(T >= 4 && T < kTiles, "the kernels load A and B into tmm4..tmm7");
    src_[T] = static_cast<const uint8_t*>(base);
    stride_[T] = stride;
  }
  template <int T>
  void store(void* base, int64_t stride) {
    static_assert(T >= 0 && T < 4, "the kernels store the accumulators tmm0..tmm3");
    auto* p = static_cast<uint8_t*>(base);
    for (int r = 0; r < cfg_.rows[T]; ++r) std::memcpy(p + r * stride, c_[T][r], cfg_.colsb[T]);
  }
  template <int D, int A, int B>
  void dpbf16ps() {
    static_assert(D >= 0 && D < 4 && (A == 4 || A == 5) && (B == 6 || B == 7), "C in tmm0..3, A in tmm4..5, B in tmm6..7");
    const int kk = cfg_.colsb[A] / 4;  // bf16 pairs along K
    const uint8_t* a = src_[A];
    const uint8_t* b = src_[B];
    const int64_t as = stride_[A], bs = stride_[B];
    __m512 c[16];
    for (int m = 0; m < 16; ++m) c[m] = _mm512_load_ps(c_[D][m]);
    for (int k = 0; k < kk; ++k) {
      const __m512bh bk = (__m512bh)_mm512_loadu_si512(b + k * bs);
      for (int m = 0; m < 16; ++m) {
        int32_t pair;
        std::memcpy(&pair, a + m * as + 4 * k, 4);
        c[m] = _mm512_dpbf16_ps(c[m], (__m512bh)_mm512_set1_epi32(pair), bk);
      }
    }
    for (int m = 0; m < 16; ++m) _mm512_store_ps(c_[D][m], c[m]);
  }
  template <int D, int A, int B>
  void dpbssd() {
    static_assert(D < 0, "AVX-512-BF16 has no int8 tile product");
  }

 private:
  TileConfig cfg_{};
  const uint8_t* src_[kTiles] = {};
  int64_t stride_[kTiles] = {};
  alignas(64) float c_[4][16][16] = {};
};

}  // namespace strand::amx
