// strand/backends/amx/kernels.h — the AMX kernels, written once over the tile operations.
//
// Every function here is a template over `Tiles` (amx/tiles.h): amx/kernels.cpp instantiates
// them on TileModel (the C++ model of the instructions, any machine), amx/kernels_amx.cpp on
// HwTiles (the intrinsics, AMX machines only). Both sets are published as a KernelSet table.
//
// Register plan, the same in every kernel: C (accumulators) in tmm0..tmm3, A in tmm4..tmm5, B
// in tmm6..tmm7.
//
//   gemm_bf16   C[M, N] = A[M, K] · B + bias, then an optional activation. A is packed per call
//               (pack_a_bf16: rounded to bf16, [Mp, Kp], Mp = M rounded up to 16, Kp = K
//               rounded up to 32, zero-padded); B is a PackedBf16. Work is cut into units of
//               32 x 32 of C (2 x 2 tiles; 1 x 2, 2 x 1, 1 x 1 at the edges), numbered column
//               block by column block so that a thread's units share B panels.
//   gemm_int8   the same with A quantized per row in blocks of 32 (pack_a_q8: int8 [Mp, Kp] and
//               f32 scales [Mp, Kp / 32]) and B a PackedInt8. Each 32-deep step gives exact int32
//               sums (TDPBSSD), which are scaled by a_scale x b_scale of that block and added to
//               f32 accumulators: the q8 weights keep their block scales.
//   attention   causal multi-head attention for prefill (flash-attention style): per unit (head,
//               16 queries) S = Q·Kᵀ for 32 keys at a time on tiles (bf16, f32 accumulation), the
//               softmax updated online in f32, P rounded to bf16, O += P·V on tiles; O / l at
//               the end. K and V are packed once per call for every head (attn_pack_kv).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "backends/amx/pack.h"
#include "backends/amx/tiles.h"
#include "core/dtype.h"
#include "core/rounding.h"
#include "ops/ops.h"

