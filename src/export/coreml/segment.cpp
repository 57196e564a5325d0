#include "export/coreml/segment.h"

#include <map>

#include <fmt/format.h>

#include "core/error.h"

namespace strand::coreml {

std::string Segment::key() const {
  return fmt::format("{}-t{}-n{}", options.mode, tokens, options.mode == "decode" ? slots : 0);
}

namespace {

const char* hf_activation(Act a) {
  switch (a) {
    case Act::GeluTanh: return "gelu_new";
    case Act::GeluErf: return "gelu";
    case Act::Relu: return "relu";
    case Act::Silu: return "silu";
    case Act::QuickGelu: return "quick_gelu";
  }
  return "gelu_new";
}

}  // namespace

Segment plan_segment(const Graph& g, std::span<const NodeId> nodes, const std::vector<Tensor>& values) {
  std::map<std::string, const Node*> by_name;
  for (const Node& n : g.nodes()) by_name[n.name] = &n;
  auto node = [&](const std::string& name) -> const Node& {
    const auto it = by_name.find(name);
    if (it == by_name.end()) fail("coreml: the graph has no node {}: it is not a GPT-2 forward graph", name);
    return *it->second;
  };
  // The segment must be every node but the two embedding gathers.
  size_t want = 0;
  for (const Node& n : g.nodes()) want += n.op != OpKind::GatherRows;
  bool ok = nodes.size() == want;
  for (NodeId id : nodes) ok = ok && g.node(id).op != OpKind::GatherRows;
  if (!ok || g.node(nodes.front()).name != "embed" || g.node(nodes.back()).name != "lm_head")
    fail("coreml: the segment {} .. {} ({} nodes) is not embed .. lm_head of a GPT-2 forward graph; the tier runs "
         "that whole part as one compiled program",
         g.node(nodes.front()).name, g.node(nodes.back()).name, nodes.size());
  auto tensor = [&](ValueId v) -> const Tensor& {
    const Tensor& t = values.at(size_t(v));
    if (!t.defined()) fail("coreml: value {} is not bound", g.value(v).name);
    return t;
  };

  Segment s;
  Gpt2Model& m = s.model;
  Gpt2Config& c = m.config;
  m.dir = "(strand graph)";
  const Node& embed = node("embed");
  s.tok = embed.inputs.at(0);
  s.pos = embed.inputs.at(1);
  s.tokens = g.value(embed.output).shape[0];
  c.n_embd = int(g.value(embed.output).shape[1]);
  while (by_name.count(fmt::format("h.{}.ln_1", c.n_layer))) ++c.n_layer;
  if (c.n_layer == 0) fail("coreml: the graph has no transformer layers");
  const Node& att0 = node("h.0.attn");
  c.n_head = int(att0.attrs.heads);
  s.past = att0.attrs.past;
  c.layer_norm_epsilon = node("h.0.ln_1").attrs.eps;
  c.activation_function = hf_activation(node("h.0.mlp.act").attrs.act);
  const Node& head = node("lm_head");
  s.logits = head.output;
  c.vocab_size = int(g.value(head.output).shape[1]);
  s.all_logits = !by_name.count("last_token");
  Gpt2Weights& w = m.weights;
  w.wte = tensor(node("wte").inputs.at(0));
  w.wpe = tensor(node("wpe").inputs.at(0));
  c.n_positions = int(w.wpe.dim(0));
  w.lm_head = tensor(head.inputs.at(1));
  w.tied = head.inputs.at(1) == node("wte").inputs.at(0) || g.value(head.inputs.at(1)).name == "wte.weight";
  c.tie_word_embeddings = w.tied;
  w.dtype = w.wte.dtype;
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = fmt::format("h.{}.", l);
    Gpt2Layer L;
    auto wb = [&](const std::string& n, Tensor& wt, Tensor& bt) {
      const Node& nd = node(p + n);
      wt = tensor(nd.inputs.at(1));
      bt = tensor(nd.inputs.at(2));
    };
    wb("ln_1", L.ln_1_w, L.ln_1_b);
    wb("attn.c_attn", L.attn_w, L.attn_b);
    wb("attn.c_proj", L.attn_proj_w, L.attn_proj_b);
    wb("ln_2", L.ln_2_w, L.ln_2_b);
    wb("mlp.c_fc", L.fc_w, L.fc_b);
    wb("mlp.c_proj", L.fc_proj_w, L.fc_proj_b);
    w.layers.push_back(L);
    s.k_cache.push_back(node(p + "attn.k_store").inputs.at(0));
    s.v_cache.push_back(node(p + "attn.v_store").inputs.at(0));
  }
  const Node& lnf = node("ln_f");
  w.ln_f_w = tensor(lnf.inputs.at(1));
  w.ln_f_b = tensor(lnf.inputs.at(2));
  c.n_inner = int(w.layers[0].fc_w.dim(1));
  c.validate("coreml segment");
  s.slots = g.value(s.k_cache[0]).shape[0];

