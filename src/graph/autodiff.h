// strand/graph/autodiff.h — gradients of a graph, built by the op table's rules.
//
// append_backward() walks the nodes between the values to differentiate and a scalar loss in
// reverse order and calls each op's vector-Jacobian product (OpInfo::vjp, src/ops/vjp.cpp),
// which appends ordinary nodes — matmul, matmul_at, sum_rows, layernorm_backward, ... — to the
// same graph. The backward pass is therefore placed, explained and run like any forward graph,
// on any tier that supports its ops. A value used by several nodes gets the sum of their
// gradients; pieces that only re-assemble a tensor (the slices of one qkv product, padded back
// to full width) are joined without arithmetic. Nodes no output needs are left in the graph:
// Graph::pruned() removes them.
#pragma once

#include <map>
#include <vector>

#include "graph/graph.h"

namespace strand {

struct Backward {
  ValueId seed = -1;                // input [1]: d(objective)/d(loss); bind 1 (or a loss scale)
  std::map<ValueId, ValueId> grad;  // every requested value -> the value holding its gradient
};

// Appends the gradient of `loss` (shape [1]) with respect to each of `wrt` (weights or inputs)
// and marks each gradient as a graph output. Throws strand::Error naming the value when one of
// `wrt` does not influence the loss, or naming the node when an op cannot be differentiated.
Backward append_backward(Graph& g, ValueId loss, const std::vector<ValueId>& wrt);

}  // namespace strand
