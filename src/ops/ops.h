// strand/ops/ops.h — THE op table.
//
// Every op strand knows is one row here: its name, arity, attributes, shape rule, flop and
// byte counts, and — for fused ops — its decomposition into primitive ops. The graph, the
// planner, the reference and every backend read this one table.
//
// Shapes below: T rows (tokens), C columns (channels), K inner dimension, N output columns,
// P past tokens in the KV cache, H heads, D = C / H head size.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace strand {

enum class OpKind : uint8_t {
  // primitives
  GatherRows,   // (table[V,C], ids[T] i32) -> [T,C]           rows of table picked by id
  Add,          // (a[M,N], b[M,N] or b[N]) -> [M,N]           b broadcast over rows when 1-D
  LayerNorm,    // (x[M,N], g[N], b[N]) -> [M,N]               attr eps
  MatMul,       // (a[M,K], b[K,N]) -> [M,N]; trans_b: b[N,K]
  Activation,   // (x) -> same shape                           attr act
  Scale,        // (x) -> x * attr scale
  CausalMask,   // (s[T,S]) -> s with s[i][j] = -inf where j > past + i
  Softmax,      // (x[M,N]) -> row-wise softmax
  SliceCols,    // (x[M,N]) -> x[:, start:start+len]
  SliceRows,    // (x[M,N]) -> x[start:start+len, :]
  ConcatCols,   // (x0[M,N0], x1[M,N1], ...) -> [M, N0+N1+...]
  KvStore,      // (cache[L,C], new[T,C]) -> cache rows [0, past+T) after writing new at row `past`
  // fused (each has a decomposition)
  Linear,       // (x[M,K], w[K,N], b[N]) -> x·w + b         = Add(MatMul(x, w), b)
  Attention,    // (q[S*T,C], k[S*(P+T),C], v[S*(P+T),C]) -> [S*T,C]   causal; attrs heads, past,
                //   seqs = S independent sequences stacked by rows (1 for inference)
  // training: the loss and the ops that gradients are made of (src/ops/vjp.cpp)
  MatMulAt,     // (a[K,M], b[K,N]; or b[N,K] with trans_b) -> aᵀ·b [M,N]   (weight gradients)
  CausalZero,   // (g[T,S]) -> g with 0 where j > past + i   (the gradient of CausalMask)
  PadCols,      // (x[M,n]) -> [M, len]: zeros, x at columns [start, start+n)   (of SliceCols)
  PadRows,      // (x[m,N]) -> [len, N]: zeros, x at rows [start, start+m)      (of SliceRows)
  SumRows,      // (x[M,N]) -> [N]: column sums                                 (of a row broadcast)
  BroadcastRows,  // (x[N]) -> [len, N]: x in every row                           (of SumRows)
  ScatterAddRows,  // (dy[T,C], ids[T] i32) -> [len, C]: zeros, row ids[t] += dy[t]  (of GatherRows)
  CrossEntropy,    // (logits[T,V], targets[T] i32) -> [1]: mean_t -log softmax(logits[t])[targets[t]]
  CrossEntropyBackward,  // (logits[T,V], targets[T], dloss[1]) -> [T,V]: (softmax - onehot) * dloss / T
  LayerNormBackward,     // (x[M,N], g[N], dy[M,N]) -> dx [M,N]                       attr eps
  LayerNormGainGrad,     // (x[M,N], dy[M,N]) -> [N]: column sums of dy · x̂ (x normalized)  attr eps
  ActivationBackward,    // (x, dy) -> dy · act'(x)                                   attr act
  SoftmaxBackward,       // (y[M,N], dy[M,N]) -> y · (dy - rowsum(dy · y)), y = softmax(x)
  AttentionBackward,     // (q, k, v, dy) as Attention -> [S*(P+T), 3C]: per sequence, its P+T key rows
                         //   hold [dq | dk | dv], dq in the last T rows (zeros above)
  kCount
};

enum class Act : uint8_t { GeluTanh, GeluErf, Relu, Silu, QuickGelu };
std::string_view act_name(Act a);
// Hugging Face activation_function names: gelu_new, gelu_pytorch_tanh, gelu, relu, silu, quick_gelu.
bool parse_hf_activation(std::string_view s, Act* out);

// The union of every op's attributes; each op reads the fields it documents.
struct Attrs {
  double eps = 1e-5;     // LayerNorm
  double scale = 1.0;    // Scale
  bool trans_b = false;  // MatMul
  Act act = Act::GeluTanh;
  int64_t start = 0;     // SliceCols, SliceRows
  int64_t len = 0;       // SliceCols, SliceRows
  int64_t past = 0;      // KvStore, CausalMask, Attention
  int64_t heads = 1;     // Attention
  int64_t seqs = 1;      // Attention: sequences stacked by rows, each attending only to itself
};

struct OpInfo;
class Graph;
using ValueId = int32_t;

// Shape rule: input shapes + attrs -> output shape. Throws strand::Error naming the op on mismatch.
using ShapeFn = Shape (*)(const std::vector<Shape>& in, const Attrs& a);
// Floating-point operations of one execution, from input shapes and the output shape.
using FlopFn = double (*)(const std::vector<Shape>& in, const Shape& out, const Attrs& a);
// Minimum bytes one execution must move: each input byte it needs read once, the output
// written once (in the given dtypes).
using ByteFn = double (*)(const std::vector<Shape>& in, const std::vector<DType>& in_dt,
                          const Shape& out, DType out_dt, const Attrs& a);
// Decomposition of a fused op: appends primitive nodes to `g` computing the op from `in`,
// returns the value holding the result.
using DecomposeFn = ValueId (*)(Graph& g, const std::vector<ValueId>& in, const Attrs& a,
                                const std::string& name);

struct Node;
// Vector-Jacobian product: for node `n` (a copy: appending may move the graph's nodes) whose
// output has gradient `dy` (same shape), appends the nodes that compute the gradient of each
// input and returns them, one per input; -1 for an input that takes no gradient (token ids,
// targets, the KV cache). Throws strand::Error for a case it cannot differentiate.
using VjpFn = std::vector<ValueId> (*)(Graph& g, const Node& n, ValueId dy);

struct OpInfo {
  OpKind kind;
  std::string_view name;
  int arity;           // -1: variadic (at least 1)
  bool fused;          // has a decomposition
  ShapeFn shape;
  FlopFn flops;
  ByteFn bytes;
  DecomposeFn decompose;  // null for primitives
  int aliases = -1;       // >= 0: the output is a view of this input (written in place)
  VjpFn vjp = nullptr;    // null: the op has no gradient (a backward op or the loss's gradient)
};

const OpInfo& op_info(OpKind k);
std::string_view op_name(OpKind k);

}  // namespace strand
