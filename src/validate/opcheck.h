// strand/validate/opcheck.h — prove a tier's ops against the float64 reference.
//
// One case = one op on random inputs of given shapes. The case runs three times on fresh,
// NaN-poisoned outputs: on the float64 reference, on the naive f32 tier, and on the tier
// under test. Errors are measured against the reference, relative to its largest magnitude.
// A tier passes when its error is at most twice the naive tier's error at the same
// precision (plus a floor of a few f32 ulps for ops that naive computes exactly), and it
// left no element unwritten.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "ops/ops.h"

namespace strand {

struct OpCase {
  OpKind op;
  std::vector<Shape> shapes;     // input shapes
  std::vector<DType> dtypes;     // input dtypes (f32 activations; f32/f16/bf16 weights; i32 ids)
  Attrs attrs;
  std::string label;             // "matmul [17, 33] x [33, 9]"
};

// Random cases covering every op: odd sizes (1, 3, 17, ...), sizes around SIMD widths, every
// weight dtype where the op takes weights. Deterministic for a seed.
std::vector<OpCase> random_op_cases(uint64_t seed, int per_op = 4);

struct OpCheck {
  std::string label;
  std::string tier;
  double err = 0;        // tier's max |y - ref| / max |ref|
  double naive_err = 0;  // the naive f32 tier's, same measure
  double tolerance = 0;  // what err had to stay under
  bool unwritten = false;  // an output element was left NaN
  bool pass = false;
};

// Runs `c` with inputs drawn from `seed` and checks `tier` against the reference.
OpCheck check_op(const OpCase& c, const std::shared_ptr<Backend>& tier, uint64_t seed);

// Bound for the naive tier itself against float64: f32 rounding, generously (relative).
constexpr double kNaiveF32Bound = 1e-4;

}  // namespace strand
