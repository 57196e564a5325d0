#include "ops/vjp.h"

#include <algorithm>

#include "core/error.h"

namespace strand::vjp {

namespace {

const Shape& shape_of(const Graph& g, ValueId v) { return g.value(v).shape; }

Attrs slice_attrs(int64_t start, int64_t len) {
  Attrs a;
  a.start = start;
  a.len = len;
  return a;
}

ValueId op(Graph& g, OpKind k, std::vector<ValueId> in, const Attrs& a, const Node& n, const std::string& what) {
  return g.add(k, std::move(in), a, n.name + ".grad." + what);
}

}  // namespace

// y = table[ids]: every row of dy is added into the table row it came from.
std::vector<ValueId> gather_rows(Graph& g, const Node& n, ValueId dy) {
  Attrs a;
  a.len = shape_of(g, n.inputs[0])[0];
  return {op(g, OpKind::ScatterAddRows, {dy, n.inputs[1]}, a, n, "table"), -1};
}

// y = a + b (b broadcast over rows when it is one row).
std::vector<ValueId> add(Graph& g, const Node& n, ValueId dy) {
  const bool row = shape_of(g, n.inputs[1]).size() == 1;
  return {dy, row ? op(g, OpKind::SumRows, {dy}, {}, n, "b") : dy};
}

// y = (x - mean) / sqrt(var + eps) * gain + bias, per row.
std::vector<ValueId> layernorm(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::LayerNormBackward, {n.inputs[0], n.inputs[1], dy}, n.attrs, n, "x"),
          op(g, OpKind::LayerNormGainGrad, {n.inputs[0], dy}, n.attrs, n, "gain"),
          op(g, OpKind::SumRows, {dy}, {}, n, "bias")};
}

// y = a·b [M,N] with b [K,N], or a·bᵀ with b [N,K] (trans_b).
//   da = dy·bᵀ (or dy·b),  db = aᵀ·dy [K,N] (or dyᵀ·a [N,K]).
std::vector<ValueId> matmul(Graph& g, const Node& n, ValueId dy) {
  const ValueId a = n.inputs[0], b = n.inputs[1];
  Attrs tb;
  tb.trans_b = !n.attrs.trans_b;
  const ValueId da = op(g, OpKind::MatMul, {dy, b}, tb, n, "a");
  const ValueId db = n.attrs.trans_b ? op(g, OpKind::MatMulAt, {dy, a}, {}, n, "b")
                                     : op(g, OpKind::MatMulAt, {a, dy}, {}, n, "b");
  return {da, db};
}

// y = act(x).
std::vector<ValueId> activation(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::ActivationBackward, {n.inputs[0], dy}, n.attrs, n, "x")};
}

// y = x * s.
std::vector<ValueId> scale(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::Scale, {dy}, n.attrs, n, "x")};
}

// y = x with -inf in the future: no gradient flows through the masked entries.
std::vector<ValueId> causal_mask(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::CausalZero, {dy}, n.attrs, n, "x")};
}

// y = softmax(x) per row: dx = y · (dy - rowsum(dy · y)), from the output y.
std::vector<ValueId> softmax(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::SoftmaxBackward, {n.output, dy}, {}, n, "x")};
}

std::vector<ValueId> slice_cols(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::PadCols, {dy}, slice_attrs(n.attrs.start, shape_of(g, n.inputs[0])[1]), n, "x")};
}

std::vector<ValueId> slice_rows(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::PadRows, {dy}, slice_attrs(n.attrs.start, shape_of(g, n.inputs[0])[0]), n, "x")};
}

std::vector<ValueId> concat_cols(Graph& g, const Node& n, ValueId dy) {
  std::vector<ValueId> out;
  int64_t off = 0;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    const int64_t w = shape_of(g, n.inputs[i])[1];
    out.push_back(op(g, OpKind::SliceCols, {dy}, slice_attrs(off, w), n, "part" + std::to_string(i)));
    off += w;
  }
  return out;
}

