// strand/tokenizer/gpt2_tokenizer.cpp — GPT-2's byte-level BPE: loading, encoding,
// decoding and writing. See gpt2_tokenizer.h for the overall scheme.
#include "tokenizer/gpt2_tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "tokenizer/unicode_tables.h"

namespace strand {

namespace fs = std::filesystem;
using unicode::CharClass;

// Ids at or above this are refused when loading, so that a corrupt file cannot make
// us allocate without bound. Real vocabularies are far smaller.
constexpr int64_t kMaxTokenId = int64_t(1) << 22;
// Pieces longer than this are not memoised (they are rare, and would bloat the cache).
constexpr size_t kMaxCachedPiece = 256;
// The cache is emptied when it grows past this many pieces.
constexpr size_t kMaxCachedWords = 1 << 18;

namespace {

// ---------------------------------------------------------------------------------
// GPT-2's byte <-> character table.
//
// vocab.json cannot hold raw bytes, so GPT-2 spells every byte as one printable
// character: bytes that are already printable in Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ')
// stand for themselves, and the other 68 bytes, in increasing order, take U+0100,
// U+0101, ... (so space 0x20 is 'Ġ' U+0120 and newline 0x0A is 'Ċ' U+010A).
// GPT-2's ids 0..255 are the printable bytes in order, then the other 68 in order.
// ---------------------------------------------------------------------------------
struct ByteAlphabet {
  std::array<char32_t, 256> char_of_byte{};
  std::array<int16_t, 0x200> byte_of_char{};  // -1 where the character stands for no byte
  std::array<uint8_t, 256> byte_of_id{};       // GPT-2's id order for the byte tokens
};

bool printable_byte(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet = [] {
    ByteAlphabet a;
    a.byte_of_char.fill(-1);
    int next_id = 0;
    for (int b = 0; b < 256; ++b) {
      if (printable_byte(b)) {
        a.char_of_byte[size_t(b)] = char32_t(b);
        a.byte_of_id[size_t(next_id++)] = uint8_t(b);
      }
    }
    char32_t next_char = 0x100;
    for (int b = 0; b < 256; ++b) {
      if (!printable_byte(b)) {
        a.char_of_byte[size_t(b)] = next_char++;
        a.byte_of_id[size_t(next_id++)] = uint8_t(b);
      }
    }
    for (int b = 0; b < 256; ++b) a.byte_of_char[a.char_of_byte[size_t(b)]] = int16_t(b);
    return a;
  }();
  return alphabet;
}

// ---------------------------------------------------------------------------------
// UTF-8.
// ---------------------------------------------------------------------------------

// Throws unless `s` is well-formed UTF-8: no stray continuation bytes, no overlong
// forms, no surrogates (U+D800..U+DFFF), nothing past U+10FFFF, no cut-off sequence.
void check_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = uint8_t(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    // The lead byte gives the length, the first payload bits, and the smallest code
    // point that needs this length (a smaller one would be an overlong form).
    size_t len = 0;
    char32_t cp = 0, min = 0;
    if ((b & 0xE0) == 0xC0) {
      len = 2;
      cp = b & 0x1F;
      min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3;
      cp = b & 0x0F;
      min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4;
      cp = b & 0x07;
      min = 0x10000;
    } else {
      fail("invalid UTF-8 at byte {}", i);  // a continuation byte, or 0xF8..0xFF
    }
    if (s.size() - i < len) fail("invalid UTF-8 at byte {}", i);
    for (size_t k = 1; k < len; ++k) {
      const auto c = uint8_t(s[i + k]);
      if ((c & 0xC0) != 0x80) fail("invalid UTF-8 at byte {}", i);
      cp = (cp << 6) | (c & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) fail("invalid UTF-8 at byte {}", i);
    i += len;
  }
}

struct CodePoint {
  char32_t cp;
  size_t len;  // bytes
};

// The code point starting at s[i]; `s` must already have passed check_utf8.
CodePoint decode_at(std::string_view s, size_t i) {
  const auto b = uint8_t(s[i]);
  if (b < 0x80) return {b, 1};
  const size_t len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
  char32_t cp = b & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
  return {cp, len};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// The vocab.json spelling of raw token bytes.
std::string bytes_to_key(std::string_view bytes) {
  std::string key;
  key.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(key, byte_alphabet().char_of_byte[uint8_t(c)]);
  return key;
}

// The raw bytes a vocab.json key spells. A key with a character outside GPT-2's byte
// alphabet is not a byte spelling at all (an added special token, say): its bytes are
// its own UTF-8 text.
std::string key_to_bytes(const std::string& key) {
  std::string bytes;
  size_t i = 0;
  while (i < key.size()) {
    const CodePoint c = decode_at(key, i);
    const int b = c.cp < byte_alphabet().byte_of_char.size() ? byte_alphabet().byte_of_char[c.cp] : -1;
    if (b < 0) return key;
    bytes += char(b);
    i += c.len;
  }
  return bytes;
}

// ---------------------------------------------------------------------------------
// The pre-tokenizer: GPT-2's pattern, matched by hand.
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// The text is cut into consecutive pieces; at each position the first alternative
// that matches decides the piece. Only an ASCII space can be the optional leading
// " ". Contractions are case-sensitive, as in GPT-2: "'S" is not one.
// ---------------------------------------------------------------------------------

CharClass class_at(std::string_view s, size_t i) { return unicode::char_class(decode_at(s, i).cp); }

// Length of a contraction ('s 't 're 've 'm 'll 'd) starting at s[i] == '\'', or 0.
size_t contraction_length(std::string_view s, size_t i) {
  const std::string_view rest = s.substr(i + 1);
  if (rest.empty()) return 0;
  if (rest[0] == 's' || rest[0] == 't' || rest[0] == 'm' || rest[0] == 'd') return 2;
  if (rest.starts_with("re") || rest.starts_with("ve") || rest.starts_with("ll")) return 3;
  return 0;
}

// End of the run of characters of class `cls` that starts at s[i].
size_t class_run_end(std::string_view s, size_t i, CharClass cls) {
  while (i < s.size()) {
    const CodePoint c = decode_at(s, i);
    if (unicode::char_class(c.cp) != cls) break;
    i += c.len;
  }
  return i;
}

// End of the white-space piece starting at s[i]. `\s+(?!\S)` takes the whole run when
// it reaches the end of the text, and otherwise all but its last character (which then
// leads the next piece, e.g. " word"); a run of one before non-space falls to `\s+`.
size_t space_piece_end(std::string_view s, size_t i) {
  size_t end = i, last = i, count = 0;
  while (end < s.size()) {
    const CodePoint c = decode_at(s, end);
    if (unicode::char_class(c.cp) != CharClass::Space) break;
    last = end;
    end += c.len;
    ++count;
  }
  return (end == s.size() || count == 1) ? end : last;
}

// End of the piece that starts at s[i] (i < s.size()).
size_t piece_end(std::string_view s, size_t i) {
  if (s[i] == '\'') {
    if (const size_t len = contraction_length(s, i)) return i + len;
  }
  // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of
  // letters, of numbers, or of anything else that is not white space.
  const size_t body = (s[i] == ' ' && i + 1 < s.size()) ? i + 1 : i;
  const CharClass cls = class_at(s, body);
  if (cls != CharClass::Space) return class_run_end(s, body, cls);
  return space_piece_end(s, i);
}

// ---------------------------------------------------------------------------------
// Files.
// ---------------------------------------------------------------------------------

// A tokenizer file: a regular file within the size cap (file_io.h); `what` is its role.
std::string read_text(const std::string& path, const std::string& what) {
  return read_regular_file(path, what, kMaxTokenizerBytes);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("{}: cannot open for writing ({})", path, std::strerror(errno));
  out << text;
  out.flush();
  if (!out) fail("{}: write error", path);
}

// A short, one-line, quoted rendering of a token or line for error messages.
std::string shown(std::string_view s) {
  constexpr size_t kMaxShown = 60;
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    const auto c = uint8_t(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += char(c);
    }
  }
  if (s.size() > kMaxShown) out += "...";
  return out + "\"";
}

nlohmann::json parse_json(const std::string& text, const std::string& path) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    const size_t at = std::min(text.size(), e.byte > 0 ? size_t(e.byte - 1) : size_t(0));
    const auto line = 1 + std::count(text.begin(), text.begin() + std::ptrdiff_t(at), '\n');
    fail("{}: not valid JSON (line {})", path, line);
  } catch (const nlohmann::json::exception& e) {
    // A number that does not fit a double (1e400) is out_of_range.406, not a parse error.
    std::string what = e.what();
    if (auto p = what.find("] "); what.rfind("[json.exception", 0) == 0 && p != std::string::npos)
      what = what.substr(p + 2);
    if (what.size() > 200) what = what.substr(0, 197) + "...";
    fail("{}: not valid JSON: {}", path, what);
  }
}

