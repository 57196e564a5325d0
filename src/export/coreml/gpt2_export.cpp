#include "export/coreml/gpt2_export.h"

#include <cmath>

#include <fmt/format.h>

#include "core/error.h"
#include "core/progress.h"
#include "export/coreml/package.h"
#include "ops/ops.h"

namespace strand::coreml {

namespace {

std::vector<float> as_f32(const Tensor& t) {
  if (!t.defined()) fail("coreml export: a weight tensor is missing");
  const Tensor c = t.to(DType::F32);
  return std::vector<float>(c.ptr<float>(), c.ptr<float>() + c.numel());
}

std::vector<uint16_t> to_f16(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = f32_to_f16(v[i]);
  return r;
}

// Hugging Face Conv1D weight [in, out] -> convolution weight (out, in, 1, 1), output channels
// [0, scaled) multiplied by `scale` first.
std::vector<uint16_t> conv_weight(const Tensor& w, int64_t in, int64_t out, double scale = 1.0, int64_t scaled = 0) {
  const std::vector<float> src = as_f32(w);
  if (int64_t(src.size()) != in * out) fail("internal: weight of {} values, expected {}x{}", src.size(), in, out);
  std::vector<uint16_t> r(size_t(in * out));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      const double v = double(src[size_t(i * out + o)]) * (o < scaled ? scale : 1.0);
      r[size_t(o * in + i)] = f32_to_f16(float(v));
    }
  return r;
}

std::vector<uint16_t> bias_f16(const Tensor& b, double scale = 1.0, int64_t scaled = 0) {
  std::vector<float> v = as_f32(b);
  for (int64_t i = 0; i < scaled; ++i) v[size_t(i)] = float(double(v[size_t(i)]) * scale);
  return to_f16(v);
}

}  // namespace

