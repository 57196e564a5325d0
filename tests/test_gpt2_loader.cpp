// Tests for GPT-2 config.json validation and the Hugging Face directory loader/writer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "core/error.h"
#include "formats/safetensors.h"
#include "model/gpt2_config.h"
#include "model/gpt2_weights.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace strand;

namespace {

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / fmt::format("strand_gpt2_test_{}_{}", ::getpid(), counter++);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

#define EXPECT_CONTAINS(msg, sub)                                                        \
  EXPECT_NE(std::string(msg).find(sub), std::string::npos)                               \
      << "message: \"" << (msg) << "\"\n should contain: \"" << (sub) << "\""

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  ASSERT_TRUE(f.good()) << path;
}

json base_config() {
  return json{{"n_layer", 2}, {"n_embd", 8}, {"n_head", 2}, {"n_positions", 16}, {"vocab_size", 11}};
}

// The strand::Error message from running f ("" plus a failure if it does not throw one).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message should be one line: " << msg;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected strand::Error, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

// Writes `j` as config.json in `dir` and returns the message loading it fails with.
std::string config_error(const TempDir& dir, const json& j) {
  const std::string path = dir.file("config.json");
  write_text(path, j.dump());
  const std::string msg = error_of([&] { Gpt2Config::load(path); });
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message should start with the path: " << msg;
  return msg;
}

Gpt2Config load_config(const TempDir& dir, const json& j) {
  write_text(dir.file("config.json"), j.dump());
  return Gpt2Config::load(dir.file("config.json"));
}

// Every tensor of a weights struct, by Hugging Face name (without prefix).
std::vector<std::pair<std::string, const Tensor*>> all_tensors(const Gpt2Weights& w) {
  std::vector<std::pair<std::string, const Tensor*>> out = {{"wte.weight", &w.wte}, {"wpe.weight", &w.wpe}};
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const Gpt2Layer& L = w.layers[i];
    const std::string h = fmt::format("h.{}.", i);
    out.insert(out.end(), {{h + "ln_1.weight", &L.ln_1_w},
                           {h + "ln_1.bias", &L.ln_1_b},
                           {h + "attn.c_attn.weight", &L.attn_w},
                           {h + "attn.c_attn.bias", &L.attn_b},
                           {h + "attn.c_proj.weight", &L.attn_proj_w},
                           {h + "attn.c_proj.bias", &L.attn_proj_b},
                           {h + "ln_2.weight", &L.ln_2_w},
                           {h + "ln_2.bias", &L.ln_2_b},
                           {h + "mlp.c_fc.weight", &L.fc_w},
                           {h + "mlp.c_fc.bias", &L.fc_b},
                           {h + "mlp.c_proj.weight", &L.fc_proj_w},
                           {h + "mlp.c_proj.bias", &L.fc_proj_b}});
  }
  out.insert(out.end(), {{"ln_f.weight", &w.ln_f_w}, {"ln_f.bias", &w.ln_f_b}, {"lm_head.weight", &w.lm_head}});
  return out;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

Gpt2Config small_config() {
  Gpt2Config c;
  c.n_layer = 2;
  c.n_embd = 8;
  c.n_head = 2;
  c.n_positions = 16;
  c.vocab_size = 11;
  c.n_inner = 24;  // not 4 * n_embd, so a swapped C/F would show
  c.eos_token_id = 10;
  return c;
}

// Rewrites dir/model.safetensors after `edit` changes its tensor list.
void rewrite_model(const std::string& dir,
                   const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
  const std::string path = (fs::path(dir) / "model.safetensors").string();
  auto st = SafeTensors::open(path);
  std::vector<std::pair<std::string, Tensor>> ts(st->tensors().begin(), st->tensors().end());
  edit(ts);
  write_safetensors(path, ts, st->metadata());
}

void erase_tensor(std::vector<std::pair<std::string, Tensor>>& ts, const std::string& name) {
  const size_t before = ts.size();
  std::erase_if(ts, [&](const auto& p) { return p.first == name; });
  ASSERT_EQ(ts.size() + 1, before) << name;
}

