// strand/model/gpt2_weights.h — GPT-2 weights: loading a Hugging Face directory,
// random initialisation, and writing a directory back.
//
// Tensor names follow Hugging Face's GPT2LMHeadModel: wte.weight, wpe.weight,
// h.{i}.ln_1.weight/.bias, h.{i}.attn.c_attn.weight/.bias, h.{i}.attn.c_proj.weight/.bias,
// h.{i}.ln_2.weight/.bias, h.{i}.mlp.c_fc.weight/.bias, h.{i}.mlp.c_proj.weight/.bias,
// ln_f.weight/.bias, and optionally lm_head.weight; each may carry the prefix
// "transformer.". The attention mask buffers h.{i}.attn.bias / h.{i}.attn.masked_bias
// are ignored. Linear weights are in Conv1D layout, [in, out].
//
// Loaded weights are views into the memory-mapped model.safetensors (no copies, at any
// model size); `file` keeps the mapping alive.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/safetensors.h"
#include "model/gpt2_config.h"

namespace strand {

struct Gpt2Layer {
  Tensor ln_1_w, ln_1_b;            // [C]
  Tensor attn_w, attn_b;            // [C, 3C], [3C]   (Conv1D layout [in, out] as stored by HF)
  Tensor attn_proj_w, attn_proj_b;  // [C, C], [C]
  Tensor ln_2_w, ln_2_b;            // [C]
  Tensor fc_w, fc_b;                // [C, F], [F]   F = n_inner
  Tensor fc_proj_w, fc_proj_b;      // [F, C], [C]
};

struct Gpt2Weights {
  Tensor wte;  // [V, C]
  Tensor wpe;  // [P, C]
  std::vector<Gpt2Layer> layers;
  Tensor ln_f_w, ln_f_b;  // [C]
  Tensor lm_head;         // [V, C]; a view of wte when tied
  bool tied = true;
  DType dtype = DType::F32;  // the storage dtype of every tensor (F32, F16 or BF16)
  std::shared_ptr<SafeTensors> file;  // keeps the mapping alive (null for heap weights)
};

struct Gpt2Model {  // a loaded directory
  std::string dir;
  Gpt2Config config;
  Gpt2Weights weights;
  // dir/config.json + dir/model.safetensors; throws strand::Error naming the file and tensor.
  static Gpt2Model load(const std::string& dir);
};

// Takes the GPT-2 tensors described by `cfg` out of an opened safetensors file, checking
// names, shapes and dtypes. Errors name file->path() and the tensor.
Gpt2Weights load_gpt2_weights(const std::shared_ptr<SafeTensors>& file, const Gpt2Config& cfg);

// Random initialisation (normal(0, 0.02) matrices, small random LN gains around 1 and biases) from a seed, in the given dtype (owned heap tensors).
// lm_head is a separate random matrix iff !cfg.tie_word_embeddings.
Gpt2Weights random_gpt2_weights(const Gpt2Config& cfg, uint64_t seed, DType dtype);

// Writes config.json and model.safetensors in Hugging Face layout (names with the "transformer." prefix iff with_prefix; lm_head.weight written iff !tied or write_lm_head).
// As in Hugging Face checkpoints, lm_head.weight never takes the prefix; config.json
// records tie_word_embeddings = w.tied. Checks every shape against `cfg` first.
void save_gpt2_dir(const std::string& dir, const Gpt2Config& cfg, const Gpt2Weights& w, bool with_prefix = false,
                   bool write_lm_head = false);

}  // namespace strand
