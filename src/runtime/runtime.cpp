#include "runtime/runtime.h"

#include <chrono>

#include "core/error.h"

namespace strand {

RunStats execute(const Graph& g, const Plan& plan, std::vector<Tensor>& values, const RunOptions& opt) {
  if (values.size() != g.values().size())
    fail("internal: {} bound values for a graph of {}", values.size(), g.values().size());
  for (ValueId v = 0; v < ValueId(g.values().size()); ++v) {
    const Value& val = g.value(v);
    if (val.producer >= 0) continue;
    if (val.kind == ValueKind::Intermediate) continue;  // left over by a decomposition
    const Tensor& t = values[size_t(v)];
    if (!t.defined()) fail("value {} ({}) is not bound", v, val.name);
    if (t.shape != val.shape)
      fail("value {} ({}) is bound to a tensor of shape {}, the graph expects {}", v, val.name, shape_str(t.shape),
           shape_str(val.shape));
  }
  // Allocate outputs.
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const Node& nd = g.node(n);
    const Value& ov = g.value(nd.output);
    const OpInfo& info = op_info(nd.op);
    if (info.aliases >= 0) {
      const Tensor& src = values[size_t(nd.inputs[size_t(info.aliases)])];
      if (!src.contiguous() || src.numel() < numel(ov.shape))
        fail("node {}: cannot write in place into its input", nd.name);
      values[size_t(nd.output)] = Tensor::view_of(src.data, src.dtype, ov.shape, src.owner);
      continue;
    }
    const DType dt = plan.chain[size_t(plan.placement[size_t(n)].tier)]->activation_dtype();
    values[size_t(nd.output)] = Tensor::empty(ov.shape, dt);
    if (opt.poison) values[size_t(nd.output)].poison();
  }
  RunStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  for (const Segment& seg : plan.segments) {
    const auto s0 = std::chrono::steady_clock::now();
    Backend& b = *plan.chain[size_t(seg.tier)];
    b.run(g, seg.nodes, values);
    b.sync();
    stats.segment_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count());
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

RunStats execute_on(const Graph& g, const std::shared_ptr<Backend>& tier, std::vector<Tensor>& values,
                    const RunOptions& opt) {
  const Plan plan = make_plan(g, {tier}, false);
  return execute(g, plan, values, opt);
}

}  // namespace strand
