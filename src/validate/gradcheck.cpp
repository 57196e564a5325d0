#include "validate/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "backends/naive/naive.h"
#include "core/error.h"
#include "core/rng.h"
#include "planner/planner.h"
#include "runtime/runtime.h"
#include "validate/precision.h"

namespace strand {

namespace {

bool float_input(DType d) { return d == DType::F32 || d == DType::I32; }

// The graph y = op(x...), dy, and the backward nodes; values and what each gradient belongs to.
struct VjpGraph {
  Graph g;
  std::vector<ValueId> in;     // the op's inputs
  ValueId y = -1, dy = -1;
  std::vector<ValueId> grads;  // per input: its gradient, or -1
  std::vector<Tensor> inputs;  // random inputs (f32 / i32), and dy last
};

int64_t id_limit_of(const OpCase& c) {
  if (c.op == OpKind::GatherRows) return c.shapes[0][0];
  if (c.op == OpKind::ScatterAddRows) return c.attrs.len;
  if (c.op == OpKind::CrossEntropy) return c.shapes[0][1];
  return 1;
}

Tensor random_input(const Shape& s, DType dt, Rng& rng, int64_t id_limit) {
  Tensor t = Tensor::empty(s, dt);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dt == DType::I32) t.ptr<int32_t>()[i] = int32_t(rng.below(uint64_t(id_limit)));
    else t.ptr<float>()[i] = float(rng.normal());
  }
  return t;
}

VjpGraph build(const OpCase& c, uint64_t seed, VjpFn rule = nullptr) {
  VjpGraph v;
  Rng rng(seed);
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    const bool state = c.op == OpKind::KvStore && i == 0;
    const std::string name = fmt::format("in{}", i);
    v.in.push_back(state ? v.g.state(name, c.shapes[i], c.dtypes[i]) : v.g.input(name, c.shapes[i], c.dtypes[i]));
    v.inputs.push_back(random_input(c.shapes[i], c.dtypes[i], rng, id_limit_of(c)));
  }
  v.y = v.g.add(c.op, v.in, c.attrs, c.label);
  v.dy = v.g.input("dy", v.g.value(v.y).shape, DType::F32);
  v.inputs.push_back(random_input(v.g.value(v.y).shape, DType::F32, rng, 1));
  const Node node = v.g.node(v.g.value(v.y).producer);
  v.grads = (rule ? rule : op_info(c.op).vjp)(v.g, node, v.dy);
  for (ValueId gv : v.grads)
    if (gv >= 0) v.g.mark_output(gv);
  return v;
}

// Binds the inputs (state copied, so that kv_store writes a fresh cache) and runs the plan.
std::vector<Tensor> run(const VjpGraph& v, const Plan& plan, DType act, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> vals(v.g.values().size());
  for (size_t i = 0; i < v.in.size(); ++i) {
    const bool state = v.g.value(v.in[i]).kind == ValueKind::State;
    vals[size_t(v.in[i])] = state ? inputs[i].to(act) : inputs[i];
  }
  vals[size_t(v.dy)] = inputs.back();
  RunOptions ro;
  ro.poison = true;
  execute(v.g, plan, vals, ro);
  return vals;
}

}  // namespace

std::vector<OpCase> grad_cases(uint64_t seed, int per_op) {
  std::vector<OpCase> out;
  for (OpCase& c : random_op_cases(seed, per_op)) {
    if (!op_info(c.op).vjp || c.col_major_weight) continue;
    if (!std::all_of(c.dtypes.begin(), c.dtypes.end(), float_input)) continue;
    out.push_back(std::move(c));
  }
  return out;
}

FdCheck fd_check(const OpCase& c, uint64_t seed, int samples, VjpFn rule) {
  FdCheck r;
  r.label = c.label;
  VjpGraph v;
  try {
    v = build(c, seed, rule);
  } catch (const Error& e) {
    r.differentiable = false;
    r.reason = e.what();
    return r;
  }
  const std::shared_ptr<Backend> ref = make_reference_backend();
  const Plan plan = make_plan(v.g, {ref}, true);
  // Inputs in float64 so that they can be moved by a small step.
  std::vector<Tensor> x;
  for (const Tensor& t : v.inputs) x.push_back(t.dtype == DType::I32 ? t : t.to(DType::F64));
  const std::vector<Tensor> vals = run(v, plan, DType::F64, x);
  const Tensor dy = x.back();
  // L(x) = sum(dy ∘ y) over the finite entries of y (a causal mask's -inf entries take no part).
  auto objective = [&](const std::vector<Tensor>& xs) {
    const std::vector<Tensor> out = run(v, plan, DType::F64, xs);
    const Tensor y = out[size_t(v.y)].to(DType::F64);
    double L = 0;
    for (int64_t i = 0; i < y.numel(); ++i) {
      const double yi = y.ptr<const double>()[i];
      if (std::isfinite(yi)) L += dy.ptr<const double>()[i] * yi;
    }
    return L;
  };
  Rng pick(seed ^ 0x9e3779b97f4a7c15ull);
  for (size_t i = 0; i < v.in.size(); ++i) {
    if (v.grads[i] < 0) continue;
    const Tensor grad = vals[size_t(v.grads[i])].to(DType::F64);
    const int64_t n = x[i].numel();
    std::vector<int64_t> idx;
    if (n <= samples) {
      for (int64_t j = 0; j < n; ++j) idx.push_back(j);
    } else {
      while (int64_t(idx.size()) < samples) idx.push_back(int64_t(pick.below(uint64_t(n))));
    }
    double scale = 0, err = 0;
    for (int64_t j : idx) {
      double* p = x[i].ptr<double>() + j;
      const double keep = *p, h = 1e-5 * std::max(1.0, std::abs(keep));
      *p = keep + h;
      const double up = objective(x);
      *p = keep - h;
      const double down = objective(x);
      *p = keep;
      const double fd = (up - down) / (2 * h);
      scale = std::max(scale, std::abs(fd));
      err = std::max(err, std::abs(fd - grad.ptr<const double>()[j]));
      ++r.entries;
    }
    for (int64_t j = 0; j < grad.numel(); ++j) scale = std::max(scale, std::abs(grad.ptr<const double>()[j]));
    r.err = std::max(r.err, err / std::max(scale, 1e-30));
  }
  return r;
}