  ExportOptions& o = s.options;
  o.host_embeddings = true;
  o.source = "strand graph";
  if (s.past == 0) {
    o.mode = "prefill";
    o.seq = s.tokens;
  } else {
    o.mode = "decode";
    o.seq = s.slots;
    o.tokens = s.tokens;
  }
  if (s.slots != c.n_positions) fail("coreml: a KV cache of {} rows for a context of {}", s.slots, c.n_positions);
  return s;
}

std::vector<HostArray> segment_inputs(const Segment& s, const std::vector<Tensor>& values) {
  const int64_t C = s.model.config.n_embd, T = s.tokens;
  const bool decode = s.options.mode == "decode";
  const int64_t N = decode ? s.slots : 0, K = N + T;
  std::vector<HostArray> in;
  auto channels_first = [&](const std::string& name, const Tensor& x, int64_t rows) {
    HostArray a{name, {1, C, 1, rows}, false, std::vector<uint16_t>(size_t(C * rows)), {}};
    const Tensor f = x.to(DType::F32);
    const float* p = f.ptr<float>();
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t c = 0; c < C; ++c) a.f16[size_t(c * rows + t)] = f32_to_f16(p[t * C + c]);
    return a;
  };
  in.push_back(channels_first("token_embeddings", values.at(size_t(s.tok)), T));
  in.push_back(channels_first("position_embeddings", values.at(size_t(s.pos)), T));
  HostArray mask{"attn_mask", {1, 1, T, K}, false, std::vector<uint16_t>(size_t(T * K), f32_to_f16(kMaskedValue)), {}};
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < K; ++j)
      if ((j < N && j < s.past) || (j >= N && j - N <= t)) mask.f16[size_t(t * K + j)] = f32_to_f16(0.0f);
  in.push_back(std::move(mask));
  if (decode)
    for (size_t l = 0; l < s.k_cache.size(); ++l) {
      in.push_back(channels_first(fmt::format("k_cache_{}", l), values.at(size_t(s.k_cache[l])), N));
      in.push_back(channels_first(fmt::format("v_cache_{}", l), values.at(size_t(s.v_cache[l])), N));
    }
  return in;
}

void segment_outputs(const Segment& s, std::vector<Tensor>& values,
                     const std::function<const HostArray&(const std::string&)>& get) {
  const int64_t C = s.model.config.n_embd, T = s.tokens, V = s.model.config.vocab_size;
  Tensor& logits = values.at(size_t(s.logits));
  if (logits.dtype != DType::F32 || !logits.contiguous()) fail("coreml: logits buffer is not contiguous f32");
  const int64_t rows = s.all_logits ? T : 1, first = s.all_logits ? 0 : T - 1;
  if (logits.numel() != rows * V) fail("coreml: logits buffer of {} values, expected {}", logits.numel(), rows * V);
  float* out = logits.ptr<float>();
  int64_t r0 = 0;
  for (int i = 0; r0 < V; ++i) {
    const HostArray& a = get(fmt::format("logits_{}", i));
    const int64_t n = a.shape.at(1);
    if (a.shape != std::vector<int64_t>{1, n, 1, T} || r0 + n > V) fail("coreml: output logits_{} has the wrong shape", i);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) out[r * V + r0 + j] = f16_to_f32(a.f16[size_t(j * T + first + r)]);
    r0 += n;
  }
  for (size_t l = 0; l < s.k_cache.size(); ++l)
    for (int kv = 0; kv < 2; ++kv) {
      const HostArray& a = get(fmt::format("{}_{}", kv ? "new_v" : "new_k", l));
      if (a.shape != std::vector<int64_t>{1, C, 1, T}) fail("coreml: output new_k/new_v of layer {} has the wrong shape", l);
      Tensor& cache = values.at(size_t(kv ? s.v_cache[l] : s.k_cache[l]));
      if (cache.dtype != DType::F32) fail("coreml: the KV cache is {}, expected f32", dtype_name(cache.dtype));
      float* p = cache.ptr<float>();
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < C; ++c) p[(s.past + t) * C + c] = f16_to_f32(a.f16[size_t(c * T + t)]);
    }
}

}  // namespace strand::coreml
