#include "export/coreml/mil.h"

#include <fmt/format.h>

#include "core/dtype.h"
#include "core/error.h"
#include "export/coreml/protobuf.h"

namespace strand::coreml {

const char* mil_dtype_name(MilDType t) {
  switch (t) {
    case MilDType::Bool: return "bool";
    case MilDType::String: return "string";
    case MilDType::F16: return "fp16";
    case MilDType::F32: return "fp32";
    case MilDType::I32: return "int32";
  }
  return "?";
}

int64_t TensorType::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string type_str(const TensorType& t) {
  std::string s = fmt::format("{}[", mil_dtype_name(t.dtype));
  for (size_t i = 0; i < t.shape.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", t.shape[i]);
  return s + "]";
}

std::map<std::string, TensorType> MilFunction::types() const {
  std::map<std::string, TensorType> m;
  for (const Var& v : inputs) m[v.name] = v.type;
  for (const MilOp& op : ops)
    for (const Var& v : op.outputs) m[v.name] = v.type;
  return m;
}

std::string mil_identifier(const std::string& s) {
  std::string r;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '@';
    r += ok ? c : '_';
  }
  if (r.empty() || (r[0] >= '0' && r[0] <= '9') || r[0] == '@') r = "_" + r;
  return r;
}

// ---------------------------------------------------------------------------------------------
// Builder

std::string MilBuilder::unique(const std::string& name) {
  std::string id = mil_identifier(name);
  const int n = used_[id]++;
  if (n == 0) return id;
  std::string alt;
  int k = n;
  do alt = fmt::format("{}_{}", id, k++);
  while (used_.count(alt));
  used_[alt] = 1;
  return alt;
}

MilOp& MilBuilder::push(const std::string& type, const std::string& name) {
  MilOp op;
  op.type = type;
  op.name = name;
  op.block = block_;
  fn_.ops.push_back(std::move(op));
  return fn_.ops.back();
}

Var MilBuilder::input(const std::string& name, TensorType t) {
  Var v{unique(name), std::move(t)};
  fn_.inputs.push_back(v);
  return v;
}

Var MilBuilder::const_i32(const std::string& name, std::vector<int32_t> v, bool scalar) {
  if (scalar && v.size() != 1) fail("internal: scalar const {} with {} values", name, v.size());
  Var out{unique(name), {MilDType::I32, scalar ? std::vector<int64_t>{} : std::vector<int64_t>{int64_t(v.size())}}};
  MilOp& op = push("const", out.name);
  op.outputs.push_back(out);
  op.value.ints = std::move(v);
  return out;
}

Var MilBuilder::const_bool(const std::string& name, bool v) {
  Var out{unique(name), {MilDType::Bool, {}}};
  MilOp& op = push("const", out.name);
  op.outputs.push_back(out);
  op.value.bools = {uint8_t(v)};
  return out;
}

Var MilBuilder::const_str(const std::string& name, const std::string& v) {
  Var out{unique(name), {MilDType::String, {}}};
  MilOp& op = push("const", out.name);
  op.outputs.push_back(out);
  op.value.strings = {v};
  return out;
}

Var MilBuilder::const_f16_scalar(const std::string& name, float v) {
  Var out{unique(name), {MilDType::F16, {}}};
  MilOp& op = push("const", out.name);
  op.outputs.push_back(out);
  op.value.f16 = {f32_to_f16(v)};
  return out;
}

Var MilBuilder::const_f16(const std::string& name, std::vector<uint16_t> bits, std::vector<int64_t> shape) {
  Var out{unique(name), {MilDType::F16, std::move(shape)}};
  if (out.type.numel() != int64_t(bits.size()))
    fail("internal: const {} has {} values for shape {}", name, bits.size(), type_str(out.type));
  MilOp& op = push("const", out.name);
  op.outputs.push_back(out);
  if (int64_t(bits.size()) >= blob_min_) {
    op.value.in_blob = true;
    op.value.blob_offset = blob_.add_f16(bits);
  } else {
    op.value.f16 = std::move(bits);
  }
  return out;
}

std::string MilBuilder::arg_name(const std::string& op, const std::string& param) { return op + "_" + param; }

namespace {

[[noreturn]] void type_error(const std::string& op, const std::string& what) {
  fail("internal: MIL op {}: {}", op, what);
}

int norm_axis(int axis, size_t rank, const std::string& op) {
  const int r = int(rank);
  const int a = axis < 0 ? axis + r : axis;
  if (a < 0 || a >= r) type_error(op, fmt::format("axis {} out of range for rank {}", axis, r));
  return a;
}

void same_dtype(const Var& a, const Var& b, const std::string& op) {
  if (a.type.dtype != b.type.dtype)
    type_error(op, fmt::format("{} is {}, {} is {}", a.name, type_str(a.type), b.name, type_str(b.type)));
}

// numpy-style broadcast of two shapes.
std::vector<int64_t> broadcast(const std::vector<int64_t>& a, const std::vector<int64_t>& b, const std::string& op) {
  const size_t r = std::max(a.size(), b.size());
  std::vector<int64_t> out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t x = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t y = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (x != y && x != 1 && y != 1) type_error(op, fmt::format("cannot broadcast dimension {} with {}", x, y));
    out[i] = x == 1 ? y : x;
  }
  return out;
}

}  // namespace

