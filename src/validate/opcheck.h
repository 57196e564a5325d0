// strand/validate/opcheck.h — prove a tier's ops against the float64 reference.
//
// One case = one op on random inputs of given shapes. The case runs three times on fresh,
// NaN-poisoned outputs: on the float64 reference, on the naive f32 tier, and on the tier
// under test. Errors are measured against the reference, relative to its largest magnitude.
// A tier passes when its error is at most twice the naive tier's error at the same
// precision (plus a floor of a few f32 ulps for ops that naive computes exactly), and it
// left no element unwritten. A tier that declares a lower precision for the node
// (Backend::precision) is judged on inputs rounded as it declares (validate/precision.h).
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
  // > 0 (matmul and linear only, whose output rows are independent): the tier runs the whole
  // case, the reference and the naive tier only this many of its rows (the first and last
  // ones included), and the errors are measured on those rows. Lets a case be large enough
  // for a tier that takes only big products without a long float64 run.
  int64_t sample_rows = 0;
  // Matmul and linear with an f32/f16/bf16 weight: the weight (input 1) is stored column-major
  // (Tensor::to_col_major, the layout strand runs models in); its logical shape is unchanged.
  bool col_major_weight = false;
};

// Random cases covering every op: odd sizes (1, 3, 17, ...), sizes around SIMD widths, every
// weight dtype where the op takes weights. Deterministic for a seed.
std::vector<OpCase> random_op_cases(uint64_t seed, int per_op = 4);

// A few larger cases with the shapes a GPT-2 forward produces (a decode row against a wide
// weight, a prefill block, attention over a long cache, a wide layernorm), in every weight
// dtype where the op takes weights: they reach the paths a tier takes only above a size
// threshold. Deterministic for a seed.
std::vector<OpCase> large_op_cases(uint64_t seed);

// The weight dtypes the op cases cover (f32, f16, bf16, and more as strand gains them).
std::vector<DType> case_weight_dtypes();

// The dtype that names a case in tables: its first input stored in something other than f32
// (ids excluded), else f32.
DType case_weight_dtype(const OpCase& c);

struct OpCheck {
  std::string label;
  std::string tier;
  double err = 0;        // tier's max |y - ref| / max |ref|
  double naive_err = 0;  // the naive f32 tier's, same measure
  double tolerance = 0;  // what err had to stay under
  bool unwritten = false;  // an output element was left NaN
  bool pass = false;
  bool supported = true;   // false: the tier declined the case (nothing ran; pass is false)
  std::string reason;      // the tier's supports() reason, or the error it threw while running
  // What the tier rounds (Backend::precision, e.g. "a bf16, b bf16"); "" when it computes on
  // the inputs as given. For an op, err, naive_err and tolerance are then measured against the
  // float64 reference on inputs rounded that way, naive_err being the naive tier's at that
  // precision. For a gradient graph (gradcheck.h) the reference is the float64 gradient of the
  // inputs as given and naive_err the naive tier's with every node the tier takes computed at
  // its precision (as for models); precision then lists those nodes by op (plan_precision:
  // "matmul: a bf16, b bf16; matmul_at: a bf16, b bf16").
  std::string precision;
};

// Runs `c` with inputs drawn from `seed` and checks `tier` against the reference. A tier whose
// supports() declines the case is not run (supported = false, reason = its reason); a
// strand::Error thrown while it runs fails the case with the message as reason.
OpCheck check_op(const OpCase& c, const std::shared_ptr<Backend>& tier, uint64_t seed);
// The same for several tiers at once (the reference and naive outputs are computed once);
// one OpCheck per tier, in order.
std::vector<OpCheck> check_op_tiers(const OpCase& c, const std::vector<std::shared_ptr<Backend>>& tiers,
                                    uint64_t seed);

// Bound for the naive tier itself against float64: f32 rounding, generously (relative).
constexpr double kNaiveF32Bound = 1e-4;

}  // namespace strand
