#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"

namespace strand {

// The format stores little-endian bytes; strand hands them out as they are.
static_assert(std::endian::native == std::endian::little,
              "strand's safetensors reader assumes a little-endian host");

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // 100 MiB: anything larger is not a real header
constexpr int kMaxJsonDepth = 16;                   // a valid header nests 3 deep

// An mmap'd region, unmapped when the last Tensor view (or the SafeTensors) lets go.
struct Mapping {
  void* addr = nullptr;
  size_t len = 0;
  Mapping(void* a, size_t n) : addr(a), len(n) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr) ::munmap(addr, len);
  }
};

// A name as it may appear in a one-line message: quoted, control bytes escaped.
std::string quote(const std::string& s) {
  std::string out = "'";
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out += char(c);
  }
  return out + "'";
}

std::optional<DType> dtype_from_safetensors(const std::string& s) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  if (s == "F64") return DType::F64;
  if (s == "I32") return DType::I32;
  return std::nullopt;
}

// Describes a JSON value briefly for an error message ("-3", "2.5", "a string").
std::string describe(const json& v) {
  if (v.is_number()) return v.dump();
  if (v.is_string()) return "a string";
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_array()) return "an array";
  return "an object";
}

// A non-negative JSON integer, or nullopt.
std::optional<uint64_t> as_u64(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return uint64_t(v.get<int64_t>());
  return std::nullopt;
}

// Parses JSON text, rejecting duplicate keys in any object (nlohmann would silently keep the
// last one) and absurd nesting. `what` names the text in messages ("header", "index"), and
// `top_key` what a key of the outermost object is ("tensor name", "key").
json parse_strict(const std::string& path, const char* begin, const char* end, const char* what,
                  const char* top_key) {
  std::vector<std::set<std::string>> seen;  // one key set per open object
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) fail("{}: {} JSON nests deeper than {} levels", path, what, kMaxJsonDepth);
        if (ev == json::parse_event_t::object_start) seen.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!seen.empty()) seen.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!seen.empty() && !seen.back().insert(k).second) {
          if (seen.size() == 1) fail("{}: duplicate {} {} in {}", path, top_key, quote(k), what);
          fail("{}: duplicate key {} in {}", path, quote(k), what);
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(begin, end, cb);
  } catch (const json::exception& e) {
    std::string msg = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " tag.
    if (auto p = msg.find("] "); msg.rfind("[json.exception", 0) == 0 && p != std::string::npos)
      msg = msg.substr(p + 2);
    if (msg.size() > 300) msg = msg.substr(0, 297) + "...";  // the offending token can be huge
    fail("{}: {} is not valid JSON: {}", path, what, msg);
  }
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& path, const std::string& name, const json& v, uint64_t data_size) {
  const std::string tn = "tensor " + quote(name);
  if (!v.is_object()) fail("{}: {}: header entry is {}, not an object", path, tn, describe(v));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key)) fail("{}: {}: missing {}", path, tn, key);

  Entry e;
  e.name = name;
  const json& jd = v["dtype"];
  if (!jd.is_string()) fail("{}: {}: dtype is {}, not a string", path, tn, describe(jd));
  const std::string ds = jd.get<std::string>();
  const auto dt = dtype_from_safetensors(ds);
  if (!dt) fail("{}: {}: unsupported dtype {} (strand reads F32, F16, BF16, F64, I32)", path, tn, quote(ds));
  e.dtype = *dt;

  const json& js = v["shape"];
  if (!js.is_array()) fail("{}: {}: shape is {}, not an array", path, tn, describe(js));
  uint64_t n = 1;  // product of the non-zero dims, kept below 2^63 / 8 so bytes fit int64
  bool zero = false;
  constexpr uint64_t kMaxElems = uint64_t(std::numeric_limits<int64_t>::max()) / 8;
  for (const json& d : js) {
    if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
      fail("{}: {}: shape dimension {} is negative", path, tn, d.dump());
    const auto u = as_u64(d);
    if (!u) fail("{}: {}: shape dimension {} is not an integer", path, tn, describe(d));
    if (*u == 0) {
      zero = true;
    } else if (*u > kMaxElems || n > kMaxElems / *u) {
      fail("{}: {}: shape {} has too many elements", path, tn, js.dump());
    } else {
      n *= *u;
    }
    e.shape.push_back(int64_t(*u));
  }
  const uint64_t nbytes = zero ? 0 : n * dtype_size(e.dtype);

  const json& jo = v["data_offsets"];
  if (!jo.is_array() || jo.size() != 2)
    fail("{}: {}: data_offsets must be an array of two integers, found {}", path, tn, jo.dump());
  const auto b = as_u64(jo[0]), en = as_u64(jo[1]);
  if (!b || !en) fail("{}: {}: data_offsets {} are not non-negative integers", path, tn, jo.dump());
  if (*b > *en) fail("{}: {}: data_offsets [{}, {}] begin after they end", path, tn, *b, *en);
  if (*en > data_size)
    fail("{}: {}: data_offsets [{}, {}] run past the end of the data section ({} bytes)", path, tn, *b, *en,
         data_size);
  if (*en - *b != nbytes)
    fail("{}: {}: data_offsets [{}, {}] span {} bytes but shape {} of {} needs {}", path, tn, *b, *en, *en - *b,
         shape_str(e.shape), safetensors_dtype_name(e.dtype), nbytes);
  e.begin = *b;
  e.end = *en;
  return e;
}

}  // namespace

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I32: return "I32";
    default: break;  // strand-internal dtypes have no safetensors spelling
  }
  return "?";
}