namespace strand::amx {

// The fused tail of a product: C = act(C + bias).
struct Epilogue {
  const float* bias = nullptr;  // [N] or null
  bool has_act = false;
  Act act = Act::GeluTanh;
  // The activation over n contiguous floats in place (the cpu tier's SIMD kernel).
  void (*act_fn)(const float* x, int64_t n, Act act, float* out) = nullptr;
};

struct GemmBf16Args {
  int64_t M = 0, N = 0, K = 0;
  const uint16_t* A = nullptr;  // [Mp, kp] bf16, from pack_a_bf16
  int64_t kp = 0;
  const PackedBf16* B = nullptr;
  float* C = nullptr;
  int64_t ldc = 0;
  Epilogue ep;
};

struct GemmInt8Args {
  int64_t M = 0, N = 0, K = 0;
  const int8_t* A = nullptr;        // [Mp, kp] int8, from pack_a_q8
  const float* a_scales = nullptr;  // [Mp, kp / 32]
  int64_t kp = 0;
  const PackedInt8* B = nullptr;
  float* C = nullptr;
  int64_t ldc = 0;
  Epilogue ep;
};

// Work units of a product: 32 x 32 blocks of C, column block major.
inline int64_t gemm_row_blocks(int64_t M) { return (M + 31) / 32; }
inline int64_t gemm_col_blocks(int64_t N) { return (N + 31) / 32; }
inline int64_t gemm_units(int64_t M, int64_t N) { return gemm_row_blocks(M) * gemm_col_blocks(N); }

struct AttnTileArgs {
  const float* q = nullptr;  // [T, C]
  const float* k = nullptr;  // [L, C], L = past + T
  const float* v = nullptr;  // [L, C]
  float* out = nullptr;      // [T, C]
  int64_t T = 0, C = 0, H = 1, D = 0, past = 0;
  float scale = 1;           // 1 / sqrt(D)
  // K and V of every head as B tiles (attn_pack_kv), bf16:
  //   kt: per head, key tiles of 16 x depth blocks of 32 along D: S = Q·Kᵀ reads K as [D, keys];
  //   vt: per head, D tiles of 16 x key blocks of 32: O = P·V reads V as [keys, D].
  const uint16_t* kt = nullptr;
  const uint16_t* vt = nullptr;
};
// Padded sizes: D to whole depth blocks (Q·Kᵀ) and key count to whole 32-key blocks.
inline int64_t attn_dp(int64_t D) { return round_up(D, kTileDepth); }
inline int64_t attn_lp(int64_t L) { return round_up(L, kTileDepth); }
// bf16 elements of one head's packed K (and of its packed V: the same count).
inline int64_t attn_head_elems(int64_t D, int64_t L) { return attn_dp(D) * attn_lp(L); }
// Units: (head, block of 16 queries), head-major.
inline int64_t attn_units(int64_t T, int64_t H) { return H * ((T + kTileRows - 1) / kTileRows); }
// Scratch floats one thread needs for attention units (64-byte multiple).
inline int64_t attn_scratch_floats(int64_t D) {
  const int64_t dp = attn_dp(D), d16 = round_up(D, kTileCols);
  return round_up(kTileRows * dp / 2 + kTileRows * 32 + kTileRows * 16 + kTileRows * d16 + 4 * 256 + 2 * kTileRows, 16);
}

// ---- shared helpers ---------------------------------------------------------------------------
// `static`: each kernel file compiles its own copy for its own instruction set (an inline
// function shared between a file built with AMX/AVX-512 flags and one built without could be
// kept in its AVX-512 form for both).

// f32 -> bf16, nearest even, NaN kept quiet: the rule of core/dtype.h's f32_to_bf16 (written
// again here so that each instantiation is compiled for its own instruction set).
static inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

static inline void apply_epilogue(const Epilogue& ep, const float* acc, int64_t ld_acc, int rows, int cols, int64_t col0,
                           float* C, int64_t ldc) {
  for (int r = 0; r < rows; ++r) {
    float* c = C + r * ldc;
    const float* a = acc + r * ld_acc;
    if (ep.bias)
      for (int j = 0; j < cols; ++j) c[j] = a[j] + ep.bias[col0 + j];
    else
      for (int j = 0; j < cols; ++j) c[j] = a[j];
    if (ep.has_act) ep.act_fn(c, cols, ep.act, c);
  }
}

// Rows [r0, r1) of the packed bf16 A: [Mp, kp], rows >= M and columns >= K zero.
template <class Tiles>
void pack_a_bf16(const float* A, int64_t lda, int64_t M, int64_t K, int64_t kp, uint16_t* out, int64_t r0,
                 int64_t r1) {
  for (int64_t m = r0; m < r1; ++m) {
    uint16_t* o = out + m * kp;
    if (m >= M) {
      std::memset(o, 0, size_t(kp) * 2);
      continue;
    }
    const float* a = A + m * lda;
    for (int64_t k = 0; k < K; ++k) o[k] = to_bf16(a[k]);
    for (int64_t k = K; k < kp; ++k) o[k] = 0;
  }
}

// Rows [r0, r1) of the packed int8 A: q [Mp, kp] and scales [Mp, kp / 32], quantized as
// core/rounding.h's quantize_row_q8 itself; rows >= M zero with scale 0.
template <class Tiles>
void pack_a_q8(const float* A, int64_t lda, int64_t M, int64_t K, int64_t kp, int8_t* q, float* scales, int64_t r0,
               int64_t r1) {
  const int64_t nb = kp / kTileDepth;
  for (int64_t m = r0; m < r1; ++m) {
    int8_t* qm = q + m * kp;
    float* sm = scales + m * nb;
    if (m >= M) {
      std::memset(qm, 0, size_t(kp));
      for (int64_t b = 0; b < nb; ++b) sm[b] = 0;
      continue;
    }
    const int64_t kq = q8_padded(K), kb = q8_blocks(K);  // static_assert in pack.cpp: kTileDepth == kQ8Block
    quantize_row_q8(A + m * lda, K, qm, sm);
    std::memset(qm + kq, 0, size_t(kp - kq));
    for (int64_t b = kb; b < nb; ++b) sm[b] = 0;
  }
}

// ---- bf16 GEMM --------------------------------------------------------------------------------

static inline TileConfig gemm_bf16_config() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) c.set(t, 16, 64);  // C 16 x 16 f32; A 16 x 32 bf16; B 16 x 16 pairs
  return c;
}

