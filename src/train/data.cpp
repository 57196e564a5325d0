#include "train/data.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/file_io.h"

namespace strand {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kMaxCorpusBytes = uint64_t(4) << 30;  // all files together

// FNV-1a over the token ids.
uint64_t hash_tokens(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  uint64_t h = 1469598103934665603ull;
  for (const auto* v : {&a, &b})
    for (int32_t t : *v) {
      for (int i = 0; i < 4; ++i) {
        h ^= uint64_t((uint32_t(t) >> (8 * i)) & 0xff);
        h *= 1099511628211ull;
      }
    }
  return h;
}

Corpus split(std::vector<int32_t> all, double val_split, int64_t files, int64_t bytes, std::vector<std::string> skipped) {
  if (!(val_split >= 0 && val_split < 1)) fail("--val-split {}: must be in [0, 1)", val_split);
  Corpus c;
  const size_t nval = size_t(double(all.size()) * val_split);
  c.val.assign(all.end() - std::ptrdiff_t(nval), all.end());
  all.resize(all.size() - nval);
  c.train = std::move(all);
  c.files = files;
  c.bytes = bytes;
  c.skipped = std::move(skipped);
  c.hash = hash_tokens(c.train, c.val);
  return c;
}

void append_doc(std::vector<int32_t>& all, const Gpt2Tokenizer& tok, const std::vector<int32_t>& ids) {
  if (!all.empty()) {
    if (tok.eot_id() < 0) fail("the tokenizer has no <|endoftext|> to separate documents with");
    all.push_back(tok.eot_id());
  }
  all.insert(all.end(), ids.begin(), ids.end());
}

}  // namespace

Corpus load_corpus(const std::vector<std::string>& paths, const Gpt2Tokenizer& tok, double val_split) {
  if (paths.empty()) fail("--data: give at least one text file or folder");
  // Every file, with whether it was named directly (an error if unreadable) or found in a folder.
  std::vector<std::pair<std::string, bool>> files;
  for (const std::string& p : paths) {
    std::error_code ec;
    const fs::file_status st = fs::status(p, ec);
    if (ec || !fs::exists(st)) fail("--data {}: no such file or folder", p);
    if (fs::is_directory(st)) {
      std::vector<std::string> found;
      for (fs::recursive_directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end;
           !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (it->is_directory() && !name.empty() && name[0] == '.') {  // .git and friends
          it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) found.push_back(it->path().string());
      }
      if (ec) fail("--data {}: cannot list the folder: {}", p, ec.message());
      std::sort(found.begin(), found.end());
      for (auto& f : found) files.push_back({f, false});
    } else {
      files.push_back({p, true});
    }
  }
  std::vector<int32_t> all;
  std::vector<std::string> skipped;
  int64_t nfiles = 0, bytes = 0;
  for (const auto& [path, direct] : files) {
    std::string text;
    try {
      text = read_regular_file(path, "--data", kMaxTextBytes);
    } catch (const Error& e) {
      if (direct) throw;
      skipped.push_back(e.what());
      continue;
    }
    if (uint64_t(bytes) + text.size() > kMaxCorpusBytes) fail("--data: more than {} of text in all", human_bytes(kMaxCorpusBytes));
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(text);
    } catch (const Error& e) {
      if (direct) fail("--data {}: {}", path, e.what());
      skipped.push_back(path + ": not UTF-8 text (" + e.what() + ")");
      continue;
    }
    if (ids.empty()) continue;
    append_doc(all, tok, ids);
    ++nfiles;
    bytes += int64_t(text.size());
  }
  if (all.empty()) fail("--data: no text found in {}", paths.size() == 1 ? paths[0] : "the paths given");
  return split(std::move(all), val_split, nfiles, bytes, std::move(skipped));
}

Corpus corpus_from_texts(const std::vector<std::pair<std::string, std::string>>& docs, const Gpt2Tokenizer& tok,
                         double val_split) {
  std::vector<int32_t> all;
  int64_t bytes = 0;
  for (const auto& [name, text] : docs) {
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(text);
    } catch (const Error& e) {
      fail("{}: {}", name, e.what());
    }
    if (ids.empty()) continue;
    append_doc(all, tok, ids);
    bytes += int64_t(text.size());
  }
  if (all.empty()) fail("the corpus is empty");
  return split(std::move(all), val_split, int64_t(docs.size()), bytes, {});
}

BatchSampler::BatchSampler(const std::vector<int32_t>& tokens, int64_t seqs, int64_t t, uint64_t seed)
    : tokens_(tokens), seqs_(seqs), t_(t), rng_(seed) {
  if (int64_t(tokens.size()) < t + 1)
    fail("the training text has {} tokens, fewer than one window of --ctx {} + 1", tokens.size(), t);
}

void BatchSampler::next(std::vector<int32_t>& ids, std::vector<int32_t>& targets) {
  ids.resize(size_t(seqs_ * t_));
  targets.resize(size_t(seqs_ * t_));
  const uint64_t starts = uint64_t(int64_t(tokens_.size()) - t_);  // windows of t + 1 tokens
  for (int64_t s = 0; s < seqs_; ++s) {
    const size_t at = size_t(rng_.below(starts));
    std::copy_n(tokens_.begin() + std::ptrdiff_t(at), t_, ids.begin() + s * t_);
    std::copy_n(tokens_.begin() + std::ptrdiff_t(at + 1), t_, targets.begin() + s * t_);
  }
}

std::vector<EvalBatch> eval_batches(const std::vector<int32_t>& tokens, int64_t seqs, int64_t t, int64_t max_windows) {
  std::vector<EvalBatch> out;
  const int64_t windows = std::min<int64_t>(max_windows, (int64_t(tokens.size()) - 1) / t);
  for (int64_t w = 0; w + seqs <= windows; w += seqs) {
    EvalBatch b;
    for (int64_t s = 0; s < seqs; ++s) {
      const int64_t at = (w + s) * t;
      b.ids.insert(b.ids.end(), tokens.begin() + at, tokens.begin() + at + t);
      b.targets.insert(b.targets.end(), tokens.begin() + at + 1, tokens.begin() + at + t + 1);
    }
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace strand
