// Tests for the safetensors reader/writer: round trips, and every kind of bad file
// (built byte by byte) failing with a one-line error naming the file and the problem.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "core/memory_stats.h"
#include "core/rng.h"
#include "formats/safetensors.h"

namespace fs = std::filesystem;
using namespace strand;

namespace {

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / fmt::format("strand_st_test_{}_{}", ::getpid(), counter++);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

// A file: 8-byte header length, the header text as given (no padding), then the data.
std::string st_bytes(const std::string& header, const std::string& data) {
  return u64le(header.size()) + header + data;
}

template <class T>
std::string raw(std::initializer_list<T> vals) {
  std::string s;
  for (T v : vals) s.append(reinterpret_cast<const char*>(&v), sizeof(T));
  return s;
}

// The message of the strand::Error that opening `path` throws ("" plus a failure if none).
std::string open_error(const std::string& path) {
  try {
    SafeTensors::open(path);
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected strand::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "opening " << path << " did not fail";
  return "";
}

#define EXPECT_CONTAINS(msg, sub)                                                        \
  EXPECT_NE(std::string(msg).find(sub), std::string::npos)                               \
      << "message: \"" << (msg) << "\"\n should contain: \"" << (sub) << "\""

// Writes `bytes` to a file and checks that opening it fails naming the file and `what`.
void expect_bad(const TempDir& dir, const std::string& name, const std::string& bytes,
                std::initializer_list<std::string> what) {
  SCOPED_TRACE(name);
  const std::string path = dir.file(name + ".safetensors");
  write_bytes(path, bytes);
  const std::string msg = open_error(path);
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message should start with the path: " << msg;
  for (const auto& w : what) EXPECT_CONTAINS(msg, w);
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "message should be one line: " << msg;
}

Tensor random_tensor(Rng& rng, DType dt, const Shape& shape) {
  Tensor t = Tensor::empty(shape, dt);
  auto* p = static_cast<unsigned char*>(t.data);
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(rng.next() >> 56);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.data, b.data, a.nbytes()) == 0);
}

const DType kAllDtypes[] = {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I32};

}  // namespace

TEST(SafeTensors, RoundTripEveryDtype) {
  TempDir dir;
  for (DType dt : kAllDtypes) {
    for (uint64_t seed : {1ull, 2ull, 3ull}) {
      SCOPED_TRACE(fmt::format("dtype {} seed {}", dtype_name(dt), seed));
      Rng rng(seed * 7919 + uint64_t(dt));
      std::vector<std::pair<std::string, Tensor>> ts;
      const int count = 1 + int(rng.below(6));
      for (int i = 0; i < count; ++i) {
        Shape shape;
        const int rank = int(rng.below(4));  // 0 (scalar) .. 3
        for (int r = 0; r < rank; ++r) shape.push_back(int64_t(rng.below(7)));  // zero-size dims included
        ts.emplace_back(fmt::format("t{}.w", i), random_tensor(rng, dt, shape));
      }
      const std::string path = dir.file(fmt::format("rt_{}_{}.safetensors", dtype_name(dt), seed));
      write_safetensors(path, ts, {{"format", "pt"}, {"seed", std::to_string(seed)}});

      // The header length is a multiple of 8 (space padded).
      std::ifstream f(path, std::ios::binary);
      unsigned char len[8];
      f.read(reinterpret_cast<char*>(len), 8);
      uint64_t n = 0;
      for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
      EXPECT_EQ(n % 8, 0u);

      auto st = SafeTensors::open(path);
      EXPECT_EQ(st->path(), path);
      EXPECT_EQ(st->metadata().at("format"), "pt");
      EXPECT_EQ(st->metadata().at("seed"), std::to_string(seed));
      ASSERT_EQ(st->tensors().size(), ts.size());
      for (const auto& [name, t] : ts) {
        const Tensor* got = st->find(name);
        ASSERT_NE(got, nullptr) << name;
        EXPECT_TRUE(same_bytes(*got, t)) << name << " " << shape_str(t.shape);
        EXPECT_TRUE(got->contiguous());
        EXPECT_EQ(reinterpret_cast<uintptr_t>(got->data) % dtype_size(dt), 0u);
      }
      EXPECT_EQ(st->find("absent"), nullptr);
    }
  }
}

