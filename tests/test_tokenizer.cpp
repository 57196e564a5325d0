// strand/tests/test_tokenizer.cpp — the GPT-2 byte-level BPE tokenizer.
//
// The golden cases (tests/fixtures/tokenizer_golden.json, from
// tools/gen_tokenizer_golden.py) need GPT-2's real vocab.json and merges.txt: set
// STRAND_GPT2_TOKENIZER_DIR, or keep them in ../shared/data/gpt2-tokenizer beside the
// source tree. Everything else runs on small vocabularies built here.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "tokenizer/gpt2_tokenizer.h"

namespace fs = std::filesystem;
using strand::Gpt2Tokenizer;
using Ids = std::vector<int32_t>;

namespace {

// ---------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

// A fresh directory under the system temp dir, removed when the test ends.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("strand_tokenizer_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

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

// Random valid UTF-8 of up to `max_chars` characters: a mix of ASCII, white space,
// contractions, the end-of-text marker (whole and cut short) and arbitrary code points
// from every plane.
std::string random_utf8(strand::Rng& rng, size_t max_chars) {
  static const char* const kSnippets[] = {"'s", "'S", "'ll", "<|endoftext|>", "<|endof", "\r\n", "  ", " \t\n "};
  std::string s;
  const size_t n = rng.below(max_chars + 1);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t kind = rng.below(10);
    char32_t cp;
    if (kind < 4) {
      cp = char32_t(0x20 + rng.below(0x5F));
    } else if (kind == 4) {
      static const char32_t kSpaces[] = {' ', '\t', '\n', '\r', 0x0B, 0x0C, 0x85, 0xA0, 0x2028, 0x3000, 0x1C};
      cp = kSpaces[rng.below(std::size(kSpaces))];
    } else if (kind == 5) {
      s += kSnippets[rng.below(std::size(kSnippets))];
      continue;
    } else if (kind == 6) {
      cp = char32_t(rng.below(0x800));
    } else if (kind == 7) {
      cp = char32_t(rng.below(0x10000));
    } else {
      cp = char32_t(rng.below(0x110000));
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // surrogates are not characters
    append_utf8(s, cp);
  }
  return s;
}

// The message of the strand::Error that `f` throws ("" if it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const strand::Error& e) {
    return e.what();
  }
  return "";
}

// ---------------------------------------------------------------------------------
// GPT-2's real files.
// ---------------------------------------------------------------------------------

// STRAND_GPT2_TOKENIZER_DIR if it holds the files, else the default beside the source tree.
std::optional<fs::path> gpt2_dir() {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("STRAND_GPT2_TOKENIZER_DIR"); env && *env) candidates.emplace_back(env);
  candidates.emplace_back(STRAND_SOURCE_DIR "/../shared/data/gpt2-tokenizer");
  for (const auto& dir : candidates) {
    if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) return dir;
  }
  return std::nullopt;
}

// Loaded once for the whole run; null when the files are not there.
const Gpt2Tokenizer* gpt2() {
  static const std::optional<Gpt2Tokenizer> tok = []() -> std::optional<Gpt2Tokenizer> {
    const auto dir = gpt2_dir();
    if (!dir) return std::nullopt;
    return Gpt2Tokenizer::from_files((*dir / "vocab.json").string(), (*dir / "merges.txt").string());
  }();
  return tok ? &*tok : nullptr;
}

constexpr const char* kNoGpt2 =
    "GPT-2's tokenizer files not found: set STRAND_GPT2_TOKENIZER_DIR to the directory holding "
    "GPT-2's vocab.json and merges.txt";

struct GoldenCase {
  std::string text;
  Ids ids;
};

const std::vector<GoldenCase>& golden_cases() {
  static const std::vector<GoldenCase> cases = [] {
    const auto json = nlohmann::json::parse(read_file(STRAND_SOURCE_DIR "/tests/fixtures/tokenizer_golden.json"));
    std::vector<GoldenCase> out;
    for (const auto& c : json) out.push_back({c.at("text").get<std::string>(), c.at("ids").get<Ids>()});
    return out;
  }();
  return cases;
}

