// Loaders against files that are not what they should be: unreadable files and directories,
// a config whose context would make the KV cache enormous, and a Core ML weight file whose
// offsets wrap past 2^64. (FIFOs, devices and numbers beyond a double are tested through the
// command line in test_cli.cpp, merge results that do not spell their parts in
// test_tokenizer.cpp.)
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "backends/registry.h"
#include "cli_util.h"
#include "coreml_reader/reader.h"
#include "core/error.h"
#include "formats/safetensors.h"
#include "model/generate.h"
#include "model/gpt2.h"
#include "model/gpt2_weights.h"
#include "tokenizer/gpt2_tokenizer.h"

namespace {

namespace fs = std::filesystem;
using namespace strand;
using cli_test::run_in_child;
using cli_test::error_of;
using cli_test::ScratchDir;

// ---------------------------------------------------------------------------------------
// Permissions: a file that cannot be read, or a directory that cannot be searched, is
// "permission denied" naming the file, never "not found". Checked as a normal user (as root,
// in a child that has become nobody).

TEST(UntrustedFiles, UnsearchableModelDirectoryIsPermissionDeniedNotMissing) {
  ScratchDir s("untrusted");
  const fs::path dir = s.copy_fixture("tiny-f32");
  ::chmod(dir.c_str(), 0);
  const std::string model =
      run_in_child([&] { return error_of([&] { Gpt2Model::load(dir.string()); }); }, 30, true);
  EXPECT_EQ(model, "config.json " + (dir / "config.json").string() + ": permission denied");
  const std::string tok =
      run_in_child([&] { return error_of([&] { Gpt2Tokenizer::load_dir(dir.string()); }); }, 30, true);
  EXPECT_EQ(tok, "tokenizer.json " + (dir / "tokenizer.json").string() + ": permission denied");
}

TEST(UntrustedFiles, EachUnreadableFileIsNamed) {
  for (const std::string name : {"config.json", "model.safetensors", "vocab.json", "merges.txt"}) {
    ScratchDir s("untrusted");
    const fs::path dir = s.copy_fixture("tiny-f32");
    ::chmod((dir / name).c_str(), 0);
    const bool tokenizer_file = name == "vocab.json" || name == "merges.txt";
    const std::string msg = run_in_child(
        [&] {
          return error_of([&] {
            if (tokenizer_file)
              Gpt2Tokenizer::load_dir(dir.string());
            else
              Gpt2Model::load(dir.string());
          });
        },
        30, true);
    EXPECT_EQ(msg, name + " " + (dir / name).string() + ": permission denied");
  }
}

TEST(UntrustedFiles, UnreadableShardIsNamed) {
  ScratchDir s("untrusted");
  const fs::path dir = s.copy_fixture("tiny-f32");
  fs::rename(dir / "model.safetensors", dir / "part-1.safetensors");
  const auto st = SafeTensors::open((dir / "part-1.safetensors").string());
  nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
  for (const auto& [name, t] : st->tensors()) index["weight_map"][name] = "part-1.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  ::chmod((dir / "part-1.safetensors").c_str(), 0);
  const std::string msg = run_in_child([&] { return error_of([&] { Gpt2Model::load(dir.string()); }); }, 30, true);
  EXPECT_EQ(msg, "shard " + (dir / "part-1.safetensors").string() + ": permission denied");
}

// ---------------------------------------------------------------------------------------
// The KV cache: a run allocates what it can use, and a cache beyond the machine says so.

// /proc/self/status "<key>:" in bytes.
uint64_t status_bytes(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) return std::stoull(line.substr(key.size() + 1)) * 1024;
  return 0;
}

// 1024 layers of 8 channels with a context of 2^20: a few MB of weights, but a full KV cache
// of 2 x 1024 x 2^20 x 8 floats = 64 GiB.
Gpt2Model long_context_model() {
  Gpt2Config c;
  c.n_layer = 1024;
  c.n_embd = 8;
  c.n_head = 2;
  c.n_positions = 1 << 20;
  c.vocab_size = 16;
  c.n_inner = 32;
  Gpt2Model m;
  m.dir = "(long context, in memory)";
  m.config = c;
  m.weights = random_gpt2_weights(c, 11, DType::F32);
  return m;
}

TEST(KvCache, AllocatesOnlyTheTokensAsked) {
  const Gpt2Model m = long_context_model();
  Gpt2Runner r(m, make_chain("naive"));
  const KvCache c = r.new_cache(5);
  ASSERT_EQ(c.k.size(), 1024u);
  EXPECT_EQ(c.capacity, 5);
  EXPECT_EQ(c.k[0].shape, (Shape{5, 8}));
  EXPECT_EQ(c.v[1023].shape, (Shape{5, 8}));
}

