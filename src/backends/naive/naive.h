// strand/backends/naive — the bottom rung: every op as plain single-threaded f32 loops.
#pragma once

#include <memory>

#include "backends/backend.h"

namespace strand {

std::unique_ptr<Backend> make_naive_backend();
// The float64 reference as a backend: whole graphs only, never part of a fallback chain.
std::unique_ptr<Backend> make_reference_backend();

}  // namespace strand