TEST(SafeTensors, ViewsKeepTheMappingAlive) {
  TempDir dir;
  const uint64_t seed = 42;
  SCOPED_TRACE(fmt::format("seed {}", seed));
  Rng rng(seed);
  Tensor a = random_tensor(rng, DType::F32, {3, 5});
  const std::string path = dir.file("alive.safetensors");
  write_safetensors(path, {{"a", a}});
  Tensor view;
  {
    auto st = SafeTensors::open(path);
    view = *st->find("a");
    EXPECT_EQ(view.owner.get(), st->tensors().begin()->second.owner.get());
  }
  // The SafeTensors object is gone; the view still reads the mapped bytes.
  EXPECT_TRUE(same_bytes(view, a));

  // Rewriting the file while a view maps it replaces it rather than truncating it
  // under the mapping: the old view keeps its bytes, a new open sees the new ones.
  Tensor b = random_tensor(rng, DType::F32, {2});
  write_safetensors(path, {{"b", b}});
  EXPECT_TRUE(same_bytes(view, a));
  auto st2 = SafeTensors::open(path);
  EXPECT_EQ(st2->find("a"), nullptr);
  ASSERT_NE(st2->find("b"), nullptr);
  EXPECT_TRUE(same_bytes(*st2->find("b"), b));
  EXPECT_FALSE(fs::exists(path + fmt::format(".tmp{}", ::getpid())));
}

// release() gives a tensor's resident pages back (the file's RSS drops by its size) without
// losing anything: reading it again brings the same bytes back from the file.
TEST(SafeTensors, ReleaseGivesBackPagesAndKeepsTheBytes) {
  TempDir dir;
  const uint64_t seed = 43;
  SCOPED_TRACE(fmt::format("seed {}", seed));
  Rng rng(seed);
  Tensor small = random_tensor(rng, DType::F32, {3});
  Tensor big = random_tensor(rng, DType::F32, {1024, 2048});  // 8 MiB
  const std::string path = dir.file("release.safetensors");
  write_safetensors(path, {{"small", small}, {"big", big}});
  const auto st = SafeTensors::open(path);
  const Tensor& view = *st->find("big");
  ASSERT_TRUE(same_bytes(view, big));  // every page of it read: resident
  const uint64_t before = current_rss_bytes();
  st->release(view);
  const uint64_t after = current_rss_bytes();
  if (before == 0) GTEST_SKIP() << "no /proc/self/status to read the resident set from";
  EXPECT_GE(before - std::min(before, after), uint64_t(7) << 20) << "RSS " << before << " -> " << after;
  EXPECT_TRUE(same_bytes(view, big));
  EXPECT_TRUE(same_bytes(*st->find("small"), small));
  // A tensor that does not view this file is left alone (its heap bytes must not be dropped).
  st->release(big);
  EXPECT_TRUE(same_bytes(view, big));
  Tensor copy = big.to(DType::F32);
  st->release(copy);
  EXPECT_TRUE(same_bytes(copy, big));
}

TEST(SafeTensors, MixedDtypesPackedGiveUnalignedTensorsThatStillReadCorrectly) {
  TempDir dir;
  const uint64_t seed = 7;
  SCOPED_TRACE(fmt::format("seed {}", seed));
  Rng rng(seed);
  // 3 halves (6 bytes) then an f32 and an f64: packed, the later ones sit off alignment.
  std::vector<std::pair<std::string, Tensor>> ts = {
      {"h", random_tensor(rng, DType::F16, {3})},
      {"f", random_tensor(rng, DType::F32, {4})},
      {"d", random_tensor(rng, DType::F64, {2, 2})},
      {"i", random_tensor(rng, DType::I32, {5})},
  };
  const std::string path = dir.file("mixed.safetensors");
  write_safetensors(path, ts);
  auto st = SafeTensors::open(path);
  for (const auto& [name, t] : ts) {
    const Tensor* got = st->find(name);
    ASSERT_NE(got, nullptr);
    EXPECT_TRUE(same_bytes(*got, t)) << name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got->data) % dtype_size(t.dtype), 0u) << name;
  }
  // Element reads through the typed pointers (UBSan checks their alignment).
  for (int64_t i = 0; i < 4; ++i) {
    float x;
    std::memcpy(&x, static_cast<const char*>(ts[1].second.data) + 4 * i, 4);
    const float y = st->find("f")->ptr<const float>()[i];
    EXPECT_EQ(std::memcmp(&x, &y, 4), 0);
  }
}

