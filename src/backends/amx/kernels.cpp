// strand/backends/amx/kernels.cpp — the AMX kernels on the C++ model of the instructions.
#include "backends/amx/kernels.h"

namespace strand::amx {

const KernelSet& model_kernels() {
  static const KernelSet k = {
      "model",
      &pack_a_bf16<TileModel>,
      &pack_a_q8<TileModel>,
      &gemm_bf16<TileModel>,
      &gemm_int8<TileModel>,
      &attn_pack_kv<TileModel>,
      &attention<TileModel>,
      nullptr,
      nullptr,
  };
  return k;
}

#if !defined(STRAND_HAVE_AMX_BUILD)
const KernelSet* hw_kernels() { return nullptr; }
#endif
#if !defined(STRAND_HAVE_AVX512BF16_BUILD)
const KernelSet* avx512bf16_kernels() { return nullptr; }
const KernelSet* avx512bf16_tile_layer_kernels() { return nullptr; }
#endif

}  // namespace strand::amx