// Tests that need the real files; they are skipped, saying why, when the files are absent.
class TokenizerGpt2 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gpt2()) GTEST_SKIP() << kNoGpt2;
  }
  const Gpt2Tokenizer& tok() const { return *gpt2(); }
};

// ---------------------------------------------------------------------------------
// A small synthetic vocabulary: the 256 byte tokens plus a few merges.
// ---------------------------------------------------------------------------------

// vocab.json text for the byte tokens (GPT-2's ids 0..255) plus `extra` keys, ids 256...
std::string small_vocab_json(const std::vector<std::string>& extra) {
  const TempDir dir;
  Gpt2Tokenizer::byte_level().write_files(dir.path().string());
  auto vocab = nlohmann::json::parse(read_file(dir.path() / "vocab.json"));
  vocab.erase("<|endoftext|>");
  int32_t id = 256;
  for (const auto& key : extra) vocab[key] = id++;
  return vocab.dump();
}

}  // namespace

// ---------------------------------------------------------------------------------
// (a) Golden ids from the independent Python implementation.
// ---------------------------------------------------------------------------------

TEST(TokenizerGoldenFile, HasTheHardCases) {
  const auto& cases = golden_cases();
  ASSERT_GE(cases.size(), 40u);
  bool has_empty = false, has_eot = false, has_long = false;
  for (const auto& c : cases) {
    has_empty |= c.text.empty();
    has_eot |= c.text.find("<|endoftext|>") != std::string::npos;
    has_long |= c.text.size() > 4000;
  }
  EXPECT_TRUE(has_empty && has_eot && has_long);
}

TEST_F(TokenizerGpt2, MatchesGoldenIds) {
  const auto& cases = golden_cases();
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "golden case " << i << ": " << cases[i].text.substr(0, 60));
    EXPECT_EQ(tok().encode(cases[i].text), cases[i].ids);
    EXPECT_EQ(tok().decode(cases[i].ids), cases[i].text);
  }
}

TEST_F(TokenizerGpt2, KnowsItsSize) {
  EXPECT_EQ(tok().vocab_size(), 50257);
  EXPECT_EQ(tok().eot_id(), 50256);
  EXPECT_EQ(tok().merge_count(), 50000);
  EXPECT_EQ(tok().token_bytes(220), " ");
  EXPECT_EQ(tok().token_bytes(50256), "<|endoftext|>");
  EXPECT_EQ(tok().encode("<|endoftext|>"), Ids{50256});
}

TEST_F(TokenizerGpt2, LoadDirFindsVocabAndMerges) {
  const auto loaded = Gpt2Tokenizer::load_dir(gpt2_dir()->string());
  EXPECT_EQ(loaded.encode(golden_cases()[1].text), golden_cases()[1].ids);
}

TEST_F(TokenizerGpt2, WriteFilesRoundTrips) {
  const TempDir dir;
  tok().write_files(dir.path().string());
  const auto again = Gpt2Tokenizer::from_files(dir.file("vocab.json"), dir.file("merges.txt"));
  EXPECT_EQ(again.vocab_size(), tok().vocab_size());
  EXPECT_EQ(again.merge_count(), tok().merge_count());
  for (const auto& c : golden_cases()) EXPECT_EQ(again.encode(c.text), c.ids);
}

// ---------------------------------------------------------------------------------
// (b) decode(encode(s)) == s.
// ---------------------------------------------------------------------------------

void expect_round_trips(const Gpt2Tokenizer& tok, uint64_t seed, int count, size_t max_chars) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  strand::Rng rng(seed);
  for (int i = 0; i < count; ++i) {
    const std::string s = random_utf8(rng, max_chars);
    const Ids ids = tok.encode(s);
    ASSERT_EQ(tok.decode(ids), s) << "string " << i;
  }
}

TEST_F(TokenizerGpt2, RoundTripsRandomUtf8) { expect_round_trips(tok(), 0x5eed0001, 300, 200); }

TEST(TokenizerByteLevel, RoundTripsRandomUtf8) {
  expect_round_trips(Gpt2Tokenizer::byte_level(), 0x5eed0002, 300, 200);
}

