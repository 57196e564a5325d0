// strand/backends/amx/pack.h — weights in the layouts the AMX tiles read ("VNNI" layouts).
//
// A matrix product C[M, N] = A[M, K] · B[K, N] on tiles multiplies 16-row blocks of A by
// 16-column blocks of B, K a tile's depth at a time:
//   bf16  depth 32: an A tile is 16 rows x 32 bf16; a B tile is 16 rows of 16 bf16 pairs,
//         row r holding (B[k0 + 2r][n], B[k0 + 2r + 1][n]) for the 16 columns n.
//   int8  depth 32 (one q8 block, so that each block's scales can be applied to its int32
//         sums): an A tile is 16 rows x 32 int8; a B tile is 8 rows of 16 quads, row r holding
//         B[k0 + 4r .. k0 + 4r + 3][n] for the 16 columns n.
// Weights are packed once (amx/amx_backend.cpp keeps them) into consecutive 16-column panels,
// each panel's tiles in K order, so that a column block streams its tiles front to back:
//   tile (n_tile, k_block) at tiles + (n_tile * kb + k_block) * kTileBytes
// K and N are zero-padded to whole tiles. Activations are packed per call (amx/kernels.h).
//
// Shapes: K the reduction, N the output columns; `kb` blocks of 32 along K, `nt` tiles of 16
// along N.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

#include "core/tensor.h"

namespace strand::cpu {
class ThreadPool;
}

namespace strand::amx {

constexpr int64_t kTileRows = 16;    // rows of an A or C tile
constexpr int64_t kTileCols = 16;    // f32/s32 columns of a B or C tile
constexpr int64_t kTileDepth = 32;   // K per tile step, bf16 and int8 alike
constexpr int64_t kTileBytes = 1024; // a bf16 B tile (16 x 64 bytes); an int8 B tile uses 512

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// 64-byte-aligned bytes (tile loads are fastest from aligned rows).
struct AlignedBytes {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> p;
  size_t size = 0;
  void resize(size_t n);  // contents lost; never shrinks
  template <class T> T* as() const { return reinterpret_cast<T*>(p.get()); }
};

// B in bf16 tiles: nt x kb tiles of 16 x 16 pairs (1 KiB each).
struct PackedBf16 {
  int64_t K = 0, N = 0, kb = 0, nt = 0;
  AlignedBytes tiles;
  const uint16_t* tile(int64_t n_tile, int64_t k_block) const {
    return tiles.as<const uint16_t>() + (n_tile * kb + k_block) * (kTileBytes / 2);
  }
  size_t bytes() const { return size_t(nt * kb) * kTileBytes; }
};
// Its size for a K x N weight, before packing.
inline int64_t packed_bf16_bytes(int64_t K, int64_t N) {
  return round_up(K, kTileDepth) / kTileDepth * (round_up(N, kTileCols) / kTileCols) * kTileBytes;
}

// B in int8 tiles with the q8 block scales: nt x kb tiles of 8 x 16 quads (512 bytes each),
// and per tile the 16 columns' scales of that block.
struct PackedInt8 {
  int64_t K = 0, N = 0, kb = 0, nt = 0;
  AlignedBytes tiles;
  AlignedBytes scales;  // f32 [nt][kb][16]
  const int8_t* tile(int64_t n_tile, int64_t k_block) const {
    return tiles.as<const int8_t>() + (n_tile * kb + k_block) * (kTileBytes / 2);
  }
  const float* scale(int64_t n_tile, int64_t k_block) const {
    return scales.as<const float>() + (n_tile * kb + k_block) * kTileCols;
  }
  size_t bytes() const { return size_t(nt * kb) * (kTileBytes / 2 + 4 * kTileCols); }
};
inline int64_t packed_int8_bytes(int64_t K, int64_t N) {
  return round_up(K, kTileDepth) / kTileDepth * (round_up(N, kTileCols) / kTileCols) * (kTileBytes / 2 + 4 * kTileCols);
}

// The weight of a product as the tier receives it: `w` is B [K, N], or [N, K] when trans_b, in
// f32, f16 or bf16, row-major or column-major (core/tensor.h). Every value is rounded to bf16
// (nearest even) once, here; with a pool, its threads share the column panels.
PackedBf16 pack_b_bf16(const Tensor& w, bool trans_b, cpu::ThreadPool* pool = nullptr);

// A q8 weight blocked along the reduction axis (cpu/quant.h: q8_blocked_along_k): its int8
// values and block scales as they are, rearranged into tiles.
PackedInt8 pack_b_int8(const Tensor& w, bool trans_b);

// The same from raw pointers (bench gemm's rungs): B [K, N] (ldb = N) or [N, K] when trans_b.
PackedBf16 pack_b_bf16(const void* B, DType dtype, int64_t K, int64_t N, bool trans_b, cpu::ThreadPool* pool = nullptr);

// Whether `w` (Q8) is blocked along K for a product with this trans_b.
bool int8_weight_blocked_along_k(const Tensor& w, bool trans_b);

}  // namespace strand::amx
