#include "validate/opcheck.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include <fmt/format.h>

#include "backends/naive/naive.h"
#include "core/error.h"
#include "core/rng.h"
#include "runtime/runtime.h"
#include "validate/precision.h"

namespace strand {

namespace {

std::string case_label(OpKind op, const std::vector<Shape>& shapes, const std::vector<DType>& dt, const Attrs& a) {
  std::string s = std::string(op_name(op));
  for (size_t i = 0; i < shapes.size(); ++i) s += fmt::format(" {}{}", shape_str(shapes[i]), dt[i] == DType::F32 ? "" : std::string(dtype_name(dt[i])));
  if (op == OpKind::MatMul && a.trans_b) s += " trans_b";
  if (op == OpKind::Activation) s += " " + std::string(act_name(a.act));
  if (op == OpKind::MatMulAt && a.trans_b) s += " trans_b";
  if (op == OpKind::ActivationBackward) s += " " + std::string(act_name(a.act));
  if (a.past) s += fmt::format(" past={}", a.past);
  if (op == OpKind::Attention || op == OpKind::AttentionBackward) s += fmt::format(" heads={}", a.heads);
  if (a.seqs > 1) s += fmt::format(" seqs={}", a.seqs);
  if (op == OpKind::PadCols || op == OpKind::PadRows) s += fmt::format(" at={} to={}", a.start, a.len);
  if (op == OpKind::ScatterAddRows) s += fmt::format(" rows={}", a.len);
  return s;
}

// A tensor of `shape` in `dt` with values drawn from `rng`; ids below `id_limit` for i32; a q8
// tensor is blocked along `q8_axis` (the reduction axis of the product it feeds).
Tensor random_tensor(const Shape& shape, DType dt, Rng& rng, int64_t id_limit, int q8_axis) {
  Tensor f = Tensor::empty(shape, dt == DType::I32 ? DType::I32 : DType::F32);
  for (int64_t i = 0; i < f.numel(); ++i) {
    if (dt == DType::I32)
      f.ptr<int32_t>()[i] = int32_t(rng.below(uint64_t(id_limit)));
    else
      f.ptr<float>()[i] = float(rng.normal());
  }
  if (dt == DType::Q8) return f.to_q8(shape.size() == 2 ? q8_axis : 0);
  return dt == DType::I32 || dt == DType::F32 ? f : f.to(dt);
}

// Marks a matmul/linear case as having its weight stored column-major.
void col_major(OpCase& c) {
  c.col_major_weight = true;
  c.label += " col-major";
}

// The training ops (the loss and the backward ops) on sizes m, n, k drawn by the caller.
template <class Pick, class Push>
void push_training_cases(Rng& rng, int64_t m, int64_t n, int64_t k, Pick&& pick, Push&& push) {
  const std::vector<DType> f1 = {DType::F32}, f2 = {DType::F32, DType::F32};
  Attrs a;
  push(OpKind::MatMulAt, {{k, m}, {k, n}}, f2, a);
  a.trans_b = true;
  push(OpKind::MatMulAt, {{k, m}, {n, k}}, f2, a);
  a = {};
  a.past = int64_t(rng.below(9));
  push(OpKind::CausalZero, {{m, m + a.past}}, f1, a);
  a = {};
  a.start = int64_t(rng.below(5));
  a.len = a.start + n + int64_t(rng.below(5));
  push(OpKind::PadCols, {{m, n}}, f1, a);
  a.len = a.start + m + int64_t(rng.below(5));
  push(OpKind::PadRows, {{m, n}}, f1, a);
  a = {};
  push(OpKind::SumRows, {{m, n}}, f1, a);
  a.len = m;
  push(OpKind::BroadcastRows, {{n}}, f1, a);
  a = {};
  a.len = pick() + 2;  // table rows; ids drawn below it
  push(OpKind::ScatterAddRows, {{m, n}, {m}}, {DType::F32, DType::I32}, a);
  a = {};
  push(OpKind::CrossEntropy, {{m, n + 1}, {m}}, {DType::F32, DType::I32}, a);
  push(OpKind::CrossEntropyBackward, {{m, n + 1}, {m}, {1}}, {DType::F32, DType::I32, DType::F32}, a);
  a.eps = 1e-5;
  push(OpKind::LayerNormBackward, {{m, n}, {n}, {m, n}}, {DType::F32, DType::F32, DType::F32}, a);
  push(OpKind::LayerNormGainGrad, {{m, n}, {m, n}}, f2, a);
  a = {};
  a.act = Act(rng.below(5));
  push(OpKind::ActivationBackward, {{m, n}, {m, n}}, f2, a);
  a = {};
  push(OpKind::SoftmaxBackward, {{m, n}, {m, n}}, f2, a);
  a.heads = 1 + int64_t(rng.below(3));
  const int64_t c = a.heads * (1 + int64_t(rng.below(17)));
  a.seqs = 1 + int64_t(rng.below(3));
  a.past = rng.below(2) ? int64_t(rng.below(4)) : 0;
  const int64_t t = 1 + int64_t(rng.below(9));
  const int64_t keys = a.seqs * (a.past + t);
  push(OpKind::AttentionBackward, {{a.seqs * t, c}, {keys, c}, {keys, c}, {a.seqs * t, c}},
       {DType::F32, DType::F32, DType::F32, DType::F32}, a);
}

}  // namespace

std::vector<OpCase> random_op_cases(uint64_t seed, int per_op) {
  Rng rng(seed);
  static const int64_t sizes[] = {1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 65};
  auto pick = [&] { return sizes[rng.below(std::size(sizes))]; };
  static const DType wdt[] = {DType::F32, DType::F16, DType::BF16};
  std::vector<OpCase> cases;
  auto push = [&](OpKind op, std::vector<Shape> s, std::vector<DType> d, Attrs a) {
    const std::string label = case_label(op, s, d, a);
    cases.push_back({op, std::move(s), std::move(d), a, label});
  };
  for (int r = 0; r < per_op; ++r) {
    const int64_t m = pick(), n = pick(), k = pick();
    const DType w = wdt[size_t(r) % 3];
    Attrs a;
    push(OpKind::GatherRows, {{pick() + 2, n}, {m}}, {w, DType::I32}, a);
    push(OpKind::Add, {{m, n}, {m, n}}, {DType::F32, DType::F32}, a);
    push(OpKind::Add, {{m, n}, {n}}, {DType::F32, w}, a);
    a.eps = 1e-5f;
    push(OpKind::LayerNorm, {{m, n}, {n}, {n}}, {DType::F32, w, w}, a);
    a = {};
    push(OpKind::MatMul, {{m, k}, {k, n}}, {DType::F32, w}, a);
    a.trans_b = true;
    push(OpKind::MatMul, {{m, k}, {n, k}}, {DType::F32, w}, a);
    a = {};
    a.act = Act(r % 5);
    push(OpKind::Activation, {{m, n}}, {DType::F32}, a);
    a = {};
    a.scale = 0.125f;
    push(OpKind::Scale, {{m, n}}, {DType::F32}, a);
    a = {};
    a.past = int64_t(rng.below(9));
    push(OpKind::CausalMask, {{m, m + a.past}}, {DType::F32}, a);
    a = {};
    push(OpKind::Softmax, {{m, n}}, {DType::F32}, a);
    a.start = int64_t(rng.below(uint64_t(n)));
    a.len = n - a.start;
    push(OpKind::SliceCols, {{m, n}}, {DType::F32}, a);
    a.start = int64_t(rng.below(uint64_t(m)));
    a.len = m - a.start;
    push(OpKind::SliceRows, {{m, n}}, {DType::F32}, a);
    a = {};
    push(OpKind::ConcatCols, {{m, n}, {m, k}, {m, 1}}, {DType::F32, DType::F32, DType::F32}, a);
    a.past = int64_t(rng.below(5));
    push(OpKind::KvStore, {{a.past + m + int64_t(rng.below(3)), n}, {m, n}}, {DType::F32, DType::F32}, a);
    a = {};
    push(OpKind::Linear, {{m, k}, {k, n}, {n}}, {DType::F32, w, w}, a);
    // The same products with the weight stored column-major (how strand runs models).
    push(OpKind::Linear, {{m, k}, {k, n}, {n}}, {DType::F32, w, w}, a);
    col_major(cases.back());
    push(OpKind::MatMul, {{m, k}, {k, n}}, {DType::F32, w}, a);
    col_major(cases.back());
    a.trans_b = true;
    push(OpKind::MatMul, {{m, k}, {n, k}}, {DType::F32, w}, a);
    col_major(cases.back());
    a = {};
    // Quantized weights feed matrix products only (blocked along the reduction axis K).
    for (DType q : case_weight_dtypes()) {
      if (q == DType::F32 || q == DType::F16 || q == DType::BF16) continue;
      push(OpKind::MatMul, {{m, k}, {k, n}}, {DType::F32, q}, a);
      Attrs tb;
      tb.trans_b = true;
      push(OpKind::MatMul, {{m, k}, {n, k}}, {DType::F32, q}, tb);
      push(OpKind::Linear, {{m, k}, {k, n}, {n}}, {DType::F32, q, DType::F32}, a);
    }
    const int64_t heads = 1 + int64_t(rng.below(4));
    const int64_t d = pick();
    a.heads = heads;
    a.past = int64_t(rng.below(6));
    push(OpKind::Attention, {{m, heads * d}, {a.past + m, heads * d}, {a.past + m, heads * d}},
         {DType::F32, DType::F32, DType::F32}, a);
    // Several sequences stacked by rows (a training batch), with and without a cache.
    a.seqs = 2 + int64_t(rng.below(2));
    const int64_t t = 1 + int64_t(rng.below(9));
    push(OpKind::Attention, {{a.seqs * t, heads * d}, {a.seqs * (a.past + t), heads * d}, {a.seqs * (a.past + t), heads * d}},
         {DType::F32, DType::F32, DType::F32}, a);
    a = {};
    push_training_cases(rng, m, n, k, pick, push);
  }
  return cases;
}

std::vector<OpCase> large_op_cases(uint64_t seed) {
  Rng rng(seed ^ 0x5bd1e995u);
  auto odd = [&](int64_t base) { return base + int64_t(rng.below(8)); };  // 768 -> 768..775
  std::vector<OpCase> cases;
  auto push = [&](OpKind op, std::vector<Shape> s, std::vector<DType> d, Attrs a) {
    const std::string label = case_label(op, s, d, a);
    cases.push_back({op, std::move(s), std::move(d), a, label});
  };
  const int64_t t = odd(60);  // a prefill block of tokens
  for (DType w : case_weight_dtypes()) {
    const bool float_weight = w == DType::F32 || w == DType::F16 || w == DType::BF16;
    Attrs a;
    const int64_t k = odd(768), n = odd(2304);
    push(OpKind::MatMul, {{1, k}, {k, n}}, {DType::F32, w}, a);  // one decode row against a wide weight
    const int64_t k1 = odd(300), n1 = odd(256);
    push(OpKind::MatMul, {{t, k1}, {k1, n1}}, {DType::F32, w}, a);  // a prefill block
    a.trans_b = true;
    const int64_t v = odd(1000), c = odd(192);
    push(OpKind::MatMul, {{1, c}, {v, c}}, {DType::F32, w}, a);  // lm_head on one token
    push(OpKind::MatMul, {{t, c}, {v, c}}, {DType::F32, w}, a);  // lm_head on a block
    a = {};
    const int64_t n2 = odd(768);
    const DType bias = float_weight ? w : DType::F32;
    push(OpKind::Linear, {{1, k}, {k, n2}, {n2}}, {DType::F32, w, bias}, a);
    const int64_t k3 = odd(128), n3 = odd(512);
    push(OpKind::Linear, {{t, k3}, {k3, n3}, {n3}}, {DType::F32, w, bias}, a);
    if (float_weight) {  // the decode and prefill products of a model run with column-major weights
      push(OpKind::Linear, {{1, k}, {k, n2}, {n2}}, {DType::F32, w, bias}, a);
      col_major(cases.back());
      push(OpKind::Linear, {{t, k3}, {k3, n3}, {n3}}, {DType::F32, w, bias}, a);
      col_major(cases.back());
    }
    if (w == DType::F32) {
      // Products a tier may take only from a size threshold on (a BLAS crossover): ~1e8 FLOPs
      // (GPT-2 124M's attention projection on ~100 tokens) and ~5e9 (its MLP on ~1000). The
      // reference checks a sample of their rows.
      const int64_t kx = odd(768), nx = odd(768), mx = odd(96);
      push(OpKind::MatMul, {{mx, kx}, {kx, nx}}, {DType::F32, w}, a);
      cases.back().sample_rows = 32;
      const int64_t mb = odd(1024), kb = odd(1536), nb = odd(1600);
      push(OpKind::MatMul, {{mb, kb}, {kb, nb}}, {DType::F32, w}, a);
      cases.back().sample_rows = 32;
      const int64_t nf = odd(3072);
      push(OpKind::Linear, {{mb, kx}, {kx, nf}, {nf}}, {DType::F32, w, w}, a);
      cases.back().sample_rows = 32;
      Attrs tb;
      tb.trans_b = true;
      push(OpKind::MatMul, {{mb, kx}, {nf, kx}}, {DType::F32, w}, tb);
      cases.back().sample_rows = 32;
    }
    if (!float_weight) continue;  // quantized weights: matmul and linear only
    push(OpKind::GatherRows, {{v, c}, {t}}, {w, DType::I32}, a);
    const int64_t wide = odd(768);
    a.eps = 1e-5;
    push(OpKind::LayerNorm, {{5, wide}, {wide}, {wide}}, {DType::F32, w, w}, a);
    a = {};
    push(OpKind::Add, {{t, wide}, {wide}}, {DType::F32, w}, a);
  }
  Attrs a;
  a.heads = 12;
  a.past = odd(100);
  push(OpKind::Attention, {{1, 768}, {a.past + 1, 768}, {a.past + 1, 768}}, {DType::F32, DType::F32, DType::F32}, a);
  a.heads = 4;
  a.past = 0;
  push(OpKind::Attention, {{t, 192}, {t, 192}, {t, 192}}, {DType::F32, DType::F32, DType::F32}, a);
  a = {};
  push(OpKind::Softmax, {{9, odd(1024)}}, {DType::F32}, a);
  a.act = Act(rng.below(5));
  push(OpKind::Activation, {{17, odd(1024)}}, {DType::F32}, a);
  a = {};
  push(OpKind::Add, {{t, 771}, {t, 771}}, {DType::F32, DType::F32}, a);
  return cases;
}

std::vector<DType> case_weight_dtypes() { return {DType::F32, DType::F16, DType::BF16, DType::Q8}; }

DType case_weight_dtype(const OpCase& c) {
  for (DType d : c.dtypes)
    if (d != DType::F32 && d != DType::I32) return d;
  return DType::F32;
}

std::vector<OpCheck> check_op_tiers(const OpCase& c, const std::vector<std::shared_ptr<Backend>>& tiers,
                                    uint64_t seed) {
  Graph g;
  std::vector<ValueId> in;
  Rng rng(seed);
  std::vector<Tensor> inputs;
  // Token ids index the table; scattered ids index the output's rows; targets the logits' columns.
  const int64_t id_limit = c.op == OpKind::GatherRows        ? c.shapes[0][0]
                           : c.op == OpKind::ScatterAddRows  ? c.attrs.len
                           : c.op == OpKind::CrossEntropy || c.op == OpKind::CrossEntropyBackward ? c.shapes[0][1]
                                                                                                  : 1;
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    const bool state = c.op == OpKind::KvStore && i == 0;
    const std::string name = fmt::format("in{}", i);
    in.push_back(state ? g.state(name, c.shapes[i], c.dtypes[i]) : g.input(name, c.shapes[i], c.dtypes[i]));
    const int q8_axis = c.op == OpKind::MatMul && c.attrs.trans_b && i == 1 ? 1 : 0;
    inputs.push_back(random_tensor(c.shapes[i], c.dtypes[i], rng, id_limit, q8_axis));
    if (c.col_major_weight && i == 1) {
      if (c.op != OpKind::MatMul && c.op != OpKind::Linear)
        fail("op case {}: only a matrix product has a column-major weight", c.label);
      inputs.back() = inputs.back().to_col_major();
    }
  }
  const ValueId out = g.add(c.op, in, c.attrs, c.label);
  g.mark_output(out);
  const Node& node = g.node(g.value(out).producer);

