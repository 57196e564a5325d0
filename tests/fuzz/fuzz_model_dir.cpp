// Fuzz target: a whole model directory loaded as `strand generate` loads it, then one forward
// step (prefill and one decode) on the naive tier and on the cpu tier, which must succeed. The input is
//   <mode byte> config.json <separator> model.safetensors
// where the mode byte picks the weights the model runs in (as stored, f16, bf16 or int8; bits
// 0-1) and the token fed (bits 2-7, modulo the vocabulary). Configs whose weights would pass
// kMaxParameters are skipped before the file is read, so the fuzzer spends its time on the
// loader and the forward pass, not on allocating.
#include <cstdint>

#include "backends/registry.h"
#include "fuzz_util.h"
#include "model/gpt2.h"
#include "model/gpt2_weights.h"
#include "model/weight_cast.h"

using namespace strand;

namespace {

constexpr int64_t kMaxParameters = 1 << 20;

int64_t parameters(const Gpt2Config& c) {
  const int64_t C = c.n_embd, F = c.n_inner;
  return int64_t(c.vocab_size) * C * (c.tie_word_embeddings ? 1 : 2) + int64_t(c.n_positions) * C +
         int64_t(c.n_layer) * (4 * C * C + 2 * C * F + 9 * C + F) + 2 * C;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const auto parts = fuzz::sections(data + 1, size - 1, 2);
  const fuzz::fs::path dir = fuzz::scratch_dir() / "model";
  fuzz::fs::create_directories(dir);
  fuzz::write_file(dir / "config.json", parts[0]);
  fuzz::write_file(dir / "model.safetensors", parts.size() > 1 ? parts[1] : std::string());

  Gpt2Config cfg;
  if (!fuzz::handled([&] { cfg = Gpt2Config::load((dir / "config.json").string()); })) return 0;
  if (parameters(cfg) > kMaxParameters) return 0;

  Gpt2Model m;
  if (!fuzz::handled([&] { m = Gpt2Model::load(dir.string()); })) return 0;
  const DType kinds[] = {m.weights.dtype, DType::F16, DType::BF16, DType::Q8};
  if (!fuzz::handled([&] { m.weights = cast_gpt2_weights(m.weights, kinds[mode & 3], MatrixLayout::ColMajor); }))
    return 0;  // int8 refuses non-finite weights
  const int32_t id = int32_t((mode >> 2) % uint32_t(m.config.vocab_size));
  // A model that loaded must run: any error here is a finding.
  for (const char* tier : {"naive", "cpu,naive"}) {
    try {
      Gpt2Runner runner(m, make_chain(tier), {/*strict=*/false, /*poison=*/true});
      KvCache cache = runner.new_cache(2);
      const int32_t ids[1] = {id};
      const Tensor logits = runner.forward(ids, cache, false);
      if (logits.shape != Shape{1, m.config.vocab_size}) fuzz::finding("logits of the wrong shape");
      if (m.config.n_positions < 2) continue;
      const Tensor again = runner.forward(ids, cache, false);  // one decode step on the cache
      if (again.shape != Shape{1, m.config.vocab_size}) fuzz::finding("logits of the wrong shape");
    } catch (const std::exception& e) {
      fuzz::finding(std::string("a loaded model failed to run on ") + tier + ": " + e.what());
    }
  }
  return 0;
}
