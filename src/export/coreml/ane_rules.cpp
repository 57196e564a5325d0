#include "export/coreml/ane_rules.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "core/error.h"

namespace strand::coreml {

namespace {

struct OpRule {
  const char* type;
  bool ane;
  const char* why;
};

// MIL op types and whether the ANE executes them.
constexpr OpRule kRules[] = {
    {"conv", true, "convolution"},
    {"matmul", true, "matrix multiply"},
    {"add", true, "elementwise"},
    {"sub", true, "elementwise"},
    {"mul", true, "elementwise"},
    {"layer_norm", true, "normalization"},
    {"softmax", true, "softmax"},
    {"gelu", true, "activation"},
    {"relu", true, "activation"},
    {"silu", true, "activation"},
    {"sigmoid", true, "activation"},
    {"tanh", true, "activation"},
    {"split", true, "layout"},
    {"concat", true, "layout"},
    {"reshape", true, "layout"},
    {"transpose", true, "layout"},
    {"slice_by_index", true, "layout"},
    {"gather", false, "gather (an embedding lookup) is not an ANE operation: Core ML runs it on the CPU"},
};

bool is_layout(const std::string& type) {
  return type == "split" || type == "concat" || type == "reshape" || type == "transpose" || type == "slice_by_index" ||
         type == "gather";
}

}  // namespace

bool ane_op_supported(const std::string& type, std::string* why) {
  for (const OpRule& r : kRules)
    if (type == r.type) {
      if (why) *why = r.why;
      return r.ane;
    }
  if (why) *why = fmt::format("{} is not in the list of operations the ANE executes", type);
  return false;
}

Verdict ane_check_tensor(const std::string& what, const TensorType& t, bool parameter) {
  if (parameter) return Verdict::yes();  // compile-time int/bool/string parameters
  for (int64_t d : t.shape)
    if (d <= 0) return Verdict::no(fmt::format("{} has a dynamic shape ({}): the ANE needs static shapes", what, type_str(t)));
  if (t.dtype == MilDType::F32)
    return Verdict::no(fmt::format("{} is fp32: the ANE computes in fp16 only", what));
  if (t.dtype != MilDType::F16 && t.dtype != MilDType::I32)
    return Verdict::no(fmt::format("{} is {}: the ANE takes fp16 tensors", what, mil_dtype_name(t.dtype)));
  if (int(t.shape.size()) > kAneMaxRank)
    return Verdict::no(fmt::format("{} has rank {} (the ANE takes at most {})", what, t.shape.size(), kAneMaxRank));
  for (int64_t d : t.shape)
    if (d > kAneMaxDim)
      return Verdict::no(fmt::format("{} {} has a dimension of {}, above the ANE's limit of {}", what, type_str(t), d,
                                     kAneMaxDim));
  return Verdict::yes();
}

Verdict ane_check_op(const MilOp& op, const std::map<std::string, TensorType>& types) {
  std::string why;
  if (!ane_op_supported(op.type, &why)) return Verdict::no(why);
  // Which arguments are compile-time parameters: values of const ops that are not fp16 data.
  std::set<std::string> params;
  for (const auto& [p, names] : op.inputs)
    for (const std::string& n : names) {
      const auto it = types.find(n);
      if (it == types.end()) fail("internal: op {} reads {} which is not defined", op.name, n);
      if (it->second.dtype != MilDType::F16 && it->second.dtype != MilDType::F32) params.insert(n);
    }
  for (const auto& [p, names] : op.inputs)
    for (const std::string& n : names) {
      const bool is_param = params.count(n) && !(op.type == "gather" && p == "indices");
      const Verdict v = ane_check_tensor(fmt::format("{} ({})", p, n), types.at(n), is_param);
      if (!v.ok) return v;
    }
  for (const Var& o : op.outputs) {
    const Verdict v = ane_check_tensor("output " + o.name, o.type, false);
    if (!v.ok) return v;
  }
  return Verdict::yes(why + ", fp16");
}

double mil_op_flops(const MilOp& op, const std::map<std::string, TensorType>& types) {
  if (op.outputs.empty() || op.type == "const" || is_layout(op.type)) return 0;
  const TensorType& out = op.outputs[0].type;
  const double n = double(out.numel());
  auto in = [&](const std::string& p) -> const TensorType& {
    for (const auto& [k, names] : op.inputs)
      if (k == p) return types.at(names.at(0));
    fail("internal: op {} has no input {}", op.name, p);
  };
  if (op.type == "conv") {
    const TensorType& w = in("weight");
    const double macs = n * double(w.shape[1] * w.shape[2] * w.shape[3]);
    bool bias = false;
    for (const auto& [k, v] : op.inputs) bias = bias || k == "bias";
    return 2 * macs + (bias ? n : 0);
  }
  if (op.type == "matmul") {
    const TensorType& x = in("x");
    // The reduction length K, from element counts: out = batch*M*N and x = batch*M*K.
    const double m_times_batch = n / double(out.shape.back());
    const double k = double(x.numel()) / m_times_batch;
    return 2 * n * k;
  }
  if (op.type == "layer_norm") return 8 * n;
  if (op.type == "softmax") return 5 * n;
  if (op.type == "gelu") return 8 * n;
  if (op.type == "silu" || op.type == "sigmoid" || op.type == "tanh") return 4 * n;
  return n;  // add, sub, mul, relu
}

AneReport analyze_ane(const MilFunction& fn) {
  const auto types = fn.types();
  AneReport r;
  for (const MilOp& op : fn.ops) {
    AneOp a;
    if (op.type == "const") {
      a.reason = "const: weights or a parameter, no compute";
      r.ops.push_back(a);
      continue;
    }
    a.compute = true;
    const Verdict v = ane_check_op(op, types);
    a.ane = v.ok;
    a.reason = v.reason;
    a.flops = mil_op_flops(op, types);
    if (r.blocks.empty() || r.blocks.back().name != op.block) {
      AneBlock nb;
      nb.name = op.block;
      r.blocks.push_back(nb);
    }
    AneBlock& b = r.blocks.back();
    ++b.ops;
    ++r.compute_ops;
    b.flops += a.flops;
    r.total_flops += a.flops;
    if (a.ane) {
      ++b.ane_ops;
      ++r.ane_ops;
      b.ane_flops += a.flops;
      r.ane_flops += a.flops;
    } else if (std::find(b.reasons.begin(), b.reasons.end(), a.reason) == b.reasons.end()) {
      b.reasons.push_back(a.reason);
    }
    r.ops.push_back(a);
  }
  return r;
}

std::string format_ane_report(const AneReport& r, const MilFunction& fn, bool all_ops) {
  std::string s = fmt::format("{:<14} {:>5} {:>8} {:>12} {:>8}  {}\n", "block", "ops", "on ANE", "MFLOP", "ANE %",
                              "why not (ops that cannot go to the ANE)");
  for (const AneBlock& b : r.blocks) {
    std::string why;
    for (const std::string& x : b.reasons) why += (why.empty() ? "" : "; ") + x;
    s += fmt::format("{:<14} {:>5} {:>8} {:>12.3f} {:>7.1f}%  {}\n", b.name, b.ops, b.ane_ops, b.flops / 1e6,
                     b.flops > 0 ? 100.0 * b.ane_flops / b.flops : (b.ane_ops == b.ops ? 100.0 : 0.0),
                     why.empty() ? "-" : why);
  }
  s += "\nops that cannot go to the ANE:\n";
  int shown = 0;
  for (size_t i = 0; i < fn.ops.size(); ++i)
    if (r.ops[i].compute && !r.ops[i].ane) {
      s += fmt::format("  {:<28} {:<12} {:<22} {}\n", fn.ops[i].name, fn.ops[i].type, type_str(fn.ops[i].outputs[0].type),
                       r.ops[i].reason);
      ++shown;
    }
  if (!shown) s += "  (none)\n";
  if (all_ops) {
    s += "\nevery op:\n";
    for (size_t i = 0; i < fn.ops.size(); ++i) {
      if (!r.ops[i].compute) continue;
      s += fmt::format("  {:<28} {:<12} {:<22} {:<4} {}\n", fn.ops[i].name, fn.ops[i].type,
                       type_str(fn.ops[i].outputs[0].type), r.ops[i].ane ? "ANE" : "no", r.ops[i].reason);
    }
  }
  s += fmt::format("\nANE share: {:.2f}% of {:.3f} MFLOP; {} of {} compute ops ({} const ops hold weights and "
                   "parameters)\n",
                   r.total_flops > 0 ? 100.0 * r.ane_flops / r.total_flops : 0.0, r.total_flops / 1e6, r.ane_ops,
                   r.compute_ops, fn.ops.size() - size_t(r.compute_ops));
  return s;
}

nlohmann::json ane_report_json(const AneReport& r, const MilFunction& fn) {
  nlohmann::json blocks = nlohmann::json::array(), ops = nlohmann::json::array();
  for (const AneBlock& b : r.blocks)
    blocks.push_back({{"block", b.name}, {"ops", b.ops}, {"ane_ops", b.ane_ops}, {"flops", b.flops},
                      {"ane_flops", b.ane_flops}, {"why_not", b.reasons}});
  for (size_t i = 0; i < fn.ops.size(); ++i) {
    if (!r.ops[i].compute) continue;
    ops.push_back({{"name", fn.ops[i].name}, {"type", fn.ops[i].type}, {"block", fn.ops[i].block},
                   {"output", type_str(fn.ops[i].outputs[0].type)}, {"ane", r.ops[i].ane},
                   {"reason", r.ops[i].reason}, {"flops", r.ops[i].flops}});
  }
  return {{"blocks", blocks}, {"ops", ops}, {"compute_ops", r.compute_ops}, {"ane_ops", r.ane_ops},
          {"total_flops", r.total_flops}, {"ane_flops", r.ane_flops},
          {"ane_flop_share", r.total_flops > 0 ? r.ane_flops / r.total_flops : 0.0}};
}

// ---------------------------------------------------------------------------------------------
// strand graph nodes

namespace {

TensorType as_fp16(const Shape& s) { return {MilDType::F16, std::vector<int64_t>(s.begin(), s.end())}; }

Verdict dtype_ok(const Graph& g, const Node& n) {
  for (ValueId v : n.inputs) {
    const Value& val = g.value(v);
    if (val.dtype == DType::F64)
      return Verdict::no(fmt::format("{} is f64: the ANE computes in fp16 only", val.name));
  }
  return Verdict::yes();
}

}  // namespace

Verdict ane_supports_node(const Graph& g, const Node& n) {
  if (Verdict d = dtype_ok(g, n); !d.ok) return d;
  const Value& out = g.value(n.output);
  auto in_shape = [&](size_t i) -> const Shape& { return g.value(n.inputs.at(i)).shape; };
  auto check = [&](const char* type, const std::string& what) -> Verdict {
    std::string why;
    if (!ane_op_supported(type, &why)) return Verdict::no(why);
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const Value& v = g.value(n.inputs[i]);
      if (v.kind == ValueKind::Weight) continue;  // weights are checked per lowering below
      const Verdict t = ane_check_tensor(v.name, as_fp16(v.shape), v.dtype == DType::I32);
      if (!t.ok) return t;
    }
    const Verdict t = ane_check_tensor(out.name.empty() ? n.name : out.name, as_fp16(out.shape), false);
    if (!t.ok) return t;
    return Verdict::yes(what + ", fp16");
  };
  switch (n.op) {
    case OpKind::GatherRows: {
      std::string why;
      ane_op_supported("gather", &why);
      return Verdict::no(why);
    }
    case OpKind::MatMul:
    case OpKind::Linear: {
      // Lowered to 1x1 convolutions: K input channels, N output channels.
      const Shape& w = in_shape(1);
      const bool tb = n.op == OpKind::MatMul && n.attrs.trans_b;
      const int64_t K = tb ? w[1] : w[0], N = tb ? w[0] : w[1];
      if (K > kAneMaxDim)
        return Verdict::no(fmt::format("{} input channels, above the ANE's limit of {}", K, kAneMaxDim));
      if (g.value(n.inputs[1]).kind != ValueKind::Weight)
        return check("matmul", "matrix multiply of two activations");
      const Verdict v = check("conv", "1x1 convolution");
      if (!v.ok && N <= kAneMaxDim) return v;
      if (N > kAneMaxDim) {
        const int64_t chunks = (N + kAneMaxDim - 1) / kAneMaxDim;
        // The output [T, N] is produced as `chunks` pieces of at most kAneMaxDim channels.
        return Verdict::yes(fmt::format("{} 1x1 convolutions of at most {} output channels, fp16", chunks, kAneMaxDim));
      }
      return v;
    }
    case OpKind::Attention: {
      if (n.attrs.seqs > 1) return Verdict::no("several sequences in one attention (a training batch)");
      const int64_t keys = in_shape(1)[0];
      if (keys > kAneMaxDim) return Verdict::no(fmt::format("{} keys, above the ANE's limit of {}", keys, kAneMaxDim));
      const Verdict v = check("matmul", "per-head matmul + softmax");
      return v.ok ? Verdict::yes(fmt::format("{} heads of matmul + additive mask + softmax, fp16", n.attrs.heads)) : v;
    }
    case OpKind::KvStore:
      return Verdict::yes("KV cache as program input/output (concat), fp16");
    case OpKind::Add: return check("add", "elementwise add");
    case OpKind::LayerNorm: return check("layer_norm", "layer_norm over channels");
    case OpKind::Activation:
      return check(n.attrs.act == Act::Relu ? "relu" : n.attrs.act == Act::Silu ? "silu" : n.attrs.act == Act::QuickGelu ? "sigmoid" : "gelu",
                   std::string(act_name(n.attrs.act)));
    case OpKind::Scale: return check("mul", "scale");
    case OpKind::CausalMask: return check("add", "additive mask input");
    case OpKind::Softmax: return check("softmax", "softmax");
    case OpKind::SliceCols:
    case OpKind::SliceRows: return check("slice_by_index", "slice");
    case OpKind::ConcatCols: return check("concat", "concat");
    case OpKind::MatMulAt:
    case OpKind::CausalZero:
    case OpKind::PadCols:
    case OpKind::PadRows:
    case OpKind::SumRows:
    case OpKind::BroadcastRows:
    case OpKind::ScatterAddRows:
    case OpKind::CrossEntropy:
    case OpKind::CrossEntropyBackward:
    case OpKind::LayerNormBackward:
    case OpKind::LayerNormGainGrad:
    case OpKind::ActivationBackward:
    case OpKind::SoftmaxBackward:
    case OpKind::AttentionBackward:
      return Verdict::no(fmt::format("{} is a training op: the ANE runs inference only", op_name(n.op)));
    case OpKind::kCount: break;
  }
  return Verdict::no(fmt::format("{} has no ANE lowering", op_name(n.op)));
}

}  // namespace strand::coreml
