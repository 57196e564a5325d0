#include "core/tensor.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
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

namespace {

// Long-lived tensors of 2 MiB and more (weight matrices converted at load:
// to_col_major(), to_q8()) are placed on 2 MiB boundaries and offered to the kernel as
// transparent huge pages (Linux, where THP is in "madvise" mode, as on Debian): a stream
// through the weights then crosses a page boundary, where the hardware prefetchers stop and
// the TLB misses, every 2 MiB instead of every 4 KiB (measured on Zen 4: reads 5-10% faster).
// Not for activations: they are allocated at every forward pass, and a huge-page fault may
// compact memory first (measured: pp512 15-20% slower when they were).
constexpr size_t kHugePage = size_t(2) << 20;

void* alloc_bytes(size_t bytes, const Shape& shape, bool huge_pages = false) {
  const bool huge = huge_pages && bytes >= kHugePage;
  const size_t align = huge ? kHugePage : 64;
  const size_t rounded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded ? rounded : align);
  if (!p) fail("out of memory allocating {} bytes for a tensor of shape {}", bytes, shape_str(shape));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (huge) madvise(p, rounded, MADV_HUGEPAGE);  // a hint: failure only means 4 KiB pages
#endif
  return p;
}

void need_q8(const Tensor& t, const char* what) {
  if (t.dtype != DType::Q8) fail("{} of a {} tensor: not Q8", what, dtype_name(t.dtype));
}

}  // namespace

