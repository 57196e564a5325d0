// strand/ops/vjp.h — the gradient rule of every differentiable op (rows of the op table).
//
// Each function is the op's VjpFn (ops.h): it appends to the graph the nodes that turn the
// gradient of the op's output into the gradient of each input, using other rows of the table
// (matmul, matmul_at, sum_rows, ...) or backward ops of their own (layernorm_backward,
// attention_backward, ...), each of which has a float64 reference like any op. graph/autodiff.h
// walks a graph backwards calling these.
#pragma once

#include <vector>

#include "graph/graph.h"

namespace strand::vjp {

std::vector<ValueId> gather_rows(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> add(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> layernorm(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> matmul(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> activation(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> scale(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> causal_mask(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> softmax(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> slice_cols(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> slice_rows(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> concat_cols(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> kv_store(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> linear(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> attention(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> matmul_at(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> causal_zero(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> pad_cols(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> pad_rows(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> sum_rows(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> broadcast_rows(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> scatter_add_rows(Graph& g, const Node& n, ValueId dy);
std::vector<ValueId> cross_entropy(Graph& g, const Node& n, ValueId dy);

}  // namespace strand::vjp
