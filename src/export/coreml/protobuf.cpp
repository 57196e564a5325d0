#include "export/coreml/protobuf.h"

#include <cstring>

namespace strand::coreml {

void ProtoWriter::raw_varint(uint64_t v) {
  while (v >= 0x80) {
    buf_.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  buf_.push_back(char(uint8_t(v)));
}

void ProtoWriter::tag(uint32_t field, uint32_t wire_type) { raw_varint((uint64_t(field) << 3) | wire_type); }

void ProtoWriter::varint(uint32_t field, int64_t v) {
  tag(field, 0);
  raw_varint(uint64_t(v));
}

void ProtoWriter::fixed32(uint32_t field, uint32_t v) {
  tag(field, 5);
  for (int i = 0; i < 4; ++i) buf_.push_back(char(uint8_t(v >> (8 * i))));
}

void ProtoWriter::fixed64(uint32_t field, uint64_t v) {
  tag(field, 1);
  for (int i = 0; i < 8; ++i) buf_.push_back(char(uint8_t(v >> (8 * i))));
}

void ProtoWriter::f32(uint32_t field, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  fixed32(field, u);
}

void ProtoWriter::f64(uint32_t field, double v) {
  uint64_t u;
  std::memcpy(&u, &v, 8);
  fixed64(field, u);
}

void ProtoWriter::bytes(uint32_t field, std::string_view data) {
  tag(field, 2);
  raw_varint(data.size());
  buf_.append(data.data(), data.size());
}

void ProtoWriter::packed_varints(uint32_t field, std::span<const int64_t> v) {
  ProtoWriter body;
  for (int64_t x : v) body.raw_varint(uint64_t(x));
  bytes(field, body.data());
}

void ProtoWriter::packed_varints(uint32_t field, std::span<const int32_t> v) {
  ProtoWriter body;
  for (int32_t x : v) body.raw_varint(uint64_t(int64_t(x)));
  bytes(field, body.data());
}

void ProtoWriter::packed_f32(uint32_t field, std::span<const float> v) {
  std::string body(v.size() * 4, '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &v[i], 4);
    for (int b = 0; b < 4; ++b) body[4 * i + size_t(b)] = char(uint8_t(u >> (8 * b)));
  }
  bytes(field, body);
}

}  // namespace strand::coreml