Gpt2Program build_gpt2_program(const Gpt2Model& m, const ExportOptions& o, WeightBlob& blob) {
  const Gpt2Config& cfg = m.config;
  const Gpt2Weights& w = m.weights;
  const int64_t C = cfg.n_embd, H = cfg.n_head, D = C / H, F = cfg.n_inner, V = cfg.vocab_size,
                P = cfg.n_positions, L = cfg.n_layer;
  if (o.mode != "prefill" && o.mode != "decode") fail("--mode {}: must be prefill or decode", o.mode);
  const bool decode = o.mode == "decode";
  const int64_t N = o.seq ? o.seq : P;
  if (N < 1 || N > P)
    fail("--seq {}: must be between 1 and the model's context of {} tokens", o.seq, P);
  if (o.vocab_chunk < 1 || o.vocab_chunk > kAneMaxChannels)
    fail("vocabulary chunk {}: must be between 1 and {}", o.vocab_chunk, kAneMaxChannels);
  Act act;
  if (!parse_hf_activation(cfg.activation_function, &act))
    fail("activation_function '{}' is not supported", cfg.activation_function);

  Gpt2Program prog;
  prog.mode = o.mode;
  if (decode && (o.tokens < 1 || o.tokens > P)) fail("decode tokens {}: must be between 1 and {}", o.tokens, P);
  prog.tokens = decode ? o.tokens : N;
  prog.cache = decode ? N : 0;
  const int64_t T = prog.tokens, K = prog.cache + T;

  MilBuilder b(blob);
  b.set_block("inputs");
  Var ids, pos, tok_in, pos_in;
  if (o.host_embeddings) {
    tok_in = b.input("token_embeddings", {MilDType::F16, {1, C, 1, T}});
    pos_in = b.input("position_embeddings", {MilDType::F16, {1, C, 1, T}});
  } else {
    ids = b.input("input_ids", {MilDType::I32, {1, T}});
    pos = b.input("position_ids", {MilDType::I32, {1, T}});
  }
  const Var mask = b.input("attn_mask", {MilDType::F16, {1, 1, T, K}});
  std::vector<Var> k_cache, v_cache;
  if (decode)
    for (int64_t l = 0; l < L; ++l) {
      k_cache.push_back(b.input(fmt::format("k_cache_{}", l), {MilDType::F16, {1, C, 1, N}}));
      v_cache.push_back(b.input(fmt::format("v_cache_{}", l), {MilDType::F16, {1, C, 1, N}}));
    }

  auto vec_const = [&](const std::string& name, const Tensor& t) {
    return b.const_f16(name, to_f16(as_f32(t)), {t.numel()});
  };
  auto layer_norm = [&](const Var& x, const Tensor& g, const Tensor& beta, const std::string& name) {
    const Var gv = vec_const(name + "_gamma", g);
    const Var bv = vec_const(name + "_beta", beta);
    return b.layer_norm(x, {1}, gv, bv, float(cfg.layer_norm_epsilon), name);
  };
  auto linear = [&](const Var& x, const Tensor& wt, const Tensor& bias, int64_t in, int64_t out,
                    const std::string& name, double scale = 1.0, int64_t scaled = 0) {
    const Var wv = b.const_f16(name + "_weight", conv_weight(wt, in, out, scale, scaled), {out, in, 1, 1});
    const Var bv = b.const_f16(name + "_bias", bias_f16(bias, scale, scaled), {out});
    return b.conv1x1(x, wv, &bv, name);
  };

  // Embedding: gather rows, add, then to channels-first (1, C, 1, T).
  b.set_block("embed");
  Var x;
  if (o.host_embeddings) {
    x = b.add(tok_in, pos_in, "embed");
  } else {
    const Var wte = b.const_f16("wte", to_f16(as_f32(w.wte)), {V, C});
    const Var wpe = b.const_f16("wpe", to_f16(as_f32(w.wpe)), {P, C});
    const Var tok = b.gather(wte, ids, 0, "embed_tokens");
    const Var ps = b.gather(wpe, pos, 0, "embed_positions");
    x = b.add(tok, ps, "embed");
    x = b.transpose(x, {0, 2, 1}, "embed_channels_first");
    x = b.reshape(x, {1, C, 1, T}, "embed_bc1s");
  }

  std::vector<Var> new_k, new_v;
  const double qscale = 1.0 / std::sqrt(double(D));
  Progress progress("export coreml: fp16 weights", double(L + 1), "layers");  // + the vocabulary projection
  for (int64_t l = 0; l < L; ++l) {
    if (l > 0) progress.add(1);
    const Gpt2Layer& Ly = w.layers[size_t(l)];
    const std::string p = fmt::format("h_{}_", l);
    b.set_block(fmt::format("h.{}.attn", l));
    const Var a = layer_norm(x, Ly.ln_1_w, Ly.ln_1_b, p + "ln_1");
    const Var qkv = linear(a, Ly.attn_w, Ly.attn_b, C, 3 * C, p + "attn_c_attn", qscale, C);
    const std::vector<Var> parts =
        b.split(qkv, 3, 1, {p + "q", fmt::format("new_k_{}", l), fmt::format("new_v_{}", l)});
    new_k.push_back(parts[1]);
    new_v.push_back(parts[2]);
    Var keys = parts[1], vals = parts[2];
    if (decode) {
      keys = b.concat({k_cache[size_t(l)], parts[1]}, 3, p + "keys");
      vals = b.concat({v_cache[size_t(l)], parts[2]}, 3, p + "values");
    }
    std::vector<Var> qh{parts[0]}, kh{keys}, vh{vals};
    if (H > 1) {
      std::vector<std::string> qn, kn, vn;
      for (int64_t h = 0; h < H; ++h) {
        qn.push_back(fmt::format("{}q_head{}", p, h));
        kn.push_back(fmt::format("{}k_head{}", p, h));
        vn.push_back(fmt::format("{}v_head{}", p, h));
      }
      qh = b.split(parts[0], int(H), 1, qn);
      kh = b.split(keys, int(H), 1, kn);
      vh = b.split(vals, int(H), 1, vn);
    }
    std::vector<Var> heads;
    for (int64_t h = 0; h < H; ++h) {
      const std::string ph = fmt::format("{}head{}_", p, h);
      const Var q4 = b.reshape(qh[size_t(h)], {1, 1, D, T}, ph + "q");
      const Var k4 = b.reshape(kh[size_t(h)], {1, 1, D, K}, ph + "k");
      const Var v4 = b.reshape(vh[size_t(h)], {1, 1, D, K}, ph + "v");
      Var s = b.matmul(q4, k4, true, false, ph + "scores");  // (1, 1, T, K)
      s = b.add(s, mask, ph + "masked");
      const Var pr = b.softmax(s, 3, ph + "probs");
      const Var out = b.matmul(v4, pr, false, true, ph + "out");  // (1, 1, D, T)
      heads.push_back(b.reshape(out, {1, D, 1, T}, ph + "bc1s"));
    }
    const Var att = H > 1 ? b.concat(heads, 1, p + "attn") : heads[0];
    const Var proj = linear(att, Ly.attn_proj_w, Ly.attn_proj_b, C, C, p + "attn_c_proj");
    x = b.add(x, proj, p + "attn_residual");

    b.set_block(fmt::format("h.{}.mlp", l));
    const Var m2 = layer_norm(x, Ly.ln_2_w, Ly.ln_2_b, p + "ln_2");
    Var hdn = linear(m2, Ly.fc_w, Ly.fc_b, C, F, p + "mlp_c_fc");
    switch (act) {
      case Act::GeluTanh: hdn = b.gelu(hdn, true, p + "mlp_act"); break;
      case Act::GeluErf: hdn = b.gelu(hdn, false, p + "mlp_act"); break;
      case Act::Relu: hdn = b.unary("relu", hdn, p + "mlp_act"); break;
      case Act::Silu: hdn = b.unary("silu", hdn, p + "mlp_act"); break;
      case Act::QuickGelu: {
        const Var k = b.const_f16_scalar(p + "mlp_act_k", 1.702f);
        const Var sig = b.unary("sigmoid", b.mul(hdn, k, p + "mlp_act_scaled"), p + "mlp_act_sigmoid");
        hdn = b.mul(hdn, sig, p + "mlp_act");
        break;
      }
    }
    hdn = linear(hdn, Ly.fc_proj_w, Ly.fc_proj_b, F, C, p + "mlp_c_proj");
    x = b.add(x, hdn, p + "mlp_residual");
  }

  progress.add(1);
  b.set_block("ln_f");
  x = layer_norm(x, w.ln_f_w, w.ln_f_b, "ln_f");

  // Vocabulary projection in chunks of at most vocab_chunk output channels (no bias).
  const std::vector<float> head = as_f32(w.lm_head);
  for (int64_t r0 = 0, i = 0; r0 < V; r0 += o.vocab_chunk, ++i) {
    const int64_t n = std::min(o.vocab_chunk, V - r0);
    b.set_block(fmt::format("lm_head.{}", i));
    std::vector<uint16_t> chunk(size_t(n * C));
    for (int64_t j = 0; j < n * C; ++j) chunk[size_t(j)] = f32_to_f16(head[size_t(r0 * C + j)]);
    const Var wv = b.const_f16(fmt::format("lm_head_{}_weight", i), std::move(chunk), {n, C, 1, 1});
    b.output(b.conv1x1(x, wv, nullptr, fmt::format("logits_{}", i)));
    prog.logits_chunks.push_back(n);
  }
  progress.add(1);
  progress.finish();
  for (int64_t l = 0; l < L; ++l) {
    b.output(new_k[size_t(l)]);
    b.output(new_v[size_t(l)]);
  }
  prog.fn = std::move(b.function());

  // Metadata and feature descriptions.
  ModelInfo& info = prog.info;
  const std::string source = o.source.empty() ? m.dir : o.source;
  info.short_description = fmt::format(
      "GPT-2 ({} layers, {} channels, {} heads, vocabulary {}) {} for the Apple Neural Engine: (B, C, 1, S) fp16 "
      "layout, {} new token(s) per call{}",
      L, C, H, V, o.mode, T, decode ? fmt::format(", KV cache of {} slots", N) : std::string());
  info.version = STRAND_VERSION;
  info.author = fmt::format("strand {}", STRAND_VERSION);
  std::string chunks;
  for (int64_t n : prog.logits_chunks) chunks += (chunks.empty() ? "" : ",") + std::to_string(n);
  info.user_defined = {
      {"strand.version", STRAND_VERSION},
      {"strand.source_model", source},
      {"strand.source_dtype", std::string(dtype_name(w.dtype))},
      {"strand.mode", o.mode},
      {"strand.tokens", std::to_string(T)},
      {"strand.cache_slots", std::to_string(prog.cache)},
      {"strand.embeddings", o.host_embeddings ? "host (token_embeddings + position_embeddings inputs)" : "in the program (gather)"},
      {"strand.n_layer", std::to_string(L)},
      {"strand.n_embd", std::to_string(C)},
      {"strand.n_head", std::to_string(H)},
      {"strand.n_inner", std::to_string(F)},
      {"strand.n_positions", std::to_string(P)},
      {"strand.vocab_size", std::to_string(V)},
      {"strand.activation_function", cfg.activation_function},
      {"strand.layer_norm_epsilon", fmt::format("{}", cfg.layer_norm_epsilon)},
      {"strand.logits_chunks", chunks},
      {"strand.layout", "(B, C, 1, S) channels-first, fp16, linear layers as 1x1 convolutions, attention per head"},
      {"strand.attn_mask", fmt::format("additive, {} where a key must not be seen, 0 elsewhere", kMaskedValue)},
      {"strand.attention_scale", "1/sqrt(head size) folded into the query weights"},
  };
  auto& fd = info.feature_descriptions;
  fd["input_ids"] = fmt::format("token ids, int32 (1, {})", T);
  fd["position_ids"] = fmt::format("position of each token in the sequence, int32 (1, {})", T);
  fd["token_embeddings"] = fmt::format("wte rows of the tokens, channels-first, fp16 (1, {}, 1, {})", C, T);
  fd["position_embeddings"] = fmt::format("wpe rows of the positions, channels-first, fp16 (1, {}, 1, {})", C, T);
  fd["attn_mask"] = fmt::format(
      "additive attention mask (1, 1, {}, {}): keys are {}the {} new token(s); 0 = attend, {} = masked", T, K,
      decode ? fmt::format("cache slots 0..{}, then ", N - 1) : std::string(), T, kMaskedValue);
  for (int64_t l = 0; l < L; ++l) {
    if (decode) {
      fd[fmt::format("k_cache_{}", l)] = fmt::format("layer {} keys of cache slots 0..{}, fp16 (1, {}, 1, {})", l, N - 1, C, N);
      fd[fmt::format("v_cache_{}", l)] = fmt::format("layer {} values of cache slots 0..{}, fp16 (1, {}, 1, {})", l, N - 1, C, N);
    }
    fd[fmt::format("new_k_{}", l)] = fmt::format("layer {} keys of the new token(s): write into the cache at their positions", l);
    fd[fmt::format("new_v_{}", l)] = fmt::format("layer {} values of the new token(s): write into the cache at their positions", l);
  }
  int64_t r0 = 0;
  for (size_t i = 0; i < prog.logits_chunks.size(); ++i) {
    fd[fmt::format("logits_{}", i)] = fmt::format("logits of vocabulary ids [{}, {}) for each new token, fp16 (1, {}, 1, {})",
                                                   r0, r0 + prog.logits_chunks[i], prog.logits_chunks[i], T);
    r0 += prog.logits_chunks[i];
  }
  return prog;
}

ExportResult export_gpt2_coreml(const Gpt2Model& m, const std::string& out_path, const ExportOptions& o) {
  PackageWriter pw(out_path);
  WeightBlob blob(pw.weight_path());
  ExportResult r;
  r.program = build_gpt2_program(m, o, blob);
  blob.finish();
  const std::string model = serialize_model(r.program.fn, r.program.info);
  Fnv64 h;
  h.add(model);
  const uint64_t bh = blob.hash();
  h.add(&bh, sizeof bh);
  pw.commit(model, h.h);
  r.path = out_path;
  r.weight_bytes = blob.size();
  r.blobs = blob.count();
  r.content_hash = h.h;
  return r;
}

}  // namespace strand::coreml
