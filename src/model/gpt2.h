// strand/model/gpt2.h — the GPT-2 forward pass as a graph, run on a tier chain, with a KV cache.
//
// build_forward() turns (model, T new tokens, P cached tokens) into a static graph:
//   x = wte[ids] + wpe[pos]
//   per layer l:  a = LN1(x); qkv = a·W_attn + b; k,v appended to the cache;
//                 x += Attention(q, K[0:P+T], V[0:P+T])·W_proj + b
//                 x += act(LN2(x)·W_fc + b)·W_fc_proj + b
//   logits = LN_f(x)·wteᵀ  (all T rows, or only the last)
// Gpt2Runner plans that graph on a chain of tiers and executes it.
#pragma once

#include <map>
#include <memory>
#include <span>
#include <vector>

#include "backends/backend.h"
#include "graph/graph.h"
#include "model/gpt2_weights.h"
#include "planner/planner.h"
#include "runtime/runtime.h"

namespace strand {

// Keys and values of every layer: [capacity, C] each, in the activation dtype of the tier
// that writes them, in that tier's memory (a GPU tier's cache stays on the GPU).
struct KvCache {
  std::vector<Tensor> k, v;
  int64_t len = 0;       // tokens stored
  int64_t capacity = 0;  // max tokens (the model's n_positions at most)
};

struct ForwardGraph {
  Graph graph;
  ValueId ids = -1, pos = -1, logits = -1;
  std::vector<std::pair<ValueId, Tensor>> weights;  // weight values and their tensors
  std::vector<ValueId> k_cache, v_cache;            // state values, one per layer
};

// The forward graph for `t` new tokens after `past` cached ones; logits for every new token
// when all_logits, else only for the last. The KV cache state values have `cache_rows` rows
// (0: the model's context length n_positions; past + t must fit).
ForwardGraph build_forward(const Gpt2Model& m, int64_t t, int64_t past, bool all_logits, int64_t cache_rows = 0);

// The forward graph of a training step: `seqs` sequences of `t` tokens each, stacked by rows
// (ids and positions [seqs * t]), no KV cache (attention reads the step's own keys and values),
// logits for every token [seqs * t, V]. Each weight tensor is one graph value, even when it is
// used twice (a tied wte feeds the embedding and the lm_head): its gradient sums both uses.
ForwardGraph build_training_forward(const Gpt2Model& m, int64_t seqs, int64_t t);

struct RunnerOptions {
  bool strict = false;  // --no-fallback
  bool poison = false;  // NaN-fill every intermediate before running
  bool time_nodes = false;  // time every node (RunOptions::time_nodes) into node_times()
};

// Where forward passes spent their time, by kind of node: "linear attn.c_attn",
// "matmul lm_head", "attention", "layernorm", ... (layers folded together).
struct NodeTimes {
  struct Entry {
    double seconds = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Entry> by_kind;
  double total() const;
};

// A chain with a tier that has memory of its own gets the weights it runs at construction
// (resident copies, uploaded once); later forwards copy only what crosses (planner.h).
class Gpt2Runner {
 public:
  Gpt2Runner(const Gpt2Model& model, std::vector<std::shared_ptr<Backend>> chain, RunnerOptions opt = {});

  // A cache for `capacity` tokens (0, or more than the context: the model's context length).
  // Only what is asked for is allocated, so a model with a long context costs memory only for
  // the tokens a run uses; a cache larger than this machine's memory is refused naming its size.
  KvCache new_cache(int64_t capacity = 0) const;
  // Feeds `ids` after the cache's contents and appends them to it. Returns the logits in the
  // first tier's activation dtype (f32; f64 on the reference): [ids.size(), V] when
  // all_logits, else [1, V] for the last token.
  Tensor forward(std::span<const int32_t> ids, KvCache& cache, bool all_logits);

  const Gpt2Model& model() const { return model_; }
  const std::vector<std::shared_ptr<Backend>>& chain() const { return chain_; }
  // The plan of the most recent forward() (for --explain), with its graph.
  const Plan& last_plan() const { return last_plan_; }
  const Graph& last_graph() const { return last_graph_; }
  double seconds() const { return seconds_; }  // time spent executing graphs so far
  const RunStats& last_stats() const { return last_stats_; }  // of the most recent forward()
  const NodeTimes& node_times() const { return node_times_; }  // with RunnerOptions::time_nodes
  void clear_node_times() { node_times_ = {}; }

 private:
  const Gpt2Model& model_;
  std::vector<std::shared_ptr<Backend>> chain_;
  RunnerOptions opt_;
  Plan last_plan_;
  Graph last_graph_;
  double seconds_ = 0;
  RunStats last_stats_;
  NodeTimes node_times_;
};

}  // namespace strand