TEST(SafeTensors, UnalignedHeaderLengthStillGivesCorrectValues) {
  TempDir dir;
  // A header of odd length (no padding): the data section starts at an odd address.
  const std::string data = raw<float>({1.5f, -2.25f, 3.0f}) + raw<double>({0.125, -7.5}) + raw<int32_t>({-9, 11});
  std::string header =
      R"({"f":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
      R"("d":{"dtype":"F64","shape":[2],"data_offsets":[12,28]},)"
      R"("i":{"dtype":"I32","shape":[2],"data_offsets":[28,36]}})";
  if ((8 + header.size()) % 2 == 0) header += " ";
  const std::string path = dir.file("odd.safetensors");
  write_bytes(path, st_bytes(header, data));
  auto st = SafeTensors::open(path);
  const Tensor* f = st->find("f");
  const Tensor* d = st->find("d");
  const Tensor* i = st->find("i");
  ASSERT_TRUE(f && d && i);
  EXPECT_EQ(f->ptr<const float>()[0], 1.5f);
  EXPECT_EQ(f->ptr<const float>()[1], -2.25f);
  EXPECT_EQ(f->ptr<const float>()[2], 3.0f);
  EXPECT_EQ(d->ptr<const double>()[0], 0.125);
  EXPECT_EQ(d->ptr<const double>()[1], -7.5);
  EXPECT_EQ(i->ptr<const int32_t>()[0], -9);
  EXPECT_EQ(i->ptr<const int32_t>()[1], 11);
  EXPECT_EQ(load_as_double(*d, 1), -7.5);
}

TEST(SafeTensors, EdgeCasesThatAreValid) {
  TempDir dir;
  // No tensors at all, metadata only, trailing spaces in the header.
  write_bytes(dir.file("empty.safetensors"), st_bytes(R"({"__metadata__":{"k":"v"}}   )", ""));
  auto st = SafeTensors::open(dir.file("empty.safetensors"));
  EXPECT_TRUE(st->tensors().empty());
  EXPECT_EQ(st->metadata().at("k"), "v");

  // A zero-size tensor at the very end of the data, and one sharing an offset with a
  // real tensor (empty ranges overlap nothing).
  write_bytes(dir.file("zero.safetensors"),
              st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("z":{"dtype":"F32","shape":[0,4],"data_offsets":[8,8]},)"
                       R"("y":{"dtype":"BF16","shape":[3,0],"data_offsets":[0,0]},)"
                       R"("s":{"dtype":"I32","shape":[],"data_offsets":[8,12]}})",
                       raw<float>({1.f, 2.f}) + raw<int32_t>({5})));
  auto z = SafeTensors::open(dir.file("zero.safetensors"));
  EXPECT_EQ(z->find("z")->numel(), 0);
  EXPECT_EQ(z->find("y")->shape, (Shape{3, 0}));
  EXPECT_EQ(z->find("s")->rank(), 0);
  EXPECT_EQ(z->find("s")->ptr<const int32_t>()[0], 5);
}