Var MilBuilder::gather(const Var& x, const Var& indices, int axis, const std::string& name) {
  const std::string n = unique(name);
  const Var ax = const_i32(arg_name(n, "axis"), {axis}, true);
  const Var bd = const_i32(arg_name(n, "batch_dims"), {0}, true);
  const int a = norm_axis(axis, x.type.shape.size(), n);
  TensorType t{x.type.dtype, {}};
  for (int i = 0; i < a; ++i) t.shape.push_back(x.type.shape[size_t(i)]);
  for (int64_t d : indices.type.shape) t.shape.push_back(d);
  for (size_t i = size_t(a) + 1; i < x.type.shape.size(); ++i) t.shape.push_back(x.type.shape[i]);
  MilOp& op = push("gather", n);
  op.inputs = {{"x", {x.name}}, {"indices", {indices.name}}, {"axis", {ax.name}}, {"batch_dims", {bd.name}}};
  op.outputs.push_back({n, t});
  return op.outputs.back();
}

Var MilBuilder::add(const Var& x, const Var& y, const std::string& name) {
  const std::string n = unique(name);
  same_dtype(x, y, n);
  MilOp& op = push("add", n);
  op.inputs = {{"x", {x.name}}, {"y", {y.name}}};
  op.outputs.push_back({n, {x.type.dtype, broadcast(x.type.shape, y.type.shape, n)}});
  return op.outputs.back();
}

Var MilBuilder::mul(const Var& x, const Var& y, const std::string& name) {
  const std::string n = unique(name);
  same_dtype(x, y, n);
  MilOp& op = push("mul", n);
  op.inputs = {{"x", {x.name}}, {"y", {y.name}}};
  op.outputs.push_back({n, {x.type.dtype, broadcast(x.type.shape, y.type.shape, n)}});
  return op.outputs.back();
}

Var MilBuilder::transpose(const Var& x, std::vector<int32_t> perm, const std::string& name) {
  const std::string n = unique(name);
  if (perm.size() != x.type.shape.size()) type_error(n, "perm does not match the rank");
  TensorType t{x.type.dtype, {}};
  for (int32_t p : perm) t.shape.push_back(x.type.shape[size_t(norm_axis(p, perm.size(), n))]);
  const Var pv = const_i32(arg_name(n, "perm"), std::move(perm));
  MilOp& op = push("transpose", n);
  op.inputs = {{"x", {x.name}}, {"perm", {pv.name}}};
  op.outputs.push_back({n, t});
  return op.outputs.back();
}

Var MilBuilder::reshape(const Var& x, std::vector<int64_t> shape, const std::string& name) {
  const std::string n = unique(name);
  TensorType t{x.type.dtype, shape};
  if (t.numel() != x.type.numel()) type_error(n, fmt::format("reshape {} to {} elements", type_str(x.type), t.numel()));
  std::vector<int32_t> s32(shape.begin(), shape.end());
  const Var sv = const_i32(arg_name(n, "shape"), std::move(s32));
  MilOp& op = push("reshape", n);
  op.inputs = {{"x", {x.name}}, {"shape", {sv.name}}};
  op.outputs.push_back({n, t});
  return op.outputs.back();
}

Var MilBuilder::layer_norm(const Var& x, std::vector<int32_t> axes, const Var& gamma, const Var& beta, float eps,
                           const std::string& name) {
  const std::string n = unique(name);
  same_dtype(x, gamma, n);
  same_dtype(x, beta, n);
  const Var av = const_i32(arg_name(n, "axes"), std::move(axes));
  const Var ev = const_f16_scalar(arg_name(n, "epsilon"), eps);
  MilOp& op = push("layer_norm", n);
  op.inputs = {{"x", {x.name}}, {"axes", {av.name}}, {"gamma", {gamma.name}}, {"beta", {beta.name}}, {"epsilon", {ev.name}}};
  op.outputs.push_back({n, x.type});
  return op.outputs.back();
}