// One block of MT x NT tiles of C at tile row `mt` (16 rows each) and tile column `nt`.
template <class Tiles, int MT, int NT>
void gemm_bf16_block(Tiles& t, const GemmBf16Args& g, int64_t mt, int64_t nt, float* cs) {
  const PackedBf16& B = *g.B;
  const int64_t lda = g.kp * 2;  // bytes
  const uint16_t* a0 = g.A + mt * kTileRows * g.kp;
  const uint16_t* a1 = a0 + kTileRows * g.kp;
  const uint16_t* b0 = B.tile(nt, 0);
  const uint16_t* b1 = NT == 2 ? B.tile(nt + 1, 0) : b0;
  t.template zero<0>();
  if constexpr (NT == 2) t.template zero<1>();
  if constexpr (MT == 2) t.template zero<2>();
  if constexpr (MT == 2 && NT == 2) t.template zero<3>();
  for (int64_t k = 0; k < B.kb; ++k) {
    t.template load<4>(a0 + k * kTileDepth, lda);
    if constexpr (MT == 2) t.template load<5>(a1 + k * kTileDepth, lda);
    t.template load<6>(b0 + k * (kTileBytes / 2), 64);
    if constexpr (NT == 2) t.template load<7>(b1 + k * (kTileBytes / 2), 64);
    t.template dpbf16ps<0, 4, 6>();
    if constexpr (NT == 2) t.template dpbf16ps<1, 4, 7>();
    if constexpr (MT == 2) t.template dpbf16ps<2, 5, 6>();
    if constexpr (MT == 2 && NT == 2) t.template dpbf16ps<3, 5, 7>();
  }
  // cs: the block as [MT * 16][NT * 16] f32.
  const int64_t ld = NT * kTileCols * 4;
  t.template store<0>(cs, ld);
  if constexpr (NT == 2) t.template store<1>(cs + kTileCols, ld);
  if constexpr (MT == 2) t.template store<2>(cs + kTileRows * NT * kTileCols, ld);
  if constexpr (MT == 2 && NT == 2) t.template store<3>(cs + kTileRows * NT * kTileCols + kTileCols, ld);
}

// Units [u0, u1) of gemm_units(M, N), on the calling thread.
template <class Tiles>
void gemm_bf16(const GemmBf16Args& g, int64_t u0, int64_t u1) {
  Tiles t;
  t.loadconfig(gemm_bf16_config());
  alignas(64) float cs[32 * 32];
  const int64_t rb = gemm_row_blocks(g.M);
  const int64_t mtiles = (g.M + 15) / 16, ntiles = g.B->nt;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t cb = u / rb, mb = u % rb;
    const int64_t mt = 2 * mb, nt = 2 * cb;
    const int MT = mt + 1 < mtiles ? 2 : 1, NT = nt + 1 < ntiles ? 2 : 1;
    if (MT == 2 && NT == 2) gemm_bf16_block<Tiles, 2, 2>(t, g, mt, nt, cs);
    else if (MT == 2) gemm_bf16_block<Tiles, 2, 1>(t, g, mt, nt, cs);
    else if (NT == 2) gemm_bf16_block<Tiles, 1, 2>(t, g, mt, nt, cs);
    else gemm_bf16_block<Tiles, 1, 1>(t, g, mt, nt, cs);
    const int64_t m0 = mt * 16, n0 = nt * 16;
    const int rows = int(std::min<int64_t>(MT * 16, g.M - m0)), cols = int(std::min<int64_t>(NT * 16, g.N - n0));
    apply_epilogue(g.ep, cs, NT * 16, rows, cols, n0, g.C + m0 * g.ldc + n0, g.ldc);
  }
  t.release();
}