Tensor& tensor_named(std::vector<std::pair<std::string, Tensor>>& ts, const std::string& name) {
  for (auto& [n, t] : ts)
    if (n == name) return t;
  throw std::runtime_error("test bug: no tensor " + name);
}

// Loading dir fails; the message names model.safetensors and contains every `what`.
void expect_load_error(const std::string& dir, std::initializer_list<std::string> what) {
  const std::string msg = error_of([&] { Gpt2Model::load(dir); });
  EXPECT_CONTAINS(msg, (fs::path(dir) / "model.safetensors").string());
  for (const auto& w : what) EXPECT_CONTAINS(msg, w);
}

}  // namespace

// ---------------------------------------------------------------- config.json

TEST(Gpt2Config, LoadsAndResolvesDefaults) {
  TempDir dir;
  const Gpt2Config c = load_config(dir, base_config());
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.n_embd, 8);
  EXPECT_EQ(c.n_head, 2);
  EXPECT_EQ(c.head_dim(), 4);
  EXPECT_EQ(c.n_positions, 16);
  EXPECT_EQ(c.vocab_size, 11);
  EXPECT_EQ(c.n_inner, 32);
  EXPECT_EQ(c.layer_norm_epsilon, 1e-5);
  EXPECT_EQ(c.activation_function, "gelu_new");
  EXPECT_EQ(c.eos_token_id, -1);
  EXPECT_TRUE(c.tie_word_embeddings);

  json j = base_config();
  j["n_inner"] = nullptr;
  EXPECT_EQ(load_config(dir, j).n_inner, 32);
  j["n_inner"] = 0;
  EXPECT_EQ(load_config(dir, j).n_inner, 32);
  j["n_inner"] = 20;
  EXPECT_EQ(load_config(dir, j).n_inner, 20);
  j["layer_norm_epsilon"] = 1e-6;
  j["eos_token_id"] = 10;
  j["tie_word_embeddings"] = false;
  const Gpt2Config d = load_config(dir, j);
  EXPECT_EQ(d.layer_norm_epsilon, 1e-6);
  EXPECT_EQ(d.eos_token_id, 10);
  EXPECT_FALSE(d.tie_word_embeddings);
  j["eos_token_id"] = json::array({3, 4});
  EXPECT_EQ(load_config(dir, j).eos_token_id, 3);
}

TEST(Gpt2Config, NCtxIsAFallbackForNPositions) {
  TempDir dir;
  json j = base_config();
  j.erase("n_positions");
  j["n_ctx"] = 12;
  EXPECT_EQ(load_config(dir, j).n_positions, 12);
  j["n_positions"] = 20;
  EXPECT_EQ(load_config(dir, j).n_positions, 20);
}

TEST(Gpt2Config, MissingEachRequiredKey) {
  TempDir dir;
  for (const char* key : {"n_layer", "n_embd", "n_head", "n_positions", "vocab_size"}) {
    SCOPED_TRACE(key);
    json j = base_config();
    j.erase(key);
    EXPECT_CONTAINS(config_error(dir, j), fmt::format("missing key {}", key));
  }
}

TEST(Gpt2Config, NonIntegerAndOutOfRangeValues) {
  TempDir dir;
  for (const char* key : {"n_layer", "n_embd", "n_head", "n_positions", "vocab_size"}) {
    for (const json& bad : {json(2.5), json("8"), json(true), json(nullptr), json::array({8})}) {
      SCOPED_TRACE(fmt::format("{} = {}", key, bad.dump()));
      json j = base_config();
      j[key] = bad;
      EXPECT_CONTAINS(config_error(dir, j), fmt::format("{} must be a positive integer", key));
    }
    for (const json& bad : {json(0), json(-4), json(1ull << 40)}) {
      SCOPED_TRACE(fmt::format("{} = {}", key, bad.dump()));
      json j = base_config();
      j[key] = bad;
      const std::string msg = config_error(dir, j);
      EXPECT_CONTAINS(msg, key);
      EXPECT_CONTAINS(msg, "out of range");
    }
  }
  json j = base_config();
  j["n_inner"] = -1;
  EXPECT_CONTAINS(config_error(dir, j), "n_inner");
  j = base_config();
  j["n_inner"] = 3.5;
  EXPECT_CONTAINS(config_error(dir, j), "n_inner must be an integer");
}