Var MilBuilder::conv1x1(const Var& x, const Var& weight, const Var* bias, const std::string& name) {
  const std::string n = unique(name);
  same_dtype(x, weight, n);
  const auto& xs = x.type.shape;
  const auto& ws = weight.type.shape;
  if (xs.size() != 4 || ws.size() != 4 || ws[2] != 1 || ws[3] != 1 || ws[1] != xs[1])
    type_error(n, fmt::format("x {} and weight {} are not a 1x1 convolution", type_str(x.type), type_str(weight.type)));
  if (bias && (bias->type.shape.size() != 1 || bias->type.shape[0] != ws[0]))
    type_error(n, "bias does not match the output channels");
  const Var strides = const_i32(arg_name(n, "strides"), {1, 1});
  const Var pad_type = const_str(arg_name(n, "pad_type"), "valid");
  const Var pad = const_i32(arg_name(n, "pad"), {0, 0, 0, 0});
  const Var dil = const_i32(arg_name(n, "dilations"), {1, 1});
  const Var groups = const_i32(arg_name(n, "groups"), {1}, true);
  MilOp& op = push("conv", n);
  op.inputs = {{"x", {x.name}},           {"weight", {weight.name}}, {"strides", {strides.name}},
               {"pad_type", {pad_type.name}}, {"pad", {pad.name}},      {"dilations", {dil.name}},
               {"groups", {groups.name}}};
  if (bias) op.inputs.push_back({"bias", {bias->name}});
  op.outputs.push_back({n, {x.type.dtype, {xs[0], ws[0], xs[2], xs[3]}}});
  return op.outputs.back();
}

std::vector<Var> MilBuilder::split(const Var& x, int parts, int axis, const std::vector<std::string>& names) {
  const std::string n = unique(names.empty() ? "split" : names[0] + "_split");
  const int a = norm_axis(axis, x.type.shape.size(), n);
  if (parts <= 0 || x.type.shape[size_t(a)] % parts != 0 || names.size() != size_t(parts))
    type_error(n, fmt::format("cannot split {} into {} equal parts", type_str(x.type), parts));
  const Var ns = const_i32(arg_name(n, "num_splits"), {parts}, true);
  const Var av = const_i32(arg_name(n, "axis"), {axis}, true);
  TensorType t = x.type;
  t.shape[size_t(a)] /= parts;
  std::vector<Var> outs;
  for (const std::string& nm : names) outs.push_back({unique(nm), t});
  MilOp& op = push("split", n);
  op.inputs = {{"x", {x.name}}, {"num_splits", {ns.name}}, {"axis", {av.name}}};
  op.outputs = outs;
  return outs;
}

Var MilBuilder::concat(const std::vector<Var>& xs, int axis, const std::string& name) {
  const std::string n = unique(name);
  if (xs.empty()) type_error(n, "nothing to concatenate");
  const int a = norm_axis(axis, xs[0].type.shape.size(), n);
  TensorType t = xs[0].type;
  std::vector<std::string> names;
  for (size_t i = 0; i < xs.size(); ++i) {
    same_dtype(xs[0], xs[i], n);
    if (xs[i].type.shape.size() != t.shape.size()) type_error(n, "ranks differ");
    for (size_t d = 0; d < t.shape.size(); ++d)
      if (int(d) != a && xs[i].type.shape[d] != t.shape[d]) type_error(n, "shapes differ off the axis");
    if (i) t.shape[size_t(a)] += xs[i].type.shape[size_t(a)];
    names.push_back(xs[i].name);
  }
  const Var av = const_i32(arg_name(n, "axis"), {axis}, true);
  const Var il = const_bool(arg_name(n, "interleave"), false);
  MilOp& op = push("concat", n);
  op.inputs = {{"values", names}, {"axis", {av.name}}, {"interleave", {il.name}}};
  op.outputs.push_back({n, t});
  return op.outputs.back();
}

