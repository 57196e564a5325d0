// Fuzz target: GPT-2's real tokenizer (vocab.json + merges.txt from STRAND_GPT2_TOKENIZER_DIR,
// or ../shared/data/gpt2-tokenizer beside the source tree) on arbitrary bytes. Valid UTF-8
// must encode to ids that decode to the same bytes; anything else must be refused with a
// strand::Error.
#include <cstdint>

#include "fuzz_util.h"
#include "tokenizer/gpt2_tokenizer.h"

using namespace strand;

namespace {

const Gpt2Tokenizer& gpt2() {
  static const Gpt2Tokenizer tok = [] {
    const char* env = std::getenv("STRAND_GPT2_TOKENIZER_DIR");
    const fuzz::fs::path d = env && *env ? fuzz::fs::path(env) : fuzz::source_dir().parent_path() / "shared/data/gpt2-tokenizer";
    if (!fuzz::fs::exists(d / "vocab.json") || !fuzz::fs::exists(d / "merges.txt")) {
      std::fprintf(stderr, "fuzz_tokenizer_roundtrip: GPT-2's vocab.json and merges.txt are not in %s "
                           "(set STRAND_GPT2_TOKENIZER_DIR)\n", d.c_str());
      std::exit(77);
    }
    return Gpt2Tokenizer::from_files((d / "vocab.json").string(), (d / "merges.txt").string());
  }();
  return tok;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  gpt2();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const Gpt2Tokenizer& tok = gpt2();
  std::vector<int32_t> ids;
  if (!fuzz::handled([&] { ids = tok.encode(text); })) return 0;  // invalid UTF-8, refused
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) fuzz::finding("encode gave an id outside the vocabulary");
  if (ids.size() > text.size()) fuzz::finding("more tokens than bytes");
  std::string back;
  if (!fuzz::handled([&] { back = tok.decode(ids); })) fuzz::finding("decode refused the ids encode gave");
  if (back != text) fuzz::finding("decode(encode(s)) != s");
  return 0;
}