  std::vector<Verdict> verdicts;
  bool any = false;
  for (const auto& tier : tiers) {
    verdicts.push_back(tier->supports(g, node));
    any = any || verdicts.back().ok;
  }

  // Runs the one-node graph `gr` on `b` with fresh copies of `ins` (kv_store writes its
  // cache); returns the output in f64.
  auto run_graph = [&](const Graph& gr, const std::vector<Tensor>& ins, const std::shared_ptr<Backend>& b) {
    std::vector<Tensor> vals(gr.values().size());
    for (size_t i = 0; i < ins.size(); ++i) {
      const bool state = c.op == OpKind::KvStore && i == 0;
      vals[size_t(in[i])] = state ? ins[i].to(b->activation_dtype()) : ins[i];
    }
    RunOptions ro;
    ro.poison = true;
    execute_on(gr, b, vals, ro);
    return vals[size_t(out)].to(DType::F64);
  };

  // Row sampling: the reference and naive run on the chosen rows of the first input only.
  const bool sampled = c.sample_rows > 0 && (c.op == OpKind::MatMul || c.op == OpKind::Linear) &&
                       c.sample_rows < c.shapes[0][0];
  std::vector<int64_t> rows;
  Graph gs;
  std::vector<Tensor> inputs_s = inputs;
  if (sampled) {
    const int64_t M = c.shapes[0][0], K = c.shapes[0][1], s = c.sample_rows;
    for (int64_t i = 0; i < s / 4; ++i) rows.push_back(i);          // the first rows
    for (int64_t i = 0; i < s / 4; ++i) rows.push_back(M - 1 - i);  // the last rows (edge tiles)
    Rng pick(seed ^ 0xa5a5a5a5u);
    while (int64_t(rows.size()) < s) rows.push_back(int64_t(pick.below(uint64_t(M))));
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    Tensor a = Tensor::empty({int64_t(rows.size()), K}, DType::F32);
    for (size_t i = 0; i < rows.size(); ++i)
      std::memcpy(a.ptr<float>() + int64_t(i) * K, inputs[0].ptr<const float>() + rows[i] * K, size_t(K) * sizeof(float));
    inputs_s[0] = a;
    std::vector<ValueId> ins;
    for (size_t i = 0; i < c.shapes.size(); ++i) {
      Shape sh = c.shapes[i];
      if (i == 0) sh[0] = int64_t(rows.size());
      ins.push_back(gs.input(fmt::format("in{}", i), sh, c.dtypes[i]));
    }
    gs.mark_output(gs.add(c.op, ins, c.attrs, c.label));
  }
  // The tier's full output cut to the sampled rows.
  auto pick_rows = [&](const Tensor& full) {
    if (!sampled) return full;
    const int64_t N = full.dim(1);
    Tensor o = Tensor::empty({int64_t(rows.size()), N}, DType::F64);
    for (size_t i = 0; i < rows.size(); ++i)
      std::memcpy(o.ptr<double>() + int64_t(i) * N, full.ptr<const double>() + rows[i] * N, size_t(N) * sizeof(double));
    return o;
  };
  const Graph& gref = sampled ? gs : g;
  const std::vector<Tensor>& iref = sampled ? inputs_s : inputs;