Var MilBuilder::matmul(const Var& x, const Var& y, bool transpose_x, bool transpose_y, const std::string& name) {
  const std::string n = unique(name);
  same_dtype(x, y, n);
  auto xs = x.type.shape, ys = y.type.shape;
  if (xs.size() < 2 || ys.size() < 2) type_error(n, "operands of rank < 2 are not used here");
  if (transpose_x) std::swap(xs[xs.size() - 2], xs[xs.size() - 1]);
  if (transpose_y) std::swap(ys[ys.size() - 2], ys[ys.size() - 1]);
  if (xs.back() != ys[ys.size() - 2])
    type_error(n, fmt::format("inner dimensions {} and {} differ", xs.back(), ys[ys.size() - 2]));
  std::vector<int64_t> bx(xs.begin(), xs.end() - 2), by(ys.begin(), ys.end() - 2);
  std::vector<int64_t> shape = broadcast(bx, by, n);
  shape.push_back(xs[xs.size() - 2]);
  shape.push_back(ys.back());
  const Var tx = const_bool(arg_name(n, "transpose_x"), transpose_x);
  const Var ty = const_bool(arg_name(n, "transpose_y"), transpose_y);
  MilOp& op = push("matmul", n);
  op.inputs = {{"x", {x.name}}, {"y", {y.name}}, {"transpose_x", {tx.name}}, {"transpose_y", {ty.name}}};
  op.outputs.push_back({n, {x.type.dtype, shape}});
  return op.outputs.back();
}

Var MilBuilder::softmax(const Var& x, int axis, const std::string& name) {
  const std::string n = unique(name);
  norm_axis(axis, x.type.shape.size(), n);
  const Var av = const_i32(arg_name(n, "axis"), {axis}, true);
  MilOp& op = push("softmax", n);
  op.inputs = {{"x", {x.name}}, {"axis", {av.name}}};
  op.outputs.push_back({n, x.type});
  return op.outputs.back();
}

Var MilBuilder::gelu(const Var& x, bool tanh_approximation, const std::string& name) {
  const std::string n = unique(name);
  const Var mode = const_str(arg_name(n, "mode"), tanh_approximation ? "TANH_APPROXIMATION" : "EXACT");
  MilOp& op = push("gelu", n);
  op.inputs = {{"x", {x.name}}, {"mode", {mode.name}}};
  op.outputs.push_back({n, x.type});
  return op.outputs.back();
}

Var MilBuilder::unary(const std::string& type, const Var& x, const std::string& name) {
  const std::string n = unique(name);
  MilOp& op = push(type, n);
  op.inputs = {{"x", {x.name}}};
  op.outputs.push_back({n, x.type});
  return op.outputs.back();
}

// ---------------------------------------------------------------------------------------------
// Serialization. Field numbers follow Core ML's published specification: Model.proto
// (Model, ModelDescription, Metadata, FeatureDescription), FeatureTypes.proto (FeatureType,
// ArrayFeatureType) and MIL.proto (Program, Function, Block, Operation, Argument, Value, ...).