TEST(Gpt2Config, EmbdMustDivideByHeads) {
  TempDir dir;
  json j = base_config();
  j["n_embd"] = 10;
  j["n_head"] = 3;
  EXPECT_CONTAINS(config_error(dir, j), "n_embd 10 is not divisible by n_head 3");
}

TEST(Gpt2Config, Activations) {
  TempDir dir;
  for (const char* a : {"gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu", "quick_gelu"}) {
    json j = base_config();
    j["activation_function"] = a;
    EXPECT_EQ(load_config(dir, j).activation_function, a);
  }
  json j = base_config();
  j["activation_function"] = "swish";
  EXPECT_CONTAINS(config_error(dir, j), "unknown activation_function 'swish'");
  j["activation_function"] = 3;
  EXPECT_CONTAINS(config_error(dir, j), "activation_function must be a string");
}

TEST(Gpt2Config, EpsilonAndEosChecks) {
  TempDir dir;
  for (const json& bad : {json(0.0), json(-1e-5), json("1e-5")}) {
    SCOPED_TRACE(bad.dump());
    json j = base_config();
    j["layer_norm_epsilon"] = bad;
    EXPECT_CONTAINS(config_error(dir, j), "layer_norm_epsilon");
  }
  json j = base_config();
  j["eos_token_id"] = 50256;  // vocab_size is 11
  EXPECT_CONTAINS(config_error(dir, j), "eos_token_id");
}

TEST(Gpt2Config, UnsupportedOptionsAndOtherModels) {
  TempDir dir;
  json j = base_config();
  j["model_type"] = "llama";
  EXPECT_CONTAINS(config_error(dir, j), "model_type");
  j = base_config();
  j["scale_attn_by_inverse_layer_idx"] = true;
  EXPECT_CONTAINS(config_error(dir, j), "scale_attn_by_inverse_layer_idx");
  j = base_config();
  j["scale_attn_weights"] = false;
  EXPECT_CONTAINS(config_error(dir, j), "scale_attn_weights");
  j = base_config();
  j["add_cross_attention"] = true;
  EXPECT_CONTAINS(config_error(dir, j), "add_cross_attention");
  // The defaults spelled out are fine.
  j = base_config();
  j["model_type"] = "gpt2";
  j["scale_attn_weights"] = true;
  j["scale_attn_by_inverse_layer_idx"] = false;
  j["reorder_and_upcast_attn"] = false;
  EXPECT_NO_THROW(load_config(dir, j));
}

TEST(Gpt2Config, MissingFileBadJsonAndNotAnObject) {
  TempDir dir;
  const std::string path = dir.file("config.json");
  std::string msg = error_of([&] { Gpt2Config::load(path); });
  EXPECT_EQ(msg, "config.json " + path + ": no such file");
  write_text(path, "{\"n_layer\": 2,");
  msg = error_of([&] { Gpt2Config::load(path); });
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "not valid JSON");
  write_text(path, "[1, 2]");
  msg = error_of([&] { Gpt2Config::load(path); });
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "not a JSON object");
}

TEST(Gpt2Config, ToJsonRoundTrips) {
  TempDir dir;
  Gpt2Config c = small_config();
  c.activation_function = "gelu_pytorch_tanh";
  c.layer_norm_epsilon = 3e-6;
  c.tie_word_embeddings = false;
  const json j = c.to_json();
  EXPECT_EQ(j["model_type"], "gpt2");
  EXPECT_EQ(j["architectures"], json::array({"GPT2LMHeadModel"}));
  EXPECT_EQ(j["n_ctx"], c.n_positions);
  const Gpt2Config d = load_config(dir, j);
  EXPECT_EQ(d.n_layer, c.n_layer);
  EXPECT_EQ(d.n_embd, c.n_embd);
  EXPECT_EQ(d.n_head, c.n_head);
  EXPECT_EQ(d.n_positions, c.n_positions);
  EXPECT_EQ(d.vocab_size, c.vocab_size);
  EXPECT_EQ(d.n_inner, c.n_inner);
  EXPECT_EQ(d.layer_norm_epsilon, c.layer_norm_epsilon);
  EXPECT_EQ(d.activation_function, c.activation_function);
  EXPECT_EQ(d.eos_token_id, c.eos_token_id);
  EXPECT_EQ(d.tie_word_embeddings, c.tie_word_embeddings);
}

