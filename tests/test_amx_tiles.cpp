// The C++ model of the AMX instructions (backends/amx/tiles.h) on hand-worked tiles: the tile
// configuration and its faults, loads and stores with their zeroing, TDPBF16PS's order of
// accumulation (two partial sums per output, then added to it), DAZ and FTZ, TDPBSSD's signed
// quads and wrap-around, and the shape checks that fault on the hardware.
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/amx/tiles.h"
#include "core/dtype.h"
#include "core/error.h"

using namespace strand;
using namespace strand::amx;

namespace {

// The message of the strand::Error fn throws ("" when it throws none).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

uint16_t bf(float x) { return f32_to_bf16(x); }

float f32_at(const TileModel& t, int tile, int r, int c) {
  float f;
  std::memcpy(&f, t.row(tile, r) + 4 * c, 4);
  return f;
}
int32_t s32_at(const TileModel& t, int tile, int r, int c) {
  int32_t v;
  std::memcpy(&v, t.row(tile, r) + 4 * c, 4);
  return v;
}

// C (tmm0) rows x n f32, A (tmm4) rows x 2k bf16, B (tmm6) k rows x n pairs.
TileModel bf16_tiles(int rows, int k, int n) {
  TileConfig c;
  c.set(0, rows, 4 * n).set(4, rows, 4 * k).set(6, k, 4 * n);
  TileModel t;
  t.loadconfig(c);
  return t;
}

}  // namespace

TEST(AmxTileModel, ConfigFaultsNameTheInstruction) {
  TileModel t;
  TileConfig c;
  c.set(0, 16, 64);
  c.palette = 2;
  EXPECT_NE(error_of([&] { t.loadconfig(c); }).find("LDTILECFG: palette 2"), std::string::npos);
  c.palette = 1;
  c.reserved[3] = 1;
  EXPECT_NE(error_of([&] { t.loadconfig(c); }).find("reserved byte"), std::string::npos);
  c.reserved[3] = 0;
  c.set(1, 17, 64);
  EXPECT_NE(error_of([&] { t.loadconfig(c); }).find("tile 1 has 17 rows"), std::string::npos);
  c.set(1, 16, 65);
  EXPECT_NE(error_of([&] { t.loadconfig(c); }).find("tile 1 has 65 bytes per row"), std::string::npos);
  c.set(1, 0, 8);
  EXPECT_NE(error_of([&] { t.loadconfig(c); }).find("both or neither"), std::string::npos);
  c.set(1, 0, 0);
  c.set(8, 1, 4);
  EXPECT_NE(error_of([&] { t.loadconfig(c); }).find("tile 8 does not exist"), std::string::npos);
  c.set(8, 0, 0);
  EXPECT_EQ(error_of([&] { t.loadconfig(c); }), "");
  EXPECT_TRUE(t.configured());
  // Palette 0 is the initial state: nothing configured, every tile instruction faults.
  TileConfig zero{};
  zero.palette = 0;
  t.loadconfig(zero);
  EXPECT_FALSE(t.configured());
  EXPECT_NE(error_of([&] { t.zero(0); }).find("TILEZERO: tiles are not configured"), std::string::npos);
}

TEST(AmxTileModel, LoadZeroesPastTheConfiguredShapeAndStoreWritesOnlyIt) {
  TileConfig c;
  c.set(2, 3, 12);  // 3 rows of 12 bytes
  TileModel t;
  t.loadconfig(c);
  std::vector<uint8_t> src(5 * 40);
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint8_t(i + 1);
  t.load(2, src.data(), 40);  // stride 40 bytes
  for (int r = 0; r < kMaxRows; ++r)
    for (int b = 0; b < kMaxColsb; ++b) {
      const uint8_t want = r < 3 && b < 12 ? uint8_t(r * 40 + b + 1) : 0;
      ASSERT_EQ(t.row(2, r)[b], want) << "row " << r << " byte " << b;
    }
  std::vector<uint8_t> dst(5 * 40, 0xee);
  t.store(2, dst.data(), 40);
  for (size_t i = 0; i < dst.size(); ++i) {
    const size_t r = i / 40, b = i % 40;
    EXPECT_EQ(dst[i], r < 3 && b < 12 ? src[i] : 0xee) << "byte " << i;
  }
  // An unconfigured tile faults.
  EXPECT_NE(error_of([&] { t.load(3, src.data(), 40); }).find("TILELOADD: tmm3 is not configured"), std::string::npos);
  t.release();
  EXPECT_FALSE(t.configured());
}

TEST(AmxTileModel, Tdpbf16psOnAHandWorkedTile) {
  // A: one row of two pairs (1, 2), (3, 4). B: two rows of two columns, column j of row r the
  // pair (B[2r][j], B[2r+1][j]): col 0 (5, 6), (9, 10); col 1 (7, 8), (11, 12).
  // C[0][0] = 0.5 + (1*5 + 3*9) + (2*6 + 4*10) = 84.5; C[0][1] = 0.5 + (1*7 + 3*11) + (2*8 + 4*12) = 104.5.
  TileModel t = bf16_tiles(1, 2, 2);
  const uint16_t a[4] = {bf(1), bf(2), bf(3), bf(4)};
  const uint16_t b[8] = {bf(5), bf(6), bf(7), bf(8), bf(9), bf(10), bf(11), bf(12)};
  const float c[2] = {0.5f, 0.5f};
  t.load(4, a, 8);
  t.load(6, b, 8);
  t.load(0, c, 8);
  t.dpbf16ps<0, 4, 6>();
  EXPECT_EQ(f32_at(t, 0, 0, 0), 84.5f);
  EXPECT_EQ(f32_at(t, 0, 0, 1), 104.5f);
  // Nothing past the configured row and columns.
  EXPECT_EQ(f32_at(t, 0, 0, 2), 0.0f);
  EXPECT_EQ(f32_at(t, 0, 1, 0), 0.0f);
}

