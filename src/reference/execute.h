// strand/reference/execute.h — run one graph node with the plain-loop kernels in type T.
//
// Shared by the float64 reference (T = double) and the naive tier (T = float). Inputs held in
// another dtype (f16/bf16 weights, f32 inputs to the reference) are widened to T first.
#pragma once

#include <vector>

#include "graph/graph.h"

namespace strand {

template <class T>
void execute_node(const Graph& g, const Node& nd, std::vector<Tensor>& values);

extern template void execute_node<float>(const Graph&, const Node&, std::vector<Tensor>&);
extern template void execute_node<double>(const Graph&, const Node&, std::vector<Tensor>&);

}  // namespace strand
