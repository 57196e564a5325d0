#include "graph/graph.h"

#include <fmt/format.h>

#include "core/error.h"

namespace strand {

ValueId Graph::new_value(Value v) {
  values_.push_back(std::move(v));
  return ValueId(values_.size() - 1);
}

ValueId Graph::input(const std::string& name, const Shape& shape, DType dtype) {
  return new_value({name, shape, dtype, ValueKind::Input, -1});
}
ValueId Graph::weight(const std::string& name, const Shape& shape, DType dtype) {
  return new_value({name, shape, dtype, ValueKind::Weight, -1});
}
ValueId Graph::state(const std::string& name, const Shape& shape, DType dtype) {
  return new_value({name, shape, dtype, ValueKind::State, -1});
}

ValueId Graph::add(OpKind op, std::vector<ValueId> inputs, const Attrs& attrs, const std::string& name) {
  const OpInfo& info = op_info(op);
  if (info.arity >= 0 ? int(inputs.size()) != info.arity : inputs.empty())
    fail("node {} ({}): takes {} inputs, got {}", name, info.name, info.arity, inputs.size());
  std::vector<Shape> shapes;
  for (ValueId v : inputs) {
    if (v < 0 || size_t(v) >= values_.size()) fail("node {} ({}): input %{} does not exist", name, info.name, v);
    shapes.push_back(values_[size_t(v)].shape);
  }
  Shape out;
  try {
    out = info.shape(shapes, attrs);
  } catch (const Error& e) {
    fail("node {}: {}", name, e.what());
  }
  const NodeId id = NodeId(nodes_.size());
  const ValueId o = new_value({name, out, DType::F32, ValueKind::Intermediate, id});
  nodes_.push_back({op, std::move(inputs), o, attrs, name});
  return o;
}

double Graph::node_flops(NodeId n) const {
  const Node& nd = node(n);
  std::vector<Shape> in;
  for (ValueId v : nd.inputs) in.push_back(value(v).shape);
  return op_info(nd.op).flops(in, value(nd.output).shape, nd.attrs);
}

double Graph::node_bytes(NodeId n) const {
  const Node& nd = node(n);
  std::vector<Shape> in;
  std::vector<DType> dt;
  for (ValueId v : nd.inputs) {
    in.push_back(value(v).shape);
    dt.push_back(value(v).dtype);
  }
  const Value& o = value(nd.output);
  return op_info(nd.op).bytes(in, dt, o.shape, o.dtype, nd.attrs);
}

double Graph::total_flops() const {
  double f = 0;
  for (NodeId n = 0; n < NodeId(nodes_.size()); ++n) f += node_flops(n);
  return f;
}

Graph Graph::decomposed() const {
  Graph g;
  g.values_ = values_;  // every id stays valid; a fused node's output is re-produced below
  g.outputs_ = outputs_;
  for (const Node& nd : nodes_) {
    const OpInfo& info = op_info(nd.op);
    if (!info.fused) {
      g.values_[size_t(nd.output)].producer = NodeId(g.nodes_.size());
      g.nodes_.push_back(nd);
      continue;
    }
    const size_t first = g.nodes_.size();
    info.decompose(g, nd.inputs, nd.attrs, nd.name);
    if (g.nodes_.size() == first) fail("internal: decomposition of {} added no node", nd.name);
    // Make the decomposition's last node write the fused node's output value.
    Node& last = g.nodes_.back();
    g.values_[size_t(last.output)].producer = -1;  // the value it made is left unused
    last.output = nd.output;
    g.values_[size_t(nd.output)].producer = NodeId(g.nodes_.size() - 1);
  }
  // Decompositions may themselves contain fused ops: expand until none is left.
  for (const Node& nd : g.nodes_)
    if (op_info(nd.op).fused) return g.decomposed();
  return g;
}

Graph Graph::pruned() const {
  std::vector<bool> live_value(values_.size(), false), live_node(nodes_.size(), false);
  for (ValueId v : outputs_) live_value[size_t(v)] = true;
  for (NodeId n = NodeId(nodes_.size()) - 1; n >= 0; --n) {
    const Node& nd = nodes_[size_t(n)];
    const OpInfo& info = op_info(nd.op);
    // A node writing into state (the KV cache) is kept for its side effect.
    const bool writes_state = info.aliases >= 0 && values_[size_t(nd.inputs[size_t(info.aliases)])].kind == ValueKind::State;
    if (!live_value[size_t(nd.output)] && !writes_state) continue;
    live_node[size_t(n)] = true;
    for (ValueId v : nd.inputs) live_value[size_t(v)] = true;
  }
  Graph g;
  g.values_ = values_;
  g.outputs_ = outputs_;
  for (NodeId n = 0; n < NodeId(nodes_.size()); ++n) {
    const Node& nd = nodes_[size_t(n)];
    if (!live_node[size_t(n)]) {
      g.values_[size_t(nd.output)].producer = -1;
      continue;
    }
    g.values_[size_t(nd.output)].producer = NodeId(g.nodes_.size());
    g.nodes_.push_back(nd);
  }
  return g;
}

std::string Graph::dump() const {
  std::string s;
  for (const Node& nd : nodes_) {
    const Value& o = value(nd.output);
    std::string args;
    for (ValueId v : nd.inputs) args += fmt::format("{}%{}", args.empty() ? "" : ", ", v);
    s += fmt::format("%{} = {}({}) {} {}  # {}\n", nd.output, op_name(nd.op), args, shape_str(o.shape),
                     dtype_name(o.dtype), nd.name);
  }
  return s;
}

}  // namespace strand
