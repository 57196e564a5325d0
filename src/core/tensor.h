// strand/core/tensor.h — shapes, strides and tensor views over shared storage.
//
// A Tensor is a view: a data pointer, a dtype, a shape and element strides, plus a
// shared owner that keeps the bytes alive (a heap buffer, or a memory-mapped file).
// Copying a Tensor copies the view, never the bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace strand {

using Shape = std::vector<int64_t>;

int64_t numel(const Shape& s);
std::string shape_str(const Shape& s);   // "[3, 768]"
std::vector<int64_t> contiguous_strides(const Shape& s);

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Shape shape;
  std::vector<int64_t> strides;  // in elements
  std::shared_ptr<void> owner;   // keeps `data` alive

  // A new contiguous tensor on the heap (64-byte aligned), uninitialised.
  static Tensor empty(const Shape& shape, DType dtype);
  // A view over memory owned by `owner` (contiguous).
  static Tensor view_of(void* data, DType dtype, const Shape& shape, std::shared_ptr<void> owner);

  int64_t numel() const { return strand::numel(shape); }
  int64_t dim(int i) const { return shape[size_t(i < 0 ? int(shape.size()) + i : i)]; }
  int rank() const { return int(shape.size()); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  bool contiguous() const;
  bool defined() const { return data != nullptr; }

  template <class T>
  T* ptr() const { return static_cast<T*>(data); }

  // Rows [start, start+len) of the first dimension (a view).
  Tensor rows(int64_t start, int64_t len) const;
  // Same bytes, new contiguous shape of equal numel (requires contiguous()).
  Tensor reshape(const Shape& s) const;
  // Contiguous copy converted to `to` (f32/f16/bf16/f64 among each other).
  Tensor to(DType to) const;

  // Fill with quiet NaN (floating types) or a sentinel (i32), so an unwritten element shows.
  void poison();
};

// Element i (row-major over a contiguous tensor) of a float-like tensor, widened to double.
double load_as_double(const Tensor& t, int64_t i);

}  // namespace strand