Tensor Tensor::empty_q8(const Shape& shape, int block_axis, bool huge_pages) {
  for (int64_t d : shape)
    if (d < 0) fail("tensor shape {} has a negative dimension", shape_str(shape));
  if (shape.empty() || shape.size() > 2) fail("a q8 tensor has rank 1 or 2, not {}", shape_str(shape));
  if (block_axis < 0 || block_axis >= int(shape.size()))
    fail("q8 block axis {} is outside a tensor of shape {}", block_axis, shape_str(shape));
  const int64_t len = shape[size_t(block_axis)];
  const int64_t lines = shape.size() == 1 ? 1 : shape[size_t(1 - block_axis)];
  const size_t bytes = q8_bytes(lines, len);
  void* p = alloc_bytes(bytes, shape, huge_pages);
  Tensor t;
  t.data = p;
  t.dtype = DType::Q8;
  t.shape = shape;
  if (shape.size() == 1)
    t.strides = {1};
  else if (block_axis == 0)
    t.strides = {1, q8_padded(len)};
  else
    t.strides = {q8_padded(len), 1};
  t.owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

int Tensor::q8_axis() const {
  need_q8(*this, "q8 layout");
  return strides.size() == 2 && strides[0] == 1 ? 0 : int(strides.size()) - 1;
}

int64_t Tensor::q8_len() const { return shape[size_t(q8_axis())]; }

int64_t Tensor::q8_lines() const { return shape.size() == 1 ? 1 : shape[size_t(1 - q8_axis())]; }

size_t Tensor::nbytes() const {
  if (dtype == DType::Q8) return q8_bytes(q8_lines(), q8_len());
  return size_t(numel()) * dtype_size(dtype);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, bool huge_pages) {
  if (dtype == DType::Q8) return empty_q8(shape, 0, huge_pages);
  for (int64_t d : shape)
    if (d < 0) fail("tensor shape {} has a negative dimension", shape_str(shape));
  const size_t bytes = size_t(strand::numel(shape)) * dtype_size(dtype);
  void* p = alloc_bytes(bytes, shape, huge_pages);
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

bool Tensor::contiguous() const { return dtype != DType::Q8 && strides == contiguous_strides(shape); }

bool Tensor::col_major() const {
  return dtype != DType::Q8 && dtype != DType::I32 && shape.size() == 2 && strides.size() == 2 && strides[0] == 1 &&
         strides[1] == shape[0];
}

Tensor Tensor::col_major_storage() const {
  if (!col_major()) fail("tensor of shape {} is not column-major", shape_str(shape));
  return view_of(data, dtype, {shape[1], shape[0]}, owner);
}

namespace {

// dst[c * R + r] = src[r * C + c] for an R x C matrix of `es`-byte elements, in tiles so both
// sides stay in cache.
template <class E>
void transpose_tiles(const E* s, int64_t R, int64_t C, E* d) {
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < R; r0 += kTile)
    for (int64_t c0 = 0; c0 < C; c0 += kTile)
      for (int64_t r = r0; r < std::min(R, r0 + kTile); ++r)
        for (int64_t c = c0; c < std::min(C, c0 + kTile); ++c) d[c * R + r] = s[r * C + c];
}

void transpose_bytes(const void* src, int64_t R, int64_t C, size_t es, void* dst) {
  switch (es) {
    case 2: transpose_tiles(static_cast<const uint16_t*>(src), R, C, static_cast<uint16_t*>(dst)); break;
    case 4: transpose_tiles(static_cast<const uint32_t*>(src), R, C, static_cast<uint32_t*>(dst)); break;
    case 8: transpose_tiles(static_cast<const uint64_t*>(src), R, C, static_cast<uint64_t*>(dst)); break;
    default: fail("internal: transpose of {}-byte elements", es);
  }
}

}  // namespace

Tensor Tensor::to_col_major() const { return to_col_major(dtype); }

Tensor Tensor::to_col_major(DType to) const {
  auto is_float = [](DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16 || d == DType::F64; };
  const bool lines = col_major() && !contiguous();  // (a contiguous 1 x 1 is read as rows)
  if (shape.size() != 2 || !is_float(dtype) || !is_float(to) || (!lines && !contiguous()))
    fail("a column-major copy needs a contiguous f32/f16/bf16/f64 matrix and a float dtype, not a {} tensor of "
         "shape {} to {}",
         dtype_name(dtype), shape_str(shape), dtype_name(to));
  const int64_t R = shape[0], C = shape[1];
  Tensor st = empty({C, R}, to, /*huge_pages=*/true);  // the storage: C lines of R values
  if (lines) {  // already lines: convert the storage as it is
    const Tensor src = col_major_storage();
    const Tensor conv = src.dtype == to ? src : src.to(to);
    std::memcpy(st.data, conv.data, st.nbytes());
  } else {
    const Tensor src = dtype == to ? *this : this->to(to);
    transpose_bytes(src.data, R, C, dtype_size(to), st.data);
  }
  Tensor t = st;
  t.shape = shape;
  t.strides = {1, R};
  return t;
}

Tensor Tensor::rows(int64_t start, int64_t len) const {
  if (dtype == DType::Q8) fail("rows of a q8 tensor of shape {}: q8 tensors cannot be sliced", shape_str(shape));
  if (shape.empty() || start < 0 || len < 0 || start + len > shape[0])
    fail("rows [{}, {}) out of range for tensor of shape {}", start, start + len, shape_str(shape));
  Tensor t = *this;
  t.data = static_cast<char*>(data) + size_t(start * strides[0]) * dtype_size(dtype);
  t.shape[0] = len;
  return t;
}

Tensor Tensor::reshape(const Shape& s) const {
  if (dtype == DType::Q8) fail("reshape of a q8 tensor of shape {}", shape_str(shape));
  if (!contiguous()) fail("reshape of a non-contiguous tensor of shape {}", shape_str(shape));
  if (strand::numel(s) != numel())
    fail("cannot reshape {} to {}", shape_str(shape), shape_str(s));
  Tensor t = *this;
  t.shape = s;
  t.strides = contiguous_strides(s);
  return t;
}

namespace {

// Value of logical (row-major) element i of a Q8 tensor, exactly (q * scale in double).
double q8_value(const Tensor& t, int64_t i) {
  const int64_t cols = t.rank() == 2 ? t.shape[1] : t.shape[0];
  const int64_t r = t.rank() == 2 ? i / cols : 0, c = t.rank() == 2 ? i % cols : i;
  const int axis = t.q8_axis();
  const int64_t line = t.rank() == 1 ? 0 : axis == 0 ? c : r;
  const int64_t pos = t.rank() == 1 ? c : axis == 0 ? r : c;
  const int64_t len = t.q8_len();
  const int8_t q = t.q8_data()[line * q8_padded(len) + pos];
  return double(q) * double(t.q8_scales()[line * q8_blocks(len) + pos / kQ8Block]);
}

// Dequantizes a Q8 tensor into a contiguous row-major f32 (or f64) buffer.
template <class T>
void q8_dequantize(const Tensor& t, T* out) {
  const int axis = t.q8_axis();
  const int64_t len = t.q8_len(), lines = t.q8_lines(), lp = q8_padded(len), nb = q8_blocks(len);
  const int8_t* q = t.q8_data();
  const float* sc = t.q8_scales();
  // Logical element (line l, position p) sits at out[l * len + p] when blocks run along the
  // last axis, else at out[p * lines + l].
  const bool along_last = t.rank() == 1 || axis == 1;
  for (int64_t l = 0; l < lines; ++l)
    for (int64_t p = 0; p < len; ++p) {
      const T v = T(q[l * lp + p]) * T(sc[l * nb + p / kQ8Block]);
      out[along_last ? l * len + p : p * lines + l] = v;
    }
}

}  // namespace

Tensor Tensor::to_q8(int block_axis) const {
  if (dtype == DType::Q8) {
    if (q8_axis() == block_axis) return to(DType::Q8);
    return to(DType::F32).to_q8(block_axis);
  }
  if (col_major() && !contiguous()) return to(DType::F32).to_q8(block_axis);
  if (!contiguous()) fail("quantization of a non-contiguous tensor of shape {}", shape_str(shape));
  Tensor out = empty_q8(shape, block_axis, /*huge_pages=*/true);  // weights, quantized at load
  const int64_t len = out.q8_len(), lines = out.q8_lines(), lp = q8_padded(len), nb = q8_blocks(len);
  // The values as f32 lines along the block axis: a [K, N] tensor blocked along axis 0 is
  // transposed first (in tiles, so both sides stay in cache).
  Tensor f = dtype == DType::F32 ? *this : to(DType::F32);
  if (rank() == 2 && block_axis == 0) {
    Tensor t = empty({shape[1], shape[0]}, DType::F32);
    const float* src = f.ptr<const float>();
    float* dst = t.ptr<float>();
    const int64_t R = shape[0], C = shape[1];
    for (int64_t r0 = 0; r0 < R; r0 += 32)
      for (int64_t c0 = 0; c0 < C; c0 += 32)
        for (int64_t r = r0; r < std::min(R, r0 + 32); ++r)
          for (int64_t c = c0; c < std::min(C, c0 + 32); ++c) dst[c * R + r] = src[r * C + c];
    f = t;
  }
  const float* v = f.ptr<const float>();
  int8_t* q = static_cast<int8_t*>(out.data);
  float* sc = const_cast<float*>(out.q8_scales());
  for (int64_t l = 0; l < lines; ++l)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t p0 = b * kQ8Block, n = std::min<int64_t>(kQ8Block, len - p0);
      const float* vals = v + l * len + p0;
      float amax = 0;
      for (int64_t j = 0; j < n; ++j) {
        if (!std::isfinite(vals[j])) fail("cannot quantize a non-finite value ({}) of a tensor of shape {}", vals[j], shape_str(shape));
        amax = std::max(amax, std::abs(vals[j]));
      }
      const float scale = amax / 127.0f;
      sc[l * nb + b] = scale;
      int8_t* ql = q + l * lp + p0;
      for (int64_t j = 0; j < kQ8Block; ++j) {
        float r = 0;
        if (j < n && scale > 0) r = std::nearbyint(vals[j] / scale);
        ql[j] = int8_t(std::max(-127.0f, std::min(127.0f, r)));
      }
    }
  return out;
}

