// strand/train/demo.h — the model `strand demo` shows: a small GPT-2 trained on strand's own
// docs and sources (demo_corpus.h), byte-level, within a time budget, cached.
//
// The first run trains it (about 2–3 minutes on 2 cores) and saves it, a Hugging Face GPT-2
// directory with its loss curve, under the cache directory (next to strand devices' cache),
// keyed by the corpus, the settings and strand's version; later runs load it at once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "train/trainer.h"

namespace strand {

struct DemoOptions {
  int64_t steps = 3000;          // planned steps at most; fewer as the budget allows (fitted after 5 steps)
  double budget_seconds = 160;   // training time the run may take (the schedule is fitted to it)
  bool retrain = false;          // ignore a cached model
  uint64_t seed = 20261130;      // fixed: every machine trains the same run (as far as its budget goes)
  std::string cache_root;        // empty: the default cache location
  std::function<void(const StepLog&, int64_t planned)> on_step;  // progress (may be empty)
};

struct DemoModel {
  std::string dir;           // the model directory (config.json, model.safetensors, ..., loss.svg)
  bool from_cache = false;
  int64_t steps = 0;         // steps trained
  double train_seconds = 0;  // when trained now
  double final_loss = NAN, val_loss = NAN;
  int64_t parameters = 0, train_tokens = 0, val_tokens = 0, corpus_files = 0, corpus_bytes = 0;
  std::vector<int32_t> held_out;  // the validation tokens (for perplexity)
  double tokens_per_s = 0, gflops = 0;  // training speed when trained now
  std::string tiers;         // the chain it trained on
  std::vector<StepLog> history;
};

// The demo's model shape and run settings.
Gpt2Config demo_model_config();
TrainConfig demo_train_config(const DemoOptions& o);

DemoModel demo_model(const DemoOptions& o);

}  // namespace strand