// ---- int8 GEMM --------------------------------------------------------------------------------

static inline TileConfig gemm_int8_config() {
  TileConfig c;
  for (int t = 0; t < 4; ++t) c.set(t, 16, 64);  // C: 16 x 16 s32
  c.set(4, 16, 32).set(5, 16, 32);                 // A: 16 rows x 32 int8
  c.set(6, 8, 64).set(7, 8, 64);                   // B: 8 rows x 16 quads
  return c;
}

template <class Tiles, int MT, int NT>
void gemm_int8_block(Tiles& t, const GemmInt8Args& g, int64_t mt, int64_t nt, float* acc, int32_t* is) {
  const PackedInt8& B = *g.B;
  const int64_t kb = B.kb;
  const int8_t* a0 = g.A + mt * kTileRows * g.kp;
  const int8_t* a1 = a0 + kTileRows * g.kp;
  constexpr int W = NT * 16;  // acc and is: [MT * 16][W]
  for (int i = 0; i < MT * 16 * W; ++i) acc[i] = 0;
  for (int64_t k = 0; k < kb; ++k) {
    t.template zero<0>();
    if constexpr (NT == 2) t.template zero<1>();
    if constexpr (MT == 2) t.template zero<2>();
    if constexpr (MT == 2 && NT == 2) t.template zero<3>();
    t.template load<4>(a0 + k * kTileDepth, g.kp);
    if constexpr (MT == 2) t.template load<5>(a1 + k * kTileDepth, g.kp);
    t.template load<6>(B.tile(nt, k), 64);
    if constexpr (NT == 2) t.template load<7>(B.tile(nt + 1, k), 64);
    t.template dpbssd<0, 4, 6>();
    if constexpr (NT == 2) t.template dpbssd<1, 4, 7>();
    if constexpr (MT == 2) t.template dpbssd<2, 5, 6>();
    if constexpr (MT == 2 && NT == 2) t.template dpbssd<3, 5, 7>();
    t.template store<0>(is, W * 4);
    if constexpr (NT == 2) t.template store<1>(is + 16, W * 4);
    if constexpr (MT == 2) t.template store<2>(is + 16 * W, W * 4);
    if constexpr (MT == 2 && NT == 2) t.template store<3>(is + 16 * W + 16, W * 4);
    // acc += float(block sums) x a_scale[row] x b_scale[col] (each block sum is exact in f32:
    // at most 32 x 127 x 127 < 2^24).
    for (int mi = 0; mi < MT; ++mi)
      for (int r = 0; r < 16; ++r) {
        const float sa = g.a_scales[((mt + mi) * 16 + r) * kb + k];
        for (int ni = 0; ni < NT; ++ni) {
          const float* sb = B.scale(nt + ni, k);
          float* a = acc + (mi * 16 + r) * W + ni * 16;
          const int32_t* s = is + (mi * 16 + r) * W + ni * 16;
          for (int j = 0; j < 16; ++j) a[j] += float(s[j]) * (sa * sb[j]);
        }
      }
  }
}

template <class Tiles>
void gemm_int8(const GemmInt8Args& g, int64_t u0, int64_t u1) {
  Tiles t;
  t.loadconfig(gemm_int8_config());
  alignas(64) float acc[32 * 32];
  alignas(64) int32_t is[32 * 32];
  const int64_t rb = gemm_row_blocks(g.M);
  const int64_t mtiles = (g.M + 15) / 16, ntiles = g.B->nt;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t cb = u / rb, mb = u % rb;
    const int64_t mt = 2 * mb, nt = 2 * cb;
    const int MT = mt + 1 < mtiles ? 2 : 1, NT = nt + 1 < ntiles ? 2 : 1;
    if (MT == 2 && NT == 2) gemm_int8_block<Tiles, 2, 2>(t, g, mt, nt, acc, is);
    else if (MT == 2) gemm_int8_block<Tiles, 2, 1>(t, g, mt, nt, acc, is);
    else if (NT == 2) gemm_int8_block<Tiles, 1, 2>(t, g, mt, nt, acc, is);
    else gemm_int8_block<Tiles, 1, 1>(t, g, mt, nt, acc, is);
    const int64_t m0 = mt * 16, n0 = nt * 16;
    const int rows = int(std::min<int64_t>(MT * 16, g.M - m0)), cols = int(std::min<int64_t>(NT * 16, g.N - n0));
    apply_epilogue(g.ep, acc, NT * 16, rows, cols, n0, g.C + m0 * g.ldc + n0, g.ldc);
  }
  t.release();
}

