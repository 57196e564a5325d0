// Sharded checkpoints: model.safetensors.index.json + shard files, as Hugging Face's
// save_pretrained(max_shard_size=...) writes them. The shards are written here with strand's
// own writer from a model directory; the loaded tensors must equal the single file's, and every
// inconsistency between the index and the shards is one error naming the index or the shard.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/error.h"
#include "formats/safetensors.h"
#include "model/gpt2_weights.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace strand;
using cli_test::run_strand;
using cli_test::error_of;
using cli_test::ScratchDir;

std::string shard_name(size_t i, size_t n) { return fmt::format("model-{:05}-of-{:05}.safetensors", i + 1, n); }

// Splits dir/model.safetensors into `n` shards (tensors dealt round-robin in name order) and an
// index, and removes the single file. Returns the index as written.
json shard(const fs::path& dir, size_t n) {
  const auto st = SafeTensors::open((dir / "model.safetensors").string());
  std::vector<std::vector<std::pair<std::string, Tensor>>> parts(n);
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  uint64_t total = 0;
  size_t i = 0;
  for (const auto& [name, t] : st->tensors()) {
    parts[i % n].emplace_back(name, t);
    index["weight_map"][name] = shard_name(i % n, n);
    total += t.nbytes();
    ++i;
  }
  index["metadata"]["total_size"] = total;
  for (size_t k = 0; k < n; ++k) write_safetensors((dir / shard_name(k, n)).string(), parts[k]);
  fs::remove(dir / "model.safetensors");
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
  return index;
}

void write_index(const fs::path& dir, const json& index) {
  std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << index.dump(2);
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.nbytes() == b.nbytes() &&
         std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

TEST(Sharded, LoadsTheSameTensorsAsTheSingleFile) {
  for (const std::string fixture : {"tiny-f32", "tiny-bf16"}) {
    ScratchDir s("sharded");
    const fs::path dir = s.copy_fixture(fixture);
    const Gpt2Model one = Gpt2Model::load(cli_test::fixture_dir(fixture).string());
    shard(dir, 3);
    ASSERT_FALSE(fs::exists(dir / "model.safetensors"));
    const Gpt2Model three = Gpt2Model::load(dir.string());
    EXPECT_EQ(three.weights.file->path(), (dir / "model.safetensors.index.json").string());
    EXPECT_TRUE(same_bytes(one.weights.wte, three.weights.wte));
    EXPECT_TRUE(same_bytes(one.weights.wpe, three.weights.wpe));
    ASSERT_EQ(one.weights.layers.size(), three.weights.layers.size());
    for (size_t l = 0; l < one.weights.layers.size(); ++l) {
      const Gpt2Layer &a = one.weights.layers[l], &b = three.weights.layers[l];
      EXPECT_TRUE(same_bytes(a.attn_w, b.attn_w) && same_bytes(a.attn_b, b.attn_b) &&
                  same_bytes(a.attn_proj_w, b.attn_proj_w) && same_bytes(a.fc_w, b.fc_w) &&
                  same_bytes(a.fc_proj_w, b.fc_proj_w) && same_bytes(a.ln_1_w, b.ln_1_w) &&
                  same_bytes(a.ln_2_b, b.ln_2_b))
          << fixture << " layer " << l;
    }
    EXPECT_TRUE(same_bytes(one.weights.ln_f_w, three.weights.ln_f_w));
    // Each tensor is reported in the shard that holds it.
    const json index = json::parse(cli_test::read_file(dir / "model.safetensors.index.json"));
    for (const auto& [name, file] : index["weight_map"].items())
      EXPECT_EQ(three.weights.file->path_of(name), (dir / file.get<std::string>()).string());
  }
}

TEST(Sharded, GenerateGivesTheSameTokens) {
  ScratchDir s("sharded");
  const fs::path dir = s.copy_fixture("tiny-f32");
  shard(dir, 2);
  const auto a = run_strand({"generate", "-m", cli_test::fixture_dir("tiny-f32").string(), "-p", "hello", "-n", "8",
                             "--temp", "0", "--json"});
  const auto b = run_strand({"generate", "-m", dir.string(), "-p", "hello", "-n", "8", "--temp", "0", "--json"});
  ASSERT_EQ(a.exit_code, 0) << a.describe();
  ASSERT_EQ(b.exit_code, 0) << b.describe();
  EXPECT_EQ(json::parse(a.out)["ids"], json::parse(b.out)["ids"]);
}

// The single file wins when both are there (as in Hugging Face's loader).
TEST(Sharded, TheSingleFileIsPreferred) {
  ScratchDir s("sharded");
  const fs::path dir = s.copy_fixture("tiny-f32");
  write_index(dir, json::parse("{\"weight_map\": {\"wte.weight\": \"nowhere.safetensors\"}}"));
  const Gpt2Model m = Gpt2Model::load(dir.string());
  EXPECT_EQ(m.weights.file->path(), (dir / "model.safetensors").string());
}

class ShardedBad : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = s.copy_fixture("tiny-f32");
    index = shard(dir, 2);
    index_path = (dir / "model.safetensors.index.json").string();
  }
  // The error loading the directory with `j` as its index.
  std::string load_error(const json& j) {
    write_index(dir, j);
    return error_of([&] { Gpt2Model::load(dir.string()); });
  }
  std::string load_error_text(const std::string& text) {
    std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << text;
    return error_of([&] { Gpt2Model::load(dir.string()); });
  }
  ScratchDir s{"sharded"};
  fs::path dir;
  json index;
  std::string index_path;
};

