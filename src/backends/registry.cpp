#include "backends/registry.h"

#include "backends/amx/amx.h"
#include "backends/blas/blas.h"
#include "backends/coreml/coreml.h"
#include "backends/cpu/cpu.h"
#include "backends/cuda/cuda.h"
#include "backends/naive/naive.h"
#include "core/error.h"

namespace strand {

std::vector<std::shared_ptr<Backend>> all_backends() {
  std::vector<std::shared_ptr<Backend>> v;
  v.push_back(make_coreml_backend());  // the Apple Neural Engine through Core ML (a stub off Apple)
  v.push_back(make_cuda_backend());    // an NVIDIA GPU (a stub when the CUDA toolkit was not found)
  v.push_back(make_amx_backend());     // Intel AMX tiles (its probe says why not, where there is none)
  AmxOptions bf16;
  bf16.unit = AmxUnit::Avx512Bf16;
  v.push_back(make_amx_backend(bf16));  // the amx tier's bf16 kernels on AVX-512-BF16: only when named
  v.push_back(make_blas_backend());
  v.push_back(make_cpu_backend());
  v.push_back(make_naive_backend());
  return v;
}

std::shared_ptr<Backend> reference_backend() { return make_reference_backend(); }

std::vector<std::shared_ptr<Backend>> make_chain(const std::string& spec) {
  const auto all = all_backends();
  std::vector<std::shared_ptr<Backend>> chain;
  if (spec.empty() || spec == "auto") {
    for (const auto& b : all)
      if (b->probe().ok && b->in_default_chain()) chain.push_back(b);
    return chain;
  }
  size_t pos = 0;
  while (pos <= spec.size()) {
    const size_t comma = spec.find(',', pos);
    const std::string name = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    std::shared_ptr<Backend> found;
    if (name == "reference") found = reference_backend();
    for (const auto& b : all)
      if (b->name() == name) found = b;
    if (!found) {
      std::string names;
      for (const auto& b : all) names += (names.empty() ? "" : ", ") + b->name();
      fail("--backend: unknown tier '{}' (this build has: {})", name, names);
    }
    const Verdict p = found->probe();
    if (!p.ok) fail("--backend: tier '{}' is not usable here: {}", name, p.reason);
    for (const auto& b : chain)
      if (b->name() == name) fail("--backend: tier '{}' named twice", name);
    chain.push_back(found);
  }
  if (chain.size() > 1)
    for (const auto& b : chain)
      if (b->name() == "reference") fail("--backend: the reference tier runs alone, not in a chain");
  return chain;
}

}  // namespace strand