// ---------------------------------------------------------------------------------
// (c) The embedded byte-level tokenizer.
// ---------------------------------------------------------------------------------

TEST(TokenizerByteLevel, HasGpt2ByteIds) {
  const auto tok = Gpt2Tokenizer::byte_level();
  EXPECT_EQ(tok.vocab_size(), 257);
  EXPECT_EQ(tok.eot_id(), 256);
  EXPECT_EQ(tok.token_bytes(256), "<|endoftext|>");
  // A few ids every GPT-2 vocab agrees on.
  EXPECT_EQ(tok.encode("!"), Ids{0});
  EXPECT_EQ(tok.encode("A"), Ids{32});
  EXPECT_EQ(tok.encode(" "), Ids{220});
  EXPECT_EQ(tok.encode("\n"), Ids{198});
  EXPECT_EQ(tok.encode(std::string(1, '\0')), Ids{188});
  // Every byte has exactly one token.
  std::vector<bool> seen(256, false);
  for (int32_t id = 0; id < 256; ++id) {
    const std::string b = tok.token_bytes(id);
    ASSERT_EQ(b.size(), 1u);
    EXPECT_FALSE(seen[uint8_t(b[0])]);
    seen[uint8_t(b[0])] = true;
  }
  if (const auto* real = gpt2()) {
    for (int32_t id = 0; id < 256; ++id) EXPECT_EQ(tok.token_bytes(id), real->token_bytes(id)) << "id " << id;
  }
}

TEST(TokenizerByteLevel, OneIdPerByte) {
  const auto tok = Gpt2Tokenizer::byte_level();
  strand::Rng rng(0x5eed0003);
  SCOPED_TRACE("seed 0x5eed0003");
  for (int i = 0; i < 200; ++i) {
    std::string s = random_utf8(rng, 100);
    for (size_t at; (at = s.find("<|endoftext|>")) != std::string::npos;) s.erase(at, 1);
    const Ids ids = tok.encode(s);
    ASSERT_EQ(ids.size(), s.size());
    for (size_t k = 0; k < s.size(); ++k) ASSERT_EQ(tok.token_bytes(ids[k]), s.substr(k, 1));
  }
}

TEST(TokenizerByteLevel, WriteFilesThenFromFilesGivesSameIds) {
  const auto tok = Gpt2Tokenizer::byte_level();
  const TempDir dir;
  tok.write_files(dir.path().string());
  const auto again = Gpt2Tokenizer::from_files(dir.file("vocab.json"), dir.file("merges.txt"));
  EXPECT_EQ(again.vocab_size(), tok.vocab_size());
  EXPECT_EQ(again.eot_id(), tok.eot_id());
  strand::Rng rng(0x5eed0004);
  SCOPED_TRACE("seed 0x5eed0004");
  for (int i = 0; i < 100; ++i) {
    const std::string s = random_utf8(rng, 100);
    ASSERT_EQ(again.encode(s), tok.encode(s));
  }
}

// ---------------------------------------------------------------------------------
// (d) Invalid UTF-8.
// ---------------------------------------------------------------------------------

TEST(TokenizerUtf8, RejectsInvalidInput) {
  const struct {
    const char* what;
    std::string bytes;
    size_t offset;
  } cases[] = {
      {"lone continuation byte", "ab\x80", 2},
      {"continuation byte first", "\xBF", 0},
      {"overlong 2-byte", "\xC0\xAF", 0},
      {"overlong 3-byte", "x\xE0\x80\xAF", 1},
      {"overlong 4-byte", "\xF0\x82\x82\xAC", 0},
      {"surrogate U+D800", "ok \xED\xA0\x80", 3},
      {"surrogate U+DFFF", "\xED\xBF\xBF", 0},
      {"truncated 2-byte", "\xC3", 0},
      {"truncated 3-byte", "euro \xE2\x82", 5},
      {"truncated 4-byte", "\xF0\x9F\x98", 0},
      {"truncated before ASCII", "\xE2\x82x", 0},
      {"beyond U+10FFFF", "\xF4\x90\x80\x80", 0},
      {"5-byte form", "\xF8\x88\x80\x80\x80", 0},
      {"byte FF", "a\xFF", 1},
  };
  const auto tok = Gpt2Tokenizer::byte_level();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string msg = error_of([&] { tok.encode(c.bytes); });
    EXPECT_EQ(msg, "invalid UTF-8 at byte " + std::to_string(c.offset));
  }
  // The largest valid code points and the ones around the surrogates are fine.
  EXPECT_EQ(Gpt2Tokenizer::byte_level().encode("\xF4\x8F\xBF\xBF\xED\x9F\xBF\xEE\x80\x80").size(), 10u);
}

