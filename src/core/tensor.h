// strand/core/tensor.h — shapes, strides and tensor views over shared storage.
//
// A Tensor is a view: a data pointer, a dtype, a shape and element strides, plus a
// shared owner that keeps the bytes alive (a heap buffer, or a memory-mapped file).
// Copying a Tensor copies the view, never the bytes.
//
// Q8 tensors (blocked int8, see core/dtype.h) keep their logical shape; their strides are in
// int8 payload elements and the axis with stride 1 is the block axis. For shape [R, S]:
// blocks along axis 0 -> strides {1, q8_padded(R)} (S lines of R values); along axis 1 ->
// strides {q8_padded(S), 1} (R lines of S values). A Q8 tensor is never contiguous() in the
// plain sense; rows() and reshape() refuse it; to() converts it both ways.
//
// Column-major matrices: a rank-2 f32/f16/bf16/f64 tensor of shape [R, S] with strides {1, R}
// holds S lines of R values, the same layout as a Q8 tensor blocked along axis 0. strand
// stores the weight matrices of a model this way ([in, out] read as out lines of in values,
// to_col_major()), so that a matrix-vector product streams one contiguous line per output;
// the logical shape, and so the graph, does not change. Tiers read such a weight through
// col_major_storage() (its [S, R] row-major bytes, a product with Bᵀ); to() makes a
// row-major copy.
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

  // A new contiguous tensor on the heap (64-byte aligned), uninitialised. huge_pages: for
  // long-lived tensors (weights) of 2 MiB and more, 2 MiB aligned and offered to the kernel as
  // transparent huge pages (Linux).
  static Tensor empty(const Shape& shape, DType dtype, bool huge_pages = false);
  // A view over memory owned by `owner` (contiguous).
  static Tensor view_of(void* data, DType dtype, const Shape& shape, std::shared_ptr<void> owner);
  // A new Q8 tensor (rank 1 or 2) blocked along `block_axis`, uninitialised.
  static Tensor empty_q8(const Shape& shape, int block_axis, bool huge_pages = false);

  int64_t numel() const { return strand::numel(shape); }
  int64_t dim(int i) const { return shape[size_t(i < 0 ? int(shape.size()) + i : i)]; }
  int rank() const { return int(shape.size()); }
  size_t nbytes() const;  // storage bytes (Q8: payload with its padding, and the scales)
  bool contiguous() const;
  // Rank 2, f32/f16/bf16/f64, strides {1, R} for shape [R, S] (see the header comment). A
  // 1 x 1 matrix can be both this and contiguous(): either reading is then right.
  bool col_major() const;
  // A column-major [R, S] tensor's bytes as the row-major [S, R] tensor they are (a view).
  Tensor col_major_storage() const;
  // A column-major copy of a rank-2 f32/f16/bf16/f64 tensor (row-major or column-major),
  // in the same dtype or converted to `to`. Meant for weights: 2 MiB and larger copies are
  // placed on transparent huge pages.
  Tensor to_col_major() const;
  Tensor to_col_major(DType to) const;
  bool defined() const { return data != nullptr; }

  template <class T>
  T* ptr() const { return static_cast<T*>(data); }

  // Rows [start, start+len) of the first dimension (a view).
  Tensor rows(int64_t start, int64_t len) const;
  // Same bytes, new contiguous shape of equal numel (requires contiguous()).
  Tensor reshape(const Shape& s) const;
  // Contiguous copy converted to `to` (f32/f16/bf16/f64 among each other; from Q8 by
  // dequantizing; to Q8 by quantizing along axis 0, as to_q8(0)). Column-major tensors are
  // converted too; other non-contiguous views are refused. huge_pages: as for empty(), for a
  // copy that lives long (a weight converted at load).
  Tensor to(DType to, bool huge_pages = false) const;
  // Quantized copy (rank 1 or 2) in blocks of kQ8Block along `block_axis`: each block's scale
  // is max|v| / 127 and q = round-to-nearest-even(v / scale). Non-finite values are an error.
  Tensor to_q8(int block_axis) const;

  // Q8 layout (dtype == Q8 only).
  int q8_axis() const;         // the block axis
  int64_t q8_len() const;      // values along the block axis
  int64_t q8_lines() const;    // lines (indices of the other axis; 1 for rank 1)
  const int8_t* q8_data() const { return static_cast<const int8_t*>(data); }
  const float* q8_scales() const {  // lines x q8_blocks(len), after the payload
    return reinterpret_cast<const float*>(static_cast<const char*>(data) + size_t(q8_lines() * q8_padded(q8_len())));
  }

  // Fill with quiet NaN (floating types) or a sentinel (i32), so an unwritten element shows.
  void poison();
};

// Element i (row-major over a contiguous tensor) of a float-like tensor, widened to double.
double load_as_double(const Tensor& t, int64_t i);

}  // namespace strand
