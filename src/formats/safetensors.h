// strand/formats/safetensors.h — reading (memory-mapped) and writing safetensors files.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON header (an object
// mapping tensor names to {"dtype", "shape", "data_offsets": [begin, end]}, plus an
// optional "__metadata__" string->string object), then the data section; offsets are
// relative to the start of the data section.
//
// A file is untrusted input: SafeTensors::open validates the whole header (dtypes,
// shapes, offsets, sizes, duplicate names, overlapping ranges) before any tensor is
// exposed, and every problem becomes a one-line strand::Error "<path>: <problem>".
// Tensor data is not copied: the tensors are views into a read-only private mapping
// (writing through a view faults). The only exception is a tensor whose bytes are not
// aligned to its element size; see SafeTensors::open.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace strand {

class SafeTensors {
 public:
  // Maps and validates `path`; throws strand::Error("<path>: <problem>").
  static std::shared_ptr<SafeTensors> open(const std::string& path);

  // The tensor called `name`, or nullptr if the file has none.
  const Tensor* find(const std::string& name) const;
  // Every tensor, by name. Each view's owner keeps the mapping alive, so a Tensor may
  // outlive this object.
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  // The "__metadata__" object (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  // Size of the mapped file in bytes.
  size_t file_size() const { return file_size_; }

 private:
  SafeTensors() = default;

  std::string path_;
  size_t file_size_ = 0;
  std::shared_ptr<void> mapping_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (contiguous; names unique and not "__metadata__") in the given order,
// packed back to back after a header padded with spaces to a multiple of 8 bytes.
// Metadata, when not empty, goes to "__metadata__". Throws strand::Error on failure.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The safetensors spelling of a dtype: "F32", "F16", "BF16", "F64", "I32" ("?" for a
// strand-internal dtype that safetensors files do not hold).
const char* safetensors_dtype_name(DType t);

}  // namespace strand