TEST(TokenizerDecode, RejectsUnknownIds) {
  const auto tok = Gpt2Tokenizer::byte_level();
  EXPECT_NE(error_of([&] { tok.decode(Ids{1, 257}); }).find("257"), std::string::npos);
  EXPECT_NE(error_of([&] { tok.decode(Ids{-1}); }).find("-1"), std::string::npos);
  EXPECT_NE(error_of([&] { tok.token_bytes(1 << 30); }), "");
}

// ---------------------------------------------------------------------------------
// (e) Bad files: each a strand::Error that names the file.
// ---------------------------------------------------------------------------------

class TokenizerBadFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    write_file(dir.path() / "vocab.json", small_vocab_json({"ab", "abc"}));
    write_file(dir.path() / "merges.txt", "#version: 0.2\na b\nab c\n");
  }
  // The message from loading the directory's vocab.json and merges.txt.
  std::string load_error() const {
    return error_of([&] { Gpt2Tokenizer::from_files(dir.file("vocab.json"), dir.file("merges.txt")); });
  }
  std::string vocab_with(const std::string& key, const nlohmann::json& value) const {
    auto v = nlohmann::json::parse(read_file(dir.path() / "vocab.json"));
    v[key] = value;
    return v.dump();
  }
  TempDir dir;
};

#define EXPECT_MENTIONS(msg, what) EXPECT_NE((msg).find(what), std::string::npos) << "message: " << (msg)

TEST_F(TokenizerBadFiles, GoodFilesLoad) {
  EXPECT_EQ(load_error(), "");
  const auto tok = Gpt2Tokenizer::from_files(dir.file("vocab.json"), dir.file("merges.txt"));
  EXPECT_EQ(tok.encode("abcab"), (Ids{257, 256}));
  EXPECT_EQ(tok.eot_id(), -1);
  EXPECT_EQ(tok.encode("<|endoftext|>").size(), 13u);  // no special token in this vocab
}

TEST_F(TokenizerBadFiles, MissingVocab) {
  fs::remove(dir.path() / "vocab.json");
  EXPECT_MENTIONS(load_error(), "vocab.json");
}

TEST_F(TokenizerBadFiles, MissingMerges) {
  fs::remove(dir.path() / "merges.txt");
  EXPECT_MENTIONS(load_error(), "merges.txt");
}

TEST_F(TokenizerBadFiles, VocabIsADirectory) {
  fs::remove(dir.path() / "vocab.json");
  fs::create_directory(dir.path() / "vocab.json");
  EXPECT_MENTIONS(load_error(), "vocab.json");
}

TEST_F(TokenizerBadFiles, VocabNotJson) {
  write_file(dir.path() / "vocab.json", "{\n  \"a\": 1,\n  oops\n}");
  const std::string msg = load_error();
  EXPECT_MENTIONS(msg, "vocab.json: not valid JSON (line 3)");
}

TEST_F(TokenizerBadFiles, VocabNotUtf8) {
  write_file(dir.path() / "vocab.json", "{\"\xff\": 1}");
  EXPECT_MENTIONS(load_error(), "vocab.json: not valid JSON");
}

TEST_F(TokenizerBadFiles, VocabNotAnObject) {
  write_file(dir.path() / "vocab.json", "[1, 2, 3]");
  EXPECT_MENTIONS(load_error(), "vocab.json");
}

TEST_F(TokenizerBadFiles, IdNotAnInteger) {
  write_file(dir.path() / "vocab.json", vocab_with("xyz", 1.5));
  EXPECT_MENTIONS(load_error(), "vocab.json");
  write_file(dir.path() / "vocab.json", vocab_with("xyz", "7"));
  EXPECT_MENTIONS(load_error(), "vocab.json");
}

