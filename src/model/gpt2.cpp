#include "model/gpt2.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include <unistd.h>

#include <new>

#include "core/error.h"
#include "core/file_io.h"
#include "runtime/runtime.h"

namespace strand {

namespace {

struct LmGraphOptions {
  int64_t seqs = 1;      // sequences stacked by rows (training batches)
  int64_t past = 0;      // tokens already in the KV cache
  bool kv_cache = true;  // append k, v to cache state values (inference) or attend to this pass's only
  int64_t cache_rows = 0;  // rows of the KV cache state values (0: the context, n_positions)
  bool all_logits = false;
};

// The GPT-2 graph for `t` tokens per sequence (see gpt2.h).
ForwardGraph build_lm_graph(const Gpt2Model& m, int64_t t, const LmGraphOptions& o) {
  const Gpt2Config& cfg = m.config;
  const Gpt2Weights& w = m.weights;
  const int64_t C = cfg.n_embd;
  const int64_t past = o.past, rows = o.seqs * t;
  const bool all_logits = o.all_logits;
  if (t <= 0) fail("forward: no tokens to run");
  if (o.seqs <= 0) fail("forward: {} sequences", o.seqs);
  if (past < 0 || past + t > cfg.n_positions)
    fail("forward: {} cached + {} new tokens exceed the model's context of {}", past, t, cfg.n_positions);
  if (!o.kv_cache && past > 0) fail("forward: a graph without KV cache cannot start after {} cached tokens", past);
  const int64_t cache_rows = o.cache_rows > 0 ? o.cache_rows : cfg.n_positions;
  if (o.kv_cache && past + t > cache_rows)
    fail("forward: {} cached + {} new tokens exceed the KV cache of {} tokens", past, t, cache_rows);
  Act act;
  if (!parse_hf_activation(cfg.activation_function, &act))
    fail("activation_function '{}' is not supported", cfg.activation_function);

  ForwardGraph fg;
  Graph& g = fg.graph;
  std::map<std::string, ValueId> by_name;  // one value per weight tensor, however often it is used
  auto weight = [&](const std::string& name, const Tensor& tensor) {
    const auto it = by_name.find(name);
    if (it != by_name.end()) return it->second;
    const ValueId v = g.weight(name, tensor.shape, tensor.dtype);
    fg.weights.emplace_back(v, tensor);
    by_name[name] = v;
    return v;
  };
  auto linear = [&](ValueId x, const Tensor& wt, const Tensor& b, const std::string& name) {
    return g.add(OpKind::Linear, {x, weight(name + ".weight", wt), weight(name + ".bias", b)}, {}, name);
  };
  auto layernorm = [&](ValueId x, const Tensor& gain, const Tensor& bias, const std::string& name) {
    Attrs a;
    a.eps = cfg.layer_norm_epsilon;
    return g.add(OpKind::LayerNorm, {x, weight(name + ".weight", gain), weight(name + ".bias", bias)}, a, name);
  };

  fg.ids = g.input("ids", {rows}, DType::I32);
  fg.pos = g.input("positions", {rows}, DType::I32);
  const ValueId tok = g.add(OpKind::GatherRows, {weight("wte.weight", w.wte), fg.ids}, {}, "wte");
  const ValueId pos = g.add(OpKind::GatherRows, {weight("wpe.weight", w.wpe), fg.pos}, {}, "wpe");
  ValueId x = g.add(OpKind::Add, {tok, pos}, {}, "embed");

  for (int l = 0; l < cfg.n_layer; ++l) {
    const Gpt2Layer& L = w.layers[size_t(l)];
    const std::string p = fmt::format("h.{}.", l);
    const ValueId a = layernorm(x, L.ln_1_w, L.ln_1_b, p + "ln_1");
    const ValueId qkv = linear(a, L.attn_w, L.attn_b, p + "attn.c_attn");
    Attrs sl;
    sl.len = C;
    sl.start = 0;
    const ValueId q = g.add(OpKind::SliceCols, {qkv}, sl, p + "attn.q");
    sl.start = C;
    const ValueId k = g.add(OpKind::SliceCols, {qkv}, sl, p + "attn.k");
    sl.start = 2 * C;
    const ValueId v = g.add(OpKind::SliceCols, {qkv}, sl, p + "attn.v");
    ValueId keys = k, vals = v;
    if (o.kv_cache) {
      Attrs kv;
      kv.past = past;
      fg.k_cache.push_back(g.state(p + "k_cache", {cache_rows, C}, DType::F32));
      fg.v_cache.push_back(g.state(p + "v_cache", {cache_rows, C}, DType::F32));
      keys = g.add(OpKind::KvStore, {fg.k_cache.back(), k}, kv, p + "attn.k_store");
      vals = g.add(OpKind::KvStore, {fg.v_cache.back(), v}, kv, p + "attn.v_store");
    }
    Attrs at;
    at.heads = cfg.n_head;
    at.past = past;
    at.seqs = o.seqs;
    const ValueId att = g.add(OpKind::Attention, {q, keys, vals}, at, p + "attn");
    const ValueId proj = linear(att, L.attn_proj_w, L.attn_proj_b, p + "attn.c_proj");
    x = g.add(OpKind::Add, {x, proj}, {}, p + "attn.residual");

    const ValueId m2 = layernorm(x, L.ln_2_w, L.ln_2_b, p + "ln_2");
    ValueId h = linear(m2, L.fc_w, L.fc_b, p + "mlp.c_fc");
    Attrs ac;
    ac.act = act;
    h = g.add(OpKind::Activation, {h}, ac, p + "mlp.act");
    h = linear(h, L.fc_proj_w, L.fc_proj_b, p + "mlp.c_proj");
    x = g.add(OpKind::Add, {x, h}, {}, p + "mlp.residual");
  }
  x = layernorm(x, w.ln_f_w, w.ln_f_b, "ln_f");
  if (!all_logits && rows > 1) {
    if (o.seqs > 1) fail("forward: the last token's logits of several sequences are not supported");
    Attrs last;
    last.start = t - 1;
    last.len = 1;
    x = g.add(OpKind::SliceRows, {x}, last, "last_token");
  }
  Attrs tb;
  tb.trans_b = true;
  fg.logits = g.add(OpKind::MatMul, {x, weight(w.tied ? "wte.weight" : "lm_head.weight", w.lm_head)}, tb, "lm_head");
  g.mark_output(fg.logits);
  return fg;
}

}  // namespace

ForwardGraph build_forward(const Gpt2Model& m, int64_t t, int64_t past, bool all_logits, int64_t cache_rows) {
  LmGraphOptions o;
  o.past = past;
  o.all_logits = all_logits;
  o.cache_rows = cache_rows;
  return build_lm_graph(m, t, o);
}

ForwardGraph build_training_forward(const Gpt2Model& m, int64_t seqs, int64_t t) {
  LmGraphOptions o;
  o.seqs = seqs;
  o.kv_cache = false;
  o.all_logits = true;
  return build_lm_graph(m, t, o);
}

namespace {

// "h.3.attn.c_attn" -> "linear attn.c_attn": the op and the node's name without its layer.
std::string node_kind(const Node& nd) {
  std::string name = nd.name;
  if (name.rfind("h.", 0) == 0) {
    const size_t dot = name.find('.', 2);
    name = dot == std::string::npos ? name : name.substr(dot + 1);
  }
  const std::string op(op_name(nd.op));
  return name == op ? op : op + " " + name;
}

}  // namespace

double NodeTimes::total() const {
  double t = 0;
  for (const auto& [k, e] : by_kind) t += e.seconds;
  return t;
}

Gpt2Runner::Gpt2Runner(const Gpt2Model& model, std::vector<std::shared_ptr<Backend>> chain, RunnerOptions opt)
    : model_(model), chain_(std::move(chain)), opt_(opt) {
  if (chain_.empty()) fail("no tier to run the model on");
  // A tier with memory of its own gets the weights it runs now, once: the plan of a one-token
  // step says which (resident weights), and later forwards find them there.
  if (std::any_of(chain_.begin(), chain_.end(), [](const auto& b) { return !b->host_memory(); })) {
    const ForwardGraph fg = build_forward(model_, 1, 0, false);
    std::vector<Tensor> bound(fg.graph.values().size());
    for (const auto& [v, tensor] : fg.weights) bound[size_t(v)] = tensor;
    Plan plan;
    try {
      plan = make_plan(fg.graph, chain_, false, &bound);
    } catch (const Error&) {
      return;  // no tier takes some node: forward() says which
    }
    for (const Transfer& t : plan.transfers)
      if (t.weight) chain_[size_t(t.to)]->resident(bound[size_t(t.value)]);
  }
}

KvCache Gpt2Runner::new_cache(int64_t capacity) const {
  const Gpt2Config& cfg = model_.config;
  if (capacity <= 0 || capacity > cfg.n_positions) capacity = cfg.n_positions;
  // Keys and values of every layer: 2 * n_layer tensors of [capacity, C].
  const DType front_dt = chain_.front()->activation_dtype();
  const uint64_t bytes =
      2 * uint64_t(cfg.n_layer) * uint64_t(capacity) * uint64_t(cfg.n_embd) * dtype_size(front_dt);
  const auto too_big = [&](const std::string& why) {
    fail("the KV cache for {} tokens (2 x {} layers x [{}, {}] {}) needs {}, {}", capacity, cfg.n_layer, capacity,
         cfg.n_embd, dtype_name(front_dt), human_bytes(bytes), why);
  };
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0 && bytes > uint64_t(pages) * uint64_t(page))
    too_big(fmt::format("more than this machine's {} of memory (ask for fewer tokens)",
                        human_bytes(uint64_t(pages) * uint64_t(page))));
  // Each layer's cache lives where the tier that writes it (kv_store) runs: the plan of a
  // one-token step says where, and in which dtype that tier keeps activations.
  const ForwardGraph fg = build_forward(model_, 1, 0, false, capacity);
  Plan plan;
  try {
    plan = make_plan(fg.graph, chain_, false);
  } catch (const Error&) {
    plan = {};  // no tier takes some node (forward() says which): the cache stays on the host
  }
  auto make = [&](ValueId state) {
    const Shape shape = {capacity, cfg.n_embd};
    DType dt = front_dt;
    if (plan.home.empty()) return Tensor::empty(shape, dt);
    for (NodeId n = 0; n < NodeId(fg.graph.nodes().size()); ++n)
      if (fg.graph.node(n).op == OpKind::KvStore && fg.graph.node(n).inputs[0] == state) {
        dt = chain_[size_t(plan.placement[size_t(n)].tier)]->activation_dtype();
        break;
      }
    const MemoryId m = plan.home[size_t(state)];
    return m == kHost ? Tensor::empty(shape, dt) : chain_[size_t(m)]->allocate(shape, dt);
  };
  KvCache c;
  c.capacity = capacity;
  try {
    for (int l = 0; l < cfg.n_layer; ++l) {
      c.k.push_back(make(fg.k_cache[size_t(l)]));
      c.v.push_back(make(fg.v_cache[size_t(l)]));
    }
  } catch (const std::bad_alloc&) {
    too_big("and memory ran out allocating it (ask for fewer tokens)");
  } catch (const Error& e) {
    too_big(fmt::format("and allocating it failed: {}", e.what()));
  }
  return c;
}