// The token -> id entries of a JSON object; `what` names the object in messages.
std::vector<Gpt2Tokenizer::VocabEntry> vocab_entries(const nlohmann::json& obj, const std::string& path,
                                                     std::string_view what) {
  if (!obj.is_object()) fail("{}: {} is not a JSON object of token -> id", path, what);
  std::vector<Gpt2Tokenizer::VocabEntry> entries;
  entries.reserve(obj.size());
  for (const auto& [key, value] : obj.items()) {
    if (!value.is_number_integer()) fail("{}: the id of token {} is not an integer", path, shown(key));
    entries.push_back({key, value.get<int64_t>(), false});
  }
  return entries;
}

// Splits a merge written as "left right"; `where` locates it for error messages.
Gpt2Tokenizer::MergeEntry split_merge(std::string_view line, const std::string& path, const std::string& where) {
  const size_t space = line.find(' ');
  if (space == std::string_view::npos || space == 0 || space + 1 == line.size() ||
      line.find(' ', space + 1) != std::string_view::npos) {
    fail("{}: {} is not two symbols separated by one space: {}", path, where, shown(line));
  }
  return {std::string(line.substr(0, space)), std::string(line.substr(space + 1)), where};
}

// merges.txt: one "left right" per line, best first; an optional "#version" first line;
// blank lines are skipped.
std::vector<Gpt2Tokenizer::MergeEntry> parse_merges_txt(const std::string& text, const std::string& path) {
  std::vector<Gpt2Tokenizer::MergeEntry> merges;
  size_t start = 0;
  for (size_t line_no = 1; start < text.size(); ++line_no) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    merges.push_back(split_merge(line, path, fmt::format("line {}", line_no)));
  }
  return merges;
}