TEST(AmxTileModel, Tdpbf16psAccumulatesEvenAndOddProductsApartThenAddsThem) {
  // One output, three pairs: even products 2^24, 1, 1; odd products 1, 1, 1.
  //   the SDM's order: even = 2^24 (each +1 rounds back to 2^24, ties to even), odd = 3,
  //                    even + odd = 2^24 + 3 -> 2^24 + 4 (tie to even), C = 0 + that;
  //   one running f32 sum in k order would give 2^24; the exact sum is 2^24 + 5.
  TileModel t = bf16_tiles(1, 3, 1);
  const uint16_t a[6] = {bf(16777216.0f), bf(1), bf(1), bf(1), bf(1), bf(1)};
  const uint16_t b[6] = {bf(1), bf(1), bf(1), bf(1), bf(1), bf(1)};
  t.zero(0);
  t.load(4, a, 12);
  t.load(6, b, 4);
  t.dpbf16ps<0, 4, 6>();
  EXPECT_EQ(f32_at(t, 0, 0, 0), 16777220.0f);
}

TEST(AmxTileModel, Tdpbf16psTreatsDenormalsAsZeroAndFlushesDenormalResults) {
  TileModel t = bf16_tiles(2, 1, 1);
  // Row 0: a denormal bf16 (exponent 0) times 2^100: zero, not 2^-127 * 2^100.
  // Row 1: 2^-70 * 2^-70 = 2^-140, a denormal f32: flushed to zero.
  const uint16_t denormal = 0x0040;
  const uint16_t a[4] = {denormal, 0, bf(std::ldexp(1.0f, -70)), 0};
  const uint16_t b[2] = {bf(std::ldexp(1.0f, 100)), 0};
  const uint16_t b1[2] = {bf(std::ldexp(1.0f, -70)), 0};
  t.zero(0);
  t.load(4, a, 4);
  t.load(6, b, 4);
  t.dpbf16ps<0, 4, 6>();
  EXPECT_EQ(f32_at(t, 0, 0, 0), 0.0f);
  t.zero(0);
  t.load(6, b1, 4);
  t.dpbf16ps<0, 4, 6>();
  EXPECT_EQ(f32_at(t, 0, 1, 0), 0.0f);
  EXPECT_FALSE(std::signbit(f32_at(t, 0, 1, 0)));
  // The same product in plain f32 is not zero: the model flushes it on purpose.
  EXPECT_NE(std::ldexp(1.0f, -70) * std::ldexp(1.0f, -70), 0.0f);
}

TEST(AmxTileModel, TdpbssdSignedQuadsAndWrapAround) {
  TileConfig c;
  c.set(0, 1, 8).set(4, 1, 4).set(6, 1, 8);  // C 1 x 2 s32, A 1 x 4 s8, B 1 row of 2 quads
  TileModel t;
  t.loadconfig(c);
  const int8_t a[4] = {127, -128, 1, 2};
  const int8_t b[8] = {127, -128, 3, 4, /* col 1 */ -1, -1, -1, -1};
  // col 0: 127*127 + (-128)(-128) + 3 + 8 = 32524; col 1: -127 + 128 - 1 - 2 = -2.
  const int32_t c0[2] = {INT_MAX, 10};
  t.load(4, a, 4);
  t.load(6, b, 8);
  t.load(0, c0, 8);
  t.dpbssd<0, 4, 6>();
  EXPECT_EQ(s32_at(t, 0, 0, 0), int32_t(uint32_t(INT_MAX) + 32524u));  // wraps past INT_MAX
  EXPECT_LT(s32_at(t, 0, 0, 0), 0);
  EXPECT_EQ(s32_at(t, 0, 0, 1), 8);
}

TEST(AmxTileModel, DotProductShapesMustMatch) {
  TileConfig c;
  c.set(0, 16, 64).set(4, 16, 64).set(6, 16, 64).set(5, 8, 64).set(7, 8, 64).set(1, 16, 32);
  TileModel t;
  t.loadconfig(c);
  EXPECT_EQ(error_of([&] { t.dpbf16ps<0, 4, 6>(); }), "");
  // A's dwords per row (16) against B's rows (8).
  EXPECT_NE(error_of([&] { t.dpbf16ps<0, 4, 7>(); }).find("#UD"), std::string::npos);
  // C's rows (16) against A's (8).
  EXPECT_NE(error_of([&] { t.dpbssd<0, 5, 6>(); }).find("rows"), std::string::npos);
  // C's bytes per row (32) against B's (64).
  EXPECT_NE(error_of([&] { t.dpbf16ps<1, 4, 6>(); }).find("bytes per row"), std::string::npos);
  // The same tile twice.
  EXPECT_NE(error_of([&] { t.dpbf16ps(4, 4, 6); }).find("must differ"), std::string::npos);
}