std::shared_ptr<SafeTensors> SafeTensors::open(const std::string& path, const std::string& what) {
  // A regular file, opened without blocking (a FIFO would wait for a writer forever).
  const RegularFile file(path, what);
  const uint64_t size = file.size();
  if (size < 8) fail("{}: file is {} bytes, too short for a safetensors header (at least 8)", path, size);
  if (size > uint64_t(std::numeric_limits<size_t>::max())) fail("{}: {} bytes do not fit in memory", path, size);

  void* addr = ::mmap(nullptr, size_t(size), PROT_READ, MAP_PRIVATE, file.fd(), 0);
  if (addr == MAP_FAILED) fail("{}: cannot mmap {} bytes: {}", path, size, std::strerror(errno));
  auto mapping = std::make_shared<Mapping>(addr, size_t(size));
  const auto* base = static_cast<const unsigned char*>(addr);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len > size - 8)
    fail("{}: header length {} exceeds the {} bytes that follow it in the file", path, header_len, size - 8);
  if (header_len > kMaxHeaderBytes)
    fail("{}: header length {} is absurd (more than {} MiB)", path, header_len, kMaxHeaderBytes >> 20);

  const char* hbegin = reinterpret_cast<const char*>(base + 8);
  const json header = parse_strict(path, hbegin, hbegin + header_len, "header", "tensor name");
  if (!header.is_object()) fail("{}: header is {}, not a JSON object", path, describe(header));

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;

  auto st_file = std::shared_ptr<SafeTensors>(new SafeTensors());
  st_file->path_ = path;
  st_file->file_size_ = size_t(size);
  st_file->regions_.push_back({mapping, base, size_t(size)});

  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) fail("{}: __metadata__ is {}, not an object", path, describe(v));
      for (const auto& [k, mv] : v.items()) {
        if (!mv.is_string())
          fail("{}: __metadata__ must map strings to strings, but key {} holds {}", path, quote(k), describe(mv));
        st_file->metadata_[k] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, name, v, data_size));
  }

  // Overlap: sort by begin; an empty range overlaps nothing.
  std::vector<const Entry*> order;
  for (const Entry& e : entries)
    if (e.end > e.begin) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const Entry* prev = order[i - 1];
    const Entry* cur = order[i];
    if (cur->begin < prev->end)
      fail("{}: tensor {} (bytes [{}, {})) overlaps tensor {} (bytes [{}, {}))", path, quote(cur->name), cur->begin,
           cur->end, quote(prev->name), prev->begin, prev->end);
  }

  const std::shared_ptr<void> owner = mapping;
  for (const Entry& e : entries) {
    auto* p = const_cast<unsigned char*>(base + data_start + e.begin);
    if (reinterpret_cast<uintptr_t>(p) % dtype_size(e.dtype) != 0) {
      // The mapping is page aligned, so this happens only when the header length or the
      // offsets put the tensor at an address that is not a multiple of its element size.
      // Reading elements there is undefined behaviour (and slow on some machines), so
      // this tensor alone is copied into an aligned heap buffer; all others stay views.
      Tensor t = Tensor::empty(e.shape, e.dtype);
      std::memcpy(t.data, p, size_t(e.end - e.begin));
      st_file->tensors_.emplace(e.name, std::move(t));
    } else {
      st_file->tensors_.emplace(e.name, Tensor::view_of(p, e.dtype, e.shape, owner));
    }
  }
  return st_file;
}

const Tensor* SafeTensors::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const std::string& SafeTensors::path_of(const std::string& name) const {
  const auto it = shard_of_.find(name);
  return it == shard_of_.end() ? path_ : shard_paths_[it->second];
}

void SafeTensors::release(const Tensor& t) const {
  if (!t.defined()) return;
  const auto* p = static_cast<const unsigned char*>(t.data);
  const size_t n = t.nbytes();
  for (const Region& r : regions_) {
    if (p < r.base || n > r.len || size_t(p - r.base) > r.len - n) continue;
    // Whole pages only; a page shared with a neighbouring tensor is given back too (it faults
    // back in from the file if that tensor is read later).
    const size_t page = size_t(::sysconf(_SC_PAGESIZE));
    const size_t begin = size_t(p - r.base) / page * page;
    const size_t end = std::min(r.len, (size_t(p - r.base) + n + page - 1) / page * page);
    if (end > begin) ::madvise(const_cast<unsigned char*>(r.base) + begin, end - begin, MADV_DONTNEED);
    return;
  }
}

