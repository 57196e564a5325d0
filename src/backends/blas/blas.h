// strand/backends/blas — the `blas` tier: matrix products through a vendor CBLAS sgemm.
//
// It runs matmul and linear with f32 weights (row-major; trans_b for the tied lm_head) and
// claims only the products where it beats the cpu tier: 2·M·N·K at or above a crossover that
// `strand devices` measures and caches, or a conservative built-in default when there is no
// measurement. f16/bf16 weights are declined (BLAS has no f16 sgemm; the cpu tier widens them
// while packing), as is every op that is not a matrix product.
//
// Built on OpenBLAS when CMake finds it (STRAND_HAVE_OPENBLAS); otherwise blas_stub.cpp
// provides the same functions and a tier whose probe() says why it is not there. The CBLAS
// provider is named in one place only: cblas_shim.h.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "backends/backend.h"

namespace strand {

struct BlasLibraryInfo {
  bool built = false;          // compiled against a CBLAS
  std::string name;            // "OpenBLAS"
  std::string version;         // "0.3.21"
  std::string corename;        // the kernel OpenBLAS chose at load time: "Cooperlake", "Haswell", "Prescott"
  std::string config;          // openblas_get_config(): "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY ..."
  std::string coretype_env;    // OPENBLAS_CORETYPE when set in the environment (strand never sets it)
  int threads = 0;             // the library's thread count right now
};
BlasLibraryInfo blas_library_info();

// Claims a matrix product when 2·M·N·K >= flops.
struct BlasCrossover {
  double flops = 0;
  bool measured = false;
  std::string source;  // "measured, cache ~/.cache/strand/devices.json" or why the default is used
};

// Used when `strand devices` has not measured this machine: blas takes only products of at
// least this many FLOPs (a 768 x 3072 layer from about 22 rows up, 768 x 768 from about 85).
// Conservative on purpose: below it the cpu tier is the safe choice.
constexpr double kBlasDefaultCrossoverFlops = 1e8;

// The crossover the blas tier uses with `threads` threads: the cached measurement (measured
// against the cpu tier) when there is one, else the default with the reason.
BlasCrossover blas_crossover_for(int threads);

struct BlasOptions {
  std::optional<BlasCrossover> crossover;  // unset: blas_crossover_for(threads)
  int threads = 0;                         // <= 0: default_thread_count() (strand's own count)
};

// The tier. Creating it sets OpenBLAS's thread count to strand's (process-wide).
std::unique_ptr<Backend> make_blas_backend(const BlasOptions& opt = {});

}  // namespace strand
