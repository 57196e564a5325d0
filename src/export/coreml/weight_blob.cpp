#include "export/coreml/weight_blob.h"

#include <cstring>
#include <vector>

#include "core/error.h"

namespace strand::coreml {

namespace {

void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

}  // namespace

WeightBlob::WeightBlob(const std::string& path) : path_(path) {
  if (!path_.empty()) {
    f_ = std::fopen(path_.c_str(), "wb");
    if (!f_) fail("{}: cannot create the weight file", path_);
  }
  uint8_t header[64] = {};
  write_at_end(header, sizeof header);  // rewritten by finish() with the count
}

WeightBlob::~WeightBlob() {
  if (f_) std::fclose(f_);
}

void WeightBlob::write_at_end(const void* p, size_t n) {
  if (f_ && n && std::fwrite(p, 1, n, f_) != n) fail("{}: write failed (disk full?)", path_);
  end_ += n;
}

uint64_t WeightBlob::add_f16(std::span<const uint16_t> values) {
  static const uint8_t zeros[kBlobAlignment] = {};
  if (end_ % kBlobAlignment) write_at_end(zeros, size_t(kBlobAlignment - end_ % kBlobAlignment));
  const uint64_t meta_offset = end_;
  const uint64_t nbytes = values.size() * 2;
  uint8_t meta[64] = {};
  put_u32(meta + 0, kBlobSentinel);
  put_u32(meta + 4, kBlobFloat16);
  put_u64(meta + 8, nbytes);
  put_u64(meta + 16, meta_offset + 64);
  write_at_end(meta, sizeof meta);
  std::vector<uint8_t> le(nbytes);
  for (size_t i = 0; i < values.size(); ++i) {
    le[2 * i] = uint8_t(values[i]);
    le[2 * i + 1] = uint8_t(values[i] >> 8);
  }
  write_at_end(le.data(), le.size());
  hash_.add(meta, sizeof meta);
  hash_.add(le.data(), le.size());
  ++count_;
  return meta_offset;
}

void WeightBlob::finish() {
  // The file ends with the last blob's data (no trailing padding).
  uint8_t header[64] = {};
  put_u32(header + 0, count_);
  put_u32(header + 4, 2);
  hash_.add(header, sizeof header);
  if (!f_) return;
  if (std::fseek(f_, 0, SEEK_SET) != 0 || std::fwrite(header, 1, sizeof header, f_) != sizeof header)
    fail("{}: write failed", path_);
  const int rc = std::fclose(f_);
  f_ = nullptr;
  if (rc != 0) fail("{}: write failed (disk full?)", path_);
}

}  // namespace strand::coreml