// ---------------------------------------------------------------- weights

TEST(Gpt2Weights, RandomInitIsSeededAndShaped) {
  const Gpt2Config c = small_config();
  const uint64_t seed = 1234;
  SCOPED_TRACE(fmt::format("seed {}", seed));
  const Gpt2Weights a = random_gpt2_weights(c, seed, DType::F32);
  const Gpt2Weights b = random_gpt2_weights(c, seed, DType::F32);
  const Gpt2Weights other = random_gpt2_weights(c, seed + 1, DType::F32);
  EXPECT_TRUE(a.tied);
  EXPECT_EQ(a.lm_head.data, a.wte.data);
  EXPECT_EQ(a.wte.shape, (Shape{11, 8}));
  EXPECT_EQ(a.layers.at(1).fc_w.shape, (Shape{8, 24}));
  EXPECT_EQ(a.layers.at(1).fc_proj_w.shape, (Shape{24, 8}));
  EXPECT_EQ(a.layers.at(0).attn_w.shape, (Shape{8, 24}));
  const auto ta = all_tensors(a), tb = all_tensors(b), to = all_tensors(other);
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_TRUE(same_bytes(*ta[i].second, *tb[i].second)) << ta[i].first;
    EXPECT_FALSE(same_bytes(*ta[i].second, *to[i].second)) << ta[i].first;
  }
  // Gains near 1, matrices with a spread near 0.02.
  double gain = 0, sq = 0;
  for (int64_t i = 0; i < 8; ++i) gain += a.ln_f_w.ptr<float>()[i] / 8.0;
  EXPECT_NEAR(gain, 1.0, 0.15);
  const Tensor& m = a.layers[0].attn_w;
  for (int64_t i = 0; i < m.numel(); ++i) sq += double(m.ptr<float>()[i]) * m.ptr<float>()[i];
  EXPECT_NEAR(std::sqrt(sq / double(m.numel())), 0.02, 0.006);

  Gpt2Config u = c;
  u.tie_word_embeddings = false;
  const Gpt2Weights w = random_gpt2_weights(u, seed, DType::BF16);
  EXPECT_FALSE(w.tied);
  EXPECT_NE(w.lm_head.data, w.wte.data);
  EXPECT_EQ(w.lm_head.dtype, DType::BF16);
  EXPECT_THROW(random_gpt2_weights(c, seed, DType::I32), Error);
  Gpt2Config unresolved = c;
  unresolved.n_inner = 0;  // in memory the config holds n_inner resolved
  EXPECT_CONTAINS(error_of([&] { random_gpt2_weights(unresolved, seed, DType::F32); }), "n_inner is 0");
}

