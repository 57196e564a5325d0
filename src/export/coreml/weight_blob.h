// strand/export/coreml/weight_blob.h — the ML Program weight file ("blob storage", version 2).
//
// Layout, as described in Core ML's MIL blob storage format:
//   storage header (64 bytes): u32 count, u32 version = 2, then zeros;
//   per blob, at a 64-byte-aligned offset: metadata (64 bytes): u32 sentinel 0xDEADBEEF,
//   u32 data type (1 = float16, 2 = float32, 3 = uint8, 4 = int8), u64 size in bytes,
//   u64 offset of the data in the file, then zeros; the data follows at the next 64-byte
//   boundary. A MIL const names its blob by the offset of the blob's metadata.
// All integers are little-endian.
#pragma once

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>

namespace strand::coreml {

inline constexpr uint32_t kBlobSentinel = 0xDEADBEEFu;
inline constexpr uint64_t kBlobAlignment = 64;
inline constexpr uint32_t kBlobFloat16 = 1;

// 64-bit FNV-1a, used as the content hash of an exported package.
struct Fnv64 {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  }
  void add(std::string_view s) { add(s.data(), s.size()); }
};

class WeightBlob {
 public:
  // Streams blobs to `path`; an empty path is a dry run that only assigns offsets.
  explicit WeightBlob(const std::string& path);
  ~WeightBlob();
  WeightBlob(const WeightBlob&) = delete;
  WeightBlob& operator=(const WeightBlob&) = delete;

  // Appends one float16 blob (raw binary16 values); returns the offset of its metadata.
  uint64_t add_f16(std::span<const uint16_t> values);
  // Writes the final header and closes the file. Throws strand::Error on an I/O failure.
  void finish();

  uint32_t count() const { return count_; }
  uint64_t size() const { return end_; }
  uint64_t hash() const { return hash_.h; }

 private:
  void write_at_end(const void* p, size_t n);
  std::string path_;
  std::FILE* f_ = nullptr;
  uint32_t count_ = 0;
  uint64_t end_ = 0;
  Fnv64 hash_;
};

}  // namespace strand::coreml
