// strand/model/gpt2_config.h — the hyperparameters of a GPT-2 family model.
//
// Read from (and written as) a Hugging Face style config.json. Loading validates every
// value strand depends on and rejects options that would change the computation in
// ways strand does not implement, so a model never runs with silently wrong settings.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace strand {

struct Gpt2Config {
  int n_layer = 0, n_embd = 0, n_head = 0, n_positions = 0, vocab_size = 0;
  int n_inner = 0;                 // 0 in the file (or null/absent) means 4 * n_embd; stored resolved
  double layer_norm_epsilon = 1e-5;
  std::string activation_function = "gelu_new";  // gelu_new | gelu_pytorch_tanh | gelu | relu | silu | quick_gelu
  int eos_token_id = -1;           // from config if present
  // Whether lm_head shares wte's matrix (config key tie_word_embeddings, default true).
  // When true, a lm_head.weight in the weights file is ignored, as Hugging Face does.
  bool tie_word_embeddings = true;

  // Reads and validates a config.json; throws strand::Error("<path>: <problem>").
  static Gpt2Config load(const std::string& config_json_path);
  // Validates an in-memory config the same way (`where` prefixes the messages).
  static Gpt2Config from_json(const nlohmann::json& j, const std::string& where);
  // Throws strand::Error("<where>: <problem>") if a field is out of range.
  void validate(const std::string& where) const;
  // Hugging Face style config.json content (model_type gpt2, architectures GPT2LMHeadModel, n_ctx = n_positions).
  nlohmann::json to_json() const;
  int head_dim() const { return n_embd / n_head; }
};

}  // namespace strand
