// strand/backends/amx/pack.cpp — weights into bf16 and int8 tiles (see amx/pack.h).
#include "backends/amx/pack.h"

#include <algorithm>
#include <cstring>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/threadpool.h"
#include "core/error.h"

namespace strand::amx {

void AlignedBytes::resize(size_t n) {
  if (n <= size && p) return;
  const size_t rounded = (n + 63) / 64 * 64;
  void* q = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!q) fail("amx: cannot allocate {} bytes", n);
  p.reset(static_cast<uint8_t*>(q));
  size = n;
}

namespace {

// B's storage as rows: element (k, n) of the logical [K, N] matrix sits at index
// n * K + k when `lines` (B stored as N lines of K: trans_b, or column-major), else k * N + n.
struct BView {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t K = 0, N = 0;
  bool lines = false;
};

// Element i of the storage as bf16, per dtype (the rule of core/dtype.h: nearest even).
struct FromF32 {
  const float* p;
  uint16_t operator()(int64_t i) const { return f32_to_bf16(p[i]); }
};
struct FromF16 {
  const uint16_t* p;
  uint16_t operator()(int64_t i) const { return f32_to_bf16(f16_to_f32(p[i])); }
};
struct FromBf16 {
  const uint16_t* p;
  uint16_t operator()(int64_t i) const { return p[i]; }
};

// Column tiles [t0, t1) of the packed B. A whole tile (32 deep, 16 wide) is copied along the
// storage's contiguous direction without bounds checks; edge tiles check and zero-pad.
template <class Load>
void pack_panels(const BView& b, const Load& load, int64_t kb_count, uint16_t* out, int64_t t0, int64_t t1) {
  const int64_t K = b.K, N = b.N;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t kb = 0; kb < kb_count; ++kb) {
      uint16_t* tile = out + (t * kb_count + kb) * (kTileBytes / 2);
      const int64_t k0 = kb * kTileDepth, n0 = t * kTileCols;
      if (k0 + kTileDepth <= K && n0 + kTileCols <= N) {
        if (b.lines)  // column n's 32 values of k are consecutive
          for (int64_t j = 0; j < kTileCols; ++j) {
            const int64_t src = (n0 + j) * K + k0;
            for (int64_t k = 0; k < kTileDepth; ++k) tile[(k / 2) * 2 * kTileCols + 2 * j + (k % 2)] = load(src + k);
          }
        else  // row k's 16 values of n are consecutive
          for (int64_t k = 0; k < kTileDepth; ++k) {
            const int64_t src = (k0 + k) * N + n0;
            uint16_t* row = tile + (k / 2) * 2 * kTileCols + (k % 2);
            for (int64_t j = 0; j < kTileCols; ++j) row[2 * j] = load(src + j);
          }
        continue;
      }
      for (int64_t r = 0; r < kTileDepth / 2; ++r)
        for (int64_t j = 0; j < kTileCols; ++j)
          for (int64_t h = 0; h < 2; ++h) {
            const int64_t k = k0 + 2 * r + h, n = n0 + j;
            tile[r * 2 * kTileCols + 2 * j + h] = k < K && n < N ? load(b.lines ? n * K + k : k * N + n) : uint16_t(0);
          }
    }
}

PackedBf16 pack_view(const BView& b, cpu::ThreadPool* pool) {
  if (b.dtype != DType::F32 && b.dtype != DType::F16 && b.dtype != DType::BF16)
    fail("amx: a {} weight cannot be packed into bf16 tiles (f32, f16 or bf16)", dtype_name(b.dtype));
  PackedBf16 p;
  p.K = b.K;
  p.N = b.N;
  p.kb = round_up(b.K, kTileDepth) / kTileDepth;
  p.nt = round_up(b.N, kTileCols) / kTileCols;
  p.tiles.resize(p.bytes());
  uint16_t* out = p.tiles.as<uint16_t>();
  auto panels = [&](int64_t t0, int64_t t1) {
    switch (b.dtype) {
      case DType::F32: return pack_panels(b, FromF32{static_cast<const float*>(b.data)}, p.kb, out, t0, t1);
      case DType::F16: return pack_panels(b, FromF16{static_cast<const uint16_t*>(b.data)}, p.kb, out, t0, t1);
      default: return pack_panels(b, FromBf16{static_cast<const uint16_t*>(b.data)}, p.kb, out, t0, t1);
    }
  };
  // Split over the pool from 256 KiB of tiles per thread (below that, waking it costs more).
  const int64_t min_panels = std::max<int64_t>(1, (int64_t(256) << 10) / std::max<int64_t>(1, p.kb * kTileBytes));
  cpu::parallel_ranges(pool, p.nt, 1, min_panels, panels);
  return p;
}

}  // namespace

