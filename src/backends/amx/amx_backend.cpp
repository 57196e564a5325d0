// strand/backends/amx/amx_backend.cpp — the amx tier: placement answers, precision, dispatch.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "backends/amx/amx.h"
#include "backends/amx/gemm.h"
#include "backends/amx/kernels.h"
#include "backends/amx/pack.h"
#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/threadpool.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "devices/machine.h"
#include "devices/stranded.h"

namespace strand {

namespace {

using amx::KernelSet;

bool is_product(OpKind k) { return k == OpKind::MatMul || k == OpKind::Linear; }
bool is_float_weight(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

AmxStatus check_amx() {
  AmxStatus s;
  if (!amx::hw_kernels()) {
#if defined(__x86_64__)
    s.reason = "not built: the compiler that built strand has no AMX support (-mamx-tile; GCC 11+ or clang 12+)";
#else
    s.reason = "not built: AMX exists on x86-64 only";
#endif
    return s;
  }
  const CpuFeatures& f = cpu_features();
  std::string missing;
  if (!f.amx_tile) missing += "AMX-TILE";
  if (!f.amx_bf16) missing += std::string(missing.empty() ? "" : ", ") + "AMX-BF16";
  if (!f.amx_int8) missing += std::string(missing.empty() ? "" : ", ") + "AMX-INT8";
  if (!missing.empty()) {
    s.reason = fmt::format("no AMX on this CPU: CPUID lacks {} ({}; AMX is in Intel Xeon from Sapphire Rapids on)",
                           missing, machine_info().cpu_model);
    return s;
  }
  if (!f.os_amx) {
    s.reason = "the OS does not enable the AMX tile state (XCR0 bits 17-18 clear; Linux 5.16+ does)";
    return s;
  }
  std::string why;
  if (!amx_request_permission(&why)) {
    s.reason = why;
    return s;
  }
  s.usable = true;
  s.reason = "AMX-TILE, AMX-BF16, AMX-INT8; tile state granted by the OS";
  return s;
}

// A weight converted into tiles, kept while the tensor it came from lives.
struct PackedWeight {
  std::weak_ptr<void> owner;
  DType dtype = DType::F32;
  Shape shape;
  std::vector<int64_t> strides;
  bool trans_b = false;
  std::shared_ptr<amx::PackedBf16> bf16;
  std::shared_ptr<amx::PackedInt8> int8;
};

class AmxBackend final : public Backend {
 public:
  AmxBackend(const AmxOptions& opt, const KernelSet* k, AmxStatus status, AmxCrossover cross)
      : opt_(opt), k_(k), status_(std::move(status)), cross_(std::move(cross)) {
    rows_bf16_ = opt.min_rows_bf16 > 0 ? opt.min_rows_bf16 : cross_.rows_bf16;
    rows_bf16_w16_ = opt.min_rows_bf16 > 0 ? opt.min_rows_bf16 : cross_.rows_bf16_w16;
    rows_int8_ = opt.min_rows_int8 > 0 ? opt.min_rows_int8 : cross_.rows_int8;
    if (opt.min_rows_bf16 > 0 || opt.min_rows_int8 > 0) cross_.source = "set by the caller";
    attn_min_ = opt.min_attention_queries > 0       ? opt.min_attention_queries
                : opt.unit == AmxUnit::Avx512Bf16 ? 0  // none: see AmxOptions
                                                  : kAmxAttnMinQueries;
  }

  std::string name() const override { return bf16_only() ? "avx512bf16" : "amx"; }
  std::string description() const override {
    switch (opt_.unit) {
      case AmxUnit::Model: return "Intel AMX kernels on a C++ model of the tile instructions (no AMX used: tests, slow)";
      case AmxUnit::Avx512Bf16:
        return "the amx tier's bf16 layouts on AVX-512-BF16 (vdpbf16ps): bf16 products and weight gradients, f32 "
               "accumulation (prefill attention only when asked); only when named";
      case AmxUnit::Tiles: break;
    }
    return "Intel AMX tiles: bf16/int8 matrix products and prefill attention, f32 accumulation";
  }
  Verdict probe() const override {
    if (opt_.unit == AmxUnit::Model) return Verdict::yes("the C++ model of the tile instructions (no AMX used)");
    if (!status_.usable) return Verdict::no(status_.reason);
    const std::string bf16 = rows_bf16_ == rows_bf16_w16_
                                 ? fmt::format("{} rows (bf16)", rows_bf16_)
                                 : fmt::format("{} rows (bf16; {} with f16/bf16 weights)", rows_bf16_, rows_bf16_w16_);
    const std::string rows = bf16_only() ? "products from " + bf16
                                         : fmt::format("products from {} / {} rows (int8)", bf16, rows_int8_);
    const std::string attn = attn_min_ > 0 ? fmt::format("attention from {} queries", attn_min_)
                                           : std::string("attention left to the tier below (faster there)");
    return Verdict::yes(fmt::format("{}; {} threads; {} ({}), {}{}", status_.reason, pool().size(), rows,
                                    cross_.source, attn,
                                    bf16_only() ? "; joins no default chain: name it in --backend" : ""));
  }
  bool in_default_chain() const override { return !bf16_only(); }
  const AmxOptions& options() const { return opt_; }
  Verdict supports(const Graph& g, const Node& n) const override;
  Precision precision(const Graph& g, const Node& n) const override;
  double weight_read_bytes(const Graph& g, const Node& n, size_t i, double bytes) const override;
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override;

 private:
  cpu::ThreadPool& pool() const { return cpu::ThreadPool::global(); }
  bool bf16_only() const { return opt_.unit == AmxUnit::Avx512Bf16; }
  Verdict supports_product(const Graph& g, const Node& n) const;
  // The producer of an activation's input, when the activation can be fused into it.
  const Node* fusable_producer(const Graph& g, const Node& act) const;
  void product(const Graph& g, const Node& nd, std::vector<Tensor>& values, const Node* act, Tensor& out);
  void attention(const Node& nd, std::vector<Tensor>& values);
  void weight_gradient(const Graph& g, const Node& nd, std::vector<Tensor>& values);
  std::shared_ptr<PackedWeight> packed(const Graph& g, ValueId id, const Tensor& w, bool trans_b, bool int8);

  AmxOptions opt_;
  const KernelSet* k_;
  AmxStatus status_;
  AmxCrossover cross_;
  int64_t rows_bf16_ = kAmxDefaultMinRows, rows_bf16_w16_ = kAmxDefaultMinRows, rows_int8_ = kAmxDefaultMinRows;
  int64_t attn_min_ = kAmxAttnMinQueries;  // 0: no attention (AmxOptions::min_attention_queries)

  std::mutex mu_;  // run() is not re-entrant: the scratch below is shared
  std::map<const void*, std::shared_ptr<PackedWeight>> weights_;
  amx::GemmScratch scratch_;
  amx::AlignedBytes k_tiles_, v_tiles_;
  std::vector<std::vector<float>> attn_scratch_;
};

// A graph with a loss is a training (or evaluation) step: the optimizer changes its weights in
// place between steps, so this tier packs them on every run instead of keeping their tiles
// (packed()). Its products are then the bf16 half of mixed-precision training: f32 master
// weights, bf16 operands, f32 accumulation (docs/training.md).
bool has_loss(const Graph& g) { return g.has_op(OpKind::CrossEntropy); }

Verdict AmxBackend::supports_product(const Graph& g, const Node& n) const {
  const Value& a = g.value(n.inputs[0]);
  const Value& w = g.value(n.inputs[1]);
  if (a.dtype != DType::F32) return Verdict::no(fmt::format("a is {}: the amx tier takes f32 activations", dtype_name(a.dtype)));
  if (a.shape.size() != 2 || w.shape.size() != 2) return Verdict::no("operands are not matrices");
  if (n.op == OpKind::Linear && !is_float_weight(g.value(n.inputs[2]).dtype))
    return Verdict::no(fmt::format("the bias is {}: f32, f16 or bf16 expected", dtype_name(g.value(n.inputs[2]).dtype)));
  const int64_t M = a.shape[0];
  std::string path;
  int64_t min_rows = 0;
  if (is_float_weight(w.dtype)) {
    path = fmt::format("bf16 {}{}", bf16_only() ? "tiles on vdpbf16ps" : "tiles (TDPBF16PS)",
                       w.dtype == DType::BF16 ? ""
                       : has_loss(g)          ? fmt::format(", {} weights rounded to bf16 on every run (a training step: "
                                                            "they change in place)",
                                                            dtype_name(w.dtype))
                                              : fmt::format(", {} weights rounded to bf16 once", dtype_name(w.dtype)));
    min_rows = w.dtype == DType::F32 ? rows_bf16_ : rows_bf16_w16_;
  } else if (w.dtype == DType::Q8 && bf16_only()) {
    return Verdict::no("q8 weights: no int8 tile product here (AVX512_VNNI multiplies unsigned by signed bytes)");
  } else if (w.dtype == DType::Q8) {
    path = "int8 tiles (TDPBSSD) with the q8 block scales, activations quantized per row";
    min_rows = rows_int8_;
  } else {
    return Verdict::no(fmt::format("b is {}: not a weight dtype (f32/f16/bf16/q8)", dtype_name(w.dtype)));
  }
  if (M < min_rows)
    return Verdict::no(fmt::format("M = {} rows, below the crossover of {} rows ({})", M, min_rows, cross_.source));
  return Verdict::yes(fmt::format("{}, f32 accumulation, bias{} in the epilogue", path, n.op == OpKind::Linear ? "" : " (none)"));
}

const Node* AmxBackend::fusable_producer(const Graph& g, const Node& act) const {
  const Value& x = g.value(act.inputs[0]);
  if (x.producer < 0) return nullptr;
  const Node& p = g.node(x.producer);
  if (!is_product(p.op) || !supports_product(g, p).ok) return nullptr;
  // The product's output must feed this activation only (it is never written when fused).
  for (ValueId o : g.outputs())
    if (o == act.inputs[0]) return nullptr;
  int uses = 0;
  for (const Node& nd : g.nodes())
    for (ValueId v : nd.inputs) uses += v == act.inputs[0];
  return uses == 1 ? &p : nullptr;
}


Verdict AmxBackend::supports(const Graph& g, const Node& n) const {
  if (n.op == OpKind::Attention && has_loss(g))
    return Verdict::no("a training step: its backward recomputes the probabilities in f32 (attention_backward), "
                       "so the forward stays f32 too");
  if (n.op == OpKind::Activation && has_loss(g))
    return Verdict::no("a training step: the backward needs the product's output, so nothing is fused");
  switch (n.op) {
    case OpKind::MatMul:
    case OpKind::Linear: return supports_product(g, n);
    case OpKind::MatMulAt: {  // a weight gradient: aᵀ · b, both activations of the step
      const Value& a = g.value(n.inputs[0]);
      const Value& b = g.value(n.inputs[1]);
      if (a.dtype != DType::F32 || b.dtype != DType::F32) return Verdict::no("a and b must be f32");
      if (a.shape.size() != 2 || b.shape.size() != 2) return Verdict::no("operands are not matrices");
      const int64_t M = a.shape[1];
      if (M < rows_bf16_)
        return Verdict::no(fmt::format("M = {} rows, below the crossover of {} rows ({})", M, rows_bf16_, cross_.source));
      return Verdict::yes(fmt::format("bf16 {}: aᵀ and b rounded to bf16 on every run, f32 accumulation",
                                      bf16_only() ? "tiles on vdpbf16ps" : "tiles (TDPBF16PS)"));
    }
    case OpKind::Activation: {
      if (g.value(n.inputs[0]).dtype != DType::F32) return Verdict::no("x is not f32");
      const Node* p = fusable_producer(g, n);
      if (!p) return Verdict::no("only fused into the product before it (a lone activation stays on the cpu tier)");
      return Verdict::yes(fmt::format("fused into the epilogue of {}", p->name));
    }
    case OpKind::Attention: {
      for (int i = 0; i < 3; ++i)
        if (g.value(n.inputs[size_t(i)]).dtype != DType::F32) return Verdict::no("q, k and v must be f32");
      if (n.attrs.seqs != 1) return Verdict::no("several sequences in one attention (a training batch)");
      if (attn_min_ <= 0)
        return Verdict::no("the tile attention on vdpbf16ps is slower than the cpu tier's f32 attention (a GPT-2 124M "
                           "pp512: ~95 ms against ~33 ms on 2 Zen 4 vCPUs); the tier below runs it");
      const int64_t T = g.value(n.inputs[0]).shape[0];
      if (T < attn_min_)
        return Verdict::no(fmt::format("{} queries: below {} (decode attention stays on the cpu tier)", T, attn_min_));
      return Verdict::yes("flash attention on tiles: bf16 Q·Kᵀ and P·V, f32 online softmax, causal");
    }
    default: break;
  }
  return Verdict::no("not a tile operation (the tier below runs it)");
}

Precision AmxBackend::precision(const Graph& g, const Node& n) const {
  Precision p;
  if (n.op == OpKind::MatMulAt) {
    p.inputs = {Rounding::BF16, Rounding::BF16};
    p.note = "bf16 tiles: both operands rounded to bf16, f32 accumulation";
  } else if (is_product(n.op)) {
    if (g.value(n.inputs[1]).dtype == DType::Q8) {
      p.inputs = {Rounding::Q8, Rounding::None};
      p.note = "int8 tiles: activations quantized per row in blocks of 32, q8 weights as stored, exact int32 block "
               "sums scaled in f32";
    } else {
      p.inputs = {Rounding::BF16, Rounding::BF16};
      p.note = "bf16 tiles: activations and weights rounded to bf16, f32 accumulation";
    }
  } else if (n.op == OpKind::Attention) {
    p.inputs = {Rounding::BF16, Rounding::BF16, Rounding::BF16};
    p.attention_probs = Rounding::BF16;
    p.note = "bf16 tiles: q, k, v and the softmax weights rounded to bf16, f32 softmax and accumulation";
  }
  return p;
}

double AmxBackend::weight_read_bytes(const Graph& g, const Node& n, size_t i, double bytes) const {
  // A product's weight is packed once into tiles and read from there (a training step packs it
  // on every run, from the f32 weight).
  if (!is_product(n.op) || i != 1 || has_loss(g) || g.value(n.inputs[1]).kind != ValueKind::Weight) return bytes;
  const int64_t K = g.value(n.inputs[0]).shape[1], N = g.value(n.output).shape[1];
  return double(g.value(n.inputs[1]).dtype == DType::Q8 ? amx::packed_int8_bytes(K, N) : amx::packed_bf16_bytes(K, N));
}

std::shared_ptr<PackedWeight> AmxBackend::packed(const Graph& g, ValueId id, const Tensor& w, bool trans_b, bool int8) {
  auto make = [&] {
    auto p = std::make_shared<PackedWeight>();
    p->dtype = w.dtype;
    p->shape = w.shape;
    p->strides = w.strides;
    p->trans_b = trans_b;
    if (int8)
      p->int8 = std::make_shared<amx::PackedInt8>(amx::pack_b_int8(w, trans_b));
    else
      p->bf16 = std::make_shared<amx::PackedBf16>(amx::pack_b_bf16(w, trans_b, &pool()));
    return p;
  };
  // Only weights are kept (an input changes from call to call), and only with an owner that
  // tells when their memory goes away.
  if (g.value(id).kind != ValueKind::Weight || !w.owner || has_loss(g)) return make();
  const auto it = weights_.find(w.data);
  if (it != weights_.end()) {
    const PackedWeight& p = *it->second;
    const auto owner = p.owner.lock();
    if (owner && owner.get() == w.owner.get() && p.dtype == w.dtype && p.shape == w.shape && p.strides == w.strides &&
        p.trans_b == trans_b)
      return it->second;
  }
  for (auto i = weights_.begin(); i != weights_.end();)  // forget weights that are gone
    i = i->second->owner.expired() ? weights_.erase(i) : std::next(i);
  auto p = make();
  p->owner = w.owner;
  weights_[w.data] = p;
  return p;
}

void AmxBackend::product(const Graph& g, const Node& nd, std::vector<Tensor>& values, const Node* act, Tensor& out) {
  const Tensor& a = values[size_t(nd.inputs[0])];
  const Tensor& w = values[size_t(nd.inputs[1])];
  if (a.dtype != DType::F32 || !a.contiguous() || a.rank() != 2)
    fail("amx: node {}: a must be a contiguous f32 matrix (is {} {})", nd.name, dtype_name(a.dtype), shape_str(a.shape));
  if (out.dtype != DType::F32 || !out.contiguous()) fail("amx: node {}: the output must be contiguous f32", nd.name);
  const bool trans_b = nd.op == OpKind::MatMul && nd.attrs.trans_b;
  const bool int8 = w.dtype == DType::Q8;
  const int64_t M = a.dim(0), K = a.dim(1), N = out.dim(1);
  Tensor bias;
  if (nd.op == OpKind::Linear) {
    const Tensor& b = values[size_t(nd.inputs[2])];
    bias = b.dtype == DType::F32 && b.contiguous() ? b : b.to(DType::F32);
    if (bias.numel() != N) fail("amx: node {}: bias has {} elements for {} columns", nd.name, bias.numel(), N);
  }
  if (M == 0 || N == 0) return;
  const std::shared_ptr<PackedWeight> pw = packed(g, nd.inputs[1], w, trans_b, int8);

  amx::Epilogue ep;
  ep.bias = bias.defined() ? bias.ptr<const float>() : nullptr;
  if (act) {
    ep.has_act = true;
    ep.act = act->attrs.act;
    ep.act_fn = cpu::best_kernels().activation;
  }
  if (int8)
    amx::matmul_int8(*k_, a.ptr<const float>(), K, M, K, *pw->int8, out.ptr<float>(), N, ep, &pool(), scratch_);
  else
    amx::matmul_bf16(*k_, a.ptr<const float>(), K, M, K, *pw->bf16, out.ptr<float>(), N, ep, &pool(), scratch_);
}

// out[M, N] = aᵀ · b: a [K, M] packed transposed, b [K, N] (or [N, K] with trans_b) packed per run.
void AmxBackend::weight_gradient(const Graph& g, const Node& nd, std::vector<Tensor>& values) {
  const Tensor& a = values[size_t(nd.inputs[0])];
  const Tensor& b = values[size_t(nd.inputs[1])];
  Tensor& out = values[size_t(nd.output)];
  if (a.dtype != DType::F32 || !a.contiguous() || a.rank() != 2)
    fail("amx: node {}: a must be a contiguous f32 matrix (is {} {})", nd.name, dtype_name(a.dtype), shape_str(a.shape));
  if (out.dtype != DType::F32 || !out.contiguous()) fail("amx: node {}: the output must be contiguous f32", nd.name);
  const int64_t K = a.dim(0), M = a.dim(1), N = out.dim(1);
  if (M == 0 || N == 0) return;
  const std::shared_ptr<PackedWeight> pb = packed(g, nd.inputs[1], b, nd.attrs.trans_b, false);
  amx::matmul_bf16(*k_, a.ptr<const float>(), M, M, K, *pb->bf16, out.ptr<float>(), N, {}, &pool(), scratch_, true);
}

void AmxBackend::attention(const Node& nd, std::vector<Tensor>& values) {
  auto f32 = [&](size_t i, const char* what) {
    const Tensor& t = values[size_t(nd.inputs[i])];
    if (t.dtype != DType::F32 || !t.contiguous()) fail("amx: node {}: {} must be a contiguous f32 tensor", nd.name, what);
    return t.ptr<const float>();
  };
  Tensor& out = values[size_t(nd.output)];
  amx::AttnTileArgs a;
  a.q = f32(0, "q");
  a.k = f32(1, "k");
  a.v = f32(2, "v");
  a.out = out.ptr<float>();
  a.T = values[size_t(nd.inputs[0])].dim(0);
  a.C = values[size_t(nd.inputs[0])].dim(1);
  a.H = nd.attrs.heads;
  a.D = a.C / a.H;
  a.past = nd.attrs.past;
  a.scale = float(1.0 / std::sqrt(double(a.D)));
  if (a.T == 0) return;
  const int64_t L = a.past + a.T;
  if (values[size_t(nd.inputs[1])].dim(0) < L) fail("amx: node {}: k has fewer than past + T rows", nd.name);
  const size_t head = size_t(amx::attn_head_elems(a.D, L));
  k_tiles_.resize(size_t(a.H) * head * 2);
  v_tiles_.resize(size_t(a.H) * head * 2);
  uint16_t* kt = k_tiles_.as<uint16_t>();
  uint16_t* vt = v_tiles_.as<uint16_t>();
  cpu::ThreadPool* pool = &this->pool();
  cpu::parallel_ranges(pool, a.H, 1, 1, [&](int64_t h0, int64_t h1) { k_->attn_pack_kv(a, h0, h1, kt, vt); });
  a.kt = kt;
  a.vt = vt;
  const size_t need = size_t(amx::attn_scratch_floats(a.D));
  if (attn_scratch_.size() < size_t(pool->size())) attn_scratch_.resize(size_t(pool->size()));
  for (auto& s : attn_scratch_)
    if (s.size() < need) s.resize(need);
  const int64_t units = amx::attn_units(a.T, a.H);
  cpu::parallel_ranges_t(pool, units, 1, 1, [&](int t, int64_t u0, int64_t u1) {
    k_->attention(a, u0, u1, attn_scratch_[size_t(t)].data());
  });
}

void AmxBackend::run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) {
  if (!k_) fail("{}: not usable here: {}", name(), status_.reason);
  std::lock_guard<std::mutex> lk(mu_);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& nd = g.node(nodes[i]);
    switch (nd.op) {
      case OpKind::MatMul:
      case OpKind::Linear: {
        // A following activation of this product's output alone is computed in its epilogue,
        // straight into the activation's output.
        const Node* next = i + 1 < nodes.size() ? &g.node(nodes[i + 1]) : nullptr;
        if (next && next->op == OpKind::Activation && fusable_producer(g, *next) == &nd) {
          product(g, nd, values, next, values[size_t(next->output)]);
          ++i;
        } else {
          product(g, nd, values, nullptr, values[size_t(nd.output)]);
        }
        break;
      }
      case OpKind::Activation: {  // not fused (handed over alone): the cpu tier's kernel
        const Tensor& x = values[size_t(nd.inputs[0])];
        Tensor& out = values[size_t(nd.output)];
        if (x.dtype != DType::F32 || !x.contiguous() || out.dtype != DType::F32 || !out.contiguous())
          fail("amx: node {}: activation on non-contiguous or non-f32 tensors", nd.name);
        cpu::parallel_ranges(&pool(), out.numel(), 64, 16384, [&](int64_t s, int64_t e) {
          cpu::best_kernels().activation(x.ptr<const float>() + s, e - s, nd.attrs.act, out.ptr<float>() + s);
        });
        break;
      }
      case OpKind::MatMulAt: weight_gradient(g, nd, values); break;
      case OpKind::Attention: attention(nd, values); break;
      default:
        fail("amx: node {} ({}) is not a tile operation; the planner should not have placed it here", nd.name,
             op_name(nd.op));
    }
  }
}

}  // namespace

