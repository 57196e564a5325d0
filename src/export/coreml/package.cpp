#include "export/coreml/package.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "export/coreml/weight_blob.h"

namespace fs = std::filesystem;

namespace strand::coreml {

namespace {

// A version-4-shaped UUID derived from a hash (deterministic, so equal packages are equal bytes).
std::string uuid_from(uint64_t content_hash, std::string_view salt) {
  Fnv64 a, b;
  a.add(&content_hash, sizeof content_hash);
  a.add(salt);
  b.add(salt);
  b.add(&content_hash, sizeof content_hash);
  b.add("second half");
  uint64_t hi = a.h, lo = b.h;
  hi = (hi & ~0xF000ull) | 0x4000ull;                          // version 4
  lo = (lo & ~(0xC000ull << 48)) | (0x8000ull << 48);          // RFC 4122 variant
  return fmt::format("{:08X}-{:04X}-{:04X}-{:04X}-{:012X}", uint32_t(hi >> 32), uint32_t(hi >> 16) & 0xFFFF,
                     uint32_t(hi) & 0xFFFF, uint32_t(lo >> 48), lo & 0xFFFFFFFFFFFFull);
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  if (!f) fail("{}: cannot create", p.string());
  f.write(bytes.data(), std::streamsize(bytes.size()));
  f.close();
  if (!f) fail("{}: write failed (disk full?)", p.string());
}

}  // namespace

std::string manifest_json(uint64_t content_hash) {
  const std::string model_id = uuid_from(content_hash, "model");
  const std::string weights_id = uuid_from(content_hash, "weights");
  nlohmann::json j;
  j["fileFormatVersion"] = "1.0.0";
  j["itemInfoEntries"][model_id] = {{"author", "com.apple.CoreML"},
                                     {"description", "CoreML Model Specification"},
                                     {"name", "model.mlmodel"},
                                     {"path", "com.apple.CoreML/model.mlmodel"}};
  j["itemInfoEntries"][weights_id] = {{"author", "com.apple.CoreML"},
                                       {"description", "CoreML Model Weights"},
                                       {"name", "weights"},
                                       {"path", "com.apple.CoreML/weights"}};
  j["rootModelIdentifier"] = model_id;
  return j.dump(4) + "\n";
}

PackageWriter::PackageWriter(const std::string& out_path) : out_(out_path) {
  if (out_.empty()) fail("-o: no output path given");
  while (out_.size() > 1 && out_.back() == '/') out_.pop_back();
  std::error_code ec;
  const fs::path out(out_);
  if (fs::exists(out, ec)) {
    const bool package = fs::is_directory(out, ec) && fs::exists(out / "Manifest.json", ec);
    const bool empty_dir = fs::is_directory(out, ec) && fs::is_empty(out, ec);
    if (!package && !empty_dir)
      fail("-o {}: exists and is not an .mlpackage (refusing to overwrite it)", out_);
  }
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  if (!fs::is_directory(parent, ec)) fail("-o {}: the directory {} does not exist", out_, parent.string());
  tmp_ = (parent / fmt::format(".{}.tmp-{}", out.filename().string(), ::getpid())).string();
  fs::remove_all(tmp_, ec);
  fs::create_directories(fs::path(tmp_) / "Data" / "com.apple.CoreML" / "weights", ec);
  if (ec) fail("-o {}: cannot create {}: {}", out_, tmp_, ec.message());
}

PackageWriter::~PackageWriter() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

std::string PackageWriter::weight_path() const {
  return (fs::path(tmp_) / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").string();
}

void PackageWriter::commit(const std::string& model_bytes, uint64_t content_hash) {
  const fs::path root(tmp_);
  write_file(root / "Data" / "com.apple.CoreML" / "model.mlmodel", model_bytes);
  write_file(root / "Manifest.json", manifest_json(content_hash));
  std::error_code ec;
  fs::remove_all(out_, ec);
  fs::rename(root, out_, ec);
  if (ec) fail("-o {}: cannot move the package into place: {}", out_, ec.message());
  committed_ = true;
}

}  // namespace strand::coreml
