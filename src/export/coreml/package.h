// strand/export/coreml/package.h — writing an .mlpackage directory.
//
//   OUT.mlpackage/Manifest.json                            which item is the root model
//   OUT.mlpackage/Data/com.apple.CoreML/model.mlmodel      the Model message (protobuf)
//   OUT.mlpackage/Data/com.apple.CoreML/weights/weight.bin the weight blobs
//
// Everything is written into a temporary sibling directory and renamed into place by commit(),
// so a failed export never leaves half a package behind. An existing package at the path is
// replaced; any other existing file or non-empty directory is an error.
#pragma once

#include <cstdint>
#include <string>

namespace strand::coreml {

class PackageWriter {
 public:
  explicit PackageWriter(const std::string& out_path);
  ~PackageWriter();
  PackageWriter(const PackageWriter&) = delete;
  PackageWriter& operator=(const PackageWriter&) = delete;

  // Where the weight file is to be written (inside the temporary directory).
  std::string weight_path() const;
  // Writes model.mlmodel and Manifest.json and moves the package to its final path.
  // `content_hash` makes the manifest's item identifiers deterministic.
  void commit(const std::string& model_bytes, uint64_t content_hash);

 private:
  std::string out_, tmp_;
  bool committed_ = false;
};

// The manifest's JSON text for a package whose model and weights are the usual two items.
std::string manifest_json(uint64_t content_hash);

}  // namespace strand::coreml