  std::vector<OpCheck> checks;
  if (!any) {  // nobody runs it: no need for the reference
    for (size_t t = 0; t < tiers.size(); ++t) {
      OpCheck chk;
      chk.label = c.label;
      chk.tier = tiers[t]->name();
      chk.supported = false;
      chk.reason = verdicts[t].reason;
      checks.push_back(std::move(chk));
    }
    return checks;
  }
  // What each tier is judged against: the float64 reference on the inputs rounded as the tier
  // declares (validate/precision.h), and the naive tier's error at that same precision. Tiers
  // that round nothing share the plain basis.
  struct Basis {
    Tensor ref, naive;
    double scale = 1, naive_err = 0;
  };
  const bool product = c.op == OpKind::MatMul || c.op == OpKind::Linear || c.op == OpKind::MatMulAt;
  auto error_against = [&](const Basis& b, const Tensor& t, bool* unwritten) {
    double e = 0;
    const int64_t n = b.ref.numel();
    const double* r = b.ref.ptr<const double>();
    const double* y = t.ptr<const double>();
    for (int64_t i = 0; i < n; ++i) {
      if (std::isnan(y[i]) && !std::isnan(r[i])) *unwritten = true;
      if (std::isinf(r[i])) {
        if (y[i] != r[i]) e = std::numeric_limits<double>::infinity();
        continue;
      }
      e = std::max(e, std::abs(y[i] - r[i]) / b.scale);
    }
    return e;
  };
  std::map<std::string, Basis> bases;
  auto basis_for = [&](const Precision& p) -> const Basis& {
    const std::string key = p.exact() ? std::string() : p.summary();
    if (const auto it = bases.find(key); it != bases.end()) return it->second;
    Basis b;
    const std::vector<Tensor> in_p = p.exact() ? iref : rounded_inputs(iref, p);
    b.ref = run_graph(gref, in_p, make_reference_backend());
    b.naive = p.exact() ? run_graph(gref, iref, make_naive_backend())
                        : run_graph(gref, iref, make_precision_naive([p](const Graph&, const Node&) { return p; }));
    const int64_t n = b.ref.numel();
    const double* r = b.ref.ptr<const double>();
    double scale = 0;
    for (int64_t i = 0; i < n; ++i)
      if (std::isfinite(r[i])) scale = std::max(scale, std::abs(r[i]));
    // For a product an output can be much smaller than the terms summed into it (cancellation),
    // and rounding scales with the terms: measure against max_ij sum_k |a_ik| |b_kj| (+ |bias|),
    // the reference run on the inputs' absolute values.
    if (product) {
      std::vector<Tensor> abs_in;
      for (const Tensor& t : in_p) {
        Tensor x = t.to(DType::F64);
        for (int64_t i = 0; i < x.numel(); ++i) x.ptr<double>()[i] = std::abs(x.ptr<double>()[i]);
        abs_in.push_back(x);
      }
      const Tensor mag = run_graph(gref, abs_in, make_reference_backend());
      for (int64_t i = 0; i < mag.numel(); ++i) scale = std::max(scale, mag.ptr<const double>()[i]);
    }
    b.scale = scale == 0 ? 1 : scale;
    bool naive_unwritten = false;
    b.naive_err = error_against(b, b.naive, &naive_unwritten);
    return bases.emplace(key, std::move(b)).first->second;
  };
  const double floor = 4.0 * double(std::numeric_limits<float>::epsilon());
  const std::vector<std::string> names = input_names(c.op, c.shapes.size());