TEST(Gpt2Weights, DirectoryRoundTrip) {
  enum Mode { Tied, TiedWithLmHead, Untied };
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    for (bool prefix : {false, true}) {
      for (Mode mode : {Tied, TiedWithLmHead, Untied}) {
        const uint64_t seed = 100 + uint64_t(dt) * 10 + uint64_t(prefix) * 3 + uint64_t(mode);
        SCOPED_TRACE(fmt::format("dtype {} prefix {} mode {} seed {}", dtype_name(dt), prefix, int(mode), seed));
        TempDir dir;
        Gpt2Config c = small_config();
        c.tie_word_embeddings = mode != Untied;
        const Gpt2Weights w = random_gpt2_weights(c, seed, dt);
        save_gpt2_dir(dir.path(), c, w, prefix, mode == TiedWithLmHead);

        // The file holds Hugging Face names.
        {
          auto st = SafeTensors::open(dir.file("model.safetensors"));
          EXPECT_EQ(st->metadata().at("format"), "pt");
          const std::string p = prefix ? "transformer." : "";
          EXPECT_NE(st->find(p + "wte.weight"), nullptr);
          EXPECT_NE(st->find(p + "h.1.mlp.c_proj.bias"), nullptr);
          EXPECT_EQ(st->find(prefix ? "wte.weight" : "transformer.wte.weight"), nullptr);
          EXPECT_EQ(st->find("lm_head.weight") != nullptr, mode != Tied);
          EXPECT_EQ(st->tensors().size(), 2 + 12 * 2 + 2 + (mode != Tied ? 1u : 0u));
        }

        const Gpt2Model m = Gpt2Model::load(dir.path());
        EXPECT_EQ(m.dir, dir.path());
        EXPECT_EQ(m.config.n_layer, 2);
        EXPECT_EQ(m.config.n_inner, 24);
        EXPECT_EQ(m.config.eos_token_id, 10);
        EXPECT_EQ(m.weights.dtype, dt);
        EXPECT_EQ(m.weights.tied, mode != Untied);
        ASSERT_NE(m.weights.file, nullptr);
        ASSERT_EQ(m.weights.layers.size(), 2u);
        const auto want = all_tensors(w), got = all_tensors(m.weights);
        ASSERT_EQ(want.size(), got.size());
        for (size_t i = 0; i < want.size(); ++i) {
          EXPECT_TRUE(same_bytes(*want[i].second, *got[i].second)) << want[i].first;
          // A view into the one mapping, not a copy.
          EXPECT_EQ(got[i].second->owner.get(), m.weights.wte.owner.get()) << want[i].first;
        }
        if (mode != Untied) EXPECT_EQ(m.weights.lm_head.data, m.weights.wte.data);
        else EXPECT_NE(m.weights.lm_head.data, m.weights.wte.data);
      }
    }
  }
}

TEST(Gpt2Weights, MaskBuffersAreIgnored) {
  TempDir dir;
  const Gpt2Config c = small_config();
  save_gpt2_dir(dir.path(), c, random_gpt2_weights(c, 5, DType::F16), /*with_prefix=*/true);
  rewrite_model(dir.path(), [](auto& ts) {
    Tensor mask = Tensor::empty({1, 1, 16, 16}, DType::F32);  // another dtype, on purpose
    std::memset(mask.data, 0, mask.nbytes());
    Tensor mb = Tensor::empty({}, DType::F32);
    std::memset(mb.data, 0, mb.nbytes());
    ts.emplace_back("transformer.h.0.attn.bias", mask);
    ts.emplace_back("h.1.attn.masked_bias", mb);
  });
  const Gpt2Model m = Gpt2Model::load(dir.path());
  EXPECT_EQ(m.weights.dtype, DType::F16);
}