namespace {

ProtoWriter tensor_type_msg(const TensorType& t) {  // MIL TensorType
  ProtoWriter w;
  w.varint(1, int32_t(t.dtype));                      // dataType
  if (!t.shape.empty()) w.varint(2, int64_t(t.shape.size()));  // rank
  for (int64_t d : t.shape) {
    ProtoWriter constant, dim;
    constant.varint(1, d);   // ConstantDimension.size
    dim.message(1, constant);  // Dimension.constant
    w.message(3, dim);         // dimensions
  }
  return w;
}

ProtoWriter value_type_msg(const TensorType& t) {  // ValueType
  ProtoWriter w;
  w.message(1, tensor_type_msg(t));  // tensorType
  return w;
}

ProtoWriter named_value_type_msg(const Var& v) {  // NamedValueType
  ProtoWriter w;
  w.string(1, v.name);
  w.message(2, value_type_msg(v.type));
  return w;
}

ProtoWriter const_value_msg(const TensorType& t, const ConstData& c) {  // Value
  ProtoWriter w;
  w.message(2, value_type_msg(t));  // type
  if (c.in_blob) {
    ProtoWriter blob;
    blob.string(1, kWeightFileRef);  // fileName
    blob.varint(2, int64_t(c.blob_offset));  // offset
    w.message(5, blob);  // blobFileValue
    return w;
  }
  ProtoWriter tensor, payload;
  uint32_t kind = 0;
  if (t.dtype == MilDType::I32) {
    payload.packed_varints(1, std::span<const int32_t>(c.ints));
    kind = 2;  // ints
  } else if (t.dtype == MilDType::F32) {
    payload.packed_f32(1, c.floats);
    kind = 1;  // floats
  } else if (t.dtype == MilDType::Bool) {
    std::vector<int64_t> b(c.bools.begin(), c.bools.end());
    payload.packed_varints(1, std::span<const int64_t>(b));
    kind = 3;  // bools
  } else if (t.dtype == MilDType::String) {
    for (const std::string& s : c.strings) payload.string(1, s);
    kind = 4;  // strings
  } else {  // fp16: raw little-endian bytes
    std::string raw(c.f16.size() * 2, '\0');
    for (size_t i = 0; i < c.f16.size(); ++i) {
      raw[2 * i] = char(uint8_t(c.f16[i]));
      raw[2 * i + 1] = char(uint8_t(c.f16[i] >> 8));
    }
    payload.bytes(1, raw);
    kind = 7;  // bytes
  }
  tensor.message(kind, payload);
  ProtoWriter immediate;
  immediate.message(1, tensor);  // ImmediateValue.tensor
  w.message(3, immediate);       // immediateValue
  return w;
}

ProtoWriter string_value_msg(const std::string& s) {
  ConstData c;
  c.strings = {s};
  return const_value_msg({MilDType::String, {}}, c);
}

// One entry of a protobuf map<string, M>: key = 1, value = 2.
ProtoWriter map_entry(const std::string& key, const ProtoWriter& value) {
  ProtoWriter e;
  e.string(1, key);
  e.message(2, value);
  return e;
}

ProtoWriter operation_msg(const MilOp& op) {
  ProtoWriter w;
  w.string(1, op.type);
  for (const auto& [param, names] : op.inputs) {
    ProtoWriter arg;
    for (const std::string& n : names) {
      ProtoWriter binding;
      binding.string(1, n);  // Binding.name
      arg.message(1, binding);
    }
    w.message(2, map_entry(param, arg));
  }
  for (const Var& v : op.outputs) w.message(3, named_value_type_msg(v));
  w.message(5, map_entry("name", string_value_msg(op.name)));
  if (op.type == "const") w.message(5, map_entry("val", const_value_msg(op.outputs.at(0).type, op.value)));
  return w;
}

ProtoWriter feature_msg(const Var& v, const ModelInfo& info) {  // FeatureDescription
  ProtoWriter arr;
  arr.packed_varints(1, std::span<const int64_t>(v.type.shape));  // shape
  int32_t dt = 0;
  switch (v.type.dtype) {
    case MilDType::F16: dt = 65552; break;   // FLOAT16
    case MilDType::F32: dt = 65568; break;   // FLOAT32
    case MilDType::I32: dt = 131104; break;  // INT32
    default: fail("internal: feature {} of type {} cannot be a model input or output", v.name, type_str(v.type));
  }
  arr.varint(2, dt);
  ProtoWriter type;
  type.message(5, arr);  // multiArrayType
  ProtoWriter f;
  f.string(1, v.name);
  if (auto it = info.feature_descriptions.find(v.name); it != info.feature_descriptions.end()) f.string(2, it->second);
  f.message(3, type);
  return f;
}

}  // namespace

std::string serialize_model(const MilFunction& fn, const ModelInfo& info) {
  ProtoWriter block;
  for (const Var& v : fn.outputs) block.string(2, v.name);
  for (const MilOp& op : fn.ops) block.message(3, operation_msg(op));

  ProtoWriter function;
  for (const Var& v : fn.inputs) function.message(1, named_value_type_msg(v));
  function.string(2, fn.opset);
  function.message(3, map_entry(fn.opset, block));

  ProtoWriter program;
  program.varint(1, 1);  // version
  program.message(2, map_entry("main", function));

  ProtoWriter meta;
  if (!info.short_description.empty()) meta.string(1, info.short_description);
  if (!info.version.empty()) meta.string(2, info.version);
  if (!info.author.empty()) meta.string(3, info.author);
  if (!info.license.empty()) meta.string(4, info.license);
  for (const auto& [k, v] : info.user_defined) {
    ProtoWriter e;
    e.string(1, k);
    e.string(2, v);
    meta.message(100, e);
  }

  ProtoWriter desc;
  for (const Var& v : fn.inputs) desc.message(1, feature_msg(v, info));
  for (const Var& v : fn.outputs) desc.message(10, feature_msg(v, info));
  desc.message(100, meta);

  ProtoWriter model;
  model.varint(1, info.spec_version);
  model.message(2, desc);
  model.message(502, program);  // mlProgram
  return model.data();
}

}  // namespace strand::coreml