TEST(SafeTensors, BadFilesFailWithTheFileAndProblemNamed) {
  TempDir dir;
  const std::string f8 = raw<float>({1.f, 2.f});  // 8 bytes of data

  expect_bad(dir, "empty", "", {"too short"});
  expect_bad(dir, "truncated", std::string("\x10\x00\x00", 3), {"3 bytes", "too short"});
  expect_bad(dir, "header_past_end", u64le(1000) + R"({"a":1})", {"header length 1000", "exceeds"});
  expect_bad(dir, "header_huge", u64le(~0ull) + "{}", {"exceeds"});
  expect_bad(dir, "not_json", st_bytes("{not json", ""), {"not valid JSON"});
  expect_bad(dir, "not_utf8", st_bytes("{\"\xff\xfe\":1}", ""), {"not valid JSON"});
  expect_bad(dir, "trailing_garbage", st_bytes("{} x", ""), {"not valid JSON"});
  expect_bad(dir, "not_object", st_bytes("[1,2]", ""), {"not a JSON object"});
  expect_bad(dir, "empty_header", st_bytes("", ""), {"not valid JSON"});
  expect_bad(dir, "deep", st_bytes(std::string(40, '[') + std::string(40, ']'), ""), {"nests deeper"});

  expect_bad(dir, "meta_not_object", st_bytes(R"({"__metadata__":"x"})", ""), {"__metadata__", "not an object"});
  expect_bad(dir, "meta_not_strings", st_bytes(R"({"__metadata__":{"n":3}})", ""),
             {"__metadata__", "'n'", "strings to strings"});

  expect_bad(dir, "entry_not_object", st_bytes(R"({"w":[1]})", ""), {"tensor 'w'", "not an object"});
  expect_bad(dir, "no_dtype", st_bytes(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "missing dtype"});
  expect_bad(dir, "no_shape", st_bytes(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "missing shape"});
  expect_bad(dir, "no_offsets", st_bytes(R"({"w":{"dtype":"F32","shape":[2]}})", f8),
             {"tensor 'w'", "missing data_offsets"});
  expect_bad(dir, "dtype_not_string", st_bytes(R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "dtype"});
  expect_bad(dir, "bad_dtype", st_bytes(R"({"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "unsupported dtype 'I64'"});
  expect_bad(dir, "lowercase_dtype", st_bytes(R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "unsupported dtype 'f32'"});

  expect_bad(dir, "shape_not_array", st_bytes(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "shape", "not an array"});
  expect_bad(dir, "negative_dim", st_bytes(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "-2", "negative"});
  expect_bad(dir, "float_dim", st_bytes(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "2.5", "not an integer"});
  expect_bad(dir, "string_dim", st_bytes(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "not an integer"});
  expect_bad(dir, "huge_dim",
             st_bytes(R"({"w":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "not an integer"});
  expect_bad(dir, "overflow_shape",
             st_bytes(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "too many elements"});
  expect_bad(dir, "overflow_after_zero",
             st_bytes(R"({"w":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})", f8),
             {"tensor 'w'", "too many elements"});

  expect_bad(dir, "offsets_one", st_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", f8),
             {"tensor 'w'", "two integers"});
  expect_bad(dir, "offsets_three", st_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", f8),
             {"tensor 'w'", "two integers"});
  expect_bad(dir, "offsets_not_int", st_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,"8"]}})", f8),
             {"tensor 'w'", "data_offsets"});
  expect_bad(dir, "offsets_negative", st_bytes(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[-4,0]}})", f8),
             {"tensor 'w'", "data_offsets"});
  expect_bad(dir, "offsets_reversed", st_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", f8),
             {"tensor 'w'", "[8, 4]", "begin after"});
  expect_bad(dir, "offsets_past_data", st_bytes(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f8),
             {"tensor 'w'", "past the end of the data section (8 bytes)"});
  expect_bad(dir, "offsets_far_past",
             st_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551611,18446744073709551615]}})",
                      f8),
             {"tensor 'w'", "past the end"});
  expect_bad(dir, "size_mismatch", st_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "span 8 bytes", "[3]", "needs 12"});
  expect_bad(dir, "size_mismatch_dtype", st_bytes(R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})", f8),
             {"tensor 'w'", "F16", "needs 4"});

  expect_bad(dir, "duplicate_name",
             st_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                      f8),
             {"duplicate tensor name 'w'"});
  expect_bad(dir, "duplicate_key",
             st_bytes(R"({"w":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", f8),
             {"duplicate key 'dtype'"});
  expect_bad(dir, "duplicate_metadata", st_bytes(R"({"__metadata__":{"a":"1","a":"2"}})", ""),
             {"duplicate key 'a'"});
  expect_bad(dir, "overlap",
             st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                      f8),
             {"overlaps", "'a'", "'b'"});
  expect_bad(dir, "overlap_same",
             st_bytes(R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                      f8),
             {"overlaps"});
  expect_bad(dir, "newline_in_name", st_bytes("{\"a\\nb\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,4]}}", f8),
             {"'a\\x0ab'", "unsupported dtype 'X'"});
}

TEST(SafeTensors, AbsurdHeaderLengthInALargeFile) {
  TempDir dir;
  // A sparse 101 MiB file whose header length claims 100 MiB + 1: fits the file, but no
  // real header is that large.
  const std::string path = dir.file("absurd.safetensors");
  write_bytes(path, u64le((100ull << 20) + 1));
  fs::resize_file(path, (101ull << 20));
  const std::string msg = open_error(path);
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
  EXPECT_CONTAINS(msg, "absurd");
}

TEST(SafeTensors, UnopenablePaths) {
  TempDir dir;
  const std::string missing = dir.file("nope.safetensors");
  std::string msg = open_error(missing);
  EXPECT_EQ(msg, "safetensors file " + missing + ": no such file");
  fs::create_directories(dir.file("adir"));
  msg = open_error(dir.file("adir"));
  EXPECT_EQ(msg, "safetensors file " + dir.file("adir") + ": is a directory, not a regular file");
}

TEST(SafeTensors, WriterRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  Tensor a = Tensor::empty({2, 3}, DType::F32);
  std::memset(a.data, 0, a.nbytes());
  EXPECT_THROW(write_safetensors(path, {{"a", a}, {"a", a}}), Error);
  EXPECT_THROW(write_safetensors(path, {{"__metadata__", a}}), Error);
  Tensor nc = a;
  nc.strides = {1, 2};  // transposed-style strides: not contiguous
  EXPECT_THROW(write_safetensors(path, {{"nc", nc}}), Error);
  EXPECT_FALSE(fs::exists(path));
  try {
    write_safetensors(dir.file("no/such/dir/x.safetensors"), {{"a", a}});
    ADD_FAILURE() << "writing into a missing directory did not fail";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "no/such/dir/x.safetensors");
  }
}
