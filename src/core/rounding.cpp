// strand/core/rounding.cpp — the rounding rules of core/rounding.h.
#include "core/rounding.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"

namespace strand {

std::string_view rounding_name(Rounding r) {
  switch (r) {
    case Rounding::None: return "none";
    case Rounding::BF16: return "bf16";
    case Rounding::F16: return "f16";
    case Rounding::TF32: return "tf32 (10-bit mantissa)";
    case Rounding::Q8: return "int8 in blocks of 32 per row";
  }
  return "?";
}

std::string_view rounding_short(Rounding r) {
  switch (r) {
    case Rounding::None: return "";
    case Rounding::BF16: return "bf16";
    case Rounding::F16: return "f16";
    case Rounding::TF32: return "tf32";
    case Rounding::Q8: return "q8";
  }
  return "?";
}

void quantize_row_q8(const float* x, int64_t n, int8_t* q, float* scales) {
  const int64_t nb = q8_blocks(n);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t p0 = b * kQ8Block, len = std::min<int64_t>(kQ8Block, n - p0);
    float amax = 0;
    bool finite = true;
    for (int64_t j = 0; j < len; ++j) {
      finite = finite && std::isfinite(x[p0 + j]);
      amax = std::max(amax, std::abs(x[p0 + j]));
    }
    const float scale = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
    scales[b] = scale;
    for (int64_t j = 0; j < kQ8Block; ++j) {
      float r = 0;
      if (j < len && scale > 0) r = std::nearbyint(x[p0 + j] / scale);
      q[p0 + j] = int8_t(std::max(-127.0f, std::min(127.0f, r)));
    }
  }
}

float round_value(float x, Rounding r) {
  switch (r) {
    case Rounding::None: return x;
    case Rounding::BF16: return bf16_to_f32(f32_to_bf16(x));
    case Rounding::F16: return f16_to_f32(f32_to_f16(x));
    case Rounding::TF32: {
      if (!std::isfinite(x)) return x;
      uint32_t u;
      std::memcpy(&u, &x, 4);
      u += 0xfffu + ((u >> 13) & 1u);  // nearest even at bit 13
      u &= ~0x1fffu;
      float y;
      std::memcpy(&y, &u, 4);
      return y;
    }
    case Rounding::Q8: fail("round_value: q8 rounds whole rows (use round_to_f64)");
  }
  return x;
}

Tensor round_to_f64(const Tensor& t, Rounding r) {
  if (t.rank() < 1 || t.rank() > 2) fail("round_to_f64: rank {} tensor (1 or 2 expected)", t.rank());
  Tensor d = t.to(DType::F64);  // contiguous, logical shape
  if (r == Rounding::None) return d;
  double* v = d.ptr<double>();
  const int64_t n = d.numel();
  if (r != Rounding::Q8) {
    for (int64_t i = 0; i < n; ++i) v[i] = round_value(float(v[i]), r);
    return d;
  }
  const int64_t cols = d.dim(-1), rows = cols > 0 ? n / cols : 0;
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<int8_t> q(static_cast<size_t>(q8_padded(cols)));
  std::vector<float> sc(static_cast<size_t>(q8_blocks(cols)));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) row[size_t(j)] = float(v[i * cols + j]);
    quantize_row_q8(row.data(), cols, q.data(), sc.data());
    for (int64_t j = 0; j < cols; ++j) v[i * cols + j] = double(q[size_t(j)]) * double(sc[size_t(j / kQ8Block)]);
  }
  return d;
}

}  // namespace strand
