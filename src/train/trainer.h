// strand/train/trainer.h — a training run: data, model, optimizer, schedule, checkpoints.
//
// One step: a batch from BatchSampler, the train graph (step.h) on the tier chain for the loss
// and every gradient, the global gradient norm clipped to `clip`, an AdamW step at the
// schedule's learning rate. Every eval_every steps (and at the end) the validation loss over
// fixed held-out windows.
//
// A checkpoint directory is a Hugging Face GPT-2 directory — config.json, model.safetensors
// (F32), vocab.json + merges.txt — that generate, perplexity, export and transformers load
// unchanged, plus what a run needs to go on: optimizer.safetensors (AdamW's moments, "m.NAME" and
// "v.NAME") and trainer_state.json (the step, the configuration, the data's paths and hash,
// the sampler's generator state, the thread count, the loss history). Resuming on the same
// tier and thread count continues bit for bit as if the run had not stopped.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "model/gpt2.h"
#include "tokenizer/gpt2_tokenizer.h"
#include "train/adamw.h"
#include "train/data.h"
#include "train/step.h"

namespace strand {

struct TrainConfig {
  int64_t steps = 1000, batch = 8, ctx = 256;
  double lr = 6e-4, min_lr = 6e-5;
  int64_t warmup = 100;
  double weight_decay = 0.1, clip = 1.0;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  uint64_t seed = 0;
  int64_t eval_every = 100;   // 0: evaluate only at the end
  int64_t eval_windows = 64;  // validation windows of ctx + 1 tokens (at most)
  double val_split = 0.05;
  std::string tokenizer = "bytes";  // bytes | gpt2
  std::vector<std::string> data;    // the --data paths (absolute)
  std::string init;                 // --init DIR, or empty (fresh weights)
  std::string backend = "auto";
  bool strict = false;

  nlohmann::json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j, const std::string& where);
  void validate() const;  // throws strand::Error naming the option
};

struct StepLog {
  int64_t step = 0;  // 1-based: the step just taken
  double loss = 0, lr = 0, grad_norm = 0;
  double seconds = 0;       // the step: forward, backward, optimizer (what tokens/s counts)
  double val_loss = NAN;    // when evaluated after this step
  double eval_seconds = 0;  // the evaluation after it, if any
};

class Trainer {
 public:
  // `weights` f32 and owned (they are updated in place). `threads` is recorded: a run resumes
  // bit for bit only on the same count.
  Trainer(Gpt2Config mcfg, Gpt2Weights weights, Gpt2Tokenizer tok, Corpus corpus, TrainConfig cfg, int threads);

  StepLog step();     // one optimizer step, and the validation loss when due
  double evaluate();  // NaN when there is no validation data
  bool done() const { return step_ >= cfg_.steps; }
  // Changes the planned total (the cosine schedule stretches or shrinks from the current step on).
  void set_total_steps(int64_t steps);

  void save(const std::string& dir) const;
  // The run saved in `dir`, its data read again (the data's hash must match). `steps` > 0
  // changes the planned total (which changes the schedule from here on).
  static std::unique_ptr<Trainer> resume(const std::string& dir, int threads, int64_t steps = 0);

  int64_t steps_done() const { return step_; }
  const TrainConfig& config() const { return cfg_; }
  // The model; its weights are current on the host (when the optimizer runs on a device,
  // they are fetched from it first).
  const Gpt2Model& model() const {
    opt_->sync_to_host();
    return model_;
  }
  const Gpt2Config& model_config() const { return model_.config; }
  // Where the optimizer keeps the weights and moments: a tier that trains in place (the whole
  // step runs there), or null for the host.
  const std::shared_ptr<Backend>& optimizer_device() const { return opt_->device(); }
  const Gpt2Tokenizer& tokenizer() const { return tok_; }
  const Corpus& corpus() const { return corpus_; }
  const std::vector<StepLog>& history() const { return history_; }
  const StepRunner& runner() const { return *runner_; }
  int threads() const { return threads_; }
  int64_t tokens_per_step() const { return cfg_.batch * cfg_.ctx; }
  double flops_per_step() const { return runner_->graph().flops; }

 private:
  static std::unique_ptr<Trainer> resume_from(const std::string& dir, const std::string& path,
                                              const nlohmann::json& state, int threads, int64_t steps);

  Gpt2Model model_;
  Gpt2Tokenizer tok_;
  Corpus corpus_;
  TrainConfig cfg_;
  int threads_ = 1;
  std::vector<std::shared_ptr<Backend>> chain_;
  std::unique_ptr<StepRunner> runner_, eval_;
  std::vector<EvalBatch> eval_batches_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<BatchSampler> sampler_;
  std::vector<StepLog> history_;
  std::vector<int32_t> ids_, targets_;
  int64_t step_ = 0;
};

// Loads --init DIR (any GPT-2 directory) as trainable weights: f32, owned, row-major.
Gpt2Model load_trainable(const std::string& dir);

}  // namespace strand