TEST_F(TokenizerBadFiles, IdOutOfRange) {
  write_file(dir.path() / "vocab.json", vocab_with("xyz", -3));
  EXPECT_MENTIONS(load_error(), "vocab.json");
  write_file(dir.path() / "vocab.json", vocab_with("xyz", int64_t(1) << 40));
  EXPECT_MENTIONS(load_error(), "vocab.json");
}

TEST_F(TokenizerBadFiles, DuplicateIds) {
  write_file(dir.path() / "vocab.json", vocab_with("xyz", 256));
  const std::string msg = load_error();
  EXPECT_MENTIONS(msg, "vocab.json");
  EXPECT_MENTIONS(msg, "256");
}

TEST_F(TokenizerBadFiles, MissingByteToken) {
  auto v = nlohmann::json::parse(read_file(dir.path() / "vocab.json"));
  v.erase("Ġ");
  write_file(dir.path() / "vocab.json", v.dump());
  EXPECT_MENTIONS(load_error(), "vocab.json");
}

TEST_F(TokenizerBadFiles, MergeLineNotTwoSymbols) {
  for (const char* merges : {"a b\nab\n", "a b c\n", "a  b\n", " a\n", "a \n"}) {
    SCOPED_TRACE(merges);
    write_file(dir.path() / "merges.txt", merges);
    const std::string msg = load_error();
    EXPECT_MENTIONS(msg, "merges.txt");
    EXPECT_MENTIONS(msg, "line");
  }
}

TEST_F(TokenizerBadFiles, MergePartNotInVocab) {
  write_file(dir.path() / "merges.txt", "a b\nab zz\n");
  const std::string msg = load_error();
  EXPECT_MENTIONS(msg, "merges.txt: line 2");
  EXPECT_MENTIONS(msg, "zz");
}

TEST_F(TokenizerBadFiles, MergeResultNotInVocab) {
  write_file(dir.path() / "merges.txt", "a b\nb c\n");
  const std::string msg = load_error();
  EXPECT_MENTIONS(msg, "merges.txt: line 2");
  EXPECT_MENTIONS(msg, "bc");
}

TEST_F(TokenizerBadFiles, CrlfAndBlankLinesInMergesAreFine) {
  write_file(dir.path() / "merges.txt", "#version: 0.2\r\na b\r\n\r\nab c\r\n\n");
  EXPECT_EQ(load_error(), "");
}

TEST_F(TokenizerBadFiles, BadTokenizerJson) {
  const std::string path = dir.file("tokenizer.json");
  const auto error = [&](const std::string& text) {
    write_file(path, text);
    return error_of([&] { Gpt2Tokenizer::from_tokenizer_json(path); });
  };
  // A tokenizer.json with a good vocab and the given merges and added_tokens (JSON text).
  const std::string vocab = small_vocab_json({"ab"});
  const auto with = [&](const std::string& merges, const std::string& added) {
    return R"({"model": {"vocab": )" + vocab + R"(, "merges": )" + merges + R"(}, "added_tokens": )" + added + "}";
  };
  EXPECT_EQ(error(with(R"(["a b"])", "[]")), "");
  EXPECT_MENTIONS(error(R"({"model": )"), "tokenizer.json: not valid JSON (line 1)");
  EXPECT_MENTIONS(error("[]"), "tokenizer.json");
  EXPECT_MENTIONS(error("{}"), "tokenizer.json");
  EXPECT_MENTIONS(error(R"({"model": {"type": "WordPiece", "vocab": {}}})"), "tokenizer.json");
  EXPECT_MENTIONS(error(R"({"model": {"vocab": )" + vocab + "}}"), "tokenizer.json");
  EXPECT_MENTIONS(error(with(R"(["a"])", "[]")), "tokenizer.json");
  EXPECT_MENTIONS(error(with(R"([["a"]])", "[]")), "tokenizer.json");
  EXPECT_MENTIONS(error(with(R"([["a", "q"]])", "[]")), "tokenizer.json");
  EXPECT_MENTIONS(error(with("[]", R"([{"id": 5, "content": "ab"}])")), "tokenizer.json");
  EXPECT_MENTIONS(error(with("[]", R"([{"content": "zz"}])")), "tokenizer.json");
}

