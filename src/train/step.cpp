#include "train/step.h"

#include <chrono>
#include <cstring>

#include "core/error.h"
#include "graph/autodiff.h"
#include "runtime/runtime.h"

namespace strand {

namespace {

TrainGraph build(const Gpt2Model& m, int64_t seqs, int64_t t, bool backward) {
  if (m.weights.dtype != DType::F32) fail("training needs f32 weights, the model's are {}", dtype_name(m.weights.dtype));
  if (t < 1 || t > m.config.n_positions)
    fail("--ctx {}: must be between 1 and the model's context of {}", t, m.config.n_positions);
  if (seqs < 1) fail("--batch {}: must be at least 1", seqs);
  ForwardGraph fg = build_training_forward(m, seqs, t);
  TrainGraph tg;
  tg.seqs = seqs;
  tg.t = t;
  Graph& g = fg.graph;
  tg.ids = fg.ids;
  tg.pos = fg.pos;
  tg.targets = g.input("targets", {seqs * t}, DType::I32);
  tg.loss = g.add(OpKind::CrossEntropy, {fg.logits, tg.targets}, {}, "loss");
  g.mark_output(tg.loss);
  std::vector<ValueId> wrt;
  for (const auto& [v, tensor] : fg.weights) {
    if (tensor.dtype != DType::F32 || !tensor.contiguous())
      fail("training needs contiguous f32 weights: {} is {} {}", g.value(v).name, dtype_name(tensor.dtype),
           tensor.contiguous() ? "" : "(not contiguous)");
    Param p;
    p.name = g.value(v).name;
    p.value = v;
    p.tensor = tensor;
    p.decay = tensor.rank() == 2;
    tg.params.push_back(p);
    wrt.push_back(v);
  }
  if (backward) {
    const Backward b = append_backward(g, tg.loss, wrt);
    tg.seed = b.seed;
    for (Param& p : tg.params) p.grad = b.grad.at(p.value);
  } else {
    tg.seed = -1;
  }
  tg.graph = g.pruned();
  for (NodeId n = 0; n < NodeId(tg.graph.nodes().size()); ++n) {
    const double f = tg.graph.node_flops(n);
    tg.flops += f;
    const OpKind k = tg.graph.node(n).op;
    if (k == OpKind::MatMul || k == OpKind::MatMulAt || k == OpKind::Linear) tg.matmul_flops += f;
  }
  return tg;
}

}  // namespace

std::string train_node_kind(const Node& n) {
  const std::string op(op_name(n.op));
  const bool product = n.op == OpKind::MatMul || n.op == OpKind::MatMulAt || n.op == OpKind::Linear;
  if (!product) return op;
  std::string name = n.name;
  if (name.rfind("h.", 0) == 0) {
    const size_t dot = name.find('.', 2);
    if (dot != std::string::npos) name = name.substr(dot + 1);
  }
  const size_t grad = name.find(".grad.");
  if (grad != std::string::npos) name = name.substr(0, grad);
  return op + " " + name;
}

TrainGraph build_train_graph(const Gpt2Model& m, int64_t seqs, int64_t t) { return build(m, seqs, t, true); }
TrainGraph build_eval_graph(const Gpt2Model& m, int64_t seqs, int64_t t) { return build(m, seqs, t, false); }

StepRunner::StepRunner(TrainGraph tg, std::vector<std::shared_ptr<Backend>> chain, bool strict)
    : tg_(std::move(tg)), plan_(make_plan(tg_.graph, chain, strict)), values_(tg_.graph.values().size()) {
  const int64_t rows = tg_.seqs * tg_.t;
  values_[size_t(tg_.ids)] = Tensor::empty({rows}, DType::I32);
  values_[size_t(tg_.targets)] = Tensor::empty({rows}, DType::I32);
  Tensor pos = Tensor::empty({rows}, DType::I32);
  for (int64_t i = 0; i < rows; ++i) pos.ptr<int32_t>()[i] = int32_t(i % tg_.t);
  values_[size_t(tg_.pos)] = pos;
  if (tg_.seed >= 0) values_[size_t(tg_.seed)] = Tensor::empty({1}, DType::F32);
  for (const Param& p : tg_.params) values_[size_t(p.value)] = p.tensor;
}

std::shared_ptr<Backend> StepRunner::whole_step_device() const {
  if (plan_.chain.empty()) return nullptr;
  const std::shared_ptr<Backend>& first = plan_.chain.front();
  if (first->host_memory() || !first->trains_in_place()) return nullptr;
  for (const Placement& p : plan_.placement)
    if (p.tier != 0) return nullptr;
  return first;
}

AdamW make_adamw(StepRunner& r, const AdamWConfig& cfg, bool on_device) {
  std::vector<Tensor> params;
  std::vector<bool> decay;
  for (const Param& p : r.params()) {
    params.push_back(p.tensor);
    decay.push_back(p.decay);
  }
  const std::shared_ptr<Backend> device = on_device ? r.whole_step_device() : nullptr;
  r.set_device(device);
  return AdamW(std::move(params), std::move(decay), cfg, device);
}

double StepRunner::run(const int32_t* ids, const int32_t* targets, float loss_scale) {
  const size_t rows = size_t(tg_.seqs * tg_.t);
  std::memcpy(values_[size_t(tg_.ids)].data, ids, rows * sizeof(int32_t));
  std::memcpy(values_[size_t(tg_.targets)].data, targets, rows * sizeof(int32_t));
  if (tg_.seed >= 0) values_[size_t(tg_.seed)].ptr<float>()[0] = loss_scale;
  RunOptions ro;
  ro.reuse_outputs = true;
  ro.time_nodes = time_nodes_;
  if (device_) {
    ro.weights = RunOptions::Weights::Resident;
    for (const Param& p : tg_.params)
      if (p.grad >= 0) ro.outputs_stay.push_back(p.grad);
  } else {
    ro.weights = RunOptions::Weights::Fresh;
  }
  const RunStats st = execute(tg_.graph, plan_, values_, ro);
  seconds_ += st.seconds;
  for (size_t n = 0; n < st.node_seconds.size(); ++n) {
    auto& e = node_times_[train_node_kind(tg_.graph.node(NodeId(n)))];
    e.first += st.node_seconds[n];
    ++e.second;
  }
  return load_as_double(values_[size_t(tg_.loss)].to(DType::F64), 0);
}

}  // namespace strand