  for (size_t t = 0; t < tiers.size(); ++t) {
    const auto& tier = tiers[t];
    OpCheck chk;
    chk.label = c.label + (sampled ? fmt::format(" ({} rows checked)", rows.size()) : "");
    chk.tier = tier->name();
    if (!verdicts[t].ok) {
      chk.supported = false;
      chk.reason = verdicts[t].reason;
      checks.push_back(std::move(chk));
      continue;
    }
    const bool is_naive = tier->name() == "naive";
    const Precision prec = is_naive ? Precision{} : tier->precision(g, node);
    chk.precision = prec.summary(names);
    const Basis& b = basis_for(prec);
    chk.naive_err = b.naive_err;
    chk.tolerance = is_naive ? kNaiveF32Bound : 2.0 * b.naive_err + floor;
    Tensor got;
    try {
      got = is_naive ? b.naive : pick_rows(run_graph(g, inputs, tier));  // naive's rows do not depend on the others
    } catch (const Error& e) {
      chk.reason = e.what();
      chk.err = std::numeric_limits<double>::infinity();
      checks.push_back(std::move(chk));
      continue;
    }
    chk.err = error_against(b, got, &chk.unwritten);
    chk.pass = !chk.unwritten && chk.err <= chk.tolerance;
    checks.push_back(std::move(chk));
  }
  return checks;
}

OpCheck check_op(const OpCase& c, const std::shared_ptr<Backend>& tier, uint64_t seed) {
  return check_op_tiers(c, {tier}, seed).front();
}

}  // namespace strand