TEST(Gpt2Weights, BadDirectoriesNameTheFileAndTensor) {
  const Gpt2Config c = small_config();
  const uint64_t seed = 77;
  SCOPED_TRACE(fmt::format("seed {}", seed));
  const Gpt2Weights w = random_gpt2_weights(c, seed, DType::F16);

  {  // missing tensor (stored with the prefix: the message still names it)
    TempDir dir;
    save_gpt2_dir(dir.path(), c, w, true);
    rewrite_model(dir.path(), [](auto& ts) { erase_tensor(ts, "transformer.h.1.mlp.c_fc.bias"); });
    expect_load_error(dir.path(), {"missing tensor h.1.mlp.c_fc.bias"});
  }
  {  // wrong shape
    TempDir dir;
    save_gpt2_dir(dir.path(), c, w);
    rewrite_model(dir.path(), [](auto& ts) {
      Tensor t = Tensor::empty({8, 23}, DType::F16);
      std::memset(t.data, 0, t.nbytes());
      tensor_named(ts, "h.0.attn.c_attn.weight") = t;
    });
    expect_load_error(dir.path(), {"h.0.attn.c_attn.weight", "shape [8, 23], expected [8, 24]"});
  }
  {  // a transposed (nn.Linear layout) MLP matrix is a shape error too
    TempDir dir;
    save_gpt2_dir(dir.path(), c, w);
    rewrite_model(dir.path(), [](auto& ts) {
      Tensor& t = tensor_named(ts, "h.1.mlp.c_fc.weight");
      t = t.reshape({24, 8});
    });
    expect_load_error(dir.path(), {"h.1.mlp.c_fc.weight", "shape [24, 8], expected [8, 24]"});
  }
  {  // mixed dtypes
    TempDir dir;
    save_gpt2_dir(dir.path(), c, w);
    rewrite_model(dir.path(), [](auto& ts) {
      Tensor& t = tensor_named(ts, "ln_f.bias");
      t = t.to(DType::F32);
    });
    expect_load_error(dir.path(), {"ln_f.bias", "dtype F32", "wte.weight has F16"});
  }
  {  // a dtype GPT-2 weights cannot have
    TempDir dir;
    save_gpt2_dir(dir.path(), c, w);
    rewrite_model(dir.path(), [](auto& ts) {
      for (auto& [n, t] : ts) t = t.to(DType::F64);
    });
    expect_load_error(dir.path(), {"wte.weight", "F64", "F32, F16 or BF16"});
  }
  {  // the same tensor with and without the prefix
    TempDir dir;
    save_gpt2_dir(dir.path(), c, w);
    rewrite_model(dir.path(), [](auto& ts) {
      Tensor t = tensor_named(ts, "wpe.weight");
      ts.emplace_back("transformer.wpe.weight", t.to(t.dtype));
    });
    expect_load_error(dir.path(), {"wpe.weight", "both"});
  }
  {  // a layer the config does not have
    TempDir dir;
    save_gpt2_dir(dir.path(), c, w);
    rewrite_model(dir.path(), [](auto& ts) {
      Tensor t = tensor_named(ts, "h.1.ln_1.weight");
      ts.emplace_back("h.2.ln_1.weight", t.to(t.dtype));
    });
    expect_load_error(dir.path(), {"unexpected tensor h.2.ln_1.weight", "n_layer 2"});
  }
  {  // config has more layers than the file
    TempDir dir;
    save_gpt2_dir(dir.path(), c, w);
    json j = c.to_json();
    j["n_layer"] = 3;
    write_text(dir.file("config.json"), j.dump());
    expect_load_error(dir.path(), {"missing tensor h.2.ln_1.weight"});
  }
  {  // untied in config.json, but no lm_head in the file
    TempDir dir;
    save_gpt2_dir(dir.path(), c, w);
    json j = c.to_json();
    j["tie_word_embeddings"] = false;
    write_text(dir.file("config.json"), j.dump());
    expect_load_error(dir.path(), {"missing tensor lm_head.weight"});
  }
  {  // lm_head of the wrong shape
    TempDir dir;
    Gpt2Weights u = w;
    u.tied = false;
    u.lm_head = w.wte.rows(0, 10).to(DType::F16);
    EXPECT_CONTAINS(error_of([&] { save_gpt2_dir(dir.path(), c, u); }), "lm_head.weight");
    save_gpt2_dir(dir.path(), c, w, false, true);
    rewrite_model(dir.path(), [&](auto& ts) { tensor_named(ts, "lm_head.weight") = u.lm_head; });
    expect_load_error(dir.path(), {"lm_head.weight", "shape [10, 8], expected [11, 8]"});
  }
}

TEST(Gpt2Weights, MissingFilesAreNamed) {
  const Gpt2Config c = small_config();
  const Gpt2Weights w = random_gpt2_weights(c, 3, DType::F32);
  TempDir dir;
  save_gpt2_dir(dir.path(), c, w);
  fs::remove(dir.file("config.json"));
  std::string msg = error_of([&] { Gpt2Model::load(dir.path()); });
  EXPECT_EQ(msg, "config.json " + dir.file("config.json") + ": no such file");

  save_gpt2_dir(dir.path(), c, w);
  fs::remove(dir.file("model.safetensors"));
  msg = error_of([&] { Gpt2Model::load(dir.path()); });
  EXPECT_CONTAINS(msg, dir.file("model.safetensors"));
  EXPECT_CONTAINS(msg, "not found");

  EXPECT_CONTAINS(msg, "nor model.safetensors.index.json");

  // A sharded checkpoint is read from its index (test_sharded.cpp has the rest).
  write_text(dir.file("model.safetensors.index.json"), "{}");
  msg = error_of([&] { Gpt2Model::load(dir.path()); });
  EXPECT_EQ(msg, dir.file("model.safetensors.index.json") + ": no weight_map");

  msg = error_of([&] { Gpt2Model::load(dir.file("absent")); });
  EXPECT_CONTAINS(msg, dir.file("absent"));
}

