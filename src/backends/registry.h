// strand/backends/registry.h — the only place that names every backend.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace strand {

// Every tier compiled into this build, fastest first, naive last. Tiers that are not
// usable here are included: their probe() says why.
std::vector<std::shared_ptr<Backend>> all_backends();

// The fallback chain from a comma-separated list of tier names ("cpu,naive"); "auto" or ""
// means every usable tier that joins default chains (Backend::in_default_chain), fastest
// first. An unknown or unusable name is an error saying why.
std::vector<std::shared_ptr<Backend>> make_chain(const std::string& spec);

// The float64 reference (never in a chain).
std::shared_ptr<Backend> reference_backend();

}  // namespace strand