TEST_F(ShardedBad, MissingShard) {
  fs::remove(dir / shard_name(1, 2));
  const std::string msg = load_error(index);
  EXPECT_EQ(msg.rfind(index_path + ": shard '" + shard_name(1, 2) + "' (named for tensor '", 0), 0u) << msg;
  EXPECT_NE(msg.find("is missing: " + (dir / shard_name(1, 2)).string() + ": no such file"), std::string::npos) << msg;
}

TEST_F(ShardedBad, TensorInTwoShards) {
  // A third shard that repeats a tensor the index puts in shard 1.
  const auto first = SafeTensors::open((dir / shard_name(0, 2)).string());
  const auto& [name, t] = *first->tensors().begin();
  write_safetensors((dir / "zz-extra.safetensors").string(), {{name, t}});
  json j = index;
  j["weight_map"]["zz.extra"] = "zz-extra.safetensors";
  // Shards are opened in name order: the duplicate shows in zz-extra, after model-00001.
  EXPECT_EQ(load_error(j), index_path + ": tensor '" + name + "' is in two shards: " +
                               (dir / shard_name(0, 2)).string() + " and " + (dir / "zz-extra.safetensors").string());
}

TEST_F(ShardedBad, IndexNamesATensorTheShardLacks) {
  const std::string name = "h.0.attn.c_attn.weight";
  const std::string held_by = index["weight_map"][name];
  const std::string moved_to = held_by == shard_name(0, 2) ? shard_name(1, 2) : shard_name(0, 2);
  json j = index;
  j["weight_map"][name] = moved_to;
  // Shards are opened in name order: the first of the two reports it.
  if (held_by < moved_to)
    EXPECT_EQ(load_error(j), index_path + ": shard " + (dir / held_by).string() + " holds tensor '" + name +
                                 "', which the index puts in '" + moved_to + "'");
  else
    EXPECT_EQ(load_error(j), index_path + ": the index puts tensor '" + name + "' in " + (dir / moved_to).string() +
                                 ", which does not hold it");
  // A tensor the index lists that no shard holds at all.
  j = index;
  j["weight_map"]["h.9.mlp.c_fc.weight"] = shard_name(1, 2);
  EXPECT_EQ(load_error(j), index_path + ": the index puts tensor 'h.9.mlp.c_fc.weight' in " +
                               (dir / shard_name(1, 2)).string() + ", which does not hold it");
}

TEST_F(ShardedBad, ShardHoldsATensorTheIndexDoesNotList) {
  json j = index;
  j["weight_map"].erase("ln_f.bias");
  const std::string msg = load_error(j);
  EXPECT_EQ(msg, index_path + ": shard " + (dir / index["weight_map"]["ln_f.bias"].get<std::string>()).string() +
                     " holds tensor 'ln_f.bias', which the index does not list");
}

TEST_F(ShardedBad, ShardOutsideTheDirectory) {
  // A valid shard one level up: refused by name, never opened.
  fs::copy_file(dir / shard_name(0, 2), dir.parent_path() / "up.safetensors");
  for (const std::string bad : {"../up.safetensors", "/etc/passwd", "sub/x.safetensors", "..", "", "a\\b"}) {
    json j = index;
    j["weight_map"]["wte.weight"] = bad;
    EXPECT_EQ(load_error(j), index_path + ": tensor 'wte.weight' is mapped to shard '" + bad +
                                 "', which is not a file name in the index's directory")
        << bad;
  }
}

TEST_F(ShardedBad, MalformedIndex) {
  EXPECT_EQ(load_error_text("{\"weight_map\": ").rfind(index_path + ": index is not valid JSON: parse error at line 1", 0), 0u);
  EXPECT_EQ(load_error(json::array()), index_path + ": the index is an array, not a JSON object");
  EXPECT_EQ(load_error(json::object()), index_path + ": no weight_map");
  EXPECT_EQ(load_error({{"weight_map", 3}}), index_path + ": weight_map is 3, not an object of tensor -> shard file");
  EXPECT_EQ(load_error({{"weight_map", json::object()}}), index_path + ": weight_map lists no tensors");
  EXPECT_EQ(load_error({{"weight_map", {{"wte.weight", 5}}}}),
            index_path + ": weight_map maps tensor 'wte.weight' to 5, not a file name");
  EXPECT_EQ(load_error({{"metadata", "x"}, {"weight_map", index["weight_map"]}}),
            index_path + ": metadata is a string, not an object");
  EXPECT_EQ(load_error_text(R"({"weight_map": {"wte.weight": "a", "wte.weight": "b"}})"),
            index_path + ": duplicate key 'wte.weight' in index");
  EXPECT_EQ(load_error_text(R"({"weight_map": {}, "weight_map": {}})"),
            index_path + ": duplicate key 'weight_map' in index");
  EXPECT_EQ(load_error_text(R"({"weight_map": {"wte.weight": "a"}, "x": 1e400})").rfind(index_path + ": index is not valid JSON", 0), 0u);
  // A directory, a FIFO: refused like any other file.
  fs::remove(dir / "model.safetensors.index.json");
  fs::create_directory(dir / "model.safetensors.index.json");
  EXPECT_EQ(error_of([&] { Gpt2Model::load(dir.string()); }),
            "model.safetensors.index.json " + index_path + ": is a directory, not a regular file");
}

TEST_F(ShardedBad, ABadShardIsNamed) {
  const fs::path p = dir / shard_name(1, 2);
  fs::resize_file(p, 4);
  EXPECT_EQ(load_error(index), p.string() + ": file is 4 bytes, too short for a safetensors header (at least 8)");
}

}  // namespace
