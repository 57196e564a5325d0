#include "validate/opcheck.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "backends/naive/naive.h"
#include "core/error.h"
#include "core/rng.h"
#include "runtime/runtime.h"

namespace strand {

namespace {

std::string case_label(OpKind op, const std::vector<Shape>& shapes, const std::vector<DType>& dt, const Attrs& a) {
  std::string s = std::string(op_name(op));
  for (size_t i = 0; i < shapes.size(); ++i) s += fmt::format(" {}{}", shape_str(shapes[i]), dt[i] == DType::F32 ? "" : std::string(dtype_name(dt[i])));
  if (op == OpKind::MatMul && a.trans_b) s += " trans_b";
  if (op == OpKind::Activation) s += " " + std::string(act_name(a.act));
  if (a.past) s += fmt::format(" past={}", a.past);
  if (op == OpKind::Attention) s += fmt::format(" heads={}", a.heads);
  return s;
}

// A tensor of `shape` in `dt` with values drawn from `rng`; ids below `id_limit` for i32.
Tensor random_tensor(const Shape& shape, DType dt, Rng& rng, int64_t id_limit) {
  Tensor f = Tensor::empty(shape, dt == DType::I32 ? DType::I32 : DType::F32);
  for (int64_t i = 0; i < f.numel(); ++i) {
    if (dt == DType::I32)
      f.ptr<int32_t>()[i] = int32_t(rng.below(uint64_t(id_limit)));
    else
      f.ptr<float>()[i] = float(rng.normal());
  }
  return dt == DType::I32 || dt == DType::F32 ? f : f.to(dt);
}

}  // namespace

std::vector<OpCase> random_op_cases(uint64_t seed, int per_op) {
  Rng rng(seed);
  static const int64_t sizes[] = {1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 65};
  auto pick = [&] { return sizes[rng.below(std::size(sizes))]; };
  static const DType wdt[] = {DType::F32, DType::F16, DType::BF16};
  std::vector<OpCase> cases;
  auto push = [&](OpKind op, std::vector<Shape> s, std::vector<DType> d, Attrs a) {
    const std::string label = case_label(op, s, d, a);
    cases.push_back({op, std::move(s), std::move(d), a, label});
  };
  for (int r = 0; r < per_op; ++r) {
    const int64_t m = pick(), n = pick(), k = pick();
    const DType w = wdt[size_t(r) % 3];
    Attrs a;
    push(OpKind::GatherRows, {{pick() + 2, n}, {m}}, {w, DType::I32}, a);
    push(OpKind::Add, {{m, n}, {m, n}}, {DType::F32, DType::F32}, a);
    push(OpKind::Add, {{m, n}, {n}}, {DType::F32, w}, a);
    a.eps = 1e-5f;
    push(OpKind::LayerNorm, {{m, n}, {n}, {n}}, {DType::F32, w, w}, a);
    a = {};
    push(OpKind::MatMul, {{m, k}, {k, n}}, {DType::F32, w}, a);
    a.trans_b = true;
    push(OpKind::MatMul, {{m, k}, {n, k}}, {DType::F32, w}, a);
    a = {};
    a.act = Act(r % 5);
    push(OpKind::Activation, {{m, n}}, {DType::F32}, a);
    a = {};
    a.scale = 0.125f;
    push(OpKind::Scale, {{m, n}}, {DType::F32}, a);
    a = {};
    a.past = int64_t(rng.below(9));
    push(OpKind::CausalMask, {{m, m + a.past}}, {DType::F32}, a);
    a = {};
    push(OpKind::Softmax, {{m, n}}, {DType::F32}, a);
    a.start = int64_t(rng.below(uint64_t(n)));
    a.len = n - a.start;
    push(OpKind::SliceCols, {{m, n}}, {DType::F32}, a);
    a.start = int64_t(rng.below(uint64_t(m)));
    a.len = m - a.start;
    push(OpKind::SliceRows, {{m, n}}, {DType::F32}, a);
    a = {};
    push(OpKind::ConcatCols, {{m, n}, {m, k}, {m, 1}}, {DType::F32, DType::F32, DType::F32}, a);
    a.past = int64_t(rng.below(5));
    push(OpKind::KvStore, {{a.past + m + int64_t(rng.below(3)), n}, {m, n}}, {DType::F32, DType::F32}, a);
    a = {};
    push(OpKind::Linear, {{m, k}, {k, n}, {n}}, {DType::F32, w, w}, a);
    const int64_t heads = 1 + int64_t(rng.below(4));
    const int64_t d = pick();
    a.heads = heads;
    a.past = int64_t(rng.below(6));
    push(OpKind::Attention, {{m, heads * d}, {a.past + m, heads * d}, {a.past + m, heads * d}},
         {DType::F32, DType::F32, DType::F32}, a);
  }
  return cases;
}

OpCheck check_op(const OpCase& c, const std::shared_ptr<Backend>& tier, uint64_t seed) {
  Graph g;
  std::vector<ValueId> in;
  Rng rng(seed);
  std::vector<Tensor> inputs;
  const int64_t id_limit = c.op == OpKind::GatherRows ? c.shapes[0][0] : 1;
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    const bool state = c.op == OpKind::KvStore && i == 0;
    const std::string name = fmt::format("in{}", i);
    in.push_back(state ? g.state(name, c.shapes[i], c.dtypes[i]) : g.input(name, c.shapes[i], c.dtypes[i]));
    inputs.push_back(random_tensor(c.shapes[i], c.dtypes[i], rng, id_limit));
  }
  const ValueId out = g.add(c.op, in, c.attrs, c.label);
  g.mark_output(out);

