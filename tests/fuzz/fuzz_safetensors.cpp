// Fuzz target: the safetensors reader (SafeTensors::open) on one file's bytes.
// Every tensor of a file that opens is read end to end and its pages given back, as a load does.
#include <cstdint>

#include "formats/safetensors.h"
#include "fuzz_util.h"

using namespace strand;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::fs::path path = fuzz::scratch_dir() / "model.safetensors";
  fuzz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::handled([&] {
    const auto st = SafeTensors::open(path.string(), "model.safetensors");
    uint64_t sum = 0;
    for (const auto& [name, t] : st->tensors()) {
      const auto* p = static_cast<const unsigned char*>(t.data);
      for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
      st->release(t);
    }
    if (st->file_size() != size) fuzz::finding("file_size() differs from the file's size");
    if (sum == 1) std::fputc(' ', stderr);  // keeps the reads from being optimised away
  });
  return 0;
}
