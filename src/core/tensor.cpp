#include "core/tensor.h"

#include <cstdlib>
#include <limits>

#include "core/error.h"

namespace strand {

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::vector<int64_t> contiguous_strides(const Shape& s) {
  std::vector<int64_t> st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape)
    if (d < 0) fail("tensor shape {} has a negative dimension", shape_str(shape));
  const size_t bytes = size_t(strand::numel(shape)) * dtype_size(dtype);
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!p) fail("out of memory allocating {} bytes for a tensor of shape {}", bytes, shape_str(shape));
  Tensor t;
  t.data = p;
  t.dtype = dtype;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

Tensor Tensor::view_of(void* data, DType dtype, const Shape& shape, std::shared_ptr<void> owner) {
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.owner = std::move(owner);
  return t;
}

bool Tensor::contiguous() const { return strides == contiguous_strides(shape); }

Tensor Tensor::rows(int64_t start, int64_t len) const {
  if (shape.empty() || start < 0 || len < 0 || start + len > shape[0])
    fail("rows [{}, {}) out of range for tensor of shape {}", start, start + len, shape_str(shape));
  Tensor t = *this;
  t.data = static_cast<char*>(data) + size_t(start * strides[0]) * dtype_size(dtype);
  t.shape[0] = len;
  return t;
}

Tensor Tensor::reshape(const Shape& s) const {
  if (!contiguous()) fail("reshape of a non-contiguous tensor of shape {}", shape_str(shape));
  if (strand::numel(s) != numel())
    fail("cannot reshape {} to {}", shape_str(shape), shape_str(s));
  Tensor t = *this;
  t.shape = s;
  t.strides = contiguous_strides(s);
  return t;
}

double load_as_double(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::F32: return t.ptr<const float>()[i];
    case DType::F16: return f16_to_f32(t.ptr<const uint16_t>()[i]);
    case DType::BF16: return bf16_to_f32(t.ptr<const uint16_t>()[i]);
    case DType::F64: return t.ptr<const double>()[i];
    case DType::I32: return t.ptr<const int32_t>()[i];
  }
  return 0;
}

Tensor Tensor::to(DType dst) const {
  if (!contiguous()) fail("conversion of a non-contiguous tensor of shape {}", shape_str(shape));
  Tensor out = empty(shape, dst);
  const int64_t n = numel();
  if (dst == dtype) {
    std::memcpy(out.data, data, nbytes());
    return out;
  }
  switch (dst) {
    case DType::F32: {
      float* o = out.ptr<float>();
      if (dtype == DType::F16) {
        const uint16_t* s = ptr<const uint16_t>();
        for (int64_t i = 0; i < n; ++i) o[i] = f16_to_f32(s[i]);
      } else if (dtype == DType::BF16) {
        const uint16_t* s = ptr<const uint16_t>();
        for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_f32(s[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) o[i] = float(load_as_double(*this, i));
      }
      break;
    }
    case DType::F64: {
      double* o = out.ptr<double>();
      for (int64_t i = 0; i < n; ++i) o[i] = load_as_double(*this, i);
      break;
    }
    case DType::F16: {
      uint16_t* o = out.ptr<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_f16(float(load_as_double(*this, i)));
      break;
    }
    case DType::BF16: {
      uint16_t* o = out.ptr<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(float(load_as_double(*this, i)));
      break;
    }
    case DType::I32: {
      int32_t* o = out.ptr<int32_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = int32_t(load_as_double(*this, i));
      break;
    }
  }
  return out;
}

void Tensor::poison() {
  const int64_t n = numel();
  if (!contiguous()) fail("poison of a non-contiguous tensor");
  switch (dtype) {
    case DType::F32: {
      float* p = ptr<float>();
      for (int64_t i = 0; i < n; ++i) p[i] = std::numeric_limits<float>::quiet_NaN();
      break;
    }
    case DType::F64: {
      double* p = ptr<double>();
      for (int64_t i = 0; i < n; ++i) p[i] = std::numeric_limits<double>::quiet_NaN();
      break;
    }
    case DType::F16:
    case DType::BF16: {
      uint16_t* p = ptr<uint16_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = 0x7e00u | (dtype == DType::BF16 ? 0x7fc0u : 0u);
      break;
    }
    case DType::I32: {
      int32_t* p = ptr<int32_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = std::numeric_limits<int32_t>::min();
      break;
    }
  }
}

}  // namespace strand
