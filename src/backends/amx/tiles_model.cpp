// strand/backends/amx/tiles_model.cpp — the AMX instructions as plain C++ (see amx/tiles.h).
//
// Written from the pseudocode of Intel's Software Developer's Manual, vol. 2: LDTILECFG,
// TILERELEASE, TILEZERO, TILELOADD, TILESTORED, TDPBF16PS, TDPBSSD. Faults become
// strand::Error with the instruction's name.
#include <cmath>
#include <limits>

#include "backends/amx/tiles.h"
#include "core/dtype.h"
#include "core/error.h"

namespace strand::amx {

namespace {

float f32_of_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// make_fp32 of the SDM with DAZ: the bf16 bits in the upper half of a dword; a denormal is zero.
float bf16_daz(uint16_t h) {
  if ((h & 0x7f80u) == 0) h &= 0x8000u;
  return f32_of_bits(uint32_t(h) << 16);
}

// FTZ: a denormal result becomes a zero of the same sign.
float ftz(float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; }

}  // namespace

void TileModel::loadconfig(const TileConfig& c) {
  if (c.palette == 0) {  // palette 0: the initial state, as TILERELEASE
    release();
    return;
  }
  if (c.palette != 1) fail("LDTILECFG: palette {} (only palette 1 exists): #GP", c.palette);
  if (c.start_row != 0) fail("LDTILECFG: start_row {} (strand never restarts a tile instruction): #GP", c.start_row);
  for (uint8_t r : c.reserved)
    if (r != 0) fail("LDTILECFG: a reserved byte is not zero: #GP");
  for (int t = 0; t < 16; ++t) {
    if (t >= kTiles) {
      if (c.rows[t] != 0 || c.colsb[t] != 0) fail("LDTILECFG: tile {} does not exist in palette 1: #GP", t);
      continue;
    }
    if (c.rows[t] > kMaxRows) fail("LDTILECFG: tile {} has {} rows (at most {}): #GP", t, c.rows[t], kMaxRows);
    if (c.colsb[t] > kMaxColsb) fail("LDTILECFG: tile {} has {} bytes per row (at most {}): #GP", t, c.colsb[t], kMaxColsb);
    if ((c.rows[t] == 0) != (c.colsb[t] == 0))
      fail("LDTILECFG: tile {} has {} rows of {} bytes (both or neither must be zero): #GP", t, c.rows[t], c.colsb[t]);
  }
  cfg_ = c;
  configured_ = true;
  std::memset(tmm_, 0, sizeof tmm_);
}

void TileModel::release() {
  cfg_ = TileConfig{};
  cfg_.palette = 0;
  configured_ = false;
  std::memset(tmm_, 0, sizeof tmm_);
}

void TileModel::need_tile(int t, const char* insn) const {
  if (!configured_) fail("{}: tiles are not configured (no LDTILECFG): #UD", insn);
  if (t < 0 || t >= kTiles) fail("{}: tmm{} does not exist: #UD", insn, t);
  if (cfg_.rows[t] == 0) fail("{}: tmm{} is not configured (0 rows): #UD", insn, t);
}

void TileModel::zero(int t) {
  need_tile(t, "TILEZERO");
  std::memset(tmm_[t], 0, sizeof tmm_[t]);
}

void TileModel::load(int t, const void* base, int64_t stride) {
  need_tile(t, "TILELOADD");
  const auto* p = static_cast<const uint8_t*>(base);
  const int rows = cfg_.rows[t], colsb = cfg_.colsb[t];
  for (int r = 0; r < kMaxRows; ++r) {
    std::memset(tmm_[t][r], 0, kMaxColsb);  // write_row_and_zero, zero_upper_rows
    if (r < rows) std::memcpy(tmm_[t][r], p + r * stride, size_t(colsb));
  }
}

void TileModel::store(int t, void* base, int64_t stride) const {
  need_tile(t, "TILESTORED");
  auto* p = static_cast<uint8_t*>(base);
  for (int r = 0; r < cfg_.rows[t]; ++r) std::memcpy(p + r * stride, tmm_[t][r], cfg_.colsb[t]);
}

void TileModel::check_dp(int d, int a, int b, const char* insn) const {
  need_tile(d, insn);
  need_tile(a, insn);
  need_tile(b, insn);
  if (d == a || d == b || a == b) fail("{} tmm{}, tmm{}, tmm{}: the three tiles must differ: #UD", insn, d, a, b);
  const int ca = cfg_.colsb[a], cb = cfg_.colsb[b], cd = cfg_.colsb[d];
  if (ca % 4 || cb % 4 || cd % 4) fail("{}: bytes per row {}/{}/{} not multiples of 4: #UD", insn, cd, ca, cb);
  if (cfg_.rows[d] != cfg_.rows[a])
    fail("{}: tmm{} has {} rows, tmm{} {}: #UD", insn, d, cfg_.rows[d], a, cfg_.rows[a]);
  if (ca / 4 != cfg_.rows[b])
    fail("{}: tmm{} has {} dwords per row, tmm{} {} rows (must be equal): #UD", insn, a, ca / 4, b, cfg_.rows[b]);
  if (cd != cb) fail("{}: tmm{} has {} bytes per row, tmm{} {}: #UD", insn, d, cd, b, cb);
}

void TileModel::dpbf16ps(int d, int a, int b) {
  check_dp(d, a, b, "TDPBF16PS");
  const int rows = cfg_.rows[d], kk = cfg_.colsb[a] / 4, nn = cfg_.colsb[d] / 4;
  // Rows are copied in and out as typed arrays (the tile bytes are not read through other types).
  uint16_t arow[kMaxColsb / 2], brow[kMaxColsb / 2];
  float drow[kMaxColsb / 4];
  for (int m = 0; m < rows; ++m) {
    float temp[2 * kMaxColsb / 4] = {};  // even and odd partial sums per column
    std::memcpy(arow, tmm_[a][m], kMaxColsb);
    for (int k = 0; k < kk; ++k) {
      std::memcpy(brow, tmm_[b][k], kMaxColsb);
      const float a0 = bf16_daz(arow[2 * k]), a1 = bf16_daz(arow[2 * k + 1]);
      for (int n = 0; n < nn; ++n) {
        temp[2 * n] = ftz(std::fmaf(a0, bf16_daz(brow[2 * n]), temp[2 * n]));
        temp[2 * n + 1] = ftz(std::fmaf(a1, bf16_daz(brow[2 * n + 1]), temp[2 * n + 1]));
      }
    }
    std::memcpy(drow, tmm_[d][m], kMaxColsb);
    for (int n = 0; n < nn; ++n) {
      const float t = ftz(temp[2 * n] + temp[2 * n + 1]);
      drow[n] = ftz(ftz(drow[n]) + t);
    }
    std::memcpy(tmm_[d][m], drow, size_t(cfg_.colsb[d]));
    std::memset(tmm_[d][m] + cfg_.colsb[d], 0, size_t(kMaxColsb - cfg_.colsb[d]));
  }
  for (int m = rows; m < kMaxRows; ++m) std::memset(tmm_[d][m], 0, kMaxColsb);
}

void TileModel::dpbssd(int d, int a, int b) {
  check_dp(d, a, b, "TDPBSSD");
  const int rows = cfg_.rows[d], kk = cfg_.colsb[a] / 4, nn = cfg_.colsb[d] / 4;
  int8_t arow[kMaxColsb], brow[kMaxColsb];
  int32_t drow[kMaxColsb / 4];
  for (int m = 0; m < rows; ++m) {
    std::memcpy(drow, tmm_[d][m], kMaxColsb);
    std::memcpy(arow, tmm_[a][m], kMaxColsb);
    for (int k = 0; k < kk; ++k) {
      std::memcpy(brow, tmm_[b][k], kMaxColsb);
      for (int n = 0; n < nn; ++n) {
        // DPBD: four sign-extended byte products added to the dword, modulo 2^32.
        uint32_t acc = uint32_t(drow[n]);
        for (int i = 0; i < 4; ++i) acc += uint32_t(int32_t(arow[4 * k + i]) * int32_t(brow[4 * n + i]));
        drow[n] = int32_t(acc);
      }
    }
    std::memcpy(tmm_[d][m], drow, size_t(cfg_.colsb[d]));
    std::memset(tmm_[d][m] + cfg_.colsb[d], 0, size_t(kMaxColsb - cfg_.colsb[d]));
  }
  for (int m = rows; m < kMaxRows; ++m) std::memset(tmm_[d][m], 0, kMaxColsb);
}

}  // namespace strand::amx
