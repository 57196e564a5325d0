// strand/export/coreml/segment.h — the part of a GPT-2 forward graph the coreml tier runs as
// one compiled Core ML program, and the packing of that program's inputs and outputs.
//
// With the ANE rules the planner places everything of a graph from build_forward() on the
// coreml tier except the two embedding gathers (not ANE work), which fall back to the next
// tier. The coreml segment is therefore `embed` .. `lm_head`: plan_segment() recognizes it,
// rebuilds the model's configuration and weight views from the graph and its bound values, and
// picks the program (prefill for an empty cache, else T tokens against the KV cache, both with
// the embeddings computed on the host). segment_inputs()/segment_outputs() convert between
// strand's row-major f32 tensors and the program's channels-first fp16 arrays and apply the KV
// cache writes. Everything here is portable C++, so the Apple backend's logic is tested on
// every OS with an independent reader standing in for Core ML; only compiling, loading and
// predicting live in coreml_backend.mm.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "export/coreml/gpt2_export.h"
#include "graph/graph.h"
#include "model/gpt2_weights.h"

namespace strand::coreml {

struct Segment {
  Gpt2Model model;        // configuration and weight views taken from the graph
  ExportOptions options;  // the program this segment needs
  int64_t tokens = 0, past = 0, slots = 0;
  bool all_logits = true;
  ValueId tok = -1, pos = -1, logits = -1;   // host gathers' outputs, the graph's logits
  std::vector<ValueId> k_cache, v_cache;     // state values, one per layer
  std::string key() const;                   // one compiled program per key
};

// Throws strand::Error saying why when `nodes` is not the embed .. lm_head part of a GPT-2
// forward graph with its weights bound in `values`.
Segment plan_segment(const Graph& g, std::span<const NodeId> nodes, const std::vector<Tensor>& values);

// One input or output array of the program: fp16 bits or int32, row-major in `shape`.
struct HostArray {
  std::string name;
  std::vector<int64_t> shape;
  bool is_int = false;
  std::vector<uint16_t> f16;
  std::vector<int32_t> i32;
};

std::vector<HostArray> segment_inputs(const Segment& s, const std::vector<Tensor>& values);
// `get(name)` returns the program's output array of that name. Writes the logits into
// values[s.logits] and the new keys/values into the cache rows [past, past + T).
void segment_outputs(const Segment& s, std::vector<Tensor>& values,
                     const std::function<const HostArray&(const std::string&)>& get);

}  // namespace strand::coreml
