// The blas tier when strand was configured without OpenBLAS: the same functions, and a tier
// whose probe() says why it is not there.
#include <limits>

#include "backends/blas/blas.h"
#include "core/error.h"

namespace strand {

namespace {

constexpr const char* kNotBuilt =
    "not built: OpenBLAS was not found when strand was configured (install libopenblas-dev)";

class BlasStub final : public Backend {
 public:
  std::string name() const override { return "blas"; }
  std::string description() const override { return "vendor BLAS sgemm (not built in this build)"; }
  Verdict probe() const override { return Verdict::no(kNotBuilt); }
  Verdict supports(const Graph&, const Node&) const override { return Verdict::no(kNotBuilt); }
  void run(const Graph&, std::span<const NodeId>, std::vector<Tensor>&) override { fail("blas tier: {}", kNotBuilt); }
};

}  // namespace

BlasLibraryInfo blas_library_info() { return {}; }

BlasCrossover blas_crossover_for(int) {
  return {std::numeric_limits<double>::infinity(), false, kNotBuilt};
}

std::unique_ptr<Backend> make_blas_backend(const BlasOptions&) { return std::make_unique<BlasStub>(); }

}  // namespace strand
