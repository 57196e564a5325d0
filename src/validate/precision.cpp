// strand/validate/precision.cpp — the naive tier at a declared precision, and rounded inputs.
#include "validate/precision.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include "backends/naive/naive.h"
#include "core/error.h"
#include "core/rounding.h"
#include "reference/kernels.h"

namespace strand {

namespace {

class PrecisionNaive final : public Backend {
 public:
  explicit PrecisionNaive(PrecisionOf of) : of_(std::move(of)) {}

  std::string name() const override { return "naive"; }
  std::string description() const override { return "naive f32 loops at the precision a tier declares (validate's bar)"; }
  Verdict probe() const override { return Verdict::yes(); }
  Verdict supports(const Graph& g, const Node& n) const override { return naive_->supports(g, n); }

  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    for (NodeId id : nodes) {
      const Node& nd = g.node(id);
      const Precision p = of_(g, nd);
      if (p.exact()) {
        naive_->run(g, std::span<const NodeId>(&id, 1), values);
        continue;
      }
      // The node's inputs rounded as declared, in place of the originals for this one node.
      std::vector<std::pair<ValueId, Tensor>> saved;
      for (size_t i = 0; i < nd.inputs.size(); ++i) {
        const Rounding r = p.input(i);
        if (r == Rounding::None) continue;
        const ValueId v = nd.inputs[i];
        if (std::any_of(saved.begin(), saved.end(), [&](const auto& s) { return s.first == v; }))
          fail("validate: node {} reads one value twice with two roundings", nd.name);
        saved.emplace_back(v, values[size_t(v)]);
        values[size_t(v)] = round_to_f64(values[size_t(v)], r).to(DType::F32);
      }
      try {
        if (nd.op == OpKind::Attention && p.attention_probs != Rounding::None)
          attention(nd, values, p.attention_probs);
        else
          naive_->run(g, std::span<const NodeId>(&id, 1), values);
      } catch (...) {
        for (auto& [v, t] : saved) values[size_t(v)] = t;
        throw;
      }
      for (auto& [v, t] : saved) values[size_t(v)] = t;
    }
  }

 private:
  // The naive attention (reference/kernels.h in f32) with each weight rounded before P·V.
  static void attention(const Node& nd, std::vector<Tensor>& values, Rounding r) {
    auto in = [&](size_t i) {
      const Tensor& t = values[size_t(nd.inputs[i])];
      return t.dtype == DType::F32 && t.contiguous() ? t : t.to(DType::F32);
    };
    const Tensor q = in(0), k = in(1), v = in(2);
    Tensor& out = values[size_t(nd.output)];
    if (out.dtype != DType::F32 || !out.contiguous()) fail("validate: node {}: the output must be contiguous f32", nd.name);
    std::vector<float> scores(size_t(k.dim(0)));
    kernels::attention(q.ptr<const float>(), k.ptr<const float>(), v.ptr<const float>(), q.dim(0), q.dim(1),
                       nd.attrs.heads, nd.attrs.past, scores.data(), out.ptr<float>(),
                       [r](float w) { return round_value(w, r); });
  }

  PrecisionOf of_;
  std::unique_ptr<Backend> naive_ = make_naive_backend();
};

}  // namespace

std::unique_ptr<Backend> make_precision_naive(PrecisionOf precision_of) {
  return std::make_unique<PrecisionNaive>(std::move(precision_of));
}

std::unique_ptr<Backend> make_precision_naive(const std::shared_ptr<Backend>& tier) {
  return make_precision_naive([tier](const Graph& g, const Node& n) {
    return tier->supports(g, n).ok ? tier->precision(g, n) : Precision{};
  });
}

std::vector<Tensor> rounded_inputs(const std::vector<Tensor>& inputs, const Precision& p) {
  std::vector<Tensor> out = inputs;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (p.input(i) != Rounding::None) out[i] = round_to_f64(inputs[i], p.input(i));
  return out;
}

std::vector<std::string> input_names(OpKind op, size_t n) {
  std::vector<std::string> v;
  switch (op) {
    case OpKind::MatMul:
    case OpKind::MatMulAt: v = {"a", "b"}; break;
    case OpKind::Linear: v = {"x", "w", "bias"}; break;
    case OpKind::Attention: v = {"q", "k", "v"}; break;
    default: break;
  }
  if (v.empty() && n == 1) v = {"x"};
  for (size_t i = v.size(); i < n; ++i) v.push_back("in" + std::to_string(i));
  return v;
}

std::string plan_precision(const Graph& g, const Plan& plan, const Backend& tier) {
  std::vector<std::pair<std::string, std::string>> seen;  // op, summary
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    if (plan.placement[size_t(n)].tier != 0) continue;
    const Node& nd = g.node(n);
    const Precision p = tier.precision(g, nd);
    if (p.exact()) continue;
    const std::string op(op_name(nd.op));
    const std::string sum = p.summary(input_names(nd.op, nd.inputs.size()));
    if (std::none_of(seen.begin(), seen.end(), [&](const auto& x) { return x.first == op && x.second == sum; }))
      seen.push_back({op, sum});
  }
  std::string s;
  for (const auto& [op, sum] : seen) {
    if (!s.empty()) s += "; ";
    s += fmt::format("{}: {}", op, sum);
  }
  return s;
}

}  // namespace strand