namespace {

// A shard's file name as the index gives it: a plain name in the index's directory.
void check_shard_name(const std::string& index_path, const std::string& tensor, const std::string& shard) {
  if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
      shard.find('\\') != std::string::npos || shard.find('\0') != std::string::npos)
    fail("{}: tensor {} is mapped to shard {}, which is not a file name in the index's directory", index_path,
         quote(tensor), quote(shard));
}

}  // namespace

std::shared_ptr<SafeTensors> SafeTensors::open_sharded(const std::string& index_path) {
  const std::string text = read_regular_file(index_path, "model.safetensors.index.json", kMaxJsonConfigBytes);
  const json index = parse_strict(index_path, text.data(), text.data() + text.size(), "index", "key");
  if (!index.is_object()) fail("{}: the index is {}, not a JSON object", index_path, describe(index));
  if (const auto m = index.find("metadata"); m != index.end() && !m->is_object() && !m->is_null())
    fail("{}: metadata is {}, not an object", index_path, describe(*m));
  const auto wm = index.find("weight_map");
  if (wm == index.end()) fail("{}: no weight_map", index_path);
  if (!wm->is_object()) fail("{}: weight_map is {}, not an object of tensor -> shard file", index_path, describe(*wm));
  if (wm->empty()) fail("{}: weight_map lists no tensors", index_path);

  // Shard file -> the tensors the index puts in it (files in sorted order, opened once each).
  std::map<std::string, std::set<std::string>> wanted;
  for (const auto& [tensor, shard] : wm->items()) {
    if (!shard.is_string())
      fail("{}: weight_map maps tensor {} to {}, not a file name", index_path, quote(tensor), describe(shard));
    const std::string& name = shard.get_ref<const std::string&>();
    check_shard_name(index_path, tensor, name);
    wanted[name].insert(tensor);
  }

  const std::filesystem::path dir = std::filesystem::path(index_path).parent_path();
  auto all = std::shared_ptr<SafeTensors>(new SafeTensors());
  all->path_ = index_path;
  for (const auto& [name, tensors] : wanted) {
    const std::string path = (dir / name).string();
    if (!path_exists(path, "shard"))
      fail("{}: shard {} (named for tensor {}) is missing: {}: no such file", index_path, quote(name),
           quote(*tensors.begin()), path);
    const std::shared_ptr<SafeTensors> shard = open(path, "shard");
    const size_t id = all->shard_paths_.size();
    all->shard_paths_.push_back(path);
    for (const auto& [tensor, t] : shard->tensors_) {
      if (const auto other = all->shard_of_.find(tensor); other != all->shard_of_.end())
        fail("{}: tensor {} is in two shards: {} and {}", index_path, quote(tensor), all->shard_paths_[other->second],
             path);
      if (!tensors.count(tensor)) {
        if (wm->contains(tensor))
          fail("{}: shard {} holds tensor {}, which the index puts in {}", index_path, path, quote(tensor),
               quote((*wm)[tensor].get<std::string>()));
        fail("{}: shard {} holds tensor {}, which the index does not list", index_path, path, quote(tensor));
      }
      all->tensors_.emplace(tensor, t);
      all->shard_of_.emplace(tensor, id);
    }
    for (const std::string& tensor : tensors)
      if (!shard->tensors_.count(tensor))
        fail("{}: the index puts tensor {} in {}, which does not hold it", index_path, quote(tensor), path);
    all->regions_.insert(all->regions_.end(), shard->regions_.begin(), shard->regions_.end());
    all->file_size_ += shard->file_size_;
  }
  return all;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail("{}: cannot write a tensor named __metadata__", path);
    if (!names.insert(name).second) fail("{}: tensor {} given twice", path, quote(name));
    if (!dtype_from_safetensors(safetensors_dtype_name(t.dtype)))
      fail("{}: tensor {} has dtype {}, which safetensors files do not hold", path, quote(name),
           dtype_name(t.dtype));
    if (!t.contiguous()) fail("{}: tensor {} is not contiguous", path, quote(name));
    for (int64_t d : t.shape)
      if (d < 0) fail("{}: tensor {} has negative shape {}", path, quote(name), shape_str(t.shape));
    if (!t.defined() && t.nbytes() != 0) fail("{}: tensor {} has no data", path, quote(name));
    const uint64_t n = t.nbytes();
    header[name] = {{"dtype", safetensors_dtype_name(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (uint64_t(text.size()) >> (8 * i)) & 0xff;

  // Write a sibling file and rename it into place: a reader never sees a half-written
  // file, and a file that is currently mapped (possibly by this process) is replaced,
  // not truncated under the mapping.
  const std::string tmp = fmt::format("{}.tmp{}", path, ::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot create: {}", path, std::strerror(errno));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (const auto& [name, t] : tensors) {
    if (!ok) break;
    const size_t n = t.nbytes();
    if (n) ok = std::fwrite(t.data, 1, n, f) == n;
  }
  const int err = ok ? 0 : errno;
  if (std::fclose(f) != 0 && ok) ok = false;
  if (!ok) {
    std::remove(tmp.c_str());
    fail("{}: cannot write: {}", path, std::strerror(err ? err : errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    fail("{}: cannot write (rename from {} failed): {}", path, tmp, std::strerror(e));
  }
}

}  // namespace strand
