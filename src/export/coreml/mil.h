// strand/export/coreml/mil.h — a Core ML ML Program ("MIL") held in memory, a builder for it,
// and its serialization to the Core ML model specification (Model.proto with an mlProgram).
//
// Only what strand's exporter needs: one function ("main") with one block in one opset,
// tensor values with static shapes, and these operations (names and parameters as in Core ML's
// MIL op reference): const, gather, add, mul, transpose, reshape, layer_norm, conv, split,
// concat, matmul, softmax, gelu, relu, silu, sigmoid. The builder infers every output type,
// so the program it writes declares the type of every value.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "export/coreml/weight_blob.h"

namespace strand::coreml {

// MIL data types (the DataType numbers of Core ML's MIL specification).
enum class MilDType : int32_t { Bool = 1, String = 2, F16 = 10, F32 = 11, I32 = 23 };
const char* mil_dtype_name(MilDType t);  // "fp16", "fp32", "int32", "bool", "string"

struct TensorType {
  MilDType dtype = MilDType::F16;
  std::vector<int64_t> shape;  // empty: a scalar (rank 0)
  int64_t numel() const;
};
std::string type_str(const TensorType& t);  // "fp16[1, 768, 1, 64]"

struct Var {
  std::string name;
  TensorType type;
};

// The value of a const op: one of the payloads, inline in the program or in the weight file.
struct ConstData {
  std::vector<int32_t> ints;
  std::vector<float> floats;
  std::vector<uint16_t> f16;  // binary16 bits
  std::vector<std::string> strings;
  std::vector<uint8_t> bools;
  bool in_blob = false;       // f16 data lives in weights/weight.bin at blob_offset
  uint64_t blob_offset = 0;
};

struct MilOp {
  std::string type;  // "conv", "const", ...
  std::string name;  // the op's "name" attribute
  std::vector<std::pair<std::string, std::vector<std::string>>> inputs;  // parameter -> bound value names
  std::vector<Var> outputs;
  ConstData value;    // const ops only
  std::string block;  // the model part it belongs to ("embed", "h.3.attn", "lm_head.1"), for reports
};

struct MilFunction {
  std::string opset = "CoreML6";  // iOS 16 / macOS 13 operation set
  std::vector<Var> inputs;
  std::vector<Var> outputs;
  std::vector<MilOp> ops;
  // The type of every value by name: function inputs and every op output.
  std::map<std::string, TensorType> types() const;
};

// Model-level information written next to the program.
struct ModelInfo {
  int32_t spec_version = 7;  // Core ML specification 7: iOS 16 / macOS 13, fp16 inputs and outputs
  std::string short_description, version, author, license;
  std::vector<std::pair<std::string, std::string>> user_defined;  // metadata key -> value
  std::map<std::string, std::string> feature_descriptions;        // input/output name -> text
};

// The file name every blob reference uses inside a package.
inline constexpr const char* kWeightFileRef = "@model_path/weights/weight.bin";

// The serialized Model message (the package's model.mlmodel).
std::string serialize_model(const MilFunction& fn, const ModelInfo& info);

// Builds a MilFunction op by op. Names given to ops are made valid MIL identifiers and unique.
// f16 constants of at least `blob_min` elements go to the weight file, smaller ones inline.
class MilBuilder {
 public:
  explicit MilBuilder(WeightBlob& blob, int64_t blob_min = 16) : blob_(blob), blob_min_(blob_min) {}

  void set_block(std::string b) { block_ = std::move(b); }
  Var input(const std::string& name, TensorType t);
  void output(const Var& v) { fn_.outputs.push_back(v); }

  Var const_i32(const std::string& name, std::vector<int32_t> v, bool scalar = false);
  Var const_bool(const std::string& name, bool v);
  Var const_str(const std::string& name, const std::string& v);
  Var const_f16_scalar(const std::string& name, float v);
  Var const_f16(const std::string& name, std::vector<uint16_t> bits, std::vector<int64_t> shape);

  Var gather(const Var& x, const Var& indices, int axis, const std::string& name);
  Var add(const Var& x, const Var& y, const std::string& name);
  Var mul(const Var& x, const Var& y, const std::string& name);
  Var transpose(const Var& x, std::vector<int32_t> perm, const std::string& name);
  Var reshape(const Var& x, std::vector<int64_t> shape, const std::string& name);
  Var layer_norm(const Var& x, std::vector<int32_t> axes, const Var& gamma, const Var& beta, float eps,
                 const std::string& name);
  // 1x1 convolution: x (N, Cin, H, W), weight (Cout, Cin, 1, 1), bias (Cout) or none.
  Var conv1x1(const Var& x, const Var& weight, const Var* bias, const std::string& name);
  // Equal parts along `axis`; output i is named names[i].
  std::vector<Var> split(const Var& x, int parts, int axis, const std::vector<std::string>& names);
  Var concat(const std::vector<Var>& xs, int axis, const std::string& name);
  Var matmul(const Var& x, const Var& y, bool transpose_x, bool transpose_y, const std::string& name);
  Var softmax(const Var& x, int axis, const std::string& name);
  Var gelu(const Var& x, bool tanh_approximation, const std::string& name);
  Var unary(const std::string& type, const Var& x, const std::string& name);  // relu, silu, sigmoid

  MilFunction& function() { return fn_; }

 private:
  std::string unique(const std::string& name);
  MilOp& push(const std::string& type, const std::string& name);
  Var param(MilOp& op, const std::string& param, const Var& v);
  std::string arg_name(const std::string& op, const std::string& param);
  WeightBlob& blob_;
  int64_t blob_min_;
  std::string block_;
  MilFunction fn_;
  std::map<std::string, int> used_;
};

// A valid MIL identifier from any string: [A-Za-z_][A-Za-z0-9_@]*.
std::string mil_identifier(const std::string& s);

}  // namespace strand::coreml
