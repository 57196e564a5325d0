// tests/fuzz/make_seeds — writes the seed corpus of every fuzz target into
// tests/fuzz/corpus/<target>/ (or the directory given as the first argument). The seeds are
// small valid inputs (and a few near misses) that the fuzzer mutates; they are committed, and
// this program says how they were made: build with STRAND_FUZZ=ON, run build-fuzz/tests/fuzz/fuzz_make_seeds.
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "export/coreml/gpt2_export.h"
#include "formats/safetensors.h"
#include "fuzz_util.h"
#include "seed_models.h"

using namespace strand;
namespace fs = std::filesystem;

namespace {

fs::path out_root;
int written = 0;

void seed(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path d = out_root / target;
  fs::create_directories(d);
  fuzz::write_file(d / name, bytes);
  ++written;
}

std::string small_safetensors(bool with_metadata) {
  Tensor a = Tensor::empty({2, 3}, DType::F32), b = Tensor::empty({5}, DType::F16), c = Tensor::empty({0, 4}, DType::BF16);
  Tensor d = Tensor::empty({3}, DType::I32), e = Tensor::empty({1, 1, 2}, DType::F64);
  for (int i = 0; i < 6; ++i) a.ptr<float>()[i] = float(i) - 2.5f;
  for (int i = 0; i < 5; ++i) b.ptr<uint16_t>()[i] = uint16_t(0x3c00 + 7 * i);
  for (int i = 0; i < 3; ++i) d.ptr<int32_t>()[i] = 1 - i;
  for (int i = 0; i < 2; ++i) e.ptr<double>()[i] = 0.5 * i;
  const fs::path p = fuzz::scratch_dir() / "s.safetensors";
  write_safetensors(p.string(), {{"a", a}, {"b", b}, {"c", c}, {"d", d}, {"e", e}},
                    with_metadata ? std::map<std::string, std::string>{{"format", "pt"}} : std::map<std::string, std::string>{});
  return fuzz::read_file(p);
}

}  // namespace

int main(int argc, char** argv) {
  out_root = argc > 1 ? fs::path(argv[1]) : fuzz::source_dir() / "tests/fuzz/corpus";
  const fs::path fixtures = fuzz::source_dir() / "tests/fixtures/gpt2";

  // safetensors
  seed("safetensors", "tensors", small_safetensors(false));
  seed("safetensors", "tensors-metadata", small_safetensors(true));
  seed("safetensors", "tiny-gpt2-bf16", fuzz::tiny_model_files(fuzz::tiny_config(), DType::BF16, 1).safetensors);

  // safetensors_index (the shards the target lays out: a.safetensors {x, y}, b.safetensors {z})
  seed("safetensors_index", "index", R"({"metadata": {"total_size": 48}, "weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}})");
  seed("safetensors_index", "index-one-shard", R"({"weight_map": {"z": "b.safetensors"}, "metadata": null})");
  seed("safetensors_index", "index-outside", R"({"weight_map": {"w": "../outside.safetensors"}})");

  // gpt2_config
  for (const char* m : {"tiny-f32", "tiny-gelu"}) seed("gpt2_config", m, fuzz::read_file(fixtures / m / "config.json"));
  seed("gpt2_config", "minimal", R"({"n_layer": 1, "n_embd": 8, "n_head": 2, "n_ctx": 8, "vocab_size": 16, "eos_token_id": [3, 4]})");

  // tokenizer_files: mode byte 0 vocab.json, 1 merges.txt, 2 tokenizer.json
  const fuzz::TokenizerFiles tf = fuzz::small_tokenizer_files();
  seed("tokenizer_files", "vocab", std::string(1, '\0') + tf.vocab);
  seed("tokenizer_files", "merges", std::string(1, '\1') + tf.merges);
  seed("tokenizer_files", "tokenizer-json", std::string(1, '\2') + tf.tokenizer_json);

  // tokenizer_roundtrip: some of the golden texts
  const auto golden = nlohmann::json::parse(fuzz::read_file(fuzz::source_dir() / "tests/fixtures/tokenizer_golden.json"));
  int k = 0;
  for (const auto& c : golden) {
    const std::string text = c["text"].get<std::string>();
    if (text.empty() || text.size() > 300 || k >= 12) continue;
    seed("tokenizer_roundtrip", "golden-" + std::to_string(k++), text);
  }

  // model_dir: mode byte (bits 0-1: as stored, f16, bf16, int8; bits 2-7: the token), config, model
  const struct {
    const char* name;
    Gpt2Config cfg;
    DType dtype;
    uint8_t mode;
  } models[] = {{"f32", fuzz::tiny_config(1), DType::F32, 0 | (3 << 2)},
                {"f16-2layers", fuzz::tiny_config(2), DType::F16, 0 | (5 << 2)},
                {"bf16-as-int8", fuzz::tiny_config(1), DType::BF16, 3 | (1 << 2)},
                {"untied-to-f16", fuzz::tiny_config(1, false), DType::F32, 1 | (9 << 2)}};
  for (const auto& m : models) {
    const fuzz::ModelFiles f = fuzz::tiny_model_files(m.cfg, m.dtype, 7);
    seed("model_dir", m.name, std::string(1, char(m.mode)) + fuzz::join_sections({f.config, f.safetensors}));
  }

  // coreml_reader: the tiny model exported for prefill and for decode
  {
    const fs::path d = fuzz::scratch_dir() / "export-src";
    save_gpt2_dir(d.string(), fuzz::tiny_config(1), random_gpt2_weights(fuzz::tiny_config(1), 3, DType::F32));
    const Gpt2Model model = Gpt2Model::load(d.string());
    for (const char* mode : {"prefill", "decode"}) {
      coreml::ExportOptions o;
      o.mode = mode;
      o.seq = 4;
      const fs::path pkg = fuzz::scratch_dir() / (std::string(mode) + ".mlpackage");
      coreml::export_gpt2_coreml(model, pkg.string(), o);
      seed("coreml_reader", mode,
           fuzz::join_sections({fuzz::read_file(pkg / "Manifest.json"),
                                fuzz::read_file(pkg / "Data/com.apple.CoreML/model.mlmodel"),
                                fuzz::read_file(pkg / "Data/com.apple.CoreML/weights/weight.bin")}));
    }
  }

  // cli: arguments separated by NUL, run in a copy of tiny-f32
  const std::vector<std::vector<std::string>> cli = {
      {"generate", "-m", ".", "-p", "Hello", "-n", "4", "--temp", "0", "--json"},
      {"generate", "-m", ".", "-p", "hi", "-n", "3", "--temp", "0.8", "--top-k", "5", "--top-p", "0.9", "--seed", "3",
       "--weights", "int8", "--backend", "cpu,naive"},
      {"tokenize", "-m", ".", "-p", "Hello world <|endoftext|>", "--json"},
      {"tokenize", "-m", ".", "-f", "ppl.txt"},
      {"perplexity", "-m", ".", "-f", "ppl.txt", "--stride", "3", "--json"},
      {"explain", "--tier", "ane", "-m", "."},
      {"generate", "-h"}};
  int n = 0;
  for (const auto& args : cli) {
    std::string s;
    for (size_t i = 0; i < args.size(); ++i) s += (i ? std::string(1, '\0') : std::string()) + args[i];
    seed("cli", "args-" + std::to_string(n++), s);
  }

  std::printf("wrote %d seeds under %s\n", written, out_root.c_str());
  return 0;
}