double load_as_double(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::F32: return t.ptr<const float>()[i];
    case DType::F16: return f16_to_f32(t.ptr<const uint16_t>()[i]);
    case DType::BF16: return bf16_to_f32(t.ptr<const uint16_t>()[i]);
    case DType::F64: return t.ptr<const double>()[i];
    case DType::I32: return t.ptr<const int32_t>()[i];
    case DType::Q8: return q8_value(t, i);
  }
  return 0;
}

Tensor Tensor::to(DType dst, bool huge_pages) const {
  if (dtype == DType::Q8) {
    if (dst == DType::Q8) {
      Tensor out = empty_q8(shape, q8_axis());
      std::memcpy(out.data, data, nbytes());
      return out;
    }
    if (dst == DType::F64) {
      Tensor out = empty(shape, DType::F64);
      q8_dequantize(*this, out.ptr<double>());
      return out;
    }
    Tensor f = empty(shape, DType::F32);
    q8_dequantize(*this, f.ptr<float>());
    return dst == DType::F32 ? f : f.to(dst);
  }
  if (col_major() && !contiguous()) {  // convert the storage, then transpose it back to rows
    const Tensor st = col_major_storage().to(dst == DType::Q8 ? DType::F32 : dst);
    Tensor out = empty(shape, st.dtype, huge_pages);
    transpose_bytes(st.data, shape[1], shape[0], dtype_size(st.dtype), out.data);
    return dst == DType::Q8 ? out.to_q8(0) : out;
  }
  if (dst == DType::Q8) return to_q8(0);
  if (!contiguous()) fail("conversion of a non-contiguous tensor of shape {}", shape_str(shape));
  Tensor out = empty(shape, dst, huge_pages);
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
    case DType::Q8: break;  // handled above
  }
  return out;
}

void Tensor::poison() {
  const int64_t n = numel();
  if (dtype == DType::Q8) {  // zero payload, NaN scales: every value reads as NaN
    const int64_t lines = q8_lines(), nb = q8_blocks(q8_len());
    std::memset(data, 0, size_t(lines * q8_padded(q8_len())));
    float* sc = const_cast<float*>(q8_scales());
    for (int64_t i = 0; i < lines * nb; ++i) sc[i] = std::numeric_limits<float>::quiet_NaN();
    return;
  }
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
    case DType::Q8: break;  // handled above
  }
}

}  // namespace strand
