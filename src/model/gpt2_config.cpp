#include "model/gpt2_config.h"

#include <cmath>
#include <optional>

#include "core/error.h"
#include "core/file_io.h"

namespace strand {

namespace {

using json = nlohmann::json;

constexpr const char* kActivations[] = {"gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu", "quick_gelu"};

// Upper bounds well beyond any real GPT-2 family model, low enough that the sizes
// derived from them (4 * n_embd, vocab_size * n_embd elements) cannot overflow.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxEmbd = 1 << 16;
constexpr int64_t kMaxHeads = 1 << 12;
constexpr int64_t kMaxPositions = 1 << 20;
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxInner = 1 << 20;

std::string show(const json& v) {
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// An integer in [lo, hi], or nullopt when the key is absent (or null and null_ok).
std::optional<int> get_int(const json& j, const char* key, const std::string& where, int64_t lo, int64_t hi,
                           bool null_ok = false) {
  if (!j.contains(key)) return std::nullopt;
  const json& v = j[key];
  if (v.is_null() && null_ok) return std::nullopt;
  if (!v.is_number_integer())
    fail("{}: {} must be {} integer, found {}", where, key, lo > 0 ? "a positive" : "an", show(v));
  const bool in_range = v.is_number_unsigned()
                            ? v.get<uint64_t>() <= uint64_t(hi) && int64_t(v.get<uint64_t>()) >= lo
                            : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
  if (!in_range) fail("{}: {} = {} is out of range [{}, {}]", where, key, show(v), lo, hi);
  return int(v.get<int64_t>());
}

int require_int(const json& j, const char* key, const std::string& where, int64_t hi) {
  auto v = get_int(j, key, where, 1, hi);
  if (!v) fail("{}: missing key {}", where, key);
  return *v;
}

std::optional<bool> get_bool(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_boolean()) fail("{}: {} must be true or false, found {}", where, key, show(j[key]));
  return j[key].get<bool>();
}

}  // namespace

Gpt2Config Gpt2Config::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: config is not a JSON object", where);
  if (j.contains("model_type")) {
    const json& mt = j["model_type"];
    if (!mt.is_string() || mt.get<std::string>() != "gpt2")
      fail("{}: model_type is {}, strand loads only gpt2", where, show(mt));
  }

  Gpt2Config c;
  c.n_layer = require_int(j, "n_layer", where, kMaxLayers);
  c.n_embd = require_int(j, "n_embd", where, kMaxEmbd);
  c.n_head = require_int(j, "n_head", where, kMaxHeads);
  // n_ctx is the older name for the context length; n_positions wins when both are given.
  if (j.contains("n_positions"))
    c.n_positions = require_int(j, "n_positions", where, kMaxPositions);
  else if (j.contains("n_ctx"))
    c.n_positions = require_int(j, "n_ctx", where, kMaxPositions);
  else
    fail("{}: missing key n_positions", where);
  c.vocab_size = require_int(j, "vocab_size", where, kMaxVocab);

  const auto inner = get_int(j, "n_inner", where, 0, kMaxInner, /*null_ok=*/true);
  c.n_inner = inner && *inner > 0 ? *inner : 4 * c.n_embd;

  if (j.contains("layer_norm_epsilon") && !j["layer_norm_epsilon"].is_null()) {
    const json& e = j["layer_norm_epsilon"];
    if (!e.is_number()) fail("{}: layer_norm_epsilon must be a number, found {}", where, show(e));
    c.layer_norm_epsilon = e.get<double>();
  }
  if (j.contains("activation_function") && !j["activation_function"].is_null()) {
    const json& a = j["activation_function"];
    if (!a.is_string()) fail("{}: activation_function must be a string, found {}", where, show(a));
    c.activation_function = a.get<std::string>();
  }
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const json& e = j["eos_token_id"];
    // Some configs list several end tokens; the first is the one a generator stops on.
    const json& first = e.is_array() && !e.empty() ? e[0] : e;
    if (!first.is_number_integer() || first.get<int64_t>() < 0 || first.get<int64_t>() >= c.vocab_size)
      fail("{}: eos_token_id must be a token id below vocab_size {}, found {}", where, c.vocab_size, show(e));
    c.eos_token_id = int(first.get<int64_t>());
  }
  if (auto t = get_bool(j, "tie_word_embeddings", where)) c.tie_word_embeddings = *t;

  // Options that change the computation in ways strand does not implement.
  if (auto v = get_bool(j, "scale_attn_weights", where); v && !*v)
    fail("{}: scale_attn_weights = false is not supported", where);
  if (auto v = get_bool(j, "scale_attn_by_inverse_layer_idx", where); v && *v)
    fail("{}: scale_attn_by_inverse_layer_idx = true is not supported", where);
  if (auto v = get_bool(j, "add_cross_attention", where); v && *v)
    fail("{}: add_cross_attention = true is not supported", where);

  c.validate(where);
  return c;
}

void Gpt2Config::validate(const std::string& where) const {
  auto range = [&](const char* key, int v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) fail("{}: {} = {} is out of range [{}, {}]", where, key, v, lo, hi);
  };
  range("n_layer", n_layer, 1, kMaxLayers);
  range("n_embd", n_embd, 1, kMaxEmbd);
  range("n_head", n_head, 1, kMaxHeads);
  range("n_positions", n_positions, 1, kMaxPositions);
  range("vocab_size", vocab_size, 1, kMaxVocab);
  if (n_inner == 0)
    fail("{}: n_inner is 0; a Gpt2Config holds it resolved (4 * n_embd = {} is the usual value)", where,
         4 * int64_t(n_embd));
  range("n_inner", n_inner, 1, kMaxInner);
  if (n_embd % n_head != 0) fail("{}: n_embd {} is not divisible by n_head {}", where, n_embd, n_head);
  if (!(layer_norm_epsilon > 0) || !std::isfinite(layer_norm_epsilon))
    fail("{}: layer_norm_epsilon must be positive and finite, found {}", where, layer_norm_epsilon);
  bool known = false;
  for (const char* a : kActivations) known = known || activation_function == a;
  if (!known)
    fail("{}: unknown activation_function '{}' (strand knows gelu_new, gelu_pytorch_tanh, gelu, relu, silu, "
         "quick_gelu)",
         where, activation_function);
  if (eos_token_id < -1 || eos_token_id >= vocab_size)
    fail("{}: eos_token_id {} is outside the vocabulary of {}", where, eos_token_id, vocab_size);
}

Gpt2Config Gpt2Config::load(const std::string& path) {
  const std::string text = read_regular_file(path, "config.json", kMaxJsonConfigBytes);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (auto p = what.find("] "); what.rfind("[json.exception", 0) == 0 && p != std::string::npos)
      what = what.substr(p + 2);
    if (what.size() > 300) what = what.substr(0, 297) + "...";  // the offending token can be huge
    fail("{}: not valid JSON: {}", path, what);
  }
  return from_json(j, path);
}

json Gpt2Config::to_json() const {
  json j = json::object();
  j["activation_function"] = activation_function;
  j["architectures"] = json::array({"GPT2LMHeadModel"});
  j["layer_norm_epsilon"] = layer_norm_epsilon;
  j["model_type"] = "gpt2";
  j["n_ctx"] = n_positions;
  j["n_embd"] = n_embd;
  j["n_head"] = n_head;
  j["n_inner"] = n_inner;
  j["n_layer"] = n_layer;
  j["n_positions"] = n_positions;
  j["vocab_size"] = vocab_size;
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  return j;
}

}  // namespace strand
