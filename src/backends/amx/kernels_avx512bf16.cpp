// strand/backends/amx/kernels_avx512bf16.cpp — the amx tier's bf16 kernels on AVX-512-BF16.
//
// Compiled with -mavx512bf16 and the AVX-512 flags (CMakeLists.txt: files named
// *_avx512bf16.cpp); reached only through avx512bf16_kernels(), which checks CPUID first.
#include "backends/amx/kernels.h"
#include "backends/amx/tiles_avx512bf16.h"
#include "core/cpu_features.h"

namespace strand::amx {

const KernelSet* avx512bf16_kernels() {
  static const KernelSet k = {
      "avx512bf16",
      &pack_a_bf16<Avx512Bf16Tiles>,
      nullptr,  // no int8 tiles
      &gemm_bf16<Avx512Bf16Tiles>,
      nullptr,
      &attn_pack_kv<Avx512Bf16Tiles>,
      &attention<Avx512Bf16Tiles>,
      nullptr,
      nullptr,
  };
  const CpuFeatures& f = cpu_features();
  return f.avx512_bf16 && f.has_avx512_set() ? &k : nullptr;
}

}  // namespace strand::amx