// A number that does not fit a double is nlohmann's out_of_range.406, not a parse error: it is
// still one strand::Error naming the file.
TEST_F(TokenizerBadFiles, NumberBeyondADoubleNamesTheFile) {
  write_file(dir.path() / "vocab.json", vocab_with("zz", 1) .replace(1, 0, "\"big\": 1e400, "));
  std::string msg;
  EXPECT_NO_THROW(msg = load_error());
  EXPECT_MENTIONS(msg, dir.file("vocab.json") + ": not valid JSON");
  const std::string tj = dir.file("tokenizer.json");
  write_file(tj, R"({"model": {"vocab": )" + small_vocab_json({}) + R"(, "merges": [], "dropout": 1e400}})");
  EXPECT_NO_THROW(msg = error_of([&] { Gpt2Tokenizer::from_tokenizer_json(tj); }));
  EXPECT_MENTIONS(msg, tj + ": not valid JSON");
}

// A merge result must stand for the bytes of its parts, or decode(encode(s)) != s. Here byte
// 0x01's token is spelled "\u0001" (a character outside GPT-2's byte alphabet, so its key is
// its own text), and "Ġ\u0001" then spells the three bytes C4 A0 01, not " \x01".
TEST_F(TokenizerBadFiles, MergeResultMustSpellItsParts) {
  auto v = nlohmann::json::parse(small_vocab_json({}));
  const std::string a_macron = "\xC4\x81";  // "ā", byte 0x01 in GPT-2's alphabet
  const int64_t id01 = v[a_macron].get<int64_t>();
  v.erase(a_macron);
  v[std::string("\x01")] = id01;
  v[std::string("\xC4\xA0\x01")] = 256;  // "Ġ" + U+0001
  write_file(dir.path() / "vocab.json", v.dump());
  write_file(dir.path() / "merges.txt", std::string("#version: 0.2\n\xC4\xA0 \x01\n"));
  const std::string msg = load_error();
  EXPECT_MENTIONS(msg, dir.file("merges.txt") + ": line 2: merge result");
  EXPECT_MENTIONS(msg, "not the bytes \" \\x01\"");
  // With byte 0x01 spelled "ā" as GPT-2 spells it, "Ġ" + "ā" stands for " \x01": consistent,
  // so it loads, merges, and round-trips.
  v.erase(std::string("\x01"));
  v.erase(std::string("\xC4\xA0\x01"));
  v[a_macron] = id01;
  v[std::string("\xC4\xA0") + a_macron] = 256;
  write_file(dir.path() / "vocab.json", v.dump());
  write_file(dir.path() / "merges.txt", "#version: 0.2\n\xC4\xA0 " + a_macron + "\n");
  EXPECT_EQ(load_error(), "");
  const auto tok = Gpt2Tokenizer::from_files(dir.file("vocab.json"), dir.file("merges.txt"));
  EXPECT_EQ(tok.encode(" \x01"), (Ids{256}));
  EXPECT_EQ(tok.decode(Ids{256}), " \x01");
}

TEST_F(TokenizerBadFiles, LoadDirSaysWhatIsMissing) {
  const std::string d = dir.path().string();
  EXPECT_EQ(error_of([&] { Gpt2Tokenizer::load_dir(d); }), "");
  fs::remove(dir.path() / "merges.txt");
  std::string msg = error_of([&] { Gpt2Tokenizer::load_dir(d); });
  EXPECT_MENTIONS(msg, d);
  EXPECT_MENTIONS(msg, "merges.txt");
  fs::remove(dir.path() / "vocab.json");
  msg = error_of([&] { Gpt2Tokenizer::load_dir(d); });
  EXPECT_MENTIONS(msg, "vocab.json and merges.txt");
  msg = error_of([&] { Gpt2Tokenizer::load_dir(d + "/no-such-dir"); });
  EXPECT_MENTIONS(msg, "no-such-dir");
}