// tokenizer.json's model.merges: "left right" strings or [left, right] pairs.
std::vector<Gpt2Tokenizer::MergeEntry> json_merges(const nlohmann::json& list, const std::string& path) {
  if (!list.is_array()) fail("{}: model.merges is not a list", path);
  std::vector<Gpt2Tokenizer::MergeEntry> merges;
  merges.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& m = list[i];
    const std::string where = fmt::format("merge {}", i);
    if (m.is_string()) {
      merges.push_back(split_merge(m.get_ref<const std::string&>(), path, where));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string() &&
               !m[0].get_ref<const std::string&>().empty() && !m[1].get_ref<const std::string&>().empty()) {
      merges.push_back({m[0].get<std::string>(), m[1].get<std::string>(), where});
    } else {
      fail("{}: {} is not two symbols", path, where);
    }
  }
  return merges;
}

// Folds tokenizer.json's added_tokens into the vocab. An added token that the vocab
// already has (under the same id) is left alone; a new one is taken verbatim: its
// content is the token's text, not a byte spelling.
void add_added_tokens(const nlohmann::json& root, const std::string& path,
                      std::vector<Gpt2Tokenizer::VocabEntry>& vocab) {
  const auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return;
  if (!it->is_array()) fail("{}: added_tokens is not a list", path);
  std::unordered_map<std::string, int64_t> id_of_key;
  for (const auto& e : vocab) id_of_key.emplace(e.key, e.id);
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& t = (*it)[i];
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
        !t["content"].is_string()) {
      fail("{}: added token {} needs an integer \"id\" and a string \"content\"", path, i);
    }
    const auto content = t["content"].get<std::string>();
    const auto id = t["id"].get<int64_t>();
    auto known = id_of_key.find(content);
    if (known == id_of_key.end()) known = id_of_key.find(bytes_to_key(content));
    if (known == id_of_key.end()) {
      vocab.push_back({content, id, true});
      id_of_key.emplace(content, id);
    } else if (known->second != id) {
      fail("{}: added token {} has id {} but the vocab gives it id {}", path, shown(content), id, known->second);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------
// Construction.
// ---------------------------------------------------------------------------------

// Encoding the same word over and over is the common case (a text repeats its words),
// so each piece's ids are memoised. Copies of a tokenizer share one cache, which is
// sound because a tokenizer never changes after it is built; the mutex makes encode()
// safe to call from several threads.
struct Gpt2Tokenizer::WordCache {
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> words;
};

Gpt2Tokenizer::Gpt2Tokenizer() : cache_(std::make_shared<WordCache>()) {}

Gpt2Tokenizer Gpt2Tokenizer::build(const std::vector<VocabEntry>& vocab, const std::vector<MergeEntry>& merges,
                                   const std::string& vocab_file, const std::string& merges_file) {
  Gpt2Tokenizer t;
  int64_t max_id = -1;
  for (const auto& e : vocab) {
    if (e.id < 0 || e.id >= kMaxTokenId) {
      fail("{}: id {} of token {} is out of range [0, {})", vocab_file, e.id, shown(e.key), kMaxTokenId);
    }
    max_id = std::max(max_id, e.id);
  }
  t.tokens_.resize(size_t(max_id + 1));
  t.present_.resize(size_t(max_id + 1), 0);

  std::vector<const std::string*> key_of_id(size_t(max_id + 1), nullptr);
  std::unordered_map<std::string, int32_t> id_of_key;    // byte spellings, for the merges
  std::unordered_map<std::string, int32_t> id_of_bytes;  // raw bytes
  for (const auto& e : vocab) {
    const auto id = int32_t(e.id);
    if (key_of_id[size_t(id)]) {
      fail("{}: id {} is given to both {} and {}", vocab_file, id, shown(*key_of_id[size_t(id)]), shown(e.key));
    }
    key_of_id[size_t(id)] = &e.key;
    std::string bytes = e.verbatim ? e.key : key_to_bytes(e.key);
    if (bytes.empty()) fail("{}: token {} is empty", vocab_file, id);
    if (const auto [it, fresh] = id_of_bytes.emplace(bytes, id); !fresh) {
      fail("{}: tokens {} and {} stand for the same bytes", vocab_file, shown(*key_of_id[size_t(it->second)]),
           shown(e.key));
    }
    if (!e.verbatim) id_of_key.emplace(e.key, id);
    t.tokens_[size_t(id)] = std::move(bytes);
    t.present_[size_t(id)] = 1;
  }

  for (int b = 0; b < 256; ++b) {
    const auto it = id_of_bytes.find(std::string(1, char(b)));
    if (it == id_of_bytes.end()) fail("{}: no token for byte 0x{:02X}", vocab_file, b);
    t.byte_ids_[size_t(b)] = it->second;
  }
  if (const auto it = id_of_bytes.find(std::string(kEndOfText)); it != id_of_bytes.end()) t.eot_id_ = it->second;

  auto id_of = [&](const std::string& key, const MergeEntry& m, std::string_view role) {
    const auto it = id_of_key.find(key);
    if (it == id_of_key.end()) fail("{}: {}: {} {} is not in the vocab", merges_file, m.where, role, shown(key));
    return it->second;
  };
  t.merges_.reserve(merges.size());
  for (const auto& m : merges) {
    const int32_t left = id_of(m.left, m, "symbol");
    const int32_t right = id_of(m.right, m, "symbol");
    const int32_t result = id_of(m.left + m.right, m, "merge result");
    // Encoding starts from one token per byte and only merges, so decode(encode(s)) == s holds
    // exactly when every merge result stands for the bytes of its two parts.
    if (t.tokens_[size_t(result)] != t.tokens_[size_t(left)] + t.tokens_[size_t(right)])
      fail("{}: {}: merge result {} stands for bytes {}, not the bytes {} of {} and {}", merges_file, m.where,
           shown(m.left + m.right), shown(t.tokens_[size_t(result)]),
           shown(t.tokens_[size_t(left)] + t.tokens_[size_t(right)]), shown(m.left), shown(m.right));
    const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
    // A repeated rule keeps its first (best) rank.
    if (t.merges_.emplace(key, Merge{int32_t(t.merge_list_.size()), result}).second) {
      t.merge_list_.emplace_back(left, right);
    }
  }
  return t;
}

Gpt2Tokenizer Gpt2Tokenizer::from_files(const std::string& vocab_json, const std::string& merges_txt) {
  const auto vocab = vocab_entries(parse_json(read_text(vocab_json, "vocab.json"), vocab_json), vocab_json, "the file");
  const auto merges = parse_merges_txt(read_text(merges_txt, "merges.txt"), merges_txt);
  return build(vocab, merges, vocab_json, merges_txt);
}

Gpt2Tokenizer Gpt2Tokenizer::from_tokenizer_json(const std::string& path) {
  const nlohmann::json root = parse_json(read_text(path, "tokenizer.json"), path);
  if (!root.is_object()) fail("{}: not a JSON object", path);
  const auto model = root.find("model");
  if (model == root.end() || !model->is_object()) fail("{}: has no \"model\" object", path);
  if (const auto type = model->find("type"); type != model->end() && *type != "BPE") {
    fail("{}: model type is {}, not BPE", path, type->dump());
  }
  const auto vocab_it = model->find("vocab");
  if (vocab_it == model->end()) fail("{}: has no model.vocab", path);
  const auto merges_it = model->find("merges");
  if (merges_it == model->end()) fail("{}: has no model.merges", path);

  auto vocab = vocab_entries(*vocab_it, path, "model.vocab");
  add_added_tokens(root, path, vocab);
  return build(vocab, json_merges(*merges_it, path), path, path);
}

Gpt2Tokenizer Gpt2Tokenizer::load_dir(const std::string& dir) {
  if (!path_exists(dir, "model directory")) fail("{}: no such directory", dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("{}: not a directory", dir);
  const fs::path d(dir);
  // Absent files decide which format is read; any other problem (a directory that cannot be
  // searched) is an error naming the file (path_exists).
  const std::string tj = (d / "tokenizer.json").string(), vj = (d / "vocab.json").string(),
                    mt = (d / "merges.txt").string();
  if (path_exists(tj, "tokenizer.json")) return from_tokenizer_json(tj);
  const bool has_vocab = path_exists(vj, "vocab.json");
  const bool has_merges = path_exists(mt, "merges.txt");
  if (has_vocab && has_merges) return from_files(vj, mt);
  const char* missing = has_vocab ? "merges.txt" : has_merges ? "vocab.json" : "vocab.json and merges.txt";
  fail("{}: no tokenizer found (no tokenizer.json, and {} missing)", dir, missing);
}

Gpt2Tokenizer Gpt2Tokenizer::byte_level() {
  std::vector<VocabEntry> vocab;
  for (int id = 0; id < 256; ++id) {
    const char b = char(byte_alphabet().byte_of_id[size_t(id)]);
    vocab.push_back({bytes_to_key(std::string_view(&b, 1)), id, false});
  }
  vocab.push_back({std::string(kEndOfText), 256, false});
  return build(vocab, {}, "byte_level", "byte_level");
}

// ---------------------------------------------------------------------------------
// Encoding.
// ---------------------------------------------------------------------------------

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text) const {
  check_utf8(text);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  // "<|endoftext|>" in the text is the special token: the text is cut around each one
  // and the parts are encoded on their own (so "a <|endoftext|>" ends in a lone " ").
  size_t start = 0;
  while (eot_id_ >= 0) {
    const size_t hit = text.find(kEndOfText, start);
    if (hit == std::string_view::npos) break;
    encode_ordinary(text.substr(start, hit - start), ids);
    ids.push_back(eot_id_);
    start = hit + kEndOfText.size();
  }
  encode_ordinary(text.substr(start), ids);
  return ids;
}

void Gpt2Tokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  size_t i = 0;
  while (i < text.size()) {
    const size_t end = piece_end(text, i);
    encode_piece(text.substr(i, end - i), out);
    i = end;
  }
}