PackedBf16 pack_b_bf16(const Tensor& w, bool trans_b, cpu::ThreadPool* pool) {
  if (w.rank() != 2) fail("amx: the weight of a product must be a matrix, not {}", shape_str(w.shape));
  BView b;
  const bool col = w.col_major() && !w.contiguous();
  const Tensor s = col ? w.col_major_storage() : w;
  if (!s.contiguous()) fail("amx: a non-contiguous weight of shape {}", shape_str(w.shape));
  b.data = s.data;
  b.dtype = s.dtype;
  b.lines = col ? !trans_b : trans_b;
  // Logical [K, N]: w is [K, N], or [N, K] when trans_b.
  b.K = trans_b ? w.dim(1) : w.dim(0);
  b.N = trans_b ? w.dim(0) : w.dim(1);
  return pack_view(b, pool);
}

PackedBf16 pack_b_bf16(const void* B, DType dtype, int64_t K, int64_t N, bool trans_b, cpu::ThreadPool* pool) {
  BView b;
  b.data = B;
  b.dtype = dtype;
  b.K = K;
  b.N = N;
  b.lines = trans_b;
  return pack_view(b, pool);
}

bool int8_weight_blocked_along_k(const Tensor& w, bool trans_b) {
  return w.dtype == DType::Q8 && w.rank() == 2 && w.q8_axis() == (trans_b ? 1 : 0);
}

PackedInt8 pack_b_int8(const Tensor& w, bool trans_b) {
  if (!int8_weight_blocked_along_k(w, trans_b))
    fail("amx: the int8 path needs a q8 weight blocked along K (shape {}, {})", shape_str(w.shape),
         w.dtype == DType::Q8 ? fmt::format("blocked along axis {}", w.q8_axis()) : std::string(dtype_name(w.dtype)));
  static_assert(kTileDepth == kQ8Block, "an int8 tile step is one q8 block");
  PackedInt8 p;
  p.K = w.q8_len();
  p.N = w.q8_lines();
  p.kb = q8_blocks(p.K);
  p.nt = round_up(p.N, kTileCols) / kTileCols;
  p.tiles.resize(size_t(p.nt * p.kb) * (kTileBytes / 2));
  p.scales.resize(size_t(p.nt * p.kb * kTileCols) * sizeof(float));
  const int8_t* q = w.q8_data();
  const float* sc = w.q8_scales();
  const int64_t lp = q8_padded(p.K);  // a line: lp int8 (zero-padded), then kb scales
  int8_t* tiles = p.tiles.as<int8_t>();
  float* scales = p.scales.as<float>();
  for (int64_t t = 0; t < p.nt; ++t)
    for (int64_t kb = 0; kb < p.kb; ++kb) {
      int8_t* tile = tiles + (t * p.kb + kb) * (kTileBytes / 2);
      float* s = scales + (t * p.kb + kb) * kTileCols;
      for (int64_t j = 0; j < kTileCols; ++j) {
        const int64_t n = t * kTileCols + j;
        s[j] = n < p.N ? sc[n * p.kb + kb] : 0.0f;
        for (int64_t r = 0; r < kTileDepth / 4; ++r)
          for (int64_t h = 0; h < 4; ++h)
            tile[r * 4 * kTileCols + 4 * j + h] = n < p.N ? q[n * lp + kb * kTileDepth + 4 * r + h] : int8_t(0);
      }
    }
  return p;
}

}  // namespace strand::amx