// ---- attention --------------------------------------------------------------------------------

// Heads [h0, h1): K and V of each head as B tiles, bf16, zero-padded (see AttnTileArgs).
//   K tile (key tile kt, depth block db): row r, column j = (K[key][d], K[key][d + 1]) with
//     key = kt*16 + j, d = db*32 + 2r;   at kt_head + (kt * dp/32 + db) * 512
//   V tile (d tile dt, key block kb): row r, column j = (V[key][d], V[key + 1][d]) with
//     key = kb*32 + 2r, d = dt*16 + j;   at vt_head + (dt * lp/32 + kb) * 512
template <class Tiles>
void attn_pack_kv(const AttnTileArgs& a, int64_t h0, int64_t h1, uint16_t* kt, uint16_t* vt) {
  const int64_t L = a.past + a.T, dp = attn_dp(a.D), lp = attn_lp(L);
  const int64_t per_head = attn_head_elems(a.D, L);
  const int64_t dblocks = dp / kTileDepth, kblocks = lp / kTileDepth;
  const int64_t ktiles = lp / kTileCols, dtiles = round_up(a.D, kTileCols) / kTileCols;
  auto kval = [&](int64_t key, int64_t d, int64_t h) -> uint16_t {
    return key < L && d < a.D ? to_bf16(a.k[key * a.C + h * a.D + d]) : uint16_t(0);
  };
  auto vval = [&](int64_t key, int64_t d, int64_t h) -> uint16_t {
    return key < L && d < a.D ? to_bf16(a.v[key * a.C + h * a.D + d]) : uint16_t(0);
  };
  for (int64_t h = h0; h < h1; ++h) {
    uint16_t* kh = kt + h * per_head;
    uint16_t* vh = vt + h * per_head;
    for (int64_t t = 0; t < ktiles; ++t)
      for (int64_t db = 0; db < dblocks; ++db) {
        uint16_t* tile = kh + (t * dblocks + db) * 512;
        for (int64_t r = 0; r < 16; ++r)
          for (int64_t j = 0; j < 16; ++j) {
            const int64_t key = t * 16 + j, d = db * 32 + 2 * r;
            tile[r * 32 + 2 * j] = kval(key, d, h);
            tile[r * 32 + 2 * j + 1] = kval(key, d + 1, h);
          }
      }
    // V: only the d tiles that exist (dtiles of 16); their tiles cover every key block.
    for (int64_t t = 0; t < dtiles; ++t)
      for (int64_t kb = 0; kb < kblocks; ++kb) {
        uint16_t* tile = vh + (t * kblocks + kb) * 512;
        for (int64_t r = 0; r < 16; ++r)
          for (int64_t j = 0; j < 16; ++j) {
            const int64_t key = kb * 32 + 2 * r, d = t * 16 + j;
            tile[r * 32 + 2 * j] = vval(key, d, h);
            tile[r * 32 + 2 * j + 1] = vval(key + 1, d, h);
          }
      }
  }
}

static inline TileConfig attn_config() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) c.set(t, 16, 64);
  return c;
}

