#include "graph/autodiff.h"

#include <algorithm>
#include <set>

#include "core/error.h"

namespace strand {

namespace {

// The value `v` was made by node `op`: its producing node, or nullptr.
const Node* made_by(const Graph& g, ValueId v, OpKind op) {
  const NodeId p = g.value(v).producer;
  if (p < 0 || g.node(p).op != op) return nullptr;
  return &g.node(p);
}

// If every contribution is pad_cols(piece) and the pieces tile the full width side by side,
// the sum is just the pieces put next to each other: returns them in column order, else {}.
std::vector<ValueId> tiling_pieces(const Graph& g, const std::vector<ValueId>& parts, int64_t width) {
  std::vector<std::pair<int64_t, ValueId>> at;
  for (ValueId c : parts) {
    const Node* pad = made_by(g, c, OpKind::PadCols);
    if (!pad) return {};
    at.push_back({pad->attrs.start, pad->inputs[0]});
  }
  std::sort(at.begin(), at.end());
  int64_t next = 0;
  std::vector<ValueId> pieces;
  for (const auto& [start, piece] : at) {
    if (start != next) return {};
    next += g.value(piece).shape[1];
    pieces.push_back(piece);
  }
  if (next != width) return {};
  return pieces;
}

// If the pieces are slice_cols of one value taken in order and covering all of it, that value.
ValueId whole_of_slices(const Graph& g, const std::vector<ValueId>& pieces) {
  ValueId src = -1;
  int64_t next = 0;
  for (ValueId p : pieces) {
    const Node* sl = made_by(g, p, OpKind::SliceCols);
    if (!sl || sl->attrs.start != next || (src >= 0 && sl->inputs[0] != src)) return -1;
    src = sl->inputs[0];
    next += sl->attrs.len;
  }
  if (src < 0 || g.value(src).shape[0] != g.value(pieces.front()).shape[0] || next != g.value(src).shape[1]) return -1;
  return src;
}

// One gradient from several contributions.
ValueId sum_of(Graph& g, ValueId v, const std::vector<ValueId>& parts) {
  if (parts.size() == 1) return parts.front();
  const Shape& s = g.value(v).shape;
  if (s.size() == 2) {
    const std::vector<ValueId> pieces = tiling_pieces(g, parts, s[1]);
    if (!pieces.empty()) {
      const ValueId whole = whole_of_slices(g, pieces);
      if (whole >= 0) return whole;
      return g.add(OpKind::ConcatCols, pieces, {}, g.value(v).name + ".grad");
    }
  }
  ValueId acc = parts.front();
  for (size_t i = 1; i < parts.size(); ++i)
    acc = g.add(OpKind::Add, {acc, parts[i]}, {}, g.value(v).name + ".grad.sum" + std::to_string(i));
  return acc;
}

}  // namespace

Backward append_backward(Graph& g, ValueId loss, const std::vector<ValueId>& wrt) {
  if (loss < 0 || size_t(loss) >= g.values().size()) fail("append_backward: loss value %{} does not exist", loss);
  if (g.value(loss).shape != Shape{1})
    fail("append_backward: the loss {} must have shape [1], has {}", g.value(loss).name, shape_str(g.value(loss).shape));
  // Nodes that depend on some value in wrt: only their gradients are worth computing.
  std::set<ValueId> depends(wrt.begin(), wrt.end());
  const NodeId forward_nodes = NodeId(g.nodes().size());
  for (NodeId n = 0; n < forward_nodes; ++n)
    for (ValueId in : g.node(n).inputs)
      if (depends.count(in)) {
        depends.insert(g.node(n).output);
        break;
      }

  Backward b;
  b.seed = g.input(g.value(loss).name + ".grad_seed", {1}, DType::F32);
  std::map<ValueId, std::vector<ValueId>> parts;
  parts[loss].push_back(b.seed);
  for (NodeId n = forward_nodes - 1; n >= 0; --n) {
    const Node nd = g.node(n);  // a copy: vjp appends nodes
    const auto it = parts.find(nd.output);
    if (it == parts.end() || !depends.count(nd.output)) continue;
    const OpInfo& info = op_info(nd.op);
    if (!info.vjp) fail("node {}: {} has no gradient rule", nd.name, info.name);
    const ValueId dy = sum_of(g, nd.output, it->second);
    const std::vector<ValueId> grads = info.vjp(g, nd, dy);
    if (grads.size() != nd.inputs.size())
      fail("internal: the gradient rule of {} returned {} gradients for {} inputs", info.name, grads.size(), nd.inputs.size());
    for (size_t i = 0; i < grads.size(); ++i)
      if (grads[i] >= 0 && depends.count(nd.inputs[i])) parts[nd.inputs[i]].push_back(grads[i]);
  }
  for (ValueId v : wrt) {
    const auto it = parts.find(v);
    if (it == parts.end()) fail("append_backward: {} does not influence the loss {}", g.value(v).name, g.value(loss).name);
    const ValueId gv = sum_of(g, v, it->second);
    b.grad[v] = gv;
    g.mark_output(gv);
  }
  return b;
}

}  // namespace strand
