#include "ops/ops.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/error.h"
#include "graph/graph.h"
#include "ops/vjp.h"

namespace strand {

std::string_view act_name(Act a) {
  switch (a) {
    case Act::GeluTanh: return "gelu_tanh";
    case Act::GeluErf: return "gelu_erf";
    case Act::Relu: return "relu";
    case Act::Silu: return "silu";
    case Act::QuickGelu: return "quick_gelu";
  }
  return "?";
}

bool parse_hf_activation(std::string_view s, Act* out) {
  if (s == "gelu_new" || s == "gelu_pytorch_tanh" || s == "gelu_fast") *out = Act::GeluTanh;
  else if (s == "gelu") *out = Act::GeluErf;
  else if (s == "relu") *out = Act::Relu;
  else if (s == "silu" || s == "swish") *out = Act::Silu;
  else if (s == "quick_gelu") *out = Act::QuickGelu;
  else return false;
  return true;
}

namespace {

// ---- shape rules ---------------------------------------------------------------------------

void need_rank(const char* op, const Shape& s, size_t rank, const char* what) {
  if (s.size() != rank) fail("{}: {} must have rank {}, got {}", op, what, rank, shape_str(s));
}

Shape shape_gather(const std::vector<Shape>& in, const Attrs&) {
  need_rank("gather_rows", in[0], 2, "table");
  need_rank("gather_rows", in[1], 1, "ids");
  return {in[1][0], in[0][1]};
}

Shape shape_add(const std::vector<Shape>& in, const Attrs&) {
  need_rank("add", in[0], 2, "a");
  const bool same = in[1] == in[0];
  const bool row = in[1].size() == 1 && in[1][0] == in[0][1];
  if (!same && !row)
    fail("add: b {} must equal a {} or be one row of {}", shape_str(in[1]), shape_str(in[0]), in[0][1]);
  return in[0];
}

Shape shape_layernorm(const std::vector<Shape>& in, const Attrs&) {
  need_rank("layernorm", in[0], 2, "x");
  for (int i = 1; i <= 2; ++i)
    if (in[size_t(i)] != Shape{in[0][1]})
      fail("layernorm: {} {} must be [{}]", i == 1 ? "gain" : "bias", shape_str(in[size_t(i)]), in[0][1]);
  return in[0];
}

Shape shape_matmul(const std::vector<Shape>& in, const Attrs& a) {
  need_rank("matmul", in[0], 2, "a");
  need_rank("matmul", in[1], 2, "b");
  const int64_t k_b = a.trans_b ? in[1][1] : in[1][0];
  const int64_t n = a.trans_b ? in[1][0] : in[1][1];
  if (in[0][1] != k_b)
    fail("matmul: inner sizes differ: a {} · b{} {}", shape_str(in[0]), a.trans_b ? "ᵀ" : "", shape_str(in[1]));
  return {in[0][0], n};
}

Shape shape_same(const std::vector<Shape>& in, const Attrs&) { return in[0]; }

Shape shape_rows2(const std::vector<Shape>& in, const Attrs&) {
  need_rank("row op", in[0], 2, "x");
  return in[0];
}

Shape shape_mask(const std::vector<Shape>& in, const Attrs& a) {
  need_rank("causal_mask", in[0], 2, "scores");
  if (a.past < 0 || a.past + in[0][0] != in[0][1])
    fail("causal_mask: scores {} need past + rows == columns (past = {})", shape_str(in[0]), a.past);
  return in[0];
}

Shape shape_slice(const std::vector<Shape>& in, const Attrs& a) {
  need_rank("slice_cols", in[0], 2, "x");
  if (a.start < 0 || a.len < 0 || a.start + a.len > in[0][1])
    fail("slice_cols: columns [{}, {}) outside {}", a.start, a.start + a.len, shape_str(in[0]));
  return {in[0][0], a.len};
}

Shape shape_slice_rows(const std::vector<Shape>& in, const Attrs& a) {
  need_rank("slice_rows", in[0], 2, "x");
  if (a.start < 0 || a.len < 0 || a.start + a.len > in[0][0])
    fail("slice_rows: rows [{}, {}) outside {}", a.start, a.start + a.len, shape_str(in[0]));
  return {a.len, in[0][1]};
}

Shape shape_concat(const std::vector<Shape>& in, const Attrs&) {
  int64_t cols = 0;
  for (const Shape& s : in) {
    need_rank("concat_cols", s, 2, "part");
    if (s[0] != in[0][0]) fail("concat_cols: row counts differ: {} vs {}", shape_str(s), shape_str(in[0]));
    cols += s[1];
  }
  return {in[0][0], cols};
}

Shape shape_kvstore(const std::vector<Shape>& in, const Attrs& a) {
  need_rank("kv_store", in[0], 2, "cache");
  need_rank("kv_store", in[1], 2, "new rows");
  if (in[0][1] != in[1][1]) fail("kv_store: cache {} and new rows {} differ in width", shape_str(in[0]), shape_str(in[1]));
  if (a.past < 0 || a.past + in[1][0] > in[0][0])
    fail("kv_store: {} past + {} new rows exceed the cache's {} rows", a.past, in[1][0], in[0][0]);
  return {a.past + in[1][0], in[0][1]};
}

Shape shape_linear(const std::vector<Shape>& in, const Attrs& a) {
  Attrs m;
  Shape y = shape_matmul({in[0], in[1]}, m);
  if (in[2] != Shape{y[1]}) fail("linear: bias {} must be [{}]", shape_str(in[2]), y[1]);
  return y;
}

Shape shape_attention(const std::vector<Shape>& in, const Attrs& a) {
  for (int i = 0; i < 3; ++i) need_rank("attention", in[size_t(i)], 2, i == 0 ? "q" : i == 1 ? "k" : "v");
  const int64_t c = in[0][1];
  if (a.seqs <= 0 || in[0][0] % a.seqs != 0)
    fail("attention: {} query rows do not split into {} sequences", in[0][0], a.seqs);
  const int64_t t = in[0][0] / a.seqs;
  if (a.heads <= 0 || c % a.heads != 0) fail("attention: {} channels not divisible by {} heads", c, a.heads);
  if (in[1] != in[2]) fail("attention: k {} and v {} differ", shape_str(in[1]), shape_str(in[2]));
  if (in[1][1] != c) fail("attention: q {} and k {} differ in width", shape_str(in[0]), shape_str(in[1]));
  if (a.past < 0 || in[1][0] != a.seqs * (a.past + t))
    fail("attention: k has {} rows, expected {} sequence(s) of past {} + {} queries", in[1][0], a.seqs, a.past, t);
  return in[0];
}

// ---- training ops --------------------------------------------------------------------------

Shape shape_matmul_at(const std::vector<Shape>& in, const Attrs& a) {
  need_rank("matmul_at", in[0], 2, "a");
  need_rank("matmul_at", in[1], 2, "b");
  const int64_t k_b = a.trans_b ? in[1][1] : in[1][0];
  const int64_t n = a.trans_b ? in[1][0] : in[1][1];
  if (in[0][0] != k_b)
    fail("matmul_at: inner sizes differ: a{} {} · b{} {}", "ᵀ", shape_str(in[0]), a.trans_b ? "ᵀ" : "", shape_str(in[1]));
  return {in[0][1], n};
}

Shape shape_pad_cols(const std::vector<Shape>& in, const Attrs& a) {
  need_rank("pad_cols", in[0], 2, "x");
  if (a.start < 0 || a.start + in[0][1] > a.len)
    fail("pad_cols: {} columns at {} do not fit a width of {}", in[0][1], a.start, a.len);
  return {in[0][0], a.len};
}

Shape shape_pad_rows(const std::vector<Shape>& in, const Attrs& a) {
  need_rank("pad_rows", in[0], 2, "x");
  if (a.start < 0 || a.start + in[0][0] > a.len)
    fail("pad_rows: {} rows at {} do not fit a height of {}", in[0][0], a.start, a.len);
  return {a.len, in[0][1]};
}

Shape shape_sum_rows(const std::vector<Shape>& in, const Attrs&) {
  need_rank("sum_rows", in[0], 2, "x");
  return {in[0][1]};
}

Shape shape_broadcast_rows(const std::vector<Shape>& in, const Attrs& a) {
  need_rank("broadcast_rows", in[0], 1, "x");
  if (a.len < 0) fail("broadcast_rows: {} rows", a.len);
  return {a.len, in[0][0]};
}

Shape shape_scatter_add(const std::vector<Shape>& in, const Attrs& a) {
  need_rank("scatter_add_rows", in[0], 2, "dy");
  need_rank("scatter_add_rows", in[1], 1, "ids");
  if (in[1][0] != in[0][0]) fail("scatter_add_rows: {} ids for {} rows", in[1][0], in[0][0]);
  if (a.len <= 0) fail("scatter_add_rows: the table must have rows, got {}", a.len);
  return {a.len, in[0][1]};
}

Shape shape_xent(const std::vector<Shape>& in, const Attrs&) {
  need_rank("cross_entropy", in[0], 2, "logits");
  need_rank("cross_entropy", in[1], 1, "targets");
  if (in[1][0] != in[0][0]) fail("cross_entropy: {} targets for {} rows of logits", in[1][0], in[0][0]);
  if (in[0][0] == 0) fail("cross_entropy: no rows to average over");
  return {1};
}

Shape shape_xent_back(const std::vector<Shape>& in, const Attrs& a) {
  shape_xent({in[0], in[1]}, a);
  if (in[2] != Shape{1}) fail("cross_entropy_backward: dloss {} must be [1]", shape_str(in[2]));
  return in[0];
}

Shape shape_ln_back(const std::vector<Shape>& in, const Attrs&) {
  need_rank("layernorm_backward", in[0], 2, "x");
  if (in[1] != Shape{in[0][1]}) fail("layernorm_backward: gain {} must be [{}]", shape_str(in[1]), in[0][1]);
  if (in[2] != in[0]) fail("layernorm_backward: dy {} must equal x {}", shape_str(in[2]), shape_str(in[0]));
  return in[0];
}

Shape shape_ln_gain(const std::vector<Shape>& in, const Attrs&) {
  need_rank("layernorm_gain_grad", in[0], 2, "x");
  if (in[1] != in[0]) fail("layernorm_gain_grad: dy {} must equal x {}", shape_str(in[1]), shape_str(in[0]));
  return {in[0][1]};
}

Shape shape_same2(const std::vector<Shape>& in, const Attrs&) {
  if (in[1] != in[0]) fail("the gradient {} must have the shape of its input {}", shape_str(in[1]), shape_str(in[0]));
  return in[0];
}

Shape shape_attention_back(const std::vector<Shape>& in, const Attrs& a) {
  shape_attention({in[0], in[1], in[2]}, a);
  if (in[3] != in[0]) fail("attention_backward: dy {} must equal q {}", shape_str(in[3]), shape_str(in[0]));
  return {in[1][0], 3 * in[0][1]};
}

// ---- flop counts ---------------------------------------------------------------------------

double fl_zero(const std::vector<Shape>&, const Shape&, const Attrs&) { return 0; }
double fl_out(const std::vector<Shape>&, const Shape& o, const Attrs&) { return double(numel(o)); }
double fl_layernorm(const std::vector<Shape>&, const Shape& o, const Attrs&) { return 8.0 * double(numel(o)); }
double fl_matmul(const std::vector<Shape>& in, const Shape& o, const Attrs&) {
  return 2.0 * double(numel(o)) * double(in[0][1]);
}
double fl_linear(const std::vector<Shape>& in, const Shape& o, const Attrs& a) {
  return fl_matmul(in, o, a) + double(numel(o));
}
double fl_act(const std::vector<Shape>&, const Shape& o, const Attrs&) { return 8.0 * double(numel(o)); }
double fl_softmax(const std::vector<Shape>&, const Shape& o, const Attrs&) { return 5.0 * double(numel(o)); }
// Query-key pairs attention visits: the causal triangle of every sequence (query i of a
// sequence sees past + i + 1 keys).
double attention_pairs(const std::vector<Shape>& in, const Attrs& a) {
  const double s = double(std::max<int64_t>(1, a.seqs));
  const double t = double(in[0][0]) / s, p = double(a.past);
  return s * (t * p + t * (t + 1) / 2);
}
double fl_attention(const std::vector<Shape>& in, const Shape&, const Attrs& a) {
  const double c = double(in[0][1]);
  return attention_pairs(in, a) * (4.0 * c + 6.0 * double(a.heads));  // 2c (q·k) + 2c (a·v) + scale/exp/sum/div per head
}
double fl_attention_back(const std::vector<Shape>& in, const Shape&, const Attrs& a) {
  // Scores again (2c), dv (2c), dP (2c), dq (2c), dk (2c), softmax gradient per head.
  const double c = double(in[0][1]);
  return attention_pairs(in, a) * (10.0 * c + 8.0 * double(a.heads));
}
double fl_matmul_at(const std::vector<Shape>& in, const Shape& o, const Attrs&) {
  return 2.0 * double(numel(o)) * double(in[0][0]);
}
double fl_in0(const std::vector<Shape>& in, const Shape&, const Attrs&) { return double(numel(in[0])); }
double fl_xent(const std::vector<Shape>& in, const Shape&, const Attrs&) { return 5.0 * double(numel(in[0])); }
double fl_ln_back(const std::vector<Shape>& in, const Shape&, const Attrs&) { return 12.0 * double(numel(in[0])); }
double fl_act_back(const std::vector<Shape>& in, const Shape&, const Attrs&) { return 12.0 * double(numel(in[0])); }

// ---- byte counts ---------------------------------------------------------------------------

double bytes_of(const Shape& s, DType t) { return double(numel(s)) * double(dtype_size(t)); }

double by_all(const std::vector<Shape>& in, const std::vector<DType>& dt, const Shape& o, DType odt,
              const Attrs&) {
  double b = bytes_of(o, odt);
  for (size_t i = 0; i < in.size(); ++i) b += bytes_of(in[i], dt[i]);
  return b;
}
double by_gather(const std::vector<Shape>& in, const std::vector<DType>& dt, const Shape& o, DType odt,
                 const Attrs&) {
  return double(numel(o)) * double(dtype_size(dt[0])) + bytes_of(in[1], dt[1]) + bytes_of(o, odt);
}
double by_view(const std::vector<Shape>&, const std::vector<DType>&, const Shape& o, DType odt, const Attrs&) {
  return 2.0 * bytes_of(o, odt);
}
double by_kvstore(const std::vector<Shape>& in, const std::vector<DType>& dt, const Shape&, DType,
                  const Attrs&) {
  return 2.0 * bytes_of(in[1], dt[1]);
}

// ---- decompositions ------------------------------------------------------------------------

ValueId dec_linear(Graph& g, const std::vector<ValueId>& in, const Attrs&, const std::string& name) {
  const ValueId y = g.add(OpKind::MatMul, {in[0], in[1]}, Attrs{}, name + ".matmul");
  return g.add(OpKind::Add, {y, in[2]}, Attrs{}, name + ".bias");
}

ValueId dec_attention_one(Graph& g, const std::vector<ValueId>& in, const Attrs& a, const std::string& name);

// Several sequences: each one's rows sliced out and attended alone, the results padded back
// to the full height and summed (sequences occupy disjoint rows).
ValueId dec_attention(Graph& g, const std::vector<ValueId>& in, const Attrs& a, const std::string& name) {
  if (a.seqs <= 1) return dec_attention_one(g, in, a, name);
  const int64_t rows = g.value(in[0]).shape[0], t = rows / a.seqs, keys = a.past + t;
  Attrs one = a;
  one.seqs = 1;
  ValueId sum = -1;
  for (int64_t s = 0; s < a.seqs; ++s) {
    const std::string sn = name + ".s" + std::to_string(s);
    Attrs qr, kr, pad;
    qr.start = s * t;
    qr.len = t;
    kr.start = s * keys;
    kr.len = keys;
    const ValueId q = g.add(OpKind::SliceRows, {in[0]}, qr, sn + ".q");
    const ValueId k = g.add(OpKind::SliceRows, {in[1]}, kr, sn + ".k");
    const ValueId v = g.add(OpKind::SliceRows, {in[2]}, kr, sn + ".v");
    const ValueId o = dec_attention_one(g, {q, k, v}, one, sn);
    pad.start = s * t;
    pad.len = rows;
    const ValueId placed = g.add(OpKind::PadRows, {o}, pad, sn + ".place");
    sum = sum < 0 ? placed : g.add(OpKind::Add, {sum, placed}, Attrs{}, sn + ".sum");
  }
  return sum;
}

ValueId dec_attention_one(Graph& g, const std::vector<ValueId>& in, const Attrs& a, const std::string& name) {
  const int64_t c = g.value(in[0]).shape[1];
  const int64_t d = c / a.heads;
  std::vector<ValueId> heads;
  for (int64_t h = 0; h < a.heads; ++h) {
    const std::string hn = name + ".h" + std::to_string(h);
    Attrs sl;
    sl.start = h * d;
    sl.len = d;
    const ValueId q = g.add(OpKind::SliceCols, {in[0]}, sl, hn + ".q");
    const ValueId k = g.add(OpKind::SliceCols, {in[1]}, sl, hn + ".k");
    const ValueId v = g.add(OpKind::SliceCols, {in[2]}, sl, hn + ".v");
    Attrs mm;
    mm.trans_b = true;
    ValueId s = g.add(OpKind::MatMul, {q, k}, mm, hn + ".scores");
    Attrs sc;
    sc.scale = 1.0 / std::sqrt(double(d));
    s = g.add(OpKind::Scale, {s}, sc, hn + ".scale");
    Attrs mk;
    mk.past = a.past;
    s = g.add(OpKind::CausalMask, {s}, mk, hn + ".mask");
    s = g.add(OpKind::Softmax, {s}, Attrs{}, hn + ".softmax");
    heads.push_back(g.add(OpKind::MatMul, {s, v}, Attrs{}, hn + ".out"));
  }
  return g.add(OpKind::ConcatCols, heads, Attrs{}, name + ".concat");
}

constexpr size_t kOps = size_t(OpKind::kCount);

const std::array<OpInfo, kOps>& table() {
  static const std::array<OpInfo, kOps> t = {{
      {OpKind::GatherRows, "gather_rows", 2, false, shape_gather, fl_zero, by_gather, nullptr, -1, vjp::gather_rows},
      {OpKind::Add, "add", 2, false, shape_add, fl_out, by_all, nullptr, -1, vjp::add},
      {OpKind::LayerNorm, "layernorm", 3, false, shape_layernorm, fl_layernorm, by_all, nullptr, -1, vjp::layernorm},
      {OpKind::MatMul, "matmul", 2, false, shape_matmul, fl_matmul, by_all, nullptr, -1, vjp::matmul},
      {OpKind::Activation, "activation", 1, false, shape_same, fl_act, by_all, nullptr, -1, vjp::activation},
      {OpKind::Scale, "scale", 1, false, shape_same, fl_out, by_all, nullptr, -1, vjp::scale},
      {OpKind::CausalMask, "causal_mask", 1, false, shape_mask, fl_zero, by_all, nullptr, -1, vjp::causal_mask},
      {OpKind::Softmax, "softmax", 1, false, shape_rows2, fl_softmax, by_all, nullptr, -1, vjp::softmax},
      {OpKind::SliceCols, "slice_cols", 1, false, shape_slice, fl_zero, by_view, nullptr, -1, vjp::slice_cols},
      {OpKind::SliceRows, "slice_rows", 1, false, shape_slice_rows, fl_zero, by_view, nullptr, -1, vjp::slice_rows},
      {OpKind::ConcatCols, "concat_cols", -1, false, shape_concat, fl_zero, by_all, nullptr, -1, vjp::concat_cols},
      {OpKind::KvStore, "kv_store", 2, false, shape_kvstore, fl_zero, by_kvstore, nullptr, 0, vjp::kv_store},
      {OpKind::Linear, "linear", 3, true, shape_linear, fl_linear, by_all, dec_linear, -1, vjp::linear},
      {OpKind::Attention, "attention", 3, true, shape_attention, fl_attention, by_all, dec_attention, -1, vjp::attention},
      {OpKind::MatMulAt, "matmul_at", 2, false, shape_matmul_at, fl_matmul_at, by_all, nullptr, -1, vjp::matmul_at},
      {OpKind::CausalZero, "causal_zero", 1, false, shape_mask, fl_zero, by_all, nullptr, -1, vjp::causal_zero},
      {OpKind::PadCols, "pad_cols", 1, false, shape_pad_cols, fl_zero, by_all, nullptr, -1, vjp::pad_cols},
      {OpKind::PadRows, "pad_rows", 1, false, shape_pad_rows, fl_zero, by_all, nullptr, -1, vjp::pad_rows},
      {OpKind::SumRows, "sum_rows", 1, false, shape_sum_rows, fl_in0, by_all, nullptr, -1, vjp::sum_rows},
      {OpKind::BroadcastRows, "broadcast_rows", 1, false, shape_broadcast_rows, fl_zero, by_all, nullptr, -1, vjp::broadcast_rows},
      {OpKind::ScatterAddRows, "scatter_add_rows", 2, false, shape_scatter_add, fl_in0, by_all, nullptr, -1, vjp::scatter_add_rows},
      {OpKind::CrossEntropy, "cross_entropy", 2, false, shape_xent, fl_xent, by_all, nullptr, -1, vjp::cross_entropy},
      {OpKind::CrossEntropyBackward, "cross_entropy_backward", 3, false, shape_xent_back, fl_xent, by_all, nullptr},
      {OpKind::LayerNormBackward, "layernorm_backward", 3, false, shape_ln_back, fl_ln_back, by_all, nullptr},
      {OpKind::LayerNormGainGrad, "layernorm_gain_grad", 2, false, shape_ln_gain, fl_ln_back, by_all, nullptr},
      {OpKind::ActivationBackward, "activation_backward", 2, false, shape_same2, fl_act_back, by_all, nullptr},
      {OpKind::SoftmaxBackward, "softmax_backward", 2, false, shape_same2, fl_xent, by_all, nullptr},
      {OpKind::AttentionBackward, "attention_backward", 4, false, shape_attention_back, fl_attention_back, by_all, nullptr},
  }};
  return t;
}

}  // namespace

const OpInfo& op_info(OpKind k) {
  const auto& t = table();
  static const bool ordered = [&] {
    for (size_t i = 0; i < kOps; ++i)
      if (size_t(t[i].kind) != i) return false;
    return true;
  }();
  if (!ordered) fail("internal: the op table is out of order with OpKind");
  return t[size_t(k)];
}

std::string_view op_name(OpKind k) { return op_info(k).name; }

}  // namespace strand
