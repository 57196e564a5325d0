// strand/graph/graph.h — a static op graph.
//
// Values are tensors with a fixed shape and dtype; nodes apply one op (from the op table)
// to values and produce one new value. Inputs (token ids), weights (bound to the loaded
// model) and state (the KV cache) are values without a producer. Nodes are appended in a
// valid execution order, so the node list is already topological.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "ops/ops.h"

namespace strand {

using NodeId = int32_t;

enum class ValueKind : uint8_t { Input, Weight, State, Intermediate };

struct Value {
  std::string name;
  Shape shape;
  DType dtype = DType::F32;
  ValueKind kind = ValueKind::Intermediate;
  NodeId producer = -1;  // -1 for inputs, weights and state
};

struct Node {
  OpKind op;
  std::vector<ValueId> inputs;
  ValueId output = -1;
  Attrs attrs;
  std::string name;  // e.g. "h.3.attn"
};

class Graph {
 public:
  ValueId input(const std::string& name, const Shape& shape, DType dtype);
  ValueId weight(const std::string& name, const Shape& shape, DType dtype);
  ValueId state(const std::string& name, const Shape& shape, DType dtype);

  // Appends a node; checks arity and runs the op's shape rule (throws strand::Error naming
  // the node on a mismatch). Intermediates are f32.
  ValueId add(OpKind op, std::vector<ValueId> inputs, const Attrs& attrs, const std::string& name);

  void mark_output(ValueId v) { outputs_.push_back(v); }

  const std::vector<Value>& values() const { return values_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  // Whether any node is `op` (e.g. CrossEntropy: the graph is a training or evaluation step).
  bool has_op(OpKind op) const {
    for (const Node& n : nodes_)
      if (n.op == op) return true;
    return false;
  }
  const std::vector<ValueId>& outputs() const { return outputs_; }
  const Value& value(ValueId v) const { return values_[size_t(v)]; }
  const Node& node(NodeId n) const { return nodes_[size_t(n)]; }

  double node_flops(NodeId n) const;
  double node_bytes(NodeId n) const;
  double total_flops() const;

  // A new graph in which every fused node is replaced by its decomposition (recursively);
  // inputs, weights, state and outputs keep their ids.
  Graph decomposed() const;

  // A new graph without the nodes that no output needs (and no state write needs): what
  // autodiff appended for gradients nobody asked for. Value ids stay valid; values left without
  // a producer are unused.
  Graph pruned() const;

  // One line per node: "%12 = matmul(%3, %7) [64, 768] f32  # h.0.attn.qkv".
  std::string dump() const;

 private:
  ValueId new_value(Value v);
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<ValueId> outputs_;
};

}  // namespace strand
