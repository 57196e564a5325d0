// strand/train/step.h — one training step of a GPT-2 as one graph: forward, loss, backward.
//
// build_train_graph() takes the forward graph of `seqs` sequences of `t` tokens
// (build_training_forward), appends the mean cross-entropy against the targets, appends the
// gradients of every weight (graph/autodiff.h) and prunes what nothing needs. The graph is
// then planned once on a tier chain, like any inference graph (--explain shows the backward
// nodes and where each ran), and StepRunner runs it step after step on the same buffers.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "model/gpt2.h"
#include "planner/planner.h"
#include "train/adamw.h"

namespace strand {

struct Param {
  std::string name;     // Hugging Face name without prefix: "h.0.attn.c_attn.weight"
  ValueId value = -1;   // the weight's graph value
  ValueId grad = -1;    // its gradient
  Tensor tensor;        // the weight (f32, shared with the model's weights)
  bool decay = false;   // AdamW weight decay applies (rank 2: matrices and embeddings)
};

struct TrainGraph {
  Graph graph;                 // forward + loss + backward, pruned
  ValueId ids = -1, pos = -1;  // i32 [seqs * t]
  ValueId targets = -1;        // i32 [seqs * t]
  ValueId loss = -1;           // [1] mean cross-entropy
  ValueId seed = -1;           // [1] d(objective)/d(loss): 1, or a loss scale
  std::vector<Param> params;   // every weight, in graph order
  int64_t seqs = 0, t = 0;
  double flops = 0;            // one step's FLOPs (graph total)
  double matmul_flops = 0;     // of which matrix products (matmul, matmul_at, linear)
};

// The model's weights must be f32 (the optimizer updates them in place).
TrainGraph build_train_graph(const Gpt2Model& m, int64_t seqs, int64_t t);
// Forward and loss only (for validation loss): no backward, params' grads stay -1.
TrainGraph build_eval_graph(const Gpt2Model& m, int64_t seqs, int64_t t);

class StepRunner {
 public:
  StepRunner(TrainGraph tg, std::vector<std::shared_ptr<Backend>> chain, bool strict);

  // Runs the graph on ids and targets ([seqs * t] each); returns the loss. Gradients are then
  // in grad(i) for params()[i] (when the graph has a backward).
  double run(const int32_t* ids, const int32_t* targets, float loss_scale = 1.0f);
  // The gradient of params()[i]: on the host, or in the device's memory after set_device.
  const Tensor& grad(size_t i) const { return values_[size_t(tg_.params[i].grad)]; }

  // The tier that runs every node of this step when it trains in place (Backend::
  // trains_in_place), else null: a trainer may then keep its state there (AdamW's device).
  std::shared_ptr<Backend> whole_step_device() const;
  // Where the optimizer keeps the weights. Null (the default): on the host, updated in place
  // between runs, so tiers with memory of their own read fresh copies on every run. A device:
  // its resident copies are the weights (updated there), read as they are, and the gradients
  // stay in its memory.
  void set_device(std::shared_ptr<Backend> device) { device_ = std::move(device); }
  const std::vector<Param>& params() const { return tg_.params; }
  const TrainGraph& graph() const { return tg_; }
  const Plan& plan() const { return plan_; }
  double seconds() const { return seconds_; }  // time spent running graphs

  // With time_nodes, each run hands the tiers one node at a time and adds every node's time to
  // node_times(), by kind: the op, and for products the weight or value they involve with
  // layers folded together ("matmul_at mlp.c_fc", "attention_backward", ...).
  void set_time_nodes(bool on) { time_nodes_ = on; }
  const std::map<std::string, std::pair<double, int64_t>>& node_times() const { return node_times_; }
  void clear_node_times() { node_times_.clear(); }

 private:
  TrainGraph tg_;
  Plan plan_;
  std::shared_ptr<Backend> device_;
  std::vector<Tensor> values_;
  double seconds_ = 0;
  bool time_nodes_ = false;
  std::map<std::string, std::pair<double, int64_t>> node_times_;  // kind -> (seconds, calls)
};

// AdamW over r's parameters (weight decay on the matrices). With `on_device` and the whole step
// on a tier that trains in place, it runs there and r keeps its state there (set_device);
// otherwise on the host.
AdamW make_adamw(StepRunner& r, const AdamWConfig& cfg, bool on_device = true);

// "h.3.mlp.c_fc.grad.w" as matmul_at -> "matmul_at mlp.c_fc": the kind a profile groups by.
std::string train_node_kind(const Node& n);

}  // namespace strand
