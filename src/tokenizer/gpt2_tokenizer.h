// strand/tokenizer/gpt2_tokenizer.h — GPT-2's byte-level BPE tokenizer.
//
// Text becomes token ids in three steps, exactly as GPT-2 does it:
//   1. split the text into pieces with GPT-2's pre-tokenizer pattern
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      (matched by hand against strand's own Unicode tables, see unicode_tables.h);
//   2. start each piece as one token per UTF-8 byte;
//   3. merge adjacent tokens by the ranked merge list until no listed pair is left.
// The literal text "<|endoftext|>" is the end-of-text token, as in Hugging Face's
// GPT2Tokenizer and tiktoken with the special token allowed. Decoding concatenates the
// tokens' bytes, so decode(encode(s)) == s for every valid UTF-8 string s.
//
// Files use GPT-2's published format: vocab.json maps token strings to ids, where a
// token's bytes are spelled with GPT-2's byte-to-character table (space is "Ġ", ...),
// and merges.txt lists one "left right" pair per line, best first.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace strand {

class Gpt2Tokenizer {
 public:
  // The text of the end-of-text token.
  static constexpr std::string_view kEndOfText = "<|endoftext|>";

  // vocab.json + merges.txt as published with GPT-2 (merges.txt may start with a
  // "#version" line).
  static Gpt2Tokenizer from_files(const std::string& vocab_json, const std::string& merges_txt);
  // A Hugging Face tokenizer.json whose model is BPE (model.vocab, and model.merges as
  // "a b" strings or [a, b] pairs); added_tokens are given their ids and taken verbatim.
  static Gpt2Tokenizer from_tokenizer_json(const std::string& path);
  // A model directory: tokenizer.json if present, else vocab.json + merges.txt.
  static Gpt2Tokenizer load_dir(const std::string& dir);
  // strand's embedded default: the 256 byte tokens with GPT-2's ids 0..255, no merges,
  // and <|endoftext|> = 256.
  static Gpt2Tokenizer byte_level();

  // Token ids for UTF-8 text; throws strand::Error("invalid UTF-8 at byte N") on bad input.
  std::vector<int32_t> encode(std::string_view utf8) const;
  // The bytes of the tokens, concatenated; throws on an id that names no token.
  std::string decode(std::span<const int32_t> ids) const;
  // The raw bytes of one token; throws on an id that names no token.
  std::string token_bytes(int32_t id) const;
  // The id of <|endoftext|>, or -1 if the vocab lacks it.
  int32_t eot_id() const { return eot_id_; }
  // Largest id + 1.
  int32_t vocab_size() const { return int32_t(tokens_.size()); }
  // Number of merge rules.
  int32_t merge_count() const { return int32_t(merge_list_.size()); }
  // Writes dir/vocab.json and dir/merges.txt (creating dir), loadable by from_files.
  void write_files(const std::string& dir) const;

  // One vocab entry as read from a file: its key (a byte-level string, or for a
  // verbatim entry the token's own text) and its id.
  struct VocabEntry {
    std::string key;
    int64_t id = 0;
    bool verbatim = false;  // true: the key is the token's text, not byte-level spelling
  };
  // One merge rule as read from a file; `where` locates it for error messages.
  struct MergeEntry {
    std::string left, right, where;
  };

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  struct WordCache;  // memo of piece -> ids, shared by copies (see gpt2_tokenizer.cpp)

  Gpt2Tokenizer();
  // Builds a tokenizer, checking the entries; `vocab_file` and `merges_file` name the
  // sources in error messages.
  static Gpt2Tokenizer build(const std::vector<VocabEntry>& vocab, const std::vector<MergeEntry>& merges,
                             const std::string& vocab_file, const std::string& merges_file);

  bool has_id(int32_t id) const { return id >= 0 && id < vocab_size() && present_[size_t(id)]; }
  const std::string& checked_token(int32_t id) const;
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void merge_piece(std::string_view piece, std::vector<int32_t>& out) const;
  const Merge* find_merge(int32_t left, int32_t right) const;

  std::vector<std::string> tokens_;  // id -> raw bytes
  std::vector<uint8_t> present_;     // id -> 1 if some token has this id
  std::array<int32_t, 256> byte_ids_{};  // byte -> id of its one-byte token
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> rule
  std::vector<std::pair<int32_t, int32_t>> merge_list_;  // by rank, for write_files
  int32_t eot_id_ = -1;
  std::shared_ptr<WordCache> cache_;
};

}  // namespace strand
