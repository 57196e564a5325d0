// strand/backends/coreml — the Core ML tier: the Apple Neural Engine (and Core ML's GPU/CPU)
// behind Apple's Core ML framework.
//
// On Apple platforms built with -DSTRAND_WITH_COREML=ON (coreml_backend.mm) the tier exports
// the GPT-2 layers it is given as an ML Program in the ANE's layout (src/export/coreml),
// compiles it once per content hash into a cache directory, and runs it with the compute units
// chosen by STRAND_COREML_UNITS or set_coreml_compute_units(). Everywhere else it is a stub
// (coreml_stub.cpp) whose probe() says why it is missing. Either way supports() applies the
// same ANE capability rules (src/export/coreml/ane_rules.h), so the planner's fallback chain
// ANE -> GPU -> BLAS -> CPU is decided by one set of rules.
#pragma once

#include <memory>
#include <string>

#include "backends/backend.h"

namespace strand {

std::unique_ptr<Backend> make_coreml_backend();

// Whether this build has the real Core ML tier (false for the stub).
bool coreml_built();

// Compute units for Core ML: "all", "cpu+ane", "cpu+gpu" or "cpu". Throws strand::Error for any
// other name. The default is STRAND_COREML_UNITS from the environment, else "all".
void set_coreml_compute_units(const std::string& units);
std::string coreml_compute_units();

// Core ML's compute plan of a package (the device each op is expected to run on; macOS 14.4+),
// as text. Throws strand::Error saying why when it is not available (always, in the stub).
std::string coreml_compute_plan(const std::string& package_path, const std::string& units);

}  // namespace strand
