// strand/validate/gradcheck.h — prove the gradient rules of the op table.
//
// For an op case y = op(x...) and a random gradient dy of its output (the objective is
// L = sum(dy ∘ y)), the op's vector-Jacobian product (OpInfo::vjp) gives dL/dx for each input:
//   fd_check          the rule itself, in float64: the VJP graph on the reference against
//                     central finite differences of L, on sampled entries of every input;
//   check_grad_tiers  the VJP graph (the op, then its backward nodes) on each tier against the
//                     same graph on the float64 reference, with the 2×-naive rule of opcheck.h
//                     applied to every input's gradient.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "validate/opcheck.h"

namespace strand {

// The op cases (random_op_cases) of ops that have a gradient rule, on f32 inputs (token ids
// and targets aside). Deterministic for a seed.
std::vector<OpCase> grad_cases(uint64_t seed, int per_op = 4);

struct FdCheck {
  std::string label;
  double err = 0;       // max over checked entries |vjp - fd| / max |fd| (per input, the largest)
  int entries = 0;      // input entries perturbed
  bool differentiable = true;  // false: the op's rule declines this case (reason says why)
  std::string reason;
};

// Central differences of L with step h = 1e-5 · max(1, |x|) on up to `samples` entries of each
// input that takes a gradient. In float64 the difference is exact to ~1e-9 relative.
// `rule` replaces the op's own gradient rule (tests use it to show a wrong rule is caught).
FdCheck fd_check(const OpCase& c, uint64_t seed, int samples = 12, VjpFn rule = nullptr);
constexpr double kFdBound = 1e-6;  // what fd_check's err must stay under

// The VJP graph on each tier, whole (a tier that declines any of its nodes is "not supported"
// with that node's reason), against the reference; OpCheck's fields as in opcheck.h.
std::vector<OpCheck> check_grad_tiers(const OpCase& c, const std::vector<std::shared_ptr<Backend>>& tiers,
                                      uint64_t seed);

}  // namespace strand