// ---------------------------------------------------------------------------------
// (f) tokenizer.json gives the same ids as vocab.json + merges.txt.
// ---------------------------------------------------------------------------------

// A tokenizer.json for a vocab.json + merges.txt pair, merges as strings or as pairs.
std::string tokenizer_json_for(const fs::path& vocab, const fs::path& merges, bool merges_as_pairs,
                               int32_t eot_id) {
  nlohmann::json root;
  root["version"] = "1.0";
  root["added_tokens"] = nlohmann::json::array();
  if (eot_id >= 0) {
    root["added_tokens"].push_back({{"id", eot_id}, {"content", "<|endoftext|>"}, {"special", true}});
  }
  root["model"]["type"] = "BPE";
  root["model"]["vocab"] = nlohmann::json::parse(read_file(vocab));
  root["model"]["merges"] = nlohmann::json::array();
  std::istringstream lines(read_file(merges));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line.starts_with("#version")) continue;
    const size_t sp = line.find(' ');
    if (merges_as_pairs) {
      root["model"]["merges"].push_back({line.substr(0, sp), line.substr(sp + 1)});
    } else {
      root["model"]["merges"].push_back(line);
    }
  }
  return root.dump();
}

TEST(TokenizerJson, SmallVocabSameIdsAsVocabAndMerges) {
  const TempDir dir;
  write_file(dir.path() / "vocab.json", small_vocab_json({"ab", "abc", "Ġa", "Ġab", "cc"}));
  write_file(dir.path() / "merges.txt", "a b\nab c\nĠ a\nĠa b\nc c\n");
  const auto files = Gpt2Tokenizer::from_files(dir.file("vocab.json"), dir.file("merges.txt"));
  for (bool pairs : {false, true}) {
    SCOPED_TRACE(pairs ? "merges as pairs" : "merges as strings");
    write_file(dir.path() / "tokenizer.json",
               tokenizer_json_for(dir.path() / "vocab.json", dir.path() / "merges.txt", pairs, 261));
    const auto json = Gpt2Tokenizer::from_tokenizer_json(dir.file("tokenizer.json"));
    EXPECT_EQ(json.eot_id(), 261);  // an added token the vocab lacked
    EXPECT_EQ(json.vocab_size(), 262);
    EXPECT_EQ(files.eot_id(), -1);
    const std::string text = "abc ab abcc cccc a b";
    EXPECT_EQ(json.encode(text), files.encode(text));
    EXPECT_EQ(json.encode("x<|endoftext|>ab"), (Ids{json.encode("x")[0], 261, 256}));
    EXPECT_EQ(json.decode(json.encode("x<|endoftext|>ab")), "x<|endoftext|>ab");
    // load_dir prefers tokenizer.json.
    EXPECT_EQ(Gpt2Tokenizer::load_dir(dir.path().string()).eot_id(), 261);
  }
}

TEST_F(TokenizerGpt2, TokenizerJsonSameIdsAsVocabAndMerges) {
  const TempDir dir;
  for (bool pairs : {false, true}) {
    SCOPED_TRACE(pairs ? "merges as pairs" : "merges as strings");
    write_file(dir.path() / "tokenizer.json",
               tokenizer_json_for(*gpt2_dir() / "vocab.json", *gpt2_dir() / "merges.txt", pairs, 50256));
    const auto json = Gpt2Tokenizer::from_tokenizer_json(dir.file("tokenizer.json"));
    EXPECT_EQ(json.vocab_size(), tok().vocab_size());
    EXPECT_EQ(json.eot_id(), 50256);
    for (const auto& c : golden_cases()) EXPECT_EQ(json.encode(c.text), c.ids);
  }
}

// ---------------------------------------------------------------------------------
// BPE details on tiny vocabularies.
// ---------------------------------------------------------------------------------

Gpt2Tokenizer tiny(const std::vector<std::string>& extra, const std::string& merges) {
  const TempDir dir;
  write_file(dir.path() / "vocab.json", small_vocab_json(extra));
  write_file(dir.path() / "merges.txt", merges);
  return Gpt2Tokenizer::from_files(dir.file("vocab.json"), dir.file("merges.txt"));
}