Tensor Gpt2Runner::forward(std::span<const int32_t> ids, KvCache& cache, bool all_logits) {
  const int64_t t = int64_t(ids.size());
  if (cache.len + t > cache.capacity)
    fail("{} cached + {} new tokens exceed the context of {} tokens", cache.len, t, cache.capacity);
  const int32_t V = model_.config.vocab_size;
  for (int32_t id : ids)
    if (id < 0 || id >= V) fail("token id {} is out of range for a vocabulary of {}", id, V);

  if (int64_t(cache.k.size()) != model_.config.n_layer || int64_t(cache.v.size()) != model_.config.n_layer)
    fail("the KV cache holds {} layers, the model has {}", cache.k.size(), model_.config.n_layer);
  ForwardGraph fg = build_forward(model_, t, cache.len, all_logits, cache.capacity);

  std::vector<Tensor> values(fg.graph.values().size());
  Tensor tid = Tensor::empty({t}, DType::I32), tpos = Tensor::empty({t}, DType::I32);
  for (int64_t i = 0; i < t; ++i) {
    tid.ptr<int32_t>()[i] = ids[size_t(i)];
    tpos.ptr<int32_t>()[i] = int32_t(cache.len + i);
  }
  values[size_t(fg.ids)] = tid;
  values[size_t(fg.pos)] = tpos;
  for (const auto& [v, tensor] : fg.weights) values[size_t(v)] = tensor;
  for (size_t l = 0; l < fg.k_cache.size(); ++l) {
    values[size_t(fg.k_cache[l])] = cache.k[l];
    values[size_t(fg.v_cache[l])] = cache.v[l];
  }
  Plan plan = make_plan(fg.graph, chain_, opt_.strict, &values);
  RunOptions ro;
  ro.poison = opt_.poison;
  ro.time_nodes = opt_.time_nodes;
  const RunStats st = execute(fg.graph, plan, values, ro);
  seconds_ += st.seconds;
  for (size_t n = 0; n < st.node_seconds.size(); ++n) {
    const Node& nd = fg.graph.node(NodeId(n));
    NodeTimes::Entry& e = node_times_.by_kind[node_kind(nd)];
    e.seconds += st.node_seconds[n];
    ++e.calls;
  }
  cache.len += t;

  Tensor logits = values[size_t(fg.logits)];
  last_stats_ = st;
  last_plan_ = std::move(plan);
  last_graph_ = std::move(fg.graph);
  return logits;
}

}  // namespace strand
