// strand/backends/cuda/cuda_stub.cpp — the cuda tier when it is not built (no CUDA toolkit,
// or STRAND_WITH_CUDA=OFF): a tier whose probe() says so, and empty answers for the rest.
#include "backends/cuda/cuda.h"
#include "core/error.h"

namespace strand {

namespace {

const char* const kNotBuilt =
    "not built: this build has no CUDA tier (it needs the CUDA toolkit, nvcc and cuBLASLt, when strand is "
    "configured, and an NVIDIA GPU to run)";

class CudaStub final : public Backend {
 public:
  std::string name() const override { return "cuda"; }
  std::string description() const override { return "NVIDIA GPU through CUDA (not built)"; }
  Verdict probe() const override { return Verdict::no(kNotBuilt); }
  Verdict supports(const Graph&, const Node&) const override { return Verdict::no(kNotBuilt); }
  void run(const Graph&, std::span<const NodeId>, std::vector<Tensor>&) override { fail("cuda tier: {}", kNotBuilt); }
  // The cuda tier has memory of its own, built or not (it is never usable unbuilt, so nothing
  // is ever placed in it): a space of its own, as the built tier's.
  const void* memory_space() const override {
    static const char space = 0;
    return &space;
  }
};

}  // namespace

CudaOptions cuda_options_from_env() { return {}; }
std::unique_ptr<Backend> make_cuda_backend(const CudaOptions&) { return std::make_unique<CudaStub>(); }

CudaPrecision cuda_node_precision(const Graph&, const Node& n, const CudaOptions&) {
  return {std::vector<CudaRounding>(n.inputs.size(), CudaRounding::None), "not built"};
}

std::string CudaDeviceInfo::summary() const { return why; }
CudaDeviceInfo cuda_device_info() {
  CudaDeviceInfo d;
  d.why = kNotBuilt;
  return d;
}
CudaPeaks measure_cuda_peaks(bool) { fail("cuda tier: {}", kNotBuilt); }
double measure_cuda_f32_peak_tflops(bool) { fail("cuda tier: {}", kNotBuilt); }
CudaGraphStats cuda_graph_stats() { return {}; }
double cuda_resident_bytes() { return 0; }
int cuda_resident_count() { return 0; }
std::vector<CudaGemmCell> cuda_gemm_ladder(const std::vector<CudaGemmShape>&, int,
                                           const std::function<void(const std::string&)>&) {
  fail("bench gemm --gpu: {}", kNotBuilt);
}

}  // namespace strand
