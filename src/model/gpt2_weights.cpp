#include "model/gpt2_weights.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/error.h"
#include "core/file_io.h"
#include "core/rng.h"

namespace strand {

namespace fs = std::filesystem;

namespace {

constexpr const char* kPrefix = "transformer.";
constexpr const char* kLmHead = "lm_head.weight";

enum class Kind { Matrix, Gain, Bias };

// Calls f(name, tensor, expected shape, kind) for every tensor except lm_head, in the
// order Hugging Face writes them. `w.layers` must already hold cfg.n_layer layers.
template <class W, class F>
void for_each_tensor(W& w, const Gpt2Config& c, F&& f) {
  const int64_t C = c.n_embd, F3 = 3 * int64_t(c.n_embd), Fi = c.n_inner;
  f(std::string("wte.weight"), w.wte, Shape{c.vocab_size, C}, Kind::Matrix);
  f(std::string("wpe.weight"), w.wpe, Shape{c.n_positions, C}, Kind::Matrix);
  for (int i = 0; i < c.n_layer; ++i) {
    auto& L = w.layers[size_t(i)];
    const std::string h = fmt::format("h.{}.", i);
    f(h + "ln_1.weight", L.ln_1_w, Shape{C}, Kind::Gain);
    f(h + "ln_1.bias", L.ln_1_b, Shape{C}, Kind::Bias);
    f(h + "attn.c_attn.weight", L.attn_w, Shape{C, F3}, Kind::Matrix);
    f(h + "attn.c_attn.bias", L.attn_b, Shape{F3}, Kind::Bias);
    f(h + "attn.c_proj.weight", L.attn_proj_w, Shape{C, C}, Kind::Matrix);
    f(h + "attn.c_proj.bias", L.attn_proj_b, Shape{C}, Kind::Bias);
    f(h + "ln_2.weight", L.ln_2_w, Shape{C}, Kind::Gain);
    f(h + "ln_2.bias", L.ln_2_b, Shape{C}, Kind::Bias);
    f(h + "mlp.c_fc.weight", L.fc_w, Shape{C, Fi}, Kind::Matrix);
    f(h + "mlp.c_fc.bias", L.fc_b, Shape{Fi}, Kind::Bias);
    f(h + "mlp.c_proj.weight", L.fc_proj_w, Shape{Fi, C}, Kind::Matrix);
    f(h + "mlp.c_proj.bias", L.fc_proj_b, Shape{C}, Kind::Bias);
  }
  f(std::string("ln_f.weight"), w.ln_f_w, Shape{C}, Kind::Gain);
  f(std::string("ln_f.bias"), w.ln_f_b, Shape{C}, Kind::Bias);
}

bool weight_dtype(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// h.{digits}.attn.bias and h.{digits}.attn.masked_bias: causal-mask buffers, not weights.
bool is_mask_buffer(const std::string& n) {
  if (n.rfind("h.", 0) != 0) return false;
  size_t i = 2;
  while (i < n.size() && n[i] >= '0' && n[i] <= '9') ++i;
  if (i == 2) return false;
  const std::string rest = n.substr(i);
  return rest == ".attn.bias" || rest == ".attn.masked_bias";
}

void store(Tensor& t, int64_t i, float v) {
  switch (t.dtype) {
    case DType::F32: t.ptr<float>()[i] = v; break;
    case DType::F16: t.ptr<uint16_t>()[i] = f32_to_f16(v); break;
    case DType::BF16: t.ptr<uint16_t>()[i] = f32_to_bf16(v); break;
    default: fail("random_gpt2_weights: unsupported dtype {}", dtype_name(t.dtype));
  }
}

Tensor random_tensor(const Shape& shape, DType dtype, Kind kind, Rng& rng) {
  Tensor t = Tensor::empty(shape, dtype);
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    const double z = rng.normal();
    const double v = kind == Kind::Gain ? 1.0 + 0.1 * z : 0.02 * z;
    store(t, i, float(v));
  }
  return t;
}

}  // namespace

Gpt2Weights load_gpt2_weights(const std::shared_ptr<SafeTensors>& file, const Gpt2Config& cfg) {
  const std::string& path = file->path();

  // Canonical name (prefix stripped) -> name as stored.
  std::map<std::string, std::string> by_canonical;
  for (const auto& [stored, t] : file->tensors()) {
    const bool prefixed = stored.rfind(kPrefix, 0) == 0;
    const std::string canon = prefixed ? stored.substr(std::strlen(kPrefix)) : stored;
    if (is_mask_buffer(canon)) continue;
    auto [it, inserted] = by_canonical.emplace(canon, stored);
    if (!inserted)
      fail("{}: tensor {} is present both as '{}' and as '{}{}'", path, canon, canon, kPrefix, canon);
  }
  std::set<std::string> used;

  auto lookup = [&](const std::string& canon) -> const std::pair<const std::string, Tensor>* {
    auto it = by_canonical.find(canon);
    if (it == by_canonical.end()) return nullptr;
    used.insert(canon);
    return &*file->tensors().find(it->second);
  };

  Gpt2Weights w;
  w.file = file;
  w.layers.resize(size_t(cfg.n_layer));

  const auto* wte = lookup("wte.weight");
  if (!wte) fail("{}: missing tensor wte.weight", path);
  w.dtype = wte->second.dtype;
  if (!weight_dtype(w.dtype))
    fail("{}: tensor {} has dtype {}; GPT-2 weights must be F32, F16 or BF16", file->path_of(wte->first), wte->first,
         safetensors_dtype_name(w.dtype));

  auto check = [&](const std::pair<const std::string, Tensor>& e, const Shape& shape) {
    const Tensor& t = e.second;
    const std::string& where = file->path_of(e.first);
    if (t.shape != shape)
      fail("{}: tensor {} has shape {}, expected {}", where, e.first, shape_str(t.shape), shape_str(shape));
    if (t.dtype != w.dtype)
      fail("{}: tensor {} has dtype {} but {} has {} (all weights must share one dtype)", where, e.first,
           safetensors_dtype_name(t.dtype), wte->first, safetensors_dtype_name(w.dtype));
  };

  for_each_tensor(w, cfg, [&](const std::string& name, Tensor& dst, const Shape& shape, Kind) {
    const auto* e = lookup(name);
    if (!e) fail("{}: missing tensor {}", path, name);
    check(*e, shape);
    dst = e->second;
  });

  const auto* lm = lookup(kLmHead);
  if (lm) check(*lm, Shape{cfg.vocab_size, cfg.n_embd});
  if (cfg.tie_word_embeddings || !lm) {
    if (!cfg.tie_word_embeddings)
      fail("{}: missing tensor {} (config.json sets tie_word_embeddings to false)", path, kLmHead);
    // Tied: the output projection is wte itself (a stored lm_head.weight is ignored, as
    // Hugging Face does when tie_word_embeddings is true).
    w.lm_head = w.wte;
    w.tied = true;
  } else {
    w.lm_head = lm->second;
    w.tied = false;
  }

  for (const auto& [canon, stored] : by_canonical)
    if (!used.count(canon)) {
      if (canon.rfind("h.", 0) == 0)
        fail("{}: unexpected tensor {} (config.json has n_layer {})", path, stored, cfg.n_layer);
      fail("{}: unexpected tensor {}", path, stored);
    }
  return w;
}

Gpt2Model Gpt2Model::load(const std::string& dir) {
  if (!path_exists(dir, "model directory")) fail("{}: no such model directory", dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("{}: not a directory", dir);
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  const std::string st_path = (fs::path(dir) / "model.safetensors").string();
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  Gpt2Model m;
  m.dir = dir;
  m.config = Gpt2Config::load(cfg_path);
  // One file, or (as Hugging Face does when both are there, the single file first) shards.
  std::shared_ptr<SafeTensors> file;
  if (path_exists(st_path, "model.safetensors")) {
    file = SafeTensors::open(st_path, "model.safetensors");
  } else if (path_exists(index_path, "model.safetensors.index.json")) {
    file = SafeTensors::open_sharded(index_path);
  } else {
    if (path_exists((fs::path(dir) / "pytorch_model.bin").string(), "pytorch_model.bin"))
      fail("{}: not found (only pytorch_model.bin is present; convert it to safetensors)", st_path);
    fail("{}: not found (nor model.safetensors.index.json for a sharded checkpoint)", st_path);
  }
  m.weights = load_gpt2_weights(file, m.config);
  return m;
}

Gpt2Weights random_gpt2_weights(const Gpt2Config& cfg, uint64_t seed, DType dtype) {
  cfg.validate("random_gpt2_weights");
  if (!weight_dtype(dtype))
    fail("random_gpt2_weights: dtype {} is not one of f32, f16, bf16", dtype_name(dtype));
  Rng rng(seed);
  Gpt2Weights w;
  w.dtype = dtype;
  w.layers.resize(size_t(cfg.n_layer));
  for_each_tensor(w, cfg, [&](const std::string&, Tensor& dst, const Shape& shape, Kind kind) {
    dst = random_tensor(shape, dtype, kind, rng);
  });
  w.tied = cfg.tie_word_embeddings;
  w.lm_head = w.tied ? w.wte : random_tensor(Shape{cfg.vocab_size, cfg.n_embd}, dtype, Kind::Matrix, rng);
  return w;
}

void save_gpt2_dir(const std::string& dir, const Gpt2Config& cfg, const Gpt2Weights& w, bool with_prefix,
                   bool write_lm_head) {
  const std::string where = fmt::format("save_gpt2_dir {}", dir);
  cfg.validate(where);
  if (!weight_dtype(w.dtype)) fail("{}: dtype {} is not one of F32, F16, BF16", where, safetensors_dtype_name(w.dtype));
  if (w.layers.size() != size_t(cfg.n_layer))
    fail("{}: weights have {} layers, config has n_layer {}", where, w.layers.size(), cfg.n_layer);

  const std::string prefix = with_prefix ? kPrefix : "";
  std::vector<std::pair<std::string, Tensor>> out;
  auto add = [&](const std::string& name, const Tensor& t, const Shape& shape) {
    if (!t.defined() && numel(shape) != 0) fail("{}: tensor {} is not set", where, name);
    if (t.shape != shape)
      fail("{}: tensor {} has shape {}, expected {}", where, name, shape_str(t.shape), shape_str(shape));
    if (t.dtype != w.dtype)
      fail("{}: tensor {} has dtype {}, expected {}", where, name, safetensors_dtype_name(t.dtype),
           safetensors_dtype_name(w.dtype));
    out.emplace_back(name, t);
  };
  for_each_tensor(w, cfg, [&](const std::string& name, const Tensor& t, const Shape& shape, Kind) {
    add(prefix + name, t, shape);
  });
  if (!w.tied || write_lm_head) add(kLmHead, w.tied ? w.wte : w.lm_head, Shape{cfg.vocab_size, cfg.n_embd});

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create directory: {}", dir, ec.message());

  nlohmann::json j = cfg.to_json();
  j["tie_word_embeddings"] = w.tied;
  j["torch_dtype"] = w.dtype == DType::F32 ? "float32" : w.dtype == DType::F16 ? "float16" : "bfloat16";
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  {
    std::ofstream f(cfg_path, std::ios::binary | std::ios::trunc);
    if (!f) fail("{}: cannot create: {}", cfg_path, std::strerror(errno));
    f << j.dump(2) << "\n";
    f.close();
    if (!f) fail("{}: cannot write", cfg_path);
  }
  write_safetensors((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
}

}  // namespace strand
