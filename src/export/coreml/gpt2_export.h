// strand/export/coreml/gpt2_export.h — a GPT-2 model as a Core ML ML Program in the layout the
// Apple Neural Engine wants.
//
// Layout (after Apple's "Deploying Transformers on the Apple Neural Engine"):
//   - activations are channels-first (B, C, 1, S) fp16 tensors, B = 1;
//   - every linear layer is a 1x1 convolution with weight (out, in, 1, 1);
//   - attention is split per head: (1, D, 1, S) slices, one matmul pair and softmax per head;
//     the 1/sqrt(D) scale is folded into the query part of c_attn;
//   - the causal mask is an additive input (no conditional masking);
//   - the vocabulary projection is cut into chunks of at most 16384 output channels;
//   - weights and compute are fp16; every shape is fixed.
//
// Two programs, each for one fixed shape:
//   prefill (T = S new tokens, no cache):
//     in:  input_ids int32 (1, S), position_ids int32 (1, S), attn_mask fp16 (1, 1, S, S)
//     out: logits_0..logits_{n-1} fp16 (1, Vi, 1, S), new_k_l / new_v_l fp16 (1, C, 1, S)
//   decode (T = 1 new token against a KV cache of N slots):
//     in:  input_ids (1, 1), position_ids (1, 1), attn_mask (1, 1, 1, N + 1),
//          k_cache_l / v_cache_l fp16 (1, C, 1, N)
//     out: logits_i (1, Vi, 1, 1), new_k_l / new_v_l (1, C, 1, 1)
// (decode with ExportOptions::tokens = T > 1 takes T new tokens against the cache the same way;
// with host_embeddings the program takes token_embeddings / position_embeddings, fp16
// (1, C, 1, T), instead of ids and positions: the layout the coreml tier uses.)
// Attention keys are [cache slots 0..N-1, then the T new tokens]; attn_mask[0, 0, t, j] is 0
// where query t may attend key j and kMaskedValue elsewhere. The caller writes new_k/new_v of
// a token at position p into cache slot p (the program never writes its inputs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "export/coreml/mil.h"
#include "model/gpt2_weights.h"

namespace strand::coreml {

inline constexpr float kMaskedValue = -10000.0f;  // attn_mask entry for a key that must not be seen
inline constexpr int64_t kAneMaxChannels = 16384;

struct ExportOptions {
  std::string mode = "prefill";  // prefill | decode
  int64_t seq = 0;               // prefill: tokens per call; decode: KV-cache slots. 0: n_positions
  int64_t vocab_chunk = kAneMaxChannels;
  int64_t tokens = 1;            // decode only: new tokens per call (T)
  // The embedding lookup stays on the host (it is not ANE work): the program takes
  // token_embeddings and position_embeddings, fp16 (1, C, 1, T), instead of ids and positions.
  bool host_embeddings = false;
  std::string source;            // the source model recorded in the metadata (default: the model's dir)
};

struct Gpt2Program {
  MilFunction fn;
  ModelInfo info;
  std::string mode;
  int64_t tokens = 0;  // T: new tokens per call
  int64_t cache = 0;   // N: KV-cache slots (0 for prefill)
  std::vector<int64_t> logits_chunks;  // vocabulary size of each logits_i
};

// Builds the program; weights are streamed to `blob` (a dry-run WeightBlob("") for analysis).
// Throws strand::Error for options the model cannot take (seq beyond the context, bad mode).
Gpt2Program build_gpt2_program(const Gpt2Model& m, const ExportOptions& o, WeightBlob& blob);

struct ExportResult {
  std::string path;
  Gpt2Program program;
  uint64_t weight_bytes = 0;
  uint32_t blobs = 0;
  uint64_t content_hash = 0;
};

// Writes `out_path` (an .mlpackage directory).
ExportResult export_gpt2_coreml(const Gpt2Model& m, const std::string& out_path, const ExportOptions& o);

}  // namespace strand::coreml
