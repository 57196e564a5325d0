// tests/coreml_reader/reader.h — an independent reader and interpreter for Core ML ML Program
// packages, used to prove strand's exporter on machines without Core ML.
//
// It shares nothing with the writer (src/export/coreml): it has its own protobuf wire-format
// decoder, reads the package through its Manifest.json, decodes the Model message by the
// field numbers of Core ML's published specification (Model.proto, FeatureTypes.proto,
// MIL.proto), checks the weight file's blob-storage layout, rebuilds the program and runs it
// op by op with strand's plain-loop reference kernels in float, rounding every fp16 value to
// fp16 as the device stores it. While running it checks that every argument names a value
// defined before it and that every op's declared output type equals the type the op really
// produces. Any violation throws ReaderError, and so does every file that is not what it
// should be: files are read as regular files within a size cap (core/file_io.h), offsets and
// sizes are checked without overflow, and no value may hold more than max_value_elements.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"          // f16 <-> f32 conversions
#include "core/error.h"
#include "core/file_io.h"        // regular files only, with size caps
#include "reference/kernels.h"   // strand's reference loops

namespace coreml_reader {

struct ReaderError : std::runtime_error {
  explicit ReaderError(const std::string& s) : std::runtime_error("coreml reader: " + s) {}
};

// The most elements one value (a const, an input or an op's result) may have; a package that
// declares or computes more is refused before the memory is allocated. Fuzzing lowers it.
inline int64_t max_value_elements = int64_t(1) << 31;

// Size caps of the package's files.
constexpr uint64_t kMaxManifestBytes = uint64_t(1) << 20;
constexpr uint64_t kMaxModelBytes = uint64_t(1) << 30;
constexpr uint64_t kMaxWeightBytes = uint64_t(16) << 30;

// The number of elements of `shape`, refused (not overflowed) past max_value_elements.
inline int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw ReaderError(what + ": negative dimension " + std::to_string(d));
    if (d != 0 && n > max_value_elements / d)
      throw ReaderError(what + ": more than " + std::to_string(max_value_elements) + " elements");
    n *= d;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire format

struct Field {
  uint32_t num = 0;
  uint32_t wire = 0;
  uint64_t value = 0;      // varint, fixed32, fixed64
  std::string_view bytes;  // length-delimited
};

inline uint64_t read_varint(std::string_view s, size_t& at) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (at >= s.size()) throw ReaderError("truncated varint");
    const uint8_t b = uint8_t(s[at++]);
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  throw ReaderError("varint longer than 10 bytes");
}

inline std::vector<Field> parse_message(std::string_view s) {
  std::vector<Field> out;
  size_t at = 0;
  while (at < s.size()) {
    const uint64_t key = read_varint(s, at);
    Field f;
    f.num = uint32_t(key >> 3);
    f.wire = uint32_t(key & 7);
    if (f.num == 0) throw ReaderError("field number 0");
    switch (f.wire) {
      case 0: f.value = read_varint(s, at); break;
      case 1:
        if (at + 8 > s.size()) throw ReaderError("truncated fixed64");
        for (int i = 0; i < 8; ++i) f.value |= uint64_t(uint8_t(s[at + size_t(i)])) << (8 * i);
        at += 8;
        break;
      case 2: {
        const uint64_t n = read_varint(s, at);
        if (n > s.size() - at) throw ReaderError("length-delimited field runs past its message");
        f.bytes = s.substr(at, size_t(n));
        at += size_t(n);
        break;
      }
      case 5:
        if (at + 4 > s.size()) throw ReaderError("truncated fixed32");
        for (int i = 0; i < 4; ++i) f.value |= uint64_t(uint8_t(s[at + size_t(i)])) << (8 * i);
        at += 4;
        break;
      default: throw ReaderError("unsupported wire type " + std::to_string(f.wire));
    }
    out.push_back(f);
  }
  return out;
}

