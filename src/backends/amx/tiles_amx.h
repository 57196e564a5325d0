// strand/backends/amx/tiles_amx.h — the tile operations of amx/tiles.h on the real instructions.
//
// Include only from files named *_amx.cpp: CMake compiles those with -mamx-tile -mamx-bf16
// -mamx-int8 (and the AVX-512 flags), and nothing in them runs before amx_usable() (amx/amx.h)
// has checked CPUID, XCR0 and the Linux permission.
//
// GCC's intrinsics paste the tile number into the instruction text (`%%tmm` #dst), so it must be
// a literal token, not a constant expression: the template forms below expand every literal
// choice once (the X-macros) and keep the one the template arguments name.
#pragma once

#include <immintrin.h>

#include "backends/amx/tiles.h"

namespace strand::amx {

#define STRAND_TMM_EACH(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

struct HwTiles {
  void loadconfig(const TileConfig& c) { _tile_loadconfig(&c); }
  void release() { _tile_release(); }

  template <int T>
  void zero() {
    static_assert(T >= 0 && T < kTiles, "tmm0..tmm7");
#define STRAND_TMM_ZERO(t) \
  if constexpr (T == t) _tile_zero(t);
    STRAND_TMM_EACH(STRAND_TMM_ZERO)
#undef STRAND_TMM_ZERO
  }

  template <int T>
  void load(const void* base, int64_t stride) {
    static_assert(T >= 0 && T < kTiles, "tmm0..tmm7");
#define STRAND_TMM_LOAD(t) \
  if constexpr (T == t) _tile_loadd(t, base, stride);
    STRAND_TMM_EACH(STRAND_TMM_LOAD)
#undef STRAND_TMM_LOAD
  }

  template <int T>
  void store(void* base, int64_t stride) {
    static_assert(T >= 0 && T < kTiles, "tmm0..tmm7");
#define STRAND_TMM_STORE(t) \
  if constexpr (T == t) _tile_stored(t, base, stride);
    STRAND_TMM_EACH(STRAND_TMM_STORE)
#undef STRAND_TMM_STORE
  }

// The dot products: the kernels keep C in tmm0..tmm3, A in tmm4..tmm5 and B in tmm6..tmm7
// (amx/kernels.h), so these are the 16 triples to expand. (All 512 would not do: clang checks
// that the three tiles of a literal call differ even in a discarded branch.)
#define STRAND_TMM_DP_B(op, d, a, b) \
  if constexpr (D == d && A == a && B == b) op(d, a, b);
#define STRAND_TMM_DP_D(op, d) \
  STRAND_TMM_DP_B(op, d, 4, 6) STRAND_TMM_DP_B(op, d, 4, 7) STRAND_TMM_DP_B(op, d, 5, 6) STRAND_TMM_DP_B(op, d, 5, 7)
#define STRAND_TMM_DP_ALL(op) STRAND_TMM_DP_D(op, 0) STRAND_TMM_DP_D(op, 1) STRAND_TMM_DP_D(op, 2) STRAND_TMM_DP_D(op, 3)

  template <int D, int A, int B>
  void dpbf16ps() {
    static_assert(D >= 0 && D < 4 && (A == 4 || A == 5) && (B == 6 || B == 7), "C in tmm0..3, A in tmm4..5, B in tmm6..7");
    STRAND_TMM_DP_ALL(_tile_dpbf16ps)
  }

  template <int D, int A, int B>
  void dpbssd() {
    static_assert(D >= 0 && D < 4 && (A == 4 || A == 5) && (B == 6 || B == 7), "C in tmm0..3, A in tmm4..5, B in tmm6..7");
    STRAND_TMM_DP_ALL(_tile_dpbssd)
  }

#undef STRAND_TMM_DP_ALL
#undef STRAND_TMM_DP_D
#undef STRAND_TMM_DP_B
};

#undef STRAND_TMM_EACH

}  // namespace strand::amx
