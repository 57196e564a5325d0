// strand/core/dtype.h — element types and the f16/bf16 <-> f32 conversions.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace strand {

enum class DType : uint8_t {
  F32,   // IEEE binary32: strand's compute type
  F16,   // IEEE binary16: storage for weights
  BF16,  // bfloat16 (top 16 bits of binary32): storage for weights
  F64,   // binary64: the reference
  I32,   // token ids and positions
  Q8,    // int8 weights in blocks of kQ8Block along one axis, one f32 scale per block (below)
};

// ---- Q8: blocked int8 weights ------------------------------------------------------------
//
// A Q8 tensor (rank 1 or 2) is quantized in blocks of kQ8Block consecutive values along one
// axis, its *block axis*: value = q * scale, q an int8 in [-127, 127], one f32 scale per
// block (amax / 127 of the block's values). The shape stays the logical one (a Conv1D weight
// stays [K, N]); the block axis is the axis whose stride is 1 (see core/tensor.h).
// Storage, one allocation:
//   payload  lines x q8_padded(len) int8, where len is the length of the block axis and a
//            line is one index of the other axis; each line is zero-padded to whole blocks;
//   scales   lines x q8_blocks(len) f32, right after the payload (line-major).
// For a weight feeding a matrix product, the block axis should be the reduction axis K
// (axis 0 of a [K, N] weight, axis 1 of a trans_b [N, K] one): then every output column
// reads one line of int8 and its scales, front to back.
// dtype_size(Q8) is 1, the payload byte of one value; q8_bytes() counts the scales too.
constexpr int64_t kQ8Block = 32;
constexpr int64_t q8_blocks(int64_t len) { return (len + kQ8Block - 1) / kQ8Block; }
constexpr int64_t q8_padded(int64_t len) { return q8_blocks(len) * kQ8Block; }
// Bytes of one line: its padded int8 payload and its scales.
constexpr size_t q8_row_bytes(int64_t len) { return size_t(q8_padded(len)) + 4 * size_t(q8_blocks(len)); }
// Bytes of a whole Q8 tensor of `lines` lines of length `len`.
constexpr size_t q8_bytes(int64_t lines, int64_t len) { return size_t(lines) * q8_row_bytes(len); }

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::Q8: return 1;  // payload only: see q8_bytes()
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::F64: return "f64";
    case DType::I32: return "i32";
    case DType::Q8: return "q8";
  }
  return "?";
}

// Accepts strand's names (f32, f16, bf16, q8 or int8) and safetensors' (F32, F16, BF16, F64, I32).
std::optional<DType> parse_dtype(std::string_view s);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN (quiet).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even, overflow -> inf

}  // namespace strand
