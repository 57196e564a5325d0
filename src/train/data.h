// strand/train/data.h — training text: files to token streams, and random batches.
//
// load_corpus() reads every regular file under the given paths (directories recursively, in
// sorted path order), tokenizes each file as one document and joins the documents with
// <|endoftext|>. The last `val_split` fraction of the token stream is held out for
// validation. A file inside a directory that is not UTF-8 text (binary files, images) is
// skipped and named in Corpus::skipped; a file named directly that is not UTF-8 is an error.
//
// BatchSampler draws `seqs` windows of t + 1 tokens at uniformly random starts (ids are the
// first t, targets the last t), from a seeded generator whose state a checkpoint keeps.
// Validation windows are fixed: consecutive windows from the start of the held-out tokens.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "tokenizer/gpt2_tokenizer.h"

namespace strand {

struct Corpus {
  std::vector<int32_t> train, val;
  int64_t files = 0;   // documents read
  int64_t bytes = 0;   // their bytes
  std::vector<std::string> skipped;  // "path: reason" for files skipped inside directories
  uint64_t hash = 0;   // of every token, in order (a resumed run checks it has the same data)
};

Corpus load_corpus(const std::vector<std::string>& paths, const Gpt2Tokenizer& tok, double val_split);
// The same from documents already in memory (name, text), e.g. the demo's embedded corpus.
Corpus corpus_from_texts(const std::vector<std::pair<std::string, std::string>>& docs, const Gpt2Tokenizer& tok,
                         double val_split);

class BatchSampler {
 public:
  // `tokens` must outlive the sampler and hold at least t + 1 tokens.
  BatchSampler(const std::vector<int32_t>& tokens, int64_t seqs, int64_t t, uint64_t seed);
  // Fills ids and targets ([seqs * t] each).
  void next(std::vector<int32_t>& ids, std::vector<int32_t>& targets);
  Rng::State state() const { return rng_.state(); }
  void set_state(const Rng::State& s) { rng_.set_state(s); }

 private:
  const std::vector<int32_t>& tokens_;
  int64_t seqs_, t_;
  Rng rng_;
};

// Consecutive validation windows of t + 1 tokens from the start of `tokens`, in batches of
// exactly `seqs` windows, at most max_windows windows in all (a remainder short of a batch is
// left out). Empty when there are fewer than `seqs` windows.
struct EvalBatch {
  std::vector<int32_t> ids, targets;  // [seqs * t] each
};
std::vector<EvalBatch> eval_batches(const std::vector<int32_t>& tokens, int64_t seqs, int64_t t, int64_t max_windows);

}  // namespace strand
