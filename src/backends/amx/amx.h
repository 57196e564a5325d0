// strand/backends/amx — the `amx` tier: Intel AMX tiles for matrix products and prefill attention.
//
// What it takes (supports()):
//   matmul, linear   from a crossover in rows M that `strand devices` measures against the cpu
//                    tier, per weight kind (cached; kAmxDefaultMinRows without a measurement):
//                    decode stays below.
//                    f32/f16/bf16 weights: bf16 tiles (TDPBF16PS); q8 weights blocked along K:
//                    int8 tiles (TDPBSSD) with the weights' block scales, activations quantized
//                    per row in blocks of 32 on the fly. f32 accumulation; bias, and a following
//                    activation (GELU), in the tile epilogue.
//   matmul_at        the weight gradients of a training step (aᵀ · b: a packed transposed, b
//                    packed per run), bf16 tiles.
//   activation       only right after a product it runs (fused into that product's epilogue).
//   attention        prefill (at least kAmxAttnMinQueries queries): flash-attention style on
//                    tiles, bf16 Q·Kᵀ and P·V, f32 online softmax, causal. Not on AVX-512-BF16
//                    unless asked (AmxOptions::min_attention_queries): the cpu tier is faster.
// Weights are converted once, at their first use, into the tile layout (amx/pack.h) and kept
// for as long as the weight tensor lives; in a graph with a loss (a training or evaluation
// step, whose optimizer updates the weights in place) they are packed again on every run.
//
// Precision (Backend::precision, core/rounding.h): the bf16 path rounds activations and
// weights to bf16; the int8 path quantizes activations as Rounding::Q8; attention rounds q, k,
// v and the softmax weights P to bf16. validate judges the tier on inputs rounded that way.
//
// Where AMX is missing (the CPU, the OS's XCR0, or Linux's permission), probe() says which
// check failed. The same kernels also run on a C++ model of the tile instructions
// (AmxUnit::Model): slow, on any machine, so that the tests prove the kernels' layouts
// everywhere and validate can run the whole tier where there is no AMX. And the bf16 kernels
// run on AVX-512-BF16 as a tier of their own, `avx512bf16` (AmxUnit::Avx512Bf16), which a
// user names to get bf16 products on a CPU without AMX (the registry lists it; it joins no
// default chain, since it changes what is computed). Its products have a register-blocked
// kernel of their own (amx/kernels_avx512bf16.cpp), bit for bit the tile layer's results.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backends/backend.h"

namespace strand {

// Rows from which the tier takes a product when `strand devices` has not measured the
// crossover: two row tiles (the cpu tier keeps decode and short prompts).
constexpr int64_t kAmxDefaultMinRows = 32;
// Queries from which the tier takes attention (one row tile; decode stays on the cpu tier).
constexpr int64_t kAmxAttnMinQueries = 16;

// Whether this process can run AMX here, and if not, which check failed: the build (a compiler
// with the AMX flags, x86-64), CPUID (AMX-TILE, AMX-BF16, AMX-INT8), the OS (XCR0 tile bits),
// Linux's permission (arch_prctl). Checked once; the permission is requested on the first call.
struct AmxStatus {
  bool usable = false;
  std::string reason;  // why not, or what was found
};
AmxStatus amx_status();

// What the tier's kernels run on.
enum class AmxUnit : uint8_t {
  Tiles,       // the AMX instructions: the tier `amx`
  Model,       // the C++ model of them (any machine; slow): the tier `amx` in tests, and
               // validating the kernels and their precision where there is no AMX
  Avx512Bf16,  // AVX-512-BF16 (vdpbf16ps) instead of tiles, bf16 only: the tier `avx512bf16`,
               // for CPUs without AMX; run only when named (never in a default chain)
};

struct AmxOptions {
  AmxUnit unit = AmxUnit::Tiles;
  // Smallest M the tier takes, per path; 0: the measured crossover, else kAmxDefaultMinRows.
  // min_rows_bf16 holds for bf16 tiles whatever the weights' float dtype.
  int64_t min_rows_bf16 = 0;
  int64_t min_rows_int8 = 0;
  // Smallest query count for attention; 0: kAmxAttnMinQueries on AMX tiles, and none at all on
  // AVX-512-BF16 (there the tile kernel, its accumulator tiles in memory, runs a GPT-2 124M
  // prefill's attention ~2.7x slower than the cpu tier's f32 kernel: it is left to the tier
  // below unless asked for, as validate and the tests do).
  int64_t min_attention_queries = 0;
};

std::unique_ptr<Backend> make_amx_backend(const AmxOptions& opt = {});

// Whether this machine runs the avx512bf16 tier, and if not why (the build, CPUID).
AmxStatus avx512bf16_status();

// When `b` is a tier made by make_amx_backend: the same tier taking every product from one row
// and attention from one query (validate checks it on every case, whatever its crossover);
// otherwise nullptr.
std::unique_ptr<Backend> amx_without_crossover(const Backend& b);

// The rows from which the tier takes products at `threads` threads, and where that came from
// ("measured, cache ~/.cache/strand/devices.json" or the default and why).
struct AmxCrossover {
  // bf16 tiles against the cpu tier with f32 weights (which it reads at 4 bytes an element, the
  // tiles at 2) and with f16/bf16 weights (2 bytes either way: decode pays later, if ever).
  int64_t rows_bf16 = kAmxDefaultMinRows, rows_bf16_w16 = kAmxDefaultMinRows, rows_int8 = kAmxDefaultMinRows;
  bool measured = false;
  std::string source;
};
AmxCrossover amx_crossover_for(int threads, const std::string& tier = "amx");

}  // namespace strand
