// tests/fuzz/seed_models.h — the small valid files the fuzz targets start from: a tiny GPT-2
// (config.json + model.safetensors) and a small byte-level tokenizer with four merges. Shared
// by the targets (the files that stay valid while another one is fuzzed) and by make_seeds.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "formats/safetensors.h"
#include "fuzz_util.h"
#include "model/gpt2_weights.h"
#include "tokenizer/gpt2_tokenizer.h"

namespace strand::fuzz {

struct TokenizerFiles {
  std::string vocab, merges, tokenizer_json;
};

// GPT-2's 256 byte tokens, <|endoftext|> (256) and four merges ("Ġ t", "h e", "Ġt he", "i n").
inline TokenizerFiles small_tokenizer_files() {
  const fs::path d = scratch_dir() / "byte-level";
  Gpt2Tokenizer::byte_level().write_files(d.string());
  nlohmann::ordered_json vocab = nlohmann::ordered_json::parse(read_file(d / "vocab.json"));
  const char* merged[] = {"\xC4\xA0t", "he", "\xC4\xA0the", "in"};
  int id = 257;
  for (const char* m : merged) vocab[m] = id++;
  TokenizerFiles f;
  f.vocab = vocab.dump();
  f.merges = "#version: 0.2\n\xC4\xA0 t\nh e\n\xC4\xA0t he\ni n\n";
  const nlohmann::ordered_json tj = {
      {"version", "1.0"},
      {"added_tokens", {{{"id", 256}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"\xC4\xA0 t", "h e", "\xC4\xA0t he", "i n"}}}}};
  f.tokenizer_json = tj.dump();
  return f;
}

// A random GPT-2 of 8 channels, 2 heads, vocabulary 16, context 8 and `layers` layers.
inline Gpt2Config tiny_config(int layers = 1, bool tied = true) {
  Gpt2Config c;
  c.n_layer = layers;
  c.n_embd = 8;
  c.n_head = 2;
  c.n_positions = 8;
  c.vocab_size = 16;
  c.n_inner = 32;
  c.tie_word_embeddings = tied;
  return c;
}

struct ModelFiles {
  std::string config, safetensors;
};

inline ModelFiles tiny_model_files(const Gpt2Config& c, DType dtype, uint64_t seed) {
  const fs::path d = scratch_dir() / "tiny-model";
  save_gpt2_dir(d.string(), c, random_gpt2_weights(c, seed, dtype));
  return {read_file(d / "config.json"), read_file(d / "model.safetensors")};
}

}  // namespace strand::fuzz
