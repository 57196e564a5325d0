// strand/backends/amx/kernels_amx.cpp — the AMX kernels on the real instructions.
//
// Compiled with -mamx-tile -mamx-bf16 -mamx-int8 and the AVX-512 flags (CMakeLists.txt: files
// named *_amx.cpp); reached only through hw_kernels() after amx_status() (amx/amx.h) has found
// AMX in CPUID and XCR0 and Linux has granted the tile state.
#include "backends/amx/kernels.h"
#include "backends/amx/tiles_amx.h"

namespace strand::amx {

namespace {

// Four independent TDPBF16PS per round (no dot product waits for another), on zero tiles:
// each is 16 x 16 outputs x 32 products = 8192 multiply-adds, 16384 FLOP.
double peak_bf16_loop(int64_t iters) {
  HwTiles t;
  t.loadconfig(gemm_bf16_config());
  alignas(64) static const uint16_t zeros[512] = {};
  t.zero<0>();
  t.zero<1>();
  t.zero<2>();
  t.zero<3>();
  t.load<4>(zeros, 64);
  t.load<5>(zeros, 64);
  t.load<6>(zeros, 64);
  t.load<7>(zeros, 64);
  for (int64_t i = 0; i < iters; ++i) {
    t.dpbf16ps<0, 4, 6>();
    t.dpbf16ps<1, 4, 7>();
    t.dpbf16ps<2, 5, 6>();
    t.dpbf16ps<3, 5, 7>();
  }
  t.release();
  return double(iters) * 4 * 16 * 16 * 32 * 2;
}

// The same with TDPBSSD on full-depth tiles (16 x 16 outputs x 64 products = 32768 OP each).
double peak_int8_loop(int64_t iters) {
  HwTiles t;
  t.loadconfig(gemm_bf16_config());  // every tile 16 x 64 bytes: A 16 x 64 int8, B 16 x 16 quads
  alignas(64) static const int8_t zeros[1024] = {};
  t.zero<0>();
  t.zero<1>();
  t.zero<2>();
  t.zero<3>();
  t.load<4>(zeros, 64);
  t.load<5>(zeros, 64);
  t.load<6>(zeros, 64);
  t.load<7>(zeros, 64);
  for (int64_t i = 0; i < iters; ++i) {
    t.dpbssd<0, 4, 6>();
    t.dpbssd<1, 4, 7>();
    t.dpbssd<2, 5, 6>();
    t.dpbssd<3, 5, 7>();
  }
  t.release();
  return double(iters) * 4 * 16 * 16 * 64 * 2;
}

}  // namespace

const KernelSet* hw_kernels() {
  static const KernelSet k = {
      "amx",
      &pack_a_bf16<HwTiles>,
      &pack_a_q8<HwTiles>,
      &gemm_bf16<HwTiles>,
      &gemm_int8<HwTiles>,
      &attn_pack_kv<HwTiles>,
      &attention<HwTiles>,
      &peak_bf16_loop,
      &peak_int8_loop,
  };
  return &k;
}

}  // namespace strand::amx
