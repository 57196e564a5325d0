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
//
// A sharded checkpoint (Hugging Face's save_pretrained(max_shard_size=...)) is an index,
// model.safetensors.index.json = {"metadata": {...}, "weight_map": {"<tensor>": "<shard file>"}},
// beside the shard files it names. SafeTensors::open_sharded checks the index against the
// shards (every shard present and inside the index's directory, every tensor in exactly the
// shard the index names, no tensor in a shard that the index does not list) and gives one
// SafeTensors over all of them.
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
  // Maps and validates `path`; throws strand::Error("<path>: <problem>"). The file is checked
  // to be a regular file before it is mapped; `what` names its role in those messages
  // ("model.safetensors /m/model.safetensors: no such file").
  static std::shared_ptr<SafeTensors> open(const std::string& path, const std::string& what = "safetensors file");
  // Every shard listed by the index at `index_path`, checked against the index (see above);
  // path() is the index. Errors name the index or the shard.
  static std::shared_ptr<SafeTensors> open_sharded(const std::string& index_path);

  // The tensor called `name`, or nullptr if the file has none.
  const Tensor* find(const std::string& name) const;
  // Every tensor, by name. Each view's owner keeps the mapping alive, so a Tensor may
  // outlive this object.
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  // The "__metadata__" object (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  // The file that holds tensor `name` (a shard of a sharded checkpoint, else path()).
  const std::string& path_of(const std::string& name) const;
  // Size of the mapped file in bytes (of all shards together).
  size_t file_size() const { return file_size_; }
  // Gives back the resident pages under tensor `t` (a view of this file's mapping; anything
  // else is left alone) with madvise(MADV_DONTNEED), so that a load that converts tensor by
  // tensor does not hold the whole file in memory. The mapping is private and read-only, so
  // nothing is lost: reading `t` again faults its pages back in from the file.
  void release(const Tensor& t) const;

 private:
  SafeTensors() = default;

  struct Region {  // one mapped file
    std::shared_ptr<void> owner;
    const unsigned char* base = nullptr;
    size_t len = 0;
  };
  std::string path_;
  size_t file_size_ = 0;
  std::vector<Region> regions_;
  std::vector<std::string> shard_paths_;      // sharded: the shard files, in the order opened
  std::map<std::string, size_t> shard_of_;    // sharded: tensor name -> index in shard_paths_
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
