// The Core ML tier where it cannot be built: probe() says why; supports() still applies the
// ANE capability rules, so plans and `--explain` show what would go to the Neural Engine.
#include <cstdlib>

#include "backends/coreml/coreml.h"
#include "core/error.h"
#include "export/coreml/ane_rules.h"

namespace strand {

namespace {

constexpr const char* kNotBuilt = "not built: Core ML needs macOS; configure with -DSTRAND_WITH_COREML=ON on a Mac";

std::string& units_storage() {
  static std::string u = [] {
    const char* e = std::getenv("STRAND_COREML_UNITS");
    return std::string(e && *e ? e : "all");
  }();
  return u;
}

class CoremlStub final : public Backend {
 public:
  std::string name() const override { return "coreml"; }
  std::string description() const override {
    return "Core ML: the Apple Neural Engine (fp16, fixed shapes) with Core ML's GPU/CPU behind it";
  }
  Verdict probe() const override { return Verdict::no(kNotBuilt); }
  Verdict supports(const Graph& g, const Node& n) const override { return coreml::ane_supports_node(g, n); }
  void run(const Graph&, std::span<const NodeId>, std::vector<Tensor>&) override { fail("coreml: {}", kNotBuilt); }
};

}  // namespace

std::unique_ptr<Backend> make_coreml_backend() { return std::make_unique<CoremlStub>(); }

bool coreml_built() { return false; }

void set_coreml_compute_units(const std::string& units) {
  if (units != "all" && units != "cpu+ane" && units != "cpu+gpu" && units != "cpu")
    fail("--compute-units {}: must be all, cpu+ane, cpu+gpu or cpu", units);
  units_storage() = units;
}

std::string coreml_compute_units() { return units_storage(); }

std::string coreml_compute_plan(const std::string&, const std::string&) {
  fail("Core ML's compute plan is not available: {}", kNotBuilt);
}

}  // namespace strand