// Units [u0, u1) of attn_units(T, H); `scratch` holds attn_scratch_floats(D) floats.
template <class Tiles>
void attention(const AttnTileArgs& a, int64_t u0, int64_t u1, float* scratch) {
  Tiles t;
  t.loadconfig(attn_config());
  const int64_t L = a.past + a.T, dp = attn_dp(a.D), lp = attn_lp(L), d16 = round_up(a.D, kTileCols);
  const int64_t per_head = attn_head_elems(a.D, L), dblocks = dp / kTileDepth, kblocks = lp / kTileDepth;
  const int64_t dtiles = d16 / kTileCols, qblocks = (a.T + 15) / 16;
  // Scratch: Q [16][dp] bf16 | S [16][32] f32 | P [16][32] bf16 | O [16][d16] f32 | PV [4][16][16] | m, l
  auto* qp = reinterpret_cast<uint16_t*>(scratch);
  float* S = scratch + 16 * dp / 2;
  auto* P = reinterpret_cast<uint16_t*>(S + 16 * 32);
  float* O = S + 16 * 32 + 16 * 16;
  float* pv = O + 16 * d16;
  float* mrow = pv + 4 * 256;
  float* lrow = mrow + 16;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t h = u / qblocks, i0 = (u % qblocks) * 16;
    const uint16_t* kh = a.kt + h * per_head;
    const uint16_t* vh = a.vt + h * per_head;
    for (int64_t r = 0; r < 16; ++r) {  // Q rows i0.. of head h, bf16, zero-padded
      const int64_t i = i0 + r;
      for (int64_t d = 0; d < dp; ++d)
        qp[r * dp + d] = i < a.T && d < a.D ? to_bf16(a.q[i * a.C + h * a.D + d]) : uint16_t(0);
      mrow[r] = kNegInf;
      lrow[r] = 0;
    }
    std::fill(O, O + 16 * d16, 0.0f);
    // Keys 0 .. past + i are visible to query i: the block's last query sees up to kmax - 1.
    const int64_t kmax = a.past + std::min(a.T, i0 + 16);
    for (int64_t kb = 0; kb * 32 < kmax; ++kb) {
      // S[16][32] = Q · K[keys kb*32 ..]ᵀ: two 16-key tiles.
      t.template zero<0>();
      t.template zero<1>();
      for (int64_t db = 0; db < dblocks; ++db) {
        t.template load<4>(qp + db * 32, dp * 2);
        t.template load<6>(kh + ((2 * kb) * dblocks + db) * 512, 64);
        t.template load<7>(kh + ((2 * kb + 1) * dblocks + db) * 512, 64);
        t.template dpbf16ps<0, 4, 6>();
        t.template dpbf16ps<1, 4, 7>();
      }
      t.template store<0>(S, 32 * 4);
      t.template store<1>(S + 16, 32 * 4);
      // The online softmax in f32; P = exp(s - m) rounded to bf16; l sums the rounded weights
      // (so that O / l is a weighted mean of V's rows with the weights P·V really used).
      for (int64_t r = 0; r < 16; ++r) {
        const int64_t i = i0 + r;
        float* s = S + r * 32;
        const int64_t last = i < a.T ? a.past + i : -1;  // padding rows see no key
        float mx = mrow[r];
        for (int64_t j = 0; j < 32; ++j) {
          const int64_t key = kb * 32 + j;
          s[j] = key <= last ? s[j] * a.scale : kNegInf;
          mx = std::max(mx, s[j]);
        }
        uint16_t* p = P + r * 32;
        if (mx == kNegInf) {  // nothing visible yet (or a padding row)
          for (int64_t j = 0; j < 32; ++j) p[j] = 0;
          continue;
        }
        const float alpha = std::exp(mrow[r] - mx);  // exp(-inf) = 0 on the first block
        float sum = 0;
        for (int64_t j = 0; j < 32; ++j) {
          p[j] = to_bf16(std::exp(s[j] - mx));
          uint32_t u32 = uint32_t(p[j]) << 16;
          float pf;
          std::memcpy(&pf, &u32, 4);
          sum += pf;
        }
        lrow[r] = lrow[r] * alpha + sum;
        mrow[r] = mx;
        float* o = O + r * d16;
        for (int64_t d = 0; d < d16; ++d) o[d] *= alpha;
      }
      // O += P · V[keys kb*32 ..]: C tiles 0..3 take up to four 16-wide d tiles at a time.
      t.template load<4>(P, 64);
      for (int64_t dt0 = 0; dt0 < dtiles; dt0 += 4) {
        const int64_t nd = std::min<int64_t>(4, dtiles - dt0);
        t.template zero<0>();
        t.template zero<1>();
        t.template zero<2>();
        t.template zero<3>();
        t.template load<6>(vh + ((dt0 + 0) * kblocks + kb) * 512, 64);
        t.template dpbf16ps<0, 4, 6>();
        if (nd > 1) {
          t.template load<7>(vh + ((dt0 + 1) * kblocks + kb) * 512, 64);
          t.template dpbf16ps<1, 4, 7>();
        }
        if (nd > 2) {
          t.template load<6>(vh + ((dt0 + 2) * kblocks + kb) * 512, 64);
          t.template dpbf16ps<2, 4, 6>();
        }
        if (nd > 3) {
          t.template load<7>(vh + ((dt0 + 3) * kblocks + kb) * 512, 64);
          t.template dpbf16ps<3, 4, 7>();
        }
        t.template store<0>(pv, 64);
        t.template store<1>(pv + 256, 64);
        t.template store<2>(pv + 512, 64);
        t.template store<3>(pv + 768, 64);
        for (int64_t x = 0; x < nd; ++x)
          for (int64_t r = 0; r < 16; ++r) {
            float* o = O + r * d16 + (dt0 + x) * 16;
            const float* p = pv + x * 256 + r * 16;
            for (int64_t j = 0; j < 16; ++j) o[j] += p[j];
          }
      }
    }
    for (int64_t r = 0; r < 16 && i0 + r < a.T; ++r) {
      float* out = a.out + (i0 + r) * a.C + h * a.D;
      const float inv = 1.0f / lrow[r];
      for (int64_t d = 0; d < a.D; ++d) out[d] = O[r * d16 + d] * inv;
    }
  }
  t.release();
}

