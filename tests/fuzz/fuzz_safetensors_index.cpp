// Fuzz target: a sharded checkpoint's index (SafeTensors::open_sharded). The input is
// model.safetensors.index.json; beside it lie two valid shards, a.safetensors (tensors "x",
// "y") and b.safetensors ("z"), and one level up a valid file the index must not reach.
#include <cstdint>

#include "formats/safetensors.h"
#include "fuzz_util.h"

using namespace strand;

namespace {

const fuzz::fs::path& model_dir() {
  static const fuzz::fs::path dir = [] {
    const fuzz::fs::path d = fuzz::scratch_dir() / "model";
    fuzz::fs::create_directories(d);
    Tensor x = Tensor::empty({2, 3}, DType::F32), y = Tensor::empty({4}, DType::F16), z = Tensor::empty({3}, DType::BF16);
    for (int i = 0; i < 6; ++i) x.ptr<float>()[i] = float(i);
    for (int i = 0; i < 4; ++i) y.ptr<uint16_t>()[i] = uint16_t(0x3c00 + i);
    for (int i = 0; i < 3; ++i) z.ptr<uint16_t>()[i] = uint16_t(0x3f80 + i);
    write_safetensors((d / "a.safetensors").string(), {{"x", x}, {"y", y}});
    write_safetensors((d / "b.safetensors").string(), {{"z", z}});
    write_safetensors((fuzz::scratch_dir() / "outside.safetensors").string(), {{"w", z}});
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::fs::path index = model_dir() / "model.safetensors.index.json";
  fuzz::write_file(index, std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::handled([&] {
    const auto st = SafeTensors::open_sharded(index.string());
    for (const auto& [name, t] : st->tensors()) {
      if (name != "x" && name != "y" && name != "z") fuzz::finding("a tensor from outside the two shards: " + name);
      const std::string& from = st->path_of(name);
      if (fuzz::fs::path(from).parent_path() != model_dir()) fuzz::finding("a shard outside the directory: " + from);
      st->release(t);
    }
  });
  return 0;
}