TEST(KvCache, GenerateReservesThePromptAndNewTokensOnly) {
  const Gpt2Model m = long_context_model();
  Gpt2Runner r(m, make_chain("naive"));
  const uint64_t before = status_bytes("VmSize");
  if (before == 0) GTEST_SKIP() << "no /proc/self/status to read the address space from";
  SamplerConfig greedy;
  greedy.temperature = 0;
  const GenerateResult g = generate(r, {1, 2, 3}, 4, greedy, -1);
  EXPECT_EQ(g.ids.size(), 4u);
  // The full cache would have raised the peak address space by 64 GiB; the run's own cache is
  // 2 x 1024 x 7 x 8 floats. 1 GiB leaves room for the allocator.
  const uint64_t peak = status_bytes("VmPeak");
  EXPECT_LT(peak, before + (uint64_t(1) << 30)) << "VmSize " << before << " before, VmPeak " << peak << " after";
}

TEST(KvCache, ACacheBeyondTheMachineNamesItsCause) {
  const Gpt2Model m = long_context_model();
  Gpt2Runner r(m, make_chain("naive"));
  const std::string msg = error_of([&] { r.new_cache(); });
  EXPECT_NE(msg.find("the KV cache for 1048576 tokens (2 x 1024 layers x [1048576, 8] f32) needs 68.7 GB, more than "
                     "this machine's"),
            std::string::npos)
      << msg;
}

// ---------------------------------------------------------------------------------------
// The Core ML package reader (tests/coreml_reader) on a weight file whose blob offset + size
// wraps past 2^64: refused, not an endless walk.

void write_bytes(const fs::path& p, const std::string& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(b.data(), std::streamsize(b.size()));
}

std::string le(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += char((v >> (8 * i)) & 0xff);
  return s;
}

TEST(CoremlReader, BlobOffsetPlusSizeWrappingIsRefused) {
  ScratchDir s("untrusted");
  const fs::path pkg = s / "m.mlpackage";
  fs::create_directories(pkg / "Data/com.apple.CoreML/weights");
  write_bytes(pkg / "Manifest.json",
              R"({"fileFormatVersion": "1.0.0", "rootModelIdentifier": "A", "itemInfoEntries": {)"
              R"("A": {"author": "x", "description": "x", "name": "model.mlmodel", "path": "com.apple.CoreML/model.mlmodel"},)"
              R"("B": {"author": "x", "description": "x", "name": "weights", "path": "com.apple.CoreML/weights"}}})");
  write_bytes(pkg / "Data/com.apple.CoreML/model.mlmodel", "");
  // Header: one blob, version 2. Blob metadata at 64: sentinel, fp16, size 2^64 - 64, data at 128.
  std::string blob = le(1, 4) + le(2, 4) + std::string(56, '\0');
  blob += le(0xDEADBEEF, 4) + le(1, 4) + le(~uint64_t(0) - 63, 8) + le(128, 8) + std::string(40, '\0');
  blob += std::string(64, '\0');
  write_bytes(pkg / "Data/com.apple.CoreML/weights/weight.bin", blob);
  const std::string msg = run_in_child([&] {
    try {
      coreml_reader::Package::load(pkg.string());
    } catch (const coreml_reader::ReaderError& e) {
      return std::string(e.what());
    }
    return std::string("(loaded)");
  }, 20);
  EXPECT_EQ(msg, "coreml reader: blob data out of range at 64");
}

TEST(CoremlReader, ManifestPathsStayInsideThePackage) {
  ScratchDir s("untrusted");
  const fs::path pkg = s / "m.mlpackage";
  fs::create_directories(pkg);
  for (const std::string path : {"../../outside.mlmodel", "/etc/passwd", "a/../../b"}) {
    write_bytes(pkg / "Manifest.json",
                R"({"rootModelIdentifier": "A", "itemInfoEntries": {"A": {"name": "model.mlmodel", "path": ")" + path +
                    R"("}, "B": {"name": "weights", "path": "w"}}})");
    std::string msg = "(loaded)";
    try {
      coreml_reader::Package::load(pkg.string());
    } catch (const coreml_reader::ReaderError& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find("manifest path '" + path + "'"), std::string::npos) << msg;
  }
  write_bytes(pkg / "Manifest.json", R"({"rootModelIdentifier": 7})");
  EXPECT_THROW(coreml_reader::Package::load(pkg.string()), coreml_reader::ReaderError);
}

}  // namespace