// ---- the tables -------------------------------------------------------------------------------

struct KernelSet {
  const char* name;  // "amx" (the instructions), "model" (the C++ model of them), "avx512bf16"
  void (*pack_a_bf16)(const float* A, int64_t lda, int64_t M, int64_t K, int64_t kp, uint16_t* out, int64_t r0,
                      int64_t r1);
  void (*pack_a_q8)(const float* A, int64_t lda, int64_t M, int64_t K, int64_t kp, int8_t* q, float* scales,
                    int64_t r0, int64_t r1);
  void (*gemm_bf16)(const GemmBf16Args& g, int64_t u0, int64_t u1);
  void (*gemm_int8)(const GemmInt8Args& g, int64_t u0, int64_t u1);
  void (*attn_pack_kv)(const AttnTileArgs& a, int64_t h0, int64_t h1, uint16_t* kt, uint16_t* vt);
  void (*attention)(const AttnTileArgs& a, int64_t u0, int64_t u1, float* scratch);
  // Loops of independent TDPBF16PS / TDPBSSD (four accumulators) for `iters` rounds on the
  // calling thread; each returns the FLOP (OP) it did. Null in the model set.
  double (*peak_bf16)(int64_t iters);
  double (*peak_int8)(int64_t iters);
};

// The kernels on the C++ model of the instructions: any machine (slow; for tests and validate).
const KernelSet& model_kernels();
// The kernels on the instructions: nullptr when this build has no AMX code (a compiler without
// -mamx-tile, or not x86-64). Call only when amx_status().usable (amx/amx.h).
const KernelSet* hw_kernels();
// The bf16 kernels on AVX-512-BF16 (vdpbf16ps; amx/tiles_avx512bf16.h), no int8 entries:
// nullptr when this build has no such code or the CPU lacks AVX512_BF16.
const KernelSet* avx512bf16_kernels();
// The same set with the product run on the tile layer as well (gemm_bf16<Avx512Bf16Tiles>), for
// the tests: the avx512bf16 product kernel must give its results bit for bit.
const KernelSet* avx512bf16_tile_layer_kernels();

}  // namespace strand::amx