  // Runs the one-node graph on `b` with fresh copies of the inputs (kv_store writes its
  // cache); returns the output in f64.
  auto run = [&](const std::shared_ptr<Backend>& b) {
    std::vector<Tensor> vals(g.values().size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      const bool state = c.op == OpKind::KvStore && i == 0;
      vals[size_t(in[i])] = state ? inputs[i].to(b->activation_dtype()) : inputs[i];
    }
    RunOptions ro;
    ro.poison = true;
    execute_on(g, b, vals, ro);
    return vals[size_t(out)].to(DType::F64);
  };
  const Tensor ref = run(make_reference_backend());
  const Tensor naive = run(make_naive_backend());
  const Tensor got = tier->name() == "naive" ? naive : run(tier);

  const int64_t n = ref.numel();
  const double* r = ref.ptr<const double>();
  double scale = 0;
  for (int64_t i = 0; i < n; ++i)
    if (std::isfinite(r[i])) scale = std::max(scale, std::abs(r[i]));
  if (scale == 0) scale = 1;
  auto error = [&](const Tensor& t, bool* unwritten) {
    double e = 0;
    const double* y = t.ptr<const double>();
    for (int64_t i = 0; i < n; ++i) {
      if (std::isnan(y[i]) && !std::isnan(r[i])) *unwritten = true;
      if (std::isinf(r[i])) {
        if (y[i] != r[i]) e = std::numeric_limits<double>::infinity();
        continue;
      }
      e = std::max(e, std::abs(y[i] - r[i]) / scale);
    }
    return e;
  };
  OpCheck chk;
  chk.label = c.label;
  chk.tier = tier->name();
  bool naive_unwritten = false;
  chk.naive_err = error(naive, &naive_unwritten);
  chk.err = error(got, &chk.unwritten);
  const double floor = 4.0 * double(std::numeric_limits<float>::epsilon());
  chk.tolerance = tier->name() == "naive" ? kNaiveF32Bound : 2.0 * chk.naive_err + floor;
  chk.pass = !chk.unwritten && chk.err <= chk.tolerance;
  return chk;
}

}  // namespace strand