TEST(Gpt2Weights, SaveChecksTheWeightsAgainstTheConfig) {
  TempDir dir;
  const Gpt2Config c = small_config();
  Gpt2Weights w = random_gpt2_weights(c, 9, DType::F32);
  Gpt2Config bigger = c;
  bigger.n_embd = 16;
  EXPECT_CONTAINS(error_of([&] { save_gpt2_dir(dir.file("a"), bigger, w); }), "wte.weight");
  Gpt2Config deeper = c;
  deeper.n_layer = 3;
  EXPECT_CONTAINS(error_of([&] { save_gpt2_dir(dir.file("b"), deeper, w); }), "layers");
  w.layers[1].ln_2_b = w.layers[1].ln_2_b.to(DType::F16);
  EXPECT_CONTAINS(error_of([&] { save_gpt2_dir(dir.file("c"), c, w); }), "h.1.ln_2.bias");
}

// The checked-in fixtures were written by an independent tool (see tests/fixtures/README.md).
TEST(Gpt2Weights, LoadsTheFixtureDirectories) {
  const fs::path root = fs::path(STRAND_SOURCE_DIR) / "tests" / "fixtures" / "gpt2";
  if (!fs::exists(root / "tiny-f32" / "model.safetensors")) GTEST_SKIP() << "fixtures not present";
  const Gpt2Model f32 = Gpt2Model::load((root / "tiny-f32").string());
  const Gpt2Model f16 = Gpt2Model::load((root / "tiny-f16").string());
  const Gpt2Model bf16 = Gpt2Model::load((root / "tiny-bf16").string());
  const Gpt2Model gelu = Gpt2Model::load((root / "tiny-gelu").string());

  EXPECT_EQ(f32.config.n_layer, 2);
  EXPECT_EQ(f32.config.n_embd, 48);
  EXPECT_EQ(f32.config.n_head, 3);
  EXPECT_EQ(f32.config.n_positions, 64);
  EXPECT_EQ(f32.config.vocab_size, 300);
  EXPECT_EQ(f32.config.n_inner, 192);
  EXPECT_EQ(f32.config.eos_token_id, 299);
  EXPECT_EQ(gelu.config.activation_function, "gelu");
  EXPECT_EQ(gelu.config.n_layer, 1);

  EXPECT_EQ(f32.weights.dtype, DType::F32);
  EXPECT_EQ(f16.weights.dtype, DType::F16);
  EXPECT_EQ(bf16.weights.dtype, DType::BF16);
  EXPECT_TRUE(f32.weights.tied);
  EXPECT_TRUE(bf16.weights.tied);
  EXPECT_FALSE(f16.weights.tied);
  EXPECT_EQ(f16.weights.lm_head.shape, (Shape{300, 48}));
  EXPECT_EQ(bf16.weights.lm_head.data, bf16.weights.wte.data);

  // The f16 / bf16 models hold the f32 weights rounded to nearest even.
  const auto a = all_tensors(f32.weights), h = all_tensors(f16.weights), b = all_tensors(bf16.weights);
  for (size_t i = 0; i + 1 < a.size(); ++i) {  // all but lm_head (f16's is its own matrix)
    const Tensor& x = *a[i].second;
    ASSERT_EQ(x.shape, h[i].second->shape) << a[i].first;
    int bad16 = 0, badb = 0;
    for (int64_t k = 0; k < x.numel(); ++k) {
      const float v = x.ptr<const float>()[k];
      bad16 += h[i].second->ptr<const uint16_t>()[k] != f32_to_f16(v);
      badb += b[i].second->ptr<const uint16_t>()[k] != f32_to_bf16(v);
    }
    EXPECT_EQ(bad16, 0) << a[i].first;
    EXPECT_EQ(badb, 0) << a[i].first;
  }
}
