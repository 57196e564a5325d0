#include "core/dtype.h"

namespace strand {

std::optional<DType> parse_dtype(std::string_view s) {
  if (s == "f32" || s == "F32") return DType::F32;
  if (s == "f16" || s == "F16") return DType::F16;
  if (s == "bf16" || s == "BF16") return DType::BF16;
  if (s == "f64" || s == "F64") return DType::F64;
  if (s == "i32" || s == "I32") return DType::I32;
  if (s == "q8" || s == "int8") return DType::Q8;
  return std::nullopt;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {  // inf / nan
    u = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {  // normal
    u = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {  // zero
    u = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    u = sign | (uint32_t(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // nan
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    // value = abs as float; half subnormal unit is 2^-24.
    float a;
    std::memcpy(&a, &abs, 4);
    // Scale so that one half-subnormal ulp is 1.0 and round to nearest even via the FPU.
    const float scaled = a * 16777216.0f;  // 2^24
    uint32_t m = uint32_t(scaled);
    const float rem = scaled - float(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return uint16_t(sign | m);  // m may reach 0x400, which is the smallest normal: still right
  }
  // normal: rebias exponent, round mantissa from 23 to 10 bits (nearest even)
  uint32_t r = abs - 0x38000000u;  // exponent 127 -> 15
  r += 0x0fffu + ((r >> 13) & 1u);
  return uint16_t(sign | (r >> 13));
}

}  // namespace strand
