// strand/export/coreml/protobuf.h — a minimal Protocol Buffers wire-format encoder.
//
// Enough of the encoding to write Core ML model specifications without protoc: varints
// (wire type 0), 64-bit (1), length-delimited (2) and 32-bit (5) fields. Each message is
// built bottom-up in its own ProtoWriter and embedded in its parent with message().
// Nothing is skipped implicitly: a caller writes exactly the fields it means (proto3 readers
// treat an absent scalar as zero, so callers omit zeros where the schema allows).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace strand::coreml {

class ProtoWriter {
 public:
  // int32/int64/uint32/uint64/enum/bool: a varint. Negative values are sign-extended to 64
  // bits (ten bytes), as the encoding requires for int32 and int64.
  void varint(uint32_t field, int64_t v);
  void boolean(uint32_t field, bool v) { varint(field, v ? 1 : 0); }
  void fixed32(uint32_t field, uint32_t v);
  void fixed64(uint32_t field, uint64_t v);
  void f32(uint32_t field, float v);
  void f64(uint32_t field, double v);
  // string / bytes / embedded message: length-delimited.
  void bytes(uint32_t field, std::string_view data);
  void string(uint32_t field, std::string_view s) { bytes(field, s); }
  void message(uint32_t field, const ProtoWriter& m) { bytes(field, m.data()); }
  // Packed repeated scalars (one length-delimited field holding the concatenated values).
  void packed_varints(uint32_t field, std::span<const int64_t> v);
  void packed_varints(uint32_t field, std::span<const int32_t> v);
  void packed_f32(uint32_t field, std::span<const float> v);

  const std::string& data() const { return buf_; }
  size_t size() const { return buf_.size(); }

 private:
  void tag(uint32_t field, uint32_t wire_type);
  void raw_varint(uint64_t v);
  std::string buf_;
};

}  // namespace strand::coreml