// y = the cache's first past + T rows after the T new rows were written at row `past`: the new
// rows get their part of dy; the cache's old contents are state, not differentiated.
std::vector<ValueId> kv_store(Graph& g, const Node& n, ValueId dy) {
  const int64_t t = shape_of(g, n.inputs[1])[0];
  return {-1, op(g, OpKind::SliceRows, {dy}, slice_attrs(n.attrs.past, t), n, "new")};
}

// y = x·w + b.
std::vector<ValueId> linear(Graph& g, const Node& n, ValueId dy) {
  Attrs tb;
  tb.trans_b = true;
  return {op(g, OpKind::MatMul, {dy, n.inputs[1]}, tb, n, "x"),
          op(g, OpKind::MatMulAt, {n.inputs[0], dy}, {}, n, "w"),
          op(g, OpKind::SumRows, {dy}, {}, n, "b")};
}

// One attention_backward gives [dq | dk | dv] side by side (see ops.h); they are sliced out.
std::vector<ValueId> attention(Graph& g, const Node& n, ValueId dy) {
  const int64_t c = shape_of(g, n.inputs[0])[1];
  const int64_t t = shape_of(g, n.inputs[0])[0] / std::max<int64_t>(1, n.attrs.seqs);
  if (n.attrs.past > 0 && n.attrs.seqs > 1)
    fail("node {}: no gradient for several sequences attending over a KV cache (past {})", n.name, n.attrs.past);
  const ValueId packed = op(g, OpKind::AttentionBackward, {n.inputs[0], n.inputs[1], n.inputs[2], dy}, n.attrs, n, "qkv");
  ValueId dq = op(g, OpKind::SliceCols, {packed}, slice_attrs(0, c), n, "q");
  if (n.attrs.past > 0) dq = op(g, OpKind::SliceRows, {dq}, slice_attrs(n.attrs.past, t), n, "q.rows");
  return {dq, op(g, OpKind::SliceCols, {packed}, slice_attrs(c, c), n, "k"),
          op(g, OpKind::SliceCols, {packed}, slice_attrs(2 * c, c), n, "v")};
}

// y = aᵀ·b [M,N] with a [K,M], b [K,N] (or bᵀ with b [N,K]).
//   da = b·dyᵀ [K,M] (or bᵀ·dyᵀ),  db = a·dy [K,N] (or dyᵀ·aᵀ [N,K]).
std::vector<ValueId> matmul_at(Graph& g, const Node& n, ValueId dy) {
  const ValueId a = n.inputs[0], b = n.inputs[1];
  Attrs tb;
  tb.trans_b = true;
  if (!n.attrs.trans_b)
    return {op(g, OpKind::MatMul, {b, dy}, tb, n, "a"), op(g, OpKind::MatMul, {a, dy}, {}, n, "b")};
  return {op(g, OpKind::MatMulAt, {b, dy}, tb, n, "a"), op(g, OpKind::MatMulAt, {dy, a}, tb, n, "b")};
}

std::vector<ValueId> causal_zero(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::CausalZero, {dy}, n.attrs, n, "x")};
}

std::vector<ValueId> pad_cols(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::SliceCols, {dy}, slice_attrs(n.attrs.start, shape_of(g, n.inputs[0])[1]), n, "x")};
}

std::vector<ValueId> pad_rows(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::SliceRows, {dy}, slice_attrs(n.attrs.start, shape_of(g, n.inputs[0])[0]), n, "x")};
}

// y = column sums of x [M, N]: every row of x gets dy.
std::vector<ValueId> sum_rows(Graph& g, const Node& n, ValueId dy) {
  Attrs a;
  a.len = shape_of(g, n.inputs[0])[0];
  return {op(g, OpKind::BroadcastRows, {dy}, a, n, "x")};
}

std::vector<ValueId> broadcast_rows(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::SumRows, {dy}, {}, n, "x")};
}

std::vector<ValueId> scatter_add_rows(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::GatherRows, {dy, n.inputs[1]}, {}, n, "dy"), -1};
}

std::vector<ValueId> cross_entropy(Graph& g, const Node& n, ValueId dy) {
  return {op(g, OpKind::CrossEntropyBackward, {n.inputs[0], n.inputs[1], dy}, {}, n, "logits"), -1};
}

}  // namespace strand::vjp