void Gpt2Tokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() == 1 || merges_.empty()) {
    for (char c : piece) out.push_back(byte_ids_[uint8_t(c)]);
    return;
  }
  const bool cacheable = cache_ && piece.size() <= kMaxCachedPiece;
  if (cacheable) {
    std::lock_guard lock(cache_->mu);
    if (const auto it = cache_->words.find(piece); it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_piece(piece, out);
  if (cacheable) {
    std::vector<int32_t> ids(out.begin() + std::ptrdiff_t(first), out.end());
    std::lock_guard lock(cache_->mu);
    if (cache_->words.size() >= kMaxCachedWords) cache_->words.clear();
    cache_->words.emplace(std::string(piece), std::move(ids));
  }
}

const Gpt2Tokenizer::Merge* Gpt2Tokenizer::find_merge(int32_t left, int32_t right) const {
  const auto it = merges_.find((uint64_t(uint32_t(left)) << 32) | uint32_t(right));
  return it == merges_.end() ? nullptr : &it->second;
}

// BPE on one piece, with GPT-2's exact semantics: repeatedly take the best-ranked pair
// of adjacent tokens and merge every occurrence of it in one left-to-right sweep, until
// no adjacent pair has a rule.
//
// The tokens form a linked list over the piece's byte positions, and the candidate
// pairs sit in a min-heap ordered by (rank, position), so a piece of n bytes costs
// O(n log n) however long it is. One sweep pops every candidate of the best rank
// before merging any (a merge can create a pair of better rank, which must wait for
// the next sweep). A candidate is stale if its tokens have changed since it was pushed.
void Gpt2Tokenizer::merge_piece(std::string_view piece, std::vector<int32_t>& out) const {
  struct Node {
    int32_t id;  // -1 once merged into the node before it
    int32_t prev, next;
  };
  struct Candidate {
    int32_t rank, pos, left, right, result;
  };
  if (piece.size() > size_t(INT32_MAX)) fail("cannot encode a word of {} bytes (at most 2^31 - 1)", piece.size());
  const auto n = int32_t(piece.size());
  std::vector<Node> nodes(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    nodes[size_t(i)] = {byte_ids_[uint8_t(piece[size_t(i)])], i - 1, i + 1 < n ? i + 1 : -1};
  }

  const auto worse = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<Candidate> heap;
  const auto offer = [&](int32_t pos) {  // the pair that starts at node `pos`, if it has a rule
    const Node& a = nodes[size_t(pos)];
    if (a.next < 0) return;
    const int32_t right = nodes[size_t(a.next)].id;
    if (const Merge* m = find_merge(a.id, right)) {
      heap.push_back({m->rank, pos, a.id, right, m->result});
      std::push_heap(heap.begin(), heap.end(), worse);
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) offer(i);

  std::vector<Candidate> sweep;
  while (!heap.empty()) {
    const int32_t rank = heap.front().rank;
    sweep.clear();
    while (!heap.empty() && heap.front().rank == rank) {
      std::pop_heap(heap.begin(), heap.end(), worse);
      sweep.push_back(heap.back());
      heap.pop_back();
    }
    for (const Candidate& c : sweep) {  // in position order
      Node& a = nodes[size_t(c.pos)];
      if (a.id != c.left || a.next < 0 || nodes[size_t(a.next)].id != c.right) continue;  // stale
      Node& b = nodes[size_t(a.next)];
      a.id = c.result;
      a.next = b.next;
      if (b.next >= 0) nodes[size_t(b.next)].prev = c.pos;
      b.id = -1;
      if (a.prev >= 0) offer(a.prev);
      offer(c.pos);
    }
  }
  for (int32_t i = 0; i >= 0 && n > 0; i = nodes[size_t(i)].next) out.push_back(nodes[size_t(i)].id);
}

// ---------------------------------------------------------------------------------
// Decoding and writing.
// ---------------------------------------------------------------------------------

const std::string& Gpt2Tokenizer::checked_token(int32_t id) const {
  if (!has_id(id)) fail("token id {} is out of range (vocab size {})", id, vocab_size());
  return tokens_[size_t(id)];
}

std::string Gpt2Tokenizer::token_bytes(int32_t id) const { return checked_token(id); }

std::string Gpt2Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (int32_t id : ids) text += checked_token(id);
  return text;
}

void Gpt2Tokenizer::write_files(const std::string& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create directory ({})", dir, ec.message());
  const fs::path d(dir);

  // Written by hand, in id order, one entry per line (a JSON library's ordered object
  // would cost a linear search per key).
  std::string vocab = "{";
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (!has_id(id)) continue;
    vocab += vocab.size() == 1 ? "\n" : ",\n";
    vocab += nlohmann::json(bytes_to_key(tokens_[size_t(id)])).dump();
    vocab += fmt::format(": {}", id);
  }
  vocab += "\n}\n";
  write_text((d / "vocab.json").string(), vocab);

  std::string merges = "#version: 0.2\n";
  for (const auto& [left, right] : merge_list_) {
    merges += bytes_to_key(tokens_[size_t(left)]);
    merges += ' ';
    merges += bytes_to_key(tokens_[size_t(right)]);
    merges += '\n';
  }
  write_text((d / "merges.txt").string(), merges);
}

}  // namespace strand