inline std::vector<Field> fields(const std::vector<Field>& m, uint32_t num) {
  std::vector<Field> r;
  for (const Field& f : m)
    if (f.num == num) r.push_back(f);
  return r;
}
inline const Field* last(const std::vector<Field>& m, uint32_t num) {  // proto3: last one wins
  const Field* r = nullptr;
  for (const Field& f : m)
    if (f.num == num) r = &f;
  return r;
}
inline std::string str(const std::vector<Field>& m, uint32_t num) {
  const Field* f = last(m, num);
  return f ? std::string(f->bytes) : std::string();
}
inline uint64_t num(const std::vector<Field>& m, uint32_t n) {
  const Field* f = last(m, n);
  return f ? f->value : 0;
}
// Repeated varints, packed or not.
inline std::vector<int64_t> varints(const std::vector<Field>& m, uint32_t n) {
  std::vector<int64_t> r;
  for (const Field& f : m) {
    if (f.num != n) continue;
    if (f.wire == 0) {
      r.push_back(int64_t(f.value));
    } else if (f.wire == 2) {
      size_t at = 0;
      while (at < f.bytes.size()) r.push_back(int64_t(read_varint(f.bytes, at)));
    } else {
      throw ReaderError("repeated varint field with wire type " + std::to_string(f.wire));
    }
  }
  return r;
}
// map<string, message>: entries with key = 1, value = 2.
inline std::vector<std::pair<std::string, std::string_view>> map_entries(const std::vector<Field>& m, uint32_t n) {
  std::vector<std::pair<std::string, std::string_view>> r;
  for (const Field& f : fields(m, n)) {
    const auto e = parse_message(f.bytes);
    const Field* v = last(e, 2);
    r.emplace_back(str(e, 1), v ? v->bytes : std::string_view());
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Program model

// MIL DataType numbers (MIL.proto).
enum Dt : int { kBool = 1, kString = 2, kFp16 = 10, kFp32 = 11, kInt32 = 23 };

struct Type {
  int dtype = 0;
  std::vector<int64_t> shape;
  bool operator==(const Type& o) const { return dtype == o.dtype && shape == o.shape; }
};

inline std::string to_string(const Type& t) {
  std::string s = "dtype " + std::to_string(t.dtype) + " [";
  for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

struct Value {  // a runtime tensor (or a const)
  Type type;
  std::vector<float> f;       // fp16 / fp32 data (fp16 held as exactly representable floats)
  std::vector<int32_t> i;     // int32 and bool
  std::vector<std::string> s; // string
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : type.shape) n *= d;
    return n;
  }
};

struct Op {
  std::string type, name;
  std::vector<std::pair<std::string, std::vector<std::string>>> inputs;
  std::vector<std::pair<std::string, Type>> outputs;
  Value val;              // const
  bool in_blob = false;
  uint64_t blob_offset = 0;
};

struct Feature {
  std::string name, description;
  int64_t array_dtype = 0;  // ArrayFeatureType.ArrayDataType
  std::vector<int64_t> shape;
};

struct BlobInfo {
  uint64_t meta_offset, data_offset, size;
  uint32_t dtype;
};

inline Type parse_value_type(std::string_view vt) {
  const auto m = parse_message(vt);
  const Field* tt = last(m, 1);  // tensorType
  if (!tt) throw ReaderError("a value type that is not a tensor type");
  const auto t = parse_message(tt->bytes);
  Type r;
  r.dtype = int(num(t, 1));
  const int64_t rank = int64_t(num(t, 2));
  for (const Field& d : fields(t, 3)) {
    const auto dm = parse_message(d.bytes);
    const Field* c = last(dm, 1);
    if (!c) throw ReaderError("a dimension that is not constant");
    r.shape.push_back(int64_t(num(parse_message(c->bytes), 1)));
  }
  if (rank != int64_t(r.shape.size()))
    throw ReaderError("rank " + std::to_string(rank) + " with " + std::to_string(r.shape.size()) + " dimensions");
  checked_numel(r.shape, "a tensor type");
  return r;
}

inline Type parse_named(std::string_view nvt, std::string* name) {
  const auto m = parse_message(nvt);
  *name = str(m, 1);
  const Field* t = last(m, 2);
  if (!t) throw ReaderError("value " + *name + " has no type");
  return parse_value_type(t->bytes);
}

inline bool valid_identifier(const std::string& s) {
  if (s.empty() || !(std::isalpha(uint8_t(s[0])) || s[0] == '_')) return false;
  for (char c : s)
    if (!(std::isalnum(uint8_t(c)) || c == '_' || c == '@')) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// The package

class Package {
 public:
  static Package load(const std::string& dir) {
    Package p;
    p.dir_ = dir;
    std::string model_path, weights_dir;
    try {
      const nlohmann::json man = nlohmann::json::parse(read_file(dir + "/Manifest.json", kMaxManifestBytes));
      const std::string root = man.at("rootModelIdentifier").get<std::string>();
      const auto& items = man.at("itemInfoEntries");
      model_path = items.at(root).at("path").get<std::string>();
      for (const auto& [id, item] : items.items())
        if (id != root && item.at("name").get<std::string>() == "weights") weights_dir = item.at("path").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      throw ReaderError("Manifest.json: " + std::string(e.what()));
    }
    check_inside(model_path);
    if (weights_dir.empty()) throw ReaderError("the manifest lists no weights item");
    check_inside(weights_dir);
    p.model_file_ = dir + "/Data/" + model_path;
    p.weight_file_ = dir + "/Data/" + weights_dir + "/weight.bin";
    bool has_weights = false;
    try {
      has_weights = strand::path_exists(p.weight_file_, "weight.bin");
    } catch (const strand::Error& e) {
      throw ReaderError(e.what());
    }
    if (has_weights) p.blob_ = read_file(p.weight_file_, kMaxWeightBytes);
    p.parse_blob_file();
    p.parse_model(read_file(p.model_file_, kMaxModelBytes));
    p.validate();
    return p;
  }

  int spec_version = 0;
  std::vector<Feature> inputs, outputs;  // the model description
  std::map<std::string, std::string> metadata;
  std::string short_description, version_string, author;
  std::string opset;
  std::vector<std::pair<std::string, Type>> fn_inputs;
  std::vector<std::string> block_outputs;
  std::vector<Op> ops;
  std::vector<BlobInfo> blobs;  // every blob in the weight file, in order
  uint32_t blob_count_header = 0;

  // Runs the program. Inputs: one Value per function input (dtype and shape must match).
  std::map<std::string, Value> run(const std::map<std::string, Value>& in) const {
    std::map<std::string, Value> env;
    for (const auto& [name, t] : fn_inputs) {
      const auto it = in.find(name);
      if (it == in.end()) throw ReaderError("input " + name + " not given");
      if (!(it->second.type == t)) throw ReaderError("input " + name + " given as " + to_string(it->second.type));
      Value v = it->second;
      if (t.dtype == kFp16) round_fp16(v);
      env[name] = std::move(v);
    }
    for (const Op& op : ops) exec(op, env);
    std::map<std::string, Value> out;
    for (const std::string& n : block_outputs) out[n] = env.at(n);
    return out;
  }

  // Zero-filled inputs (ids 0): a full run that checks every op's declared type.
  std::map<std::string, Value> dummy_inputs() const {
    std::map<std::string, Value> m;
    for (const auto& [name, t] : fn_inputs) {
      Value v;
      v.type = t;
      if (t.dtype == kInt32) v.i.assign(size_t(v.numel()), 0);
      else v.f.assign(size_t(v.numel()), 0.0f);
      m[name] = v;
    }
    return m;
  }

  const std::string& weight_file() const { return weight_file_; }

 private:
  // A regular file of at most max_bytes (never a FIFO or a device).
  static std::string read_file(const std::string& path, uint64_t max_bytes) {
    try {
      return strand::read_regular_file(path, "package file", max_bytes);
    } catch (const strand::Error& e) {
      throw ReaderError(e.what());
    }
  }
  // A path the manifest gives, relative to Data/: it must stay inside the package.
  static void check_inside(const std::string& rel) {
    if (rel.empty() || rel[0] == '/' || rel.find('\0') != std::string::npos)
      throw ReaderError("manifest path '" + rel + "' is not a relative path");
    size_t start = 0;
    while (start <= rel.size()) {
      const size_t end = std::min(rel.find('/', start), rel.size());
      if (rel.compare(start, end - start, "..") == 0) throw ReaderError("manifest path '" + rel + "' leaves the package");
      start = end + 1;
    }
  }
  static uint64_t le(const std::string& b, uint64_t at, int n) {
    if (at > b.size() || uint64_t(n) > b.size() - at) throw ReaderError("read past the end of a buffer");
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(uint8_t(b[size_t(at) + size_t(i)])) << (8 * i);
    return v;
  }

  // Walks the blob storage file: header, then (metadata, data) pairs, each 64-byte aligned.
  void parse_blob_file() {
    if (blob_.empty()) return;
    if (blob_.size() < 64) throw ReaderError("weight file shorter than its header");
    blob_count_header = uint32_t(le(blob_, 0, 4));
    if (le(blob_, 4, 4) != 2) throw ReaderError("weight file version is not 2");
    for (int i = 8; i < 64; ++i)
      if (blob_[size_t(i)]) throw ReaderError("weight file header reserved bytes are not zero");
    uint64_t at = 64;
    while (at < blob_.size()) {
      if (at % 64) throw ReaderError("blob metadata at unaligned offset " + std::to_string(at));
      if (at + 64 > blob_.size()) throw ReaderError("truncated blob metadata");
      BlobInfo b{at, le(blob_, at + 16, 8), le(blob_, at + 8, 8), uint32_t(le(blob_, at + 4, 4))};
      if (le(blob_, at, 4) != 0xDEADBEEF) throw ReaderError("blob metadata sentinel missing at " + std::to_string(at));
      for (int i = 24; i < 64; ++i)
        if (blob_[size_t(at) + size_t(i)]) throw ReaderError("blob metadata reserved bytes are not zero");
      if (b.data_offset % 64) throw ReaderError("blob data at unaligned offset " + std::to_string(b.data_offset));
      // Compared without sums that could wrap past 2^64 (the file size is far below that).
      if (b.data_offset < at + 64 || b.data_offset > blob_.size() || b.size > blob_.size() - b.data_offset)
        throw ReaderError("blob data out of range at " + std::to_string(at));
      blobs.push_back(b);
      at = (b.data_offset + b.size + 63) / 64 * 64;  // > at: data_offset >= at + 64
    }
    if (blobs.size() != blob_count_header)
      throw ReaderError("weight file header counts " + std::to_string(blob_count_header) + " blobs, found " +
                        std::to_string(blobs.size()));
  }

  static Feature parse_feature(std::string_view fd) {
    const auto m = parse_message(fd);
    Feature f;
    f.name = str(m, 1);
    f.description = str(m, 2);
    const Field* t = last(m, 3);
    if (!t) throw ReaderError("feature " + f.name + " has no type");
    const auto type_fields = parse_message(t->bytes);
    const Field* arr = last(type_fields, 5);  // multiArrayType
    if (!arr) throw ReaderError("feature " + f.name + " is not a multi-array");
    const auto a = parse_message(arr->bytes);
    f.shape = varints(a, 1);
    f.array_dtype = int64_t(num(a, 2));
    return f;
  }

  Value parse_const_value(std::string_view vbytes, const Type& declared, Op& op) {
    const auto v = parse_message(vbytes);
    const Field* tf = last(v, 2);
    if (!tf) throw ReaderError("const " + op.name + " value has no type");
    Value out;
    out.type = parse_value_type(tf->bytes);
    if (!(out.type == declared)) throw ReaderError("const " + op.name + " value type differs from its output type");
    const int64_t n = out.numel();
    if (const Field* bf = last(v, 5)) {  // blobFileValue
      const auto b = parse_message(bf->bytes);
      if (str(b, 1) != "@model_path/weights/weight.bin") throw ReaderError("const " + op.name + " names file " + str(b, 1));
      op.in_blob = true;
      op.blob_offset = num(b, 2);
      const BlobInfo* info = nullptr;
      for (const BlobInfo& x : blobs)
        if (x.meta_offset == op.blob_offset) info = &x;
      if (!info) throw ReaderError("const " + op.name + " refers to no blob at offset " + std::to_string(op.blob_offset));
      if (out.type.dtype != kFp16 || info->dtype != 1) throw ReaderError("const " + op.name + ": blob is not fp16");
      if (info->size != uint64_t(n) * 2) throw ReaderError("const " + op.name + ": blob size does not match its shape");
      out.f.resize(size_t(n));
      for (int64_t k = 0; k < n; ++k)
        out.f[size_t(k)] = strand::f16_to_f32(uint16_t(le(blob_, info->data_offset + uint64_t(2 * k), 2)));
      return out;
    }
    const Field* iv = last(v, 3);
    if (!iv) throw ReaderError("const " + op.name + " has no value");
    const auto immediate = parse_message(iv->bytes);
    const Field* tv = last(immediate, 1);
    if (!tv) throw ReaderError("const " + op.name + " immediate value is not a tensor");
    const auto t = parse_message(tv->bytes);
    if (const Field* ints = last(t, 2)) {
      for (int64_t x : varints(parse_message(ints->bytes), 1)) out.i.push_back(int32_t(x));
      if (out.type.dtype != kInt32) throw ReaderError("const " + op.name + ": ints for a non-int32 type");
    } else if (const Field* bools = last(t, 3)) {
      for (int64_t x : varints(parse_message(bools->bytes), 1)) out.i.push_back(int32_t(x != 0));
      if (out.type.dtype != kBool) throw ReaderError("const " + op.name + ": bools for a non-bool type");
    } else if (const Field* strs = last(t, 4)) {
      for (const Field& s : fields(parse_message(strs->bytes), 1)) out.s.emplace_back(s.bytes);
      if (out.type.dtype != kString) throw ReaderError("const " + op.name + ": strings for a non-string type");
    } else if (const Field* raw = last(t, 7)) {
      const auto raw_fields = parse_message(raw->bytes);
      const Field* rb = last(raw_fields, 1);
      const std::string b(rb ? rb->bytes : std::string_view());
      if (out.type.dtype != kFp16 || b.size() != size_t(n) * 2) throw ReaderError("const " + op.name + ": bad bytes value");
      for (int64_t k = 0; k < n; ++k) out.f.push_back(strand::f16_to_f32(uint16_t(le(b, uint64_t(2 * k), 2))));
    } else if (const Field* fl = last(t, 1)) {
      const auto fm = parse_message(fl->bytes);
      for (const Field& x : fm) {
        if (x.wire != 2) continue;
        for (size_t k = 0; k + 4 <= x.bytes.size(); k += 4) {
          uint32_t u = 0;
          for (int b = 0; b < 4; ++b) u |= uint32_t(uint8_t(x.bytes[k + size_t(b)])) << (8 * b);
          float f;
          std::memcpy(&f, &u, 4);
          out.f.push_back(f);
        }
      }
    } else {
      throw ReaderError("const " + op.name + ": unsupported immediate value");
    }
    const size_t have = out.f.size() + out.i.size() + out.s.size();
    if (int64_t(have) != n) throw ReaderError("const " + op.name + " holds " + std::to_string(have) + " values for " + to_string(out.type));
    return out;
  }

  void parse_model(const std::string& bytes) {
    const auto model = parse_message(bytes);
    spec_version = int(num(model, 1));
    const Field* desc = last(model, 2);
    if (!desc) throw ReaderError("model has no description");
    const auto d = parse_message(desc->bytes);
    for (const Field& f : fields(d, 1)) inputs.push_back(parse_feature(f.bytes));
    for (const Field& f : fields(d, 10)) outputs.push_back(parse_feature(f.bytes));
    if (const Field* meta = last(d, 100)) {
      const auto mm = parse_message(meta->bytes);
      short_description = str(mm, 1);
      version_string = str(mm, 2);
      author = str(mm, 3);
      for (const Field& e : fields(mm, 100)) {
        const auto em = parse_message(e.bytes);
        metadata[str(em, 1)] = str(em, 2);
      }
    }
    const Field* prog = last(model, 502);
    if (!prog) throw ReaderError("model is not an ML Program");
    const auto pm = parse_message(prog->bytes);
    if (num(pm, 1) != 1) throw ReaderError("program version is not 1");
    const auto fns = map_entries(pm, 2);
    if (fns.size() != 1 || fns[0].first != "main") throw ReaderError("expected one function named main");
    const auto fm = parse_message(fns[0].second);
    for (const Field& f : fields(fm, 1)) {
      std::string name;
      const Type t = parse_named(f.bytes, &name);
      fn_inputs.emplace_back(name, t);
    }
    opset = str(fm, 2);
    std::string_view block;
    for (const auto& [k, v] : map_entries(fm, 3))
      if (k == opset) block = v;
    if (block.empty()) throw ReaderError("no block specialization for opset " + opset);
    const auto bm = parse_message(block);
    for (const Field& f : fields(bm, 2)) block_outputs.emplace_back(f.bytes);
    for (const Field& f : fields(bm, 3)) {
      const auto om = parse_message(f.bytes);
      Op op;
      op.type = str(om, 1);
      for (const auto& [param, arg] : map_entries(om, 2)) {
        std::vector<std::string> names;
        for (const Field& bnd : fields(parse_message(arg), 1)) {
          const auto bmsg = parse_message(bnd.bytes);
          if (!last(bmsg, 1)) throw ReaderError("op " + op.type + ": argument " + param + " is not bound by name");
          names.push_back(str(bmsg, 1));
        }
        op.inputs.emplace_back(param, names);
      }
      for (const Field& o : fields(om, 3)) {
        std::string name;
        const Type t = parse_named(o.bytes, &name);
        op.outputs.emplace_back(name, t);
      }
      std::string_view val;
      for (const auto& [k, v] : map_entries(om, 5)) {
        if (k == "name") {
          Op tmp;
          tmp.name = "(name)";
          const Value nv = parse_const_value(v, Type{kString, {}}, tmp);
          op.name = nv.s.at(0);
        } else if (k == "val") {
          val = v;
        } else {
          throw ReaderError("op " + op.type + " has an unknown attribute " + k);
        }
      }
      if (op.type == "const") {
        if (op.outputs.size() != 1 || val.empty()) throw ReaderError("const " + op.name + " malformed");
        op.val = parse_const_value(val, op.outputs[0].second, op);
      }
      ops.push_back(std::move(op));
    }
  }

  // Static checks: identifiers, definitions before use, description matches the function.
  void validate() {
    std::set<std::string> defined;
    for (const auto& [n, t] : fn_inputs) {
      if (!valid_identifier(n) || !defined.insert(n).second) throw ReaderError("bad or duplicate input name " + n);
    }
    for (const Op& op : ops) {
      for (const auto& [p, names] : op.inputs)
        for (const std::string& n : names)
          if (!defined.count(n)) throw ReaderError("op " + op.name + " reads " + n + " before it is defined");
      for (const auto& [n, t] : op.outputs)
        if (!valid_identifier(n) || !defined.insert(n).second) throw ReaderError("bad or duplicate value name " + n);
    }
    for (const std::string& n : block_outputs)
      if (!defined.count(n)) throw ReaderError("block output " + n + " is not defined");
    std::set<uint64_t> referenced;
    for (const Op& op : ops)
      if (op.in_blob && !referenced.insert(op.blob_offset).second) throw ReaderError("two consts share a blob");
    if (referenced.size() != blobs.size()) throw ReaderError("the weight file holds blobs no const refers to");
    auto array_dt = [](int dt) -> int64_t {
      return dt == kFp16 ? 65552 : dt == kFp32 ? 65568 : dt == kInt32 ? 131104 : -1;
    };
    auto check_features = [&](const std::vector<Feature>& fs, const std::vector<std::pair<std::string, Type>>& want,
                              const char* what) {
      if (fs.size() != want.size()) throw ReaderError(std::string(what) + ": description and program differ in count");
      for (size_t k = 0; k < fs.size(); ++k)
        if (fs[k].name != want[k].first || fs[k].shape != want[k].second.shape ||
            fs[k].array_dtype != array_dt(want[k].second.dtype))
          throw ReaderError(std::string(what) + " " + fs[k].name + ": description and program differ");
    };
    check_features(inputs, fn_inputs, "input");
    std::map<std::string, Type> types;
    for (const auto& [n, t] : fn_inputs) types[n] = t;
    for (const Op& op : ops)
      for (const auto& [n, t] : op.outputs) types[n] = t;
    std::vector<std::pair<std::string, Type>> outs;
    for (const std::string& n : block_outputs) outs.emplace_back(n, types.at(n));
    check_features(outputs, outs, "output");
  }

  // ---- execution ---------------------------------------------------------------------------

  static void round_fp16(Value& v) {
    for (float& x : v.f) x = strand::f16_to_f32(strand::f32_to_f16(x));
  }

  static const Value& arg(const Op& op, const std::map<std::string, Value>& env, const std::string& p) {
    for (const auto& [k, names] : op.inputs)
      if (k == p) {
        if (names.size() != 1) throw ReaderError("op " + op.name + ": " + p + " takes one value");
        return env.at(names[0]);
      }
    throw ReaderError("op " + op.name + " (" + op.type + ") lacks argument " + p);
  }
  static bool has(const Op& op, const std::string& p) {
    for (const auto& [k, names] : op.inputs)
      if (k == p) return true;
    return false;
  }
  static int64_t scalar_int(const Value& v, const std::string& what) {
    if (v.type.dtype != kInt32 || v.i.size() != 1 || !v.type.shape.empty()) throw ReaderError(what + " is not an int32 scalar");
    return v.i[0];
  }
  static std::vector<int64_t> int_list(const Value& v, const std::string& what) {
    if (v.type.dtype != kInt32 || v.type.shape.size() != 1) throw ReaderError(what + " is not an int32 list");
    return std::vector<int64_t>(v.i.begin(), v.i.end());
  }
  static bool scalar_bool(const Value& v, const std::string& what) {
    if (v.type.dtype != kBool || v.i.size() != 1) throw ReaderError(what + " is not a bool scalar");
    return v.i[0] != 0;
  }
  static int norm_axis(int64_t a, size_t rank, const std::string& what) {
    const int64_t r = int64_t(rank);
    if (a < -r || a >= r) throw ReaderError(what + ": axis out of range");
    return int(a < 0 ? a + r : a);
  }
  static std::vector<int64_t> strides(const std::vector<int64_t>& s) {
    std::vector<int64_t> st(s.size(), 1);
    for (int k = int(s.size()) - 2; k >= 0; --k) st[size_t(k)] = st[size_t(k) + 1] * s[size_t(k) + 1];
    return st;
  }
  static Value make(int dtype, std::vector<int64_t> shape) {
    Value v;
    v.type = {dtype, std::move(shape)};
    v.f.assign(size_t(checked_numel(v.type.shape, "a result")), 0.0f);
    return v;
  }
  // The one string of a string scalar.
  static const std::string& scalar_string(const Value& v, const std::string& what) {
    if (v.type.dtype != kString || v.s.size() != 1) throw ReaderError(what + " is not a string scalar");
    return v.s[0];
  }
  // Elementwise with numpy broadcasting.
  template <class F>
  static Value broadcast_binary(const Value& a, const Value& b, F f, const std::string& what) {
    if (a.type.dtype != b.type.dtype) throw ReaderError(what + ": operand dtypes differ");
    const size_t r = std::max(a.type.shape.size(), b.type.shape.size());
    auto padded = [&](const std::vector<int64_t>& s) {
      std::vector<int64_t> p(r - s.size(), 1);
      p.insert(p.end(), s.begin(), s.end());
      return p;
    };
    const auto as = padded(a.type.shape), bs = padded(b.type.shape);
    std::vector<int64_t> os(r);
    for (size_t k = 0; k < r; ++k) {
      if (as[k] != bs[k] && as[k] != 1 && bs[k] != 1) throw ReaderError(what + ": shapes do not broadcast");
      os[k] = std::max(as[k], bs[k]);
    }
    Value o = make(a.type.dtype, os);
    const auto ast = strides(as), bst = strides(bs), ost = strides(os);
    for (int64_t idx = 0; idx < o.numel(); ++idx) {
      int64_t ia = 0, ib = 0, rem = idx;
      for (size_t k = 0; k < r; ++k) {
        const int64_t c = rem / ost[k];
        rem %= ost[k];
        ia += (as[k] == 1 ? 0 : c) * ast[k];
        ib += (bs[k] == 1 ? 0 : c) * bst[k];
      }
      o.f[size_t(idx)] = f(a.f[size_t(ia)], b.f[size_t(ib)]);
    }
    return o;
  }
  static Value transpose_last2(const Value& x) {
    std::vector<int64_t> s = x.type.shape;
    const size_t r = s.size();
    const int64_t M = s[r - 2], N = s[r - 1], B = x.numel() / (M * N);
    std::swap(s[r - 2], s[r - 1]);
    Value o = make(x.type.dtype, s);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) o.f[size_t(b * M * N + j * M + i)] = x.f[size_t(b * M * N + i * N + j)];
    return o;
  }

  void exec(const Op& op, std::map<std::string, Value>& env) const {
    namespace K = strand::kernels;
    std::vector<Value> res;
    const std::string& t = op.type;
    if (t == "const") {
      res.push_back(op.val);
    } else if (t == "gather") {
      const Value& x = arg(op, env, "x");
      const Value& idx = arg(op, env, "indices");
      const int axis = norm_axis(scalar_int(arg(op, env, "axis"), "gather axis"), x.type.shape.size(), op.name);
      if (has(op, "batch_dims") && scalar_int(arg(op, env, "batch_dims"), "batch_dims") != 0)
        throw ReaderError("gather with batch_dims is not supported");
      if (idx.type.dtype != kInt32) throw ReaderError("gather indices are not int32");
      std::vector<int64_t> s(x.type.shape.begin(), x.type.shape.begin() + axis);
      s.insert(s.end(), idx.type.shape.begin(), idx.type.shape.end());
      s.insert(s.end(), x.type.shape.begin() + axis + 1, x.type.shape.end());
      Value o = make(x.type.dtype, s);
      int64_t outer = 1, inner = 1;
      for (int k = 0; k < axis; ++k) outer *= x.type.shape[size_t(k)];
      for (size_t k = size_t(axis) + 1; k < x.type.shape.size(); ++k) inner *= x.type.shape[k];
      const int64_t n = x.type.shape[size_t(axis)], ni = idx.numel();
      for (int64_t a = 0; a < outer; ++a)
        for (int64_t j = 0; j < ni; ++j) {
          const int64_t id = idx.i[size_t(j)];
          if (id < 0 || id >= n) throw ReaderError("gather index " + std::to_string(id) + " out of range");
          for (int64_t c = 0; c < inner; ++c) o.f[size_t((a * ni + j) * inner + c)] = x.f[size_t((a * n + id) * inner + c)];
        }
      res.push_back(std::move(o));
    } else if (t == "add" || t == "mul" || t == "sub") {
      const Value &x = arg(op, env, "x"), &y = arg(op, env, "y");
      if (t == "add") res.push_back(broadcast_binary(x, y, [](float a, float b) { return a + b; }, op.name));
      else if (t == "mul") res.push_back(broadcast_binary(x, y, [](float a, float b) { return a * b; }, op.name));
      else res.push_back(broadcast_binary(x, y, [](float a, float b) { return a - b; }, op.name));
    } else if (t == "transpose") {
      const Value& x = arg(op, env, "x");
      const auto perm = int_list(arg(op, env, "perm"), "perm");
      const size_t r = x.type.shape.size();
      if (perm.size() != r) throw ReaderError("transpose perm has the wrong length");
      std::vector<int64_t> s(r);
      for (size_t k = 0; k < r; ++k) s[k] = x.type.shape[size_t(norm_axis(perm[k], r, op.name))];
      Value o = make(x.type.dtype, s);
      const auto ist = strides(x.type.shape), ost = strides(s);
      for (int64_t idx = 0; idx < o.numel(); ++idx) {
        int64_t src = 0, rem = idx;
        for (size_t k = 0; k < r; ++k) {
          const int64_t c = rem / ost[k];
          rem %= ost[k];
          src += c * ist[size_t(norm_axis(perm[k], r, op.name))];
        }
        o.f[size_t(idx)] = x.f[size_t(src)];
      }
      res.push_back(std::move(o));
    } else if (t == "reshape") {
      Value o = arg(op, env, "x");
      const auto s = int_list(arg(op, env, "shape"), "shape");
      for (int64_t d : s)
        if (d <= 0) throw ReaderError("reshape to a non-positive dimension");
      if (checked_numel(s, "reshape") != o.numel()) throw ReaderError("reshape changes the element count");
      o.type.shape = s;
      res.push_back(std::move(o));
    } else if (t == "layer_norm") {
      const Value& x = arg(op, env, "x");
      const auto axes = int_list(arg(op, env, "axes"), "axes");
      if (axes.size() != 1) throw ReaderError("layer_norm over several axes is not supported");
      const int ax = norm_axis(axes[0], x.type.shape.size(), op.name);
      const Value &g = arg(op, env, "gamma"), &b = arg(op, env, "beta"), &e = arg(op, env, "epsilon");
      const int64_t C = x.type.shape[size_t(ax)];
      if (g.numel() != C || b.numel() != C || e.f.size() != 1) throw ReaderError("layer_norm gamma/beta/epsilon shapes");
      int64_t inner = 1;
      for (size_t k = size_t(ax) + 1; k < x.type.shape.size(); ++k) inner *= x.type.shape[k];
      const int64_t outer = x.numel() / (C * inner);
      Value o = make(x.type.dtype, x.type.shape);
      std::vector<float> row(static_cast<size_t>(C)), out(static_cast<size_t>(C));
      for (int64_t a = 0; a < outer; ++a)
        for (int64_t s = 0; s < inner; ++s) {
          for (int64_t c = 0; c < C; ++c) row[size_t(c)] = x.f[size_t((a * C + c) * inner + s)];
          K::layernorm<float>(row.data(), g.f.data(), b.f.data(), 1, C, double(e.f[0]), out.data());
          for (int64_t c = 0; c < C; ++c) o.f[size_t((a * C + c) * inner + s)] = out[size_t(c)];
        }
      res.push_back(std::move(o));
    } else if (t == "conv") {
      const Value &x = arg(op, env, "x"), &w = arg(op, env, "weight");
      const auto& xs = x.type.shape;
      const auto& ws = w.type.shape;
      if (xs.size() != 4 || ws.size() != 4 || ws[2] != 1 || ws[3] != 1 || ws[1] != xs[1])
        throw ReaderError("conv " + op.name + ": only 1x1 convolutions over matching channels are supported");
      if (int_list(arg(op, env, "strides"), "strides") != std::vector<int64_t>{1, 1} ||
          int_list(arg(op, env, "dilations"), "dilations") != std::vector<int64_t>{1, 1} ||
          scalar_int(arg(op, env, "groups"), "groups") != 1 || scalar_string(arg(op, env, "pad_type"), "pad_type") != "valid")
        throw ReaderError("conv " + op.name + ": unsupported strides/dilations/groups/padding");
      const int64_t Cin = xs[1], Cout = ws[0], S = xs[2] * xs[3];
      Value o = make(x.type.dtype, {xs[0], Cout, xs[2], xs[3]});
      for (int64_t n = 0; n < xs[0]; ++n)
        K::matmul<float>(w.f.data(), x.f.data() + n * Cin * S, false, Cout, Cin, S, o.f.data() + n * Cout * S);
      if (has(op, "bias")) {
        const Value& b = arg(op, env, "bias");
        if (b.numel() != Cout) throw ReaderError("conv bias size");
        for (int64_t n = 0; n < xs[0]; ++n)
          for (int64_t c = 0; c < Cout; ++c)
            for (int64_t s = 0; s < S; ++s) o.f[size_t((n * Cout + c) * S + s)] += b.f[size_t(c)];
      }
      res.push_back(std::move(o));
    } else if (t == "split") {
      const Value& x = arg(op, env, "x");
      const int ax = norm_axis(scalar_int(arg(op, env, "axis"), "axis"), x.type.shape.size(), op.name);
      const int64_t parts = scalar_int(arg(op, env, "num_splits"), "num_splits");
      const int64_t n = x.type.shape[size_t(ax)];
      if (parts <= 0 || n % parts) throw ReaderError("split into unequal parts");
      int64_t inner = 1;
      for (size_t k = size_t(ax) + 1; k < x.type.shape.size(); ++k) inner *= x.type.shape[k];
      const int64_t outer = x.numel() / (n * inner), len = n / parts;
      for (int64_t p = 0; p < parts; ++p) {
        std::vector<int64_t> s = x.type.shape;
        s[size_t(ax)] = len;
        Value o = make(x.type.dtype, s);
        for (int64_t a = 0; a < outer; ++a)
          for (int64_t j = 0; j < len * inner; ++j)
            o.f[size_t(a * len * inner + j)] = x.f[size_t(a * n * inner + p * len * inner + j)];
        res.push_back(std::move(o));
      }
    } else if (t == "concat") {
      std::vector<const Value*> xs;
      for (const auto& [k, names] : op.inputs)
        if (k == "values")
          for (const std::string& nm : names) xs.push_back(&env.at(nm));
      if (xs.empty()) throw ReaderError("concat of nothing");
      if (has(op, "interleave") && scalar_bool(arg(op, env, "interleave"), "interleave"))
        throw ReaderError("interleaved concat is not supported");
      const int ax = norm_axis(scalar_int(arg(op, env, "axis"), "axis"), xs[0]->type.shape.size(), op.name);
      std::vector<int64_t> s = xs[0]->type.shape;
      s[size_t(ax)] = 0;
      for (const Value* v : xs) {
        if (v->type.shape.size() != s.size() || v->type.dtype != xs[0]->type.dtype) throw ReaderError("concat operands differ");
        for (size_t k = 0; k < s.size(); ++k)
          if (int(k) != ax && v->type.shape[k] != xs[0]->type.shape[k]) throw ReaderError("concat shapes differ");
        s[size_t(ax)] += v->type.shape[size_t(ax)];
      }
      int64_t inner = 1;
      for (size_t k = size_t(ax) + 1; k < s.size(); ++k) inner *= s[k];
      Value o = make(xs[0]->type.dtype, s);
      const int64_t outer = o.numel() / (s[size_t(ax)] * inner);
      int64_t off = 0;
      for (const Value* v : xs) {
        const int64_t n = v->type.shape[size_t(ax)];
        for (int64_t a = 0; a < outer; ++a)
          for (int64_t j = 0; j < n * inner; ++j)
            o.f[size_t(a * s[size_t(ax)] * inner + off * inner + j)] = v->f[size_t(a * n * inner + j)];
        off += n;
      }
      res.push_back(std::move(o));
    } else if (t == "matmul") {
      Value x = arg(op, env, "x"), y = arg(op, env, "y");
      if (x.type.shape.size() < 2 || y.type.shape.size() < 2 || x.type.dtype != y.type.dtype)
        throw ReaderError("matmul operands");
      if (scalar_bool(arg(op, env, "transpose_x"), "transpose_x")) x = transpose_last2(x);
      if (scalar_bool(arg(op, env, "transpose_y"), "transpose_y")) y = transpose_last2(y);
      const auto &xs = x.type.shape, &ys = y.type.shape;
      const int64_t M = xs[xs.size() - 2], Kd = xs.back(), N = ys.back();
      if (ys[ys.size() - 2] != Kd) throw ReaderError("matmul inner dimensions differ");
      if (std::vector<int64_t>(xs.begin(), xs.end() - 2) != std::vector<int64_t>(ys.begin(), ys.end() - 2))
        throw ReaderError("matmul with broadcast batch dimensions is not supported");
      std::vector<int64_t> s(xs.begin(), xs.end() - 2);
      s.push_back(M);
      s.push_back(N);
      Value o = make(x.type.dtype, s);
      const int64_t B = x.numel() / (M * Kd);
      for (int64_t b = 0; b < B; ++b)
        K::matmul<float>(x.f.data() + b * M * Kd, y.f.data() + b * Kd * N, false, M, Kd, N, o.f.data() + b * M * N);
      res.push_back(std::move(o));
    } else if (t == "softmax") {
      const Value& x = arg(op, env, "x");
      const int ax = norm_axis(scalar_int(arg(op, env, "axis"), "axis"), x.type.shape.size(), op.name);
      if (ax != int(x.type.shape.size()) - 1) throw ReaderError("softmax over a non-last axis is not supported");
      Value o = make(x.type.dtype, x.type.shape);
      const int64_t N = x.type.shape.back();
      K::softmax<float>(x.f.data(), x.numel() / N, N, o.f.data());
      res.push_back(std::move(o));
    } else if (t == "gelu" || t == "relu" || t == "silu" || t == "sigmoid") {
      const Value& x = arg(op, env, "x");
      Value o = make(x.type.dtype, x.type.shape);
      if (t == "sigmoid") {
        for (int64_t k = 0; k < x.numel(); ++k) o.f[size_t(k)] = 1.0f / (1.0f + std::exp(-x.f[size_t(k)]));
      } else {
        strand::Act a = t == "relu" ? strand::Act::Relu : t == "silu" ? strand::Act::Silu : strand::Act::GeluErf;
        if (t == "gelu") {
          const std::string mode = has(op, "mode") ? scalar_string(arg(op, env, "mode"), "gelu mode") : "EXACT";
          if (mode == "TANH_APPROXIMATION") a = strand::Act::GeluTanh;
          else if (mode != "EXACT") throw ReaderError("gelu mode " + mode + " is not supported");
        }
        K::activation<float>(x.f.data(), x.numel(), a, o.f.data());
      }
      res.push_back(std::move(o));
    } else {
      throw ReaderError("op type " + t + " is not supported by the reader");
    }
    if (res.size() != op.outputs.size())
      throw ReaderError("op " + op.name + " declares " + std::to_string(op.outputs.size()) + " outputs, produces " +
                        std::to_string(res.size()));
    for (size_t k = 0; k < res.size(); ++k) {
      if (!(res[k].type == op.outputs[k].second))
        throw ReaderError("op " + op.name + " (" + t + ") output " + op.outputs[k].first + " is declared " +
                          to_string(op.outputs[k].second) + " but is " + to_string(res[k].type));
      if (res[k].type.dtype == kFp16) round_fp16(res[k]);
      env[op.outputs[k].first] = std::move(res[k]);
    }
  }

  std::string dir_, model_file_, weight_file_, blob_;
};

}  // namespace coreml_reader
