// Fuzz target: config.json (Gpt2Config::load). A config that loads must survive a round trip
// through to_json() and from_json() unchanged.
#include <cstdint>

#include "fuzz_util.h"
#include "model/gpt2_config.h"

using namespace strand;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::fs::path path = fuzz::scratch_dir() / "config.json";
  fuzz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::handled([&] {
    const Gpt2Config c = Gpt2Config::load(path.string());
    Gpt2Config back;
    if (!fuzz::handled([&] { back = Gpt2Config::from_json(c.to_json(), "round trip"); }))
      fuzz::finding("a loaded config does not load back from its own to_json()");
    if (back.n_layer != c.n_layer || back.n_embd != c.n_embd || back.n_head != c.n_head ||
        back.n_positions != c.n_positions || back.vocab_size != c.vocab_size || back.n_inner != c.n_inner ||
        back.layer_norm_epsilon != c.layer_norm_epsilon || back.activation_function != c.activation_function ||
        back.eos_token_id != c.eos_token_id || back.tie_word_embeddings != c.tie_word_embeddings)
      fuzz::finding("to_json() -> from_json() changed the config");
  });
  return 0;
}