AmxStatus amx_status() {
  static const AmxStatus s = check_amx();
  return s;
}

AmxStatus avx512bf16_status() {
  AmxStatus s;
  if (amx::avx512bf16_kernels()) {
    s.usable = true;
    s.reason = "AVX512_BF16 (vdpbf16ps)";
  } else if (!cpu_features().avx512_bf16) {
    s.reason = "no AVX512_BF16 in CPUID";
  } else {
    s.reason = "not built: the compiler that built strand has no -mavx512bf16";
  }
  return s;
}

AmxCrossover amx_crossover_for(int threads, const std::string& tier) {
  AmxCrossover c;
  const CachedRowCrossovers cached = cached_row_crossovers(tier, threads);
  if (cached.bf16 > 0) c.rows_bf16 = cached.bf16;
  if (cached.bf16_w16 > 0) c.rows_bf16_w16 = cached.bf16_w16;
  if (cached.int8 > 0) c.rows_int8 = cached.int8;
  c.measured = cached.bf16 > 0 || cached.bf16_w16 > 0 || cached.int8 > 0;
  if (c.measured)
    c.source = fmt::format("measured, cache {}", cached.path);
  else if (!cached.warning.empty())
    c.source = "built-in default; " + cached.warning;
  else
    c.source = "built-in default; `strand devices` measures it";
  if (cached.bf16 > 0 && cached.bf16_w16 <= 0)
    c.source += fmt::format("; f16/bf16 weights: the default of {} rows (a cache from before that path was measured: "
                            "`strand devices --refresh` measures it)", kAmxDefaultMinRows);
  return c;
}

std::unique_ptr<Backend> amx_without_crossover(const Backend& b) {
  const auto* t = dynamic_cast<const AmxBackend*>(&b);
  if (!t) return nullptr;
  AmxOptions o = t->options();
  o.min_rows_bf16 = o.min_rows_int8 = o.min_attention_queries = 1;
  return make_amx_backend(o);
}

std::unique_ptr<Backend> make_amx_backend(const AmxOptions& opt) {
  if (opt.unit == AmxUnit::Model) {
    AmxCrossover c;
    c.source = "built-in default";
    return std::make_unique<AmxBackend>(opt, &amx::model_kernels(), AmxStatus{true, "model"}, c);
  }
  const bool bf16 = opt.unit == AmxUnit::Avx512Bf16;
  const AmxStatus s = bf16 ? avx512bf16_status() : amx_status();
  const AmxCrossover c = s.usable ? amx_crossover_for(default_thread_count(), bf16 ? "avx512bf16" : "amx") : AmxCrossover{};
  const amx::KernelSet* k = !s.usable ? nullptr : bf16 ? amx::avx512bf16_kernels() : amx::hw_kernels();
  return std::make_unique<AmxBackend>(opt, k, s, c);
}

}  // namespace strand
