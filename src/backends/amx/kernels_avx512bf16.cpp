// strand/backends/amx/kernels_avx512bf16.cpp — the amx tier's bf16 kernels on AVX-512-BF16.
//
// Compiled with -mavx512bf16 and the AVX-512 flags (CMakeLists.txt: files named
// *_avx512bf16.cpp); reached only through avx512bf16_kernels(), which checks CPUID first.
//
// Attention runs the tile kernels of amx/kernels.h on the tile layer of
// amx/tiles_avx512bf16.h. The product has a kernel of its own: the tile layer keeps each
// 16 x 16 accumulator tile in memory between dot products (a load and a store of sixteen
// registers per 16 x 16 x 32 step), and that held it at ~55% of the vdpbf16ps peak. Here a block
// of C stays in registers over the whole of K. It issues, lane by lane, the same vdpbf16ps with
// the same operands in the same order as the tile layer does (pairs of K in order, from zero),
// so its results are those of gemm_bf16<Avx512Bf16Tiles> bit for bit (the tests compare them).
#include "backends/amx/kernels.h"
#include "backends/amx/tiles_avx512bf16.h"
#include "core/cpu_features.h"

namespace strand::amx {

namespace {

// Rows of C per register block, with two 16-column tiles: 2 x 8 accumulators, two B rows and
// the broadcast pair of A: 19 of the 32 ZMM registers. At GPT-2's shapes this runs at ~93% of
// the measured vdpbf16ps peak on Zen 4; larger blocks have not been tried.
constexpr int kRowsMax = 8;

// C[0..MR) x [0..NT * 16) = A[0..MR) · B panels, over `pairs` pairs of K. A: row m's pair q at
// a + m * lda + 2q (bf16); B: panel j's pair row q (16 columns x 2) at b[j] + 32q. The result
// goes to cs: [MR][32] f32.
template <int MR, int NT>
void block(const uint16_t* a, int64_t lda, const uint16_t* b0, const uint16_t* b1, int64_t pairs, float* cs) {
  __m512 acc[MR][NT];
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < NT; ++j) acc[m][j] = _mm512_setzero_ps();
  for (int64_t q = 0; q < pairs; ++q) {
    const __m512bh v0 = (__m512bh)_mm512_loadu_si512(b0 + 32 * q);
    const __m512bh v1 = NT == 2 ? (__m512bh)_mm512_loadu_si512(b1 + 32 * q) : v0;
    for (int m = 0; m < MR; ++m) {
      int32_t pair;
      std::memcpy(&pair, a + m * lda + 2 * q, 4);
      const __m512bh am = (__m512bh)_mm512_set1_epi32(pair);
      acc[m][0] = _mm512_dpbf16_ps(acc[m][0], am, v0);
      if constexpr (NT == 2) acc[m][1] = _mm512_dpbf16_ps(acc[m][1], am, v1);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < NT; ++j) _mm512_store_ps(cs + m * 32 + j * 16, acc[m][j]);
}

template <int NT>
void block_rows(int mr, const uint16_t* a, int64_t lda, const uint16_t* b0, const uint16_t* b1, int64_t pairs,
                float* cs) {
  switch (mr) {
    case 1: return block<1, NT>(a, lda, b0, b1, pairs, cs);
    case 2: return block<2, NT>(a, lda, b0, b1, pairs, cs);
    case 3: return block<3, NT>(a, lda, b0, b1, pairs, cs);
    case 4: return block<4, NT>(a, lda, b0, b1, pairs, cs);
    case 5: return block<5, NT>(a, lda, b0, b1, pairs, cs);
    case 6: return block<6, NT>(a, lda, b0, b1, pairs, cs);
    case 7: return block<7, NT>(a, lda, b0, b1, pairs, cs);
    default: return block<8, NT>(a, lda, b0, b1, pairs, cs);
  }
}

// Units [u0, u1) of gemm_units(M, N) (32 x 32 blocks of C, column block major, as the tile
// kernels number them), each in row blocks of up to kRowsMax.
void gemm_bf16_vdp(const GemmBf16Args& g, int64_t u0, int64_t u1) {
  static_assert(kRowsMax <= 32, "a unit has 32 rows");
  const PackedBf16& B = *g.B;
  const int64_t rb = gemm_row_blocks(g.M), pairs = B.kb * (kTileDepth / 2);
  alignas(64) float cs[kRowsMax * 32];
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t cb = u / rb, mb = u % rb;
    const int64_t nt = 2 * cb, m0 = 32 * mb, n0 = 16 * nt;
    const bool two = nt + 1 < B.nt;
    const uint16_t* b0 = B.tile(nt, 0);
    const uint16_t* b1 = two ? B.tile(nt + 1, 0) : b0;
    const int cols = int(std::min<int64_t>(two ? 32 : 16, g.N - n0));
    const int64_t m_end = std::min<int64_t>(m0 + 32, g.M);
    for (int64_t m = m0; m < m_end; m += kRowsMax) {
      const int mr = int(std::min<int64_t>(kRowsMax, m_end - m));
      const uint16_t* a = g.A + m * g.kp;
      if (two) block_rows<2>(mr, a, g.kp, b0, b1, pairs, cs);
      else block_rows<1>(mr, a, g.kp, b0, b1, pairs, cs);
      apply_epilogue(g.ep, cs, 32, mr, cols, n0, g.C + m * g.ldc + n0, g.ldc);
    }
  }
}

}  // namespace

const KernelSet* avx512bf16_kernels() {
  static const KernelSet k = {
      "avx512bf16",
      &pack_a_bf16<Avx512Bf16Tiles>,
      nullptr,  // no int8 tiles
      &gemm_bf16_vdp,
      nullptr,
      &attn_pack_kv<Avx512Bf16Tiles>,
      &attention<Avx512Bf16Tiles>,
      nullptr,
      nullptr,
  };
  const CpuFeatures& f = cpu_features();
  return f.avx512_bf16 && f.has_avx512_set() ? &k : nullptr;
}

const KernelSet* avx512bf16_tile_layer_kernels() {
  static const KernelSet k = {
      "avx512bf16-tiles",
      &pack_a_bf16<Avx512Bf16Tiles>,
      nullptr,
      &gemm_bf16<Avx512Bf16Tiles>,
      nullptr,
      &attn_pack_kv<Avx512Bf16Tiles>,
      &attention<Avx512Bf16Tiles>,
      nullptr,
      nullptr,
  };
  return avx512bf16_kernels() ? &k : nullptr;
}

}  // namespace strand::amx