TEST(TokenizerBpe, OverlappingPairsMergeLeftToRight) {
  const auto tok = tiny({"aa", "aaaa"}, "a a\naa aa\n");
  const int32_t a = tok.encode("a")[0];
  EXPECT_EQ(tok.encode("aaa"), (Ids{256, a}));
  EXPECT_EQ(tok.encode("aaaa"), (Ids{257}));
  EXPECT_EQ(tok.encode("aaaaa"), (Ids{257, a}));
  EXPECT_EQ(tok.encode("aaaaaa"), (Ids{257, 256}));
}

// GPT-2 merges every occurrence of the best pair in one sweep before it looks at the
// pairs those merges create, even when a created pair has a better rank.
TEST(TokenizerBpe, OneSweepPerRank) {
  const auto tok = tiny({"ab", "aba"}, "ab a\na b\n");  // ids: ab = 256, aba = 257
  EXPECT_EQ(tok.encode("abab"), (Ids{256, 256}));
  EXPECT_EQ(tok.encode("aba"), (Ids{257}));
}

TEST(TokenizerBpe, LongWordsAreFast) {
  const auto tok = tiny({"aa", "aaaa"}, "a a\naa aa\n");
  const std::string word(200000, 'a');
  const auto start = std::chrono::steady_clock::now();
  const Ids ids = tok.encode(word);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ids, Ids(50000, 257));
  EXPECT_LT(secs, 5.0);
}

TEST(TokenizerBpe, EncodeFromManyThreads) {
  const auto tok = tiny({"ab", "abc", "Ġa", "Ġab"}, "a b\nab c\nĠ a\nĠa b\n");
  strand::Rng rng(0x5eed0006);
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) texts.push_back(random_utf8(rng, 300) + " abc ab abab");
  std::vector<Ids> expected;
  for (const auto& t : texts) expected.push_back(tok.encode(t));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const Gpt2Tokenizer copy = tok;  // copies share the word cache
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          if ((t % 2 ? copy : tok).encode(texts[i]) != expected[i]) ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// ---------------------------------------------------------------------------------
// Speed on about 1 MB of text with the real vocab (printed; asserted in optimised builds).
// ---------------------------------------------------------------------------------

// ~1 MB of text: words drawn with a skewed distribution from a made-up lexicon (so
// some repeat a lot and many are rare), punctuation, numbers, newlines and a share of
// non-Latin text.
std::string megabyte_of_text(uint64_t seed) {
  strand::Rng rng(seed);
  std::vector<std::string> lexicon;
  for (int i = 0; i < 20000; ++i) {
    std::string w;
    const size_t len = 1 + rng.below(10);
    for (size_t k = 0; k < len; ++k) w += char('a' + rng.below(26));
    lexicon.push_back(w);
  }
  static const char* const kOther[] = {", ", ". ", "\n\n", " 1999", " $42.50", "'s", " (", ") ",
                                       " \xe4\xb8\xad\xe6\x96\x87", " caf\xc3\xa9", " \xf0\x9f\x98\x80"};
  std::string text;
  while (text.size() < (1u << 20)) {
    const double u = rng.uniform();
    text += ' ';
    text += lexicon[size_t(u * u * u * double(lexicon.size()))];
    if (rng.below(6) == 0) text += kOther[rng.below(std::size(kOther))];
  }
  return text;
}

TEST_F(TokenizerGpt2, EncodesAMegabyteQuickly) {
  const std::string text = megabyte_of_text(0x5eed0005);
  const Gpt2Tokenizer fresh = Gpt2Tokenizer::load_dir(gpt2_dir()->string());  // empty cache
  const auto start = std::chrono::steady_clock::now();
  const Ids ids = fresh.encode(text);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ speed    ] encoded " << text.size() << " bytes into " << ids.size() << " tokens in " << secs
            << " s (" << double(text.size()) / 1e6 / secs << " MB/s)\n";
  EXPECT_EQ(fresh.decode(ids), text);
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
  EXPECT_LT(secs, 1.0);
#endif
}
