// strand/backends/amx/tiles.h — the tile operations the AMX kernels are written in, and a plain
// C++ model of them.
//
// The kernels (amx/kernels.h) are templates over a `Tiles` type with this interface:
//   loadconfig(cfg)         LDTILECFG: shapes of the eight tiles (palette 1)
//   release()               TILERELEASE: back to the initial state
//   zero<T>()               TILEZERO tmmT
//   load<T>(base, stride)   TILELOADD tmmT: rows x colsb bytes, row r at base + r * stride
//   store<T>(base, stride)  TILESTORED tmmT
//   dpbf16ps<D, A, B>()     TDPBF16PS tmmD += tmmA · tmmB (bf16 pairs, f32 accumulation)
//   dpbssd<D, A, B>()       TDPBSSD   tmmD += tmmA · tmmB (s8 quads, s32 accumulation)
// Tile numbers are template arguments because the instructions encode them (the intrinsics
// need constants). Two implementations:
//   TileModel (this file)        the instructions' semantics as plain C++, written from the
//                                pseudocode of Intel's SDM (vol. 2, "Intel AMX" instructions):
//                                runs anywhere; the tests prove the kernels' blocking, indexing
//                                and packing on it;
//   HwTiles (amx/tiles_amx.h)    the intrinsics, compiled only into *_amx.cpp files and called
//                                only after the run-time check (amx/amx.h: amx_status()).
// A third, Avx512Bf16Tiles (amx/tiles_avx512bf16.h), runs the bf16 kernels on AVX-512-BF16
// where there is no AMX. It reads A and B through the addresses given to load<T>, so a kernel
// must not write a tile's source between loading it and the dot products that use it.
//
// The layouts (Intel's "VNNI" layout for the B operand):
//   TDPBF16PS  A: rows x (2k bf16), row m holds a[m][0..2k);  B: k rows of n pairs, row r holds
//              b[2r][j], b[2r+1][j] for j = 0..n; C: rows x n f32. Per row m, two f32 partial
//              sums per column j (even and odd halves of the pairs) are accumulated over r
//              with single roundings (an FMA of an exact bf16 product), then added together and
//              to C[m][j] — in that order. Denormal inputs count as zero and denormal results
//              are flushed to zero (DAZ, FTZ); round to nearest even; MXCSR is not used.
//   TDPBSSD    A: rows x (4k s8); B: k rows of n quads (b[4r..4r+3][j]); C: rows x n s32,
//              C[m][j] += sum over r of the four products, in two's complement (wraps).
#pragma once

#include <cstdint>
#include <cstring>

namespace strand::amx {

constexpr int kTiles = 8;       // tmm0..tmm7 (palette 1)
constexpr int kMaxRows = 16;    // rows of a tile
constexpr int kMaxColsb = 64;   // bytes of a tile row

// LDTILECFG's 64-byte memory operand, palette 1: byte 0 palette, byte 1 start_row, bytes 2..15
// reserved (zero), bytes 16..47 bytes per row of tiles 0..15 (u16), bytes 48..63 rows of tiles
// 0..15 (u8). Tiles 8..15 do not exist in palette 1 and must stay zero.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};

  TileConfig& set(int tile, int nrows, int ncolsb) {
    rows[tile] = uint8_t(nrows);
    colsb[tile] = uint16_t(ncolsb);
    return *this;
  }
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG takes 64 bytes");

// The model. One object is one thread's tile state (the hardware keeps it per thread too).
// Every fault the hardware raises (#GP on a bad configuration, #UD on shapes that do not
// match) throws strand::Error naming the instruction and the reason, so that a kernel bug
// shows up in the tests instead of computing garbage.
class TileModel {
 public:
  void loadconfig(const TileConfig& c);
  void release();

  // The run-time-indexed forms (the kernels use the template forms below).
  void zero(int t);
  void load(int t, const void* base, int64_t stride);
  void store(int t, void* base, int64_t stride) const;
  void dpbf16ps(int d, int a, int b);
  void dpbssd(int d, int a, int b);

  // The kernels' forms. The dot products take the kernels' register plan (C in tmm0..3, A in
  // tmm4..5, B in tmm6..7; see amx/tiles_amx.h), so that what compiles here compiles there.
  template <int T> void zero() { zero(T); }
  template <int T> void load(const void* base, int64_t stride) { load(T, base, stride); }
  template <int T> void store(void* base, int64_t stride) const { store(T, base, stride); }
  template <int D, int A, int B>
  void dpbf16ps() {
    static_assert(D >= 0 && D < 4 && (A == 4 || A == 5) && (B == 6 || B == 7), "C in tmm0..3, A in tmm4..5, B in tmm6..7");
    dpbf16ps(D, A, B);
  }
  template <int D, int A, int B>
  void dpbssd() {
    static_assert(D >= 0 && D < 4 && (A == 4 || A == 5) && (B == 6 || B == 7), "C in tmm0..3, A in tmm4..5, B in tmm6..7");
    dpbssd(D, A, B);
  }

  // For tests: the 64-byte row r of tile t (all 16 rows exist; bytes past colsb are zero).
  const uint8_t* row(int t, int r) const { return tmm_[t][r]; }
  bool configured() const { return configured_; }
  int rows(int t) const { return cfg_.rows[t]; }
  int colsb(int t) const { return cfg_.colsb[t]; }

 private:
  void need_tile(int t, const char* insn) const;
  void check_dp(int d, int a, int b, const char* insn) const;

  TileConfig cfg_{};
  bool configured_ = false;
  alignas(64) uint8_t tmm_[kTiles][kMaxRows][kMaxColsb] = {};
};

}  // namespace strand::amx