std::vector<OpCheck> check_grad_tiers(const OpCase& c, const std::vector<std::shared_ptr<Backend>>& tiers,
                                      uint64_t seed) {
  std::vector<OpCheck> checks;
  VjpGraph v;
  try {
    v = build(c, seed);
  } catch (const Error& e) {
    for (const auto& t : tiers) {
      OpCheck chk;
      chk.label = c.label + " (gradient)";
      chk.tier = t->name();
      chk.supported = false;
      chk.reason = std::string("no gradient rule for this case: ") + e.what();
      checks.push_back(std::move(chk));
    }
    return checks;
  }
  auto grads_planned = [&](const Plan& plan, const Backend& b) {
    const std::vector<Tensor> vals = run(v, plan, b.activation_dtype(), v.inputs);
    std::vector<Tensor> out;
    for (ValueId gv : v.grads) out.push_back(gv >= 0 ? vals[size_t(gv)].to(DType::F64) : Tensor{});
    return out;
  };
  auto grads_of = [&](const std::shared_ptr<Backend>& b) { return grads_planned(make_plan(v.g, {b}, true), *b); };
  const std::vector<Tensor> ref = grads_of(std::shared_ptr<Backend>(make_reference_backend()));
  const std::vector<Tensor> naive = grads_of(std::shared_ptr<Backend>(make_naive_backend()));
  // Error over every gradient: max |y - r| / max |r|, per input, the largest.
  auto error = [&](const std::vector<Tensor>& got, bool* unwritten) {
    double e = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (!ref[i].defined()) continue;
      const double* r = ref[i].ptr<const double>();
      const double* y = got[i].ptr<const double>();
      double scale = 0, d = 0;
      for (int64_t j = 0; j < ref[i].numel(); ++j) {
        scale = std::max(scale, std::abs(r[j]));
        if (std::isnan(y[j]) && !std::isnan(r[j])) *unwritten = true;
        d = std::max(d, std::abs(y[j] - r[j]));
      }
      e = std::max(e, d / (scale > 0 ? scale : 1.0));
    }
    return e;
  };
  bool naive_unwritten = false;
  const double naive_err = error(naive, &naive_unwritten);
  const double floor = 4.0 * double(std::numeric_limits<float>::epsilon());
  for (const auto& tier : tiers) {
    OpCheck chk;
    chk.label = c.label + " (gradient)";
    chk.tier = tier->name();
    chk.naive_err = naive_err;
    const bool is_naive = tier->name() == "naive";
    chk.tolerance = is_naive ? kNaiveF32Bound : 2.0 * naive_err + floor;
    std::vector<Tensor> got;
    try {
      if (is_naive) {
        got = naive;
      } else {
        const Plan plan = make_plan(v.g, {tier}, true);  // a node it declines: "--no-fallback ...", below
        // A tier that rounds some node's inputs (bf16 tiles) is held to the naive tier computing
        // those nodes at the same precision (validate/precision.h), as a model is.
        chk.precision = plan_precision(v.g, plan, *tier);
        if (!chk.precision.empty()) {
          try {
            bool bar_unwritten = false;
            chk.naive_err = error(grads_of(std::shared_ptr<Backend>(make_precision_naive(tier))), &bar_unwritten);
            chk.tolerance = 2.0 * chk.naive_err + floor;
          } catch (const Error& e) {
            fail("the naive tier at this tier's precision could not run it: {}", e.what());
          }
        }
        got = grads_planned(plan, *tier);
      }
    } catch (const Error& e) {
      // A tier that declines a node is not a failure; one that throws while running is.
      const std::string what = e.what();
      chk.reason = what;
      if (what.rfind("--no-fallback", 0) == 0) {
        chk.supported = false;
      } else {
        chk.err = std::numeric_limits<double>::infinity();
      }
      checks.push_back(std::move(chk));
      continue;
    }
    chk.err = error(got, &chk.unwritten);
    chk.pass = !chk.unwritten && chk.err <= chk.tolerance;
    checks.push_back(std::move(chk));
  }
  return checks;
}

}  // namespace strand
