// Fuzz target: the tokenizer's files, one at a time while the others stay valid. The first
// byte picks the file (0: vocab.json, 1: merges.txt, 2: tokenizer.json; taken modulo 3), the
// rest is its content. A tokenizer that loads must give decode(encode(s)) == s: checked on
// fixed texts and on the input itself.
#include <cstdint>

#include "fuzz_util.h"
#include "seed_models.h"
#include "tokenizer/gpt2_tokenizer.h"

using namespace strand;

namespace {

const fuzz::TokenizerFiles& valid() {
  static const fuzz::TokenizerFiles v = fuzz::small_tokenizer_files();
  return v;
}

void check_round_trip(const Gpt2Tokenizer& tok, std::string_view text) {
  std::vector<int32_t> ids;
  if (!fuzz::handled([&] { ids = tok.encode(text); })) return;  // invalid UTF-8: refused
  std::string back;
  if (!fuzz::handled([&] { back = tok.decode(ids); })) fuzz::finding("decode refused the ids encode gave");
  if (back != text) fuzz::finding("decode(encode(s)) != s");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int which = data[0] % 3;
  const std::string_view content(reinterpret_cast<const char*>(data + 1), size - 1);
  const fuzz::TokenizerFiles& v = valid();
  const fuzz::fs::path d = fuzz::scratch_dir();
  fuzz::write_file(d / "vocab.json", which == 0 ? content : std::string_view(v.vocab));
  fuzz::write_file(d / "merges.txt", which == 1 ? content : std::string_view(v.merges));
  fuzz::write_file(d / "tokenizer.json", which == 2 ? content : std::string_view(v.tokenizer_json));
  fuzz::handled([&] {
    const Gpt2Tokenizer tok = which == 2 ? Gpt2Tokenizer::from_tokenizer_json((d / "tokenizer.json").string())
                                         : Gpt2Tokenizer::from_files((d / "vocab.json").string(),
                                                                     (d / "merges.txt").string());
    for (const char* text : {"the thin hen in the inn", " \x01 the\t\n  <|endoftext|> in", "héllo wörld 123 's 'll",
                             "\xF0\x9F\x98\x80 emoji", ""})
      check_round_trip(tok, text);
    check_round_trip(tok, content);
  });
  return 0;
}
