// strand/backends/cuda/cuda_backend.cpp — the cuda tier: placement answers, op dispatch,
// device memory (through the process's Device, context.h) and CUDA graph capture.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "backends/cuda/context.h"
#include "backends/cuda/cuda.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"
#include "core/error.h"

namespace strand {

namespace {

using cuda::Device;
using cuda::Elem;

// Scratch slots of the Device.
constexpr int kScratchHalfA = 0;   // activations rounded to f16/bf16 for a tensor-core product
constexpr int kScratchBias = 1;    // a bias widened to f32
constexpr int kScratchXent = 2;    // cross_entropy: one loss per row
constexpr int kScratchLnStats = 3; // layernorm_gain_grad: each row's mean and 1/std
constexpr int kScratchAttnBwd = 4; // attention_backward: one sequence's P and dS
constexpr int kScratchColSums = 5; // sum_rows, layernorm_gain_grad: partial column sums
constexpr int kScratchSquares = 6; // sum_squares: partial sums (double) and the total
constexpr int kScratchHalfB = 7;   // the second operand of an f32 product rounded to bf16 (opt bf16)

bool is_float_weight(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }
bool is_half(DType t) { return t == DType::F16 || t == DType::BF16; }

Elem elem_of(DType t) {
  switch (t) {
    case DType::F32: return Elem::F32;
    case DType::F16: return Elem::F16;
    case DType::BF16: return Elem::BF16;
    default: fail("cuda tier: no kernel reads {} tensors", dtype_name(t));
  }
}

// The dtype of the graph's weight matrices (the first weight a product reads): attention of an
// f16/bf16 model computes in that dtype on tensor cores, of an f32 model in f32.
DType matrix_dtype(const Graph& g) {
  for (const Node& nd : g.nodes())
    if ((nd.op == OpKind::MatMul || nd.op == OpKind::Linear) && g.value(nd.inputs[1]).kind == ValueKind::Weight)
      return g.value(nd.inputs[1]).dtype;
  return DType::F32;
}

bool flash_attention(const Graph& g, const Node& n) {
  const int64_t T = g.value(n.inputs[0]).shape[0], C = g.value(n.inputs[0]).shape[1];
  return n.attrs.heads > 0 && n.attrs.seqs <= 1 && T > cuda::kGemvMaxRows && is_half(matrix_dtype(g)) &&
         cuda::attention_flash_fits(C / n.attrs.heads);
}

int64_t product_rows(const Graph& g, const Node& n) {
  const Shape& a = g.value(n.inputs[0]).shape;
  return n.op == OpKind::MatMulAt ? a[1] : a[0];
}

// Whether the product of node n runs on bf16 tensor cores with both operands rounded (CudaOptions::bf16).
bool bf16_product(const Graph& g, const Node& n, const CudaOptions& opt) {
  if (!opt.bf16) return false;
  if (n.op != OpKind::MatMul && n.op != OpKind::Linear && n.op != OpKind::MatMulAt) return false;
  if (g.value(n.inputs[1]).dtype != DType::F32) return false;
  return n.op == OpKind::MatMulAt || product_rows(g, n) > cuda::kGemvMaxRows;
}

// Attention's (and its gradient's) arguments from the node and its bound tensors (q, k, v).
cuda::AttnArgs attn_args(const Node& nd, const std::vector<Tensor>& values) {
  const Tensor& q = values[size_t(nd.inputs[0])];
  cuda::AttnArgs a;
  a.q = static_cast<const float*>(q.data);
  a.k = static_cast<const float*>(values[size_t(nd.inputs[1])].data);
  a.v = static_cast<const float*>(values[size_t(nd.inputs[2])].data);
  a.seqs = std::max<int64_t>(1, nd.attrs.seqs);
  a.T = q.dim(0) / a.seqs;
  a.C = q.dim(1);
  a.H = std::max<int64_t>(1, nd.attrs.heads);
  a.D = a.C / a.H;
  a.past = nd.attrs.past;
  a.scale = a.D > 0 ? float(1.0 / std::sqrt(double(a.D))) : 1.0f;
  return a;
}

// Counters of the graph machinery (cuda_graph_stats()).
std::mutex g_stats_mu;
CudaGraphStats g_stats;

void count(int64_t CudaGraphStats::*field) {
  std::lock_guard<std::mutex> lk(g_stats_mu);
  ++(g_stats.*field);
}

// Captures a segment's work into a CUDA graph and launches it. One executable graph per
// segment signature: the next capture with the same signature updates it in place (kernel
// arguments, buffers, grid sizes may change; the kernels may not), or, where the update is
// refused, replaces it.
class GraphCache {
 public:
  ~GraphCache() {
    for (auto& [k, e] : execs_)
      if (e) cudaGraphExecDestroy(e);
  }
  template <class Enqueue>
  void run(const std::string& key, cudaStream_t s, Enqueue&& enqueue) {
    STRAND_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue();
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(s, &broken);
      if (broken) cudaGraphDestroy(broken);
      cudaGetLastError();
      throw;
    }
    cudaGraph_t graph = nullptr;
    STRAND_CUDA(cudaStreamEndCapture(s, &graph));
    count(&CudaGraphStats::captures);
    cudaGraphExec_t& exec = execs_[key];
    if (exec) {
      cudaGraphExecUpdateResultInfo info{};
      if (cudaGraphExecUpdate(exec, graph, &info) == cudaSuccess) {
        count(&CudaGraphStats::updates);
      } else {
        cudaGetLastError();
        cudaGraphExecDestroy(exec);
        exec = nullptr;
      }
    }
    if (!exec) {
      const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
      if (e != cudaSuccess) {
        cudaGraphDestroy(graph);
        exec = nullptr;
        STRAND_CUDA(e);
      }
      count(&CudaGraphStats::instantiations);
    }
    cudaGraphDestroy(graph);
    STRAND_CUDA(cudaGraphLaunch(exec, s));
    count(&CudaGraphStats::launches);
  }

 private:
  std::map<std::string, cudaGraphExec_t> execs_;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaOptions& opt) : opt_(opt) {}

  std::string name() const override { return "cuda"; }
  std::string description() const override {
    return fmt::format("NVIDIA GPU: cuBLASLt products ({}f16/bf16 tensor cores), fused attention, weights and KV "
                       "cache resident, CUDA graphs for decode; trains with AdamW on the GPU",
                       opt_.bf16 ? "bf16 for f32 operands, " : opt_.tf32 ? "tf32, " : "f32, ");
  }
  Verdict probe() const override {
    const CudaDeviceInfo d = cuda_device_info();
    return d.available ? Verdict::yes(d.summary()) : Verdict::no(d.why);
  }
  Verdict supports(const Graph& g, const Node& n) const override;
  Precision precision(const Graph& g, const Node& n) const override {
    const CudaPrecision c = cuda_node_precision(g, n, opt_);
    auto to = [](CudaRounding r) {
      switch (r) {
        case CudaRounding::F16: return Rounding::F16;
        case CudaRounding::BF16: return Rounding::BF16;
        case CudaRounding::TF32: return Rounding::TF32;
        case CudaRounding::None: break;
      }
      return Rounding::None;
    };
    Precision p;
    for (CudaRounding r : c.inputs) p.inputs.push_back(to(r));
    if (n.op == OpKind::Attention && !p.inputs.empty()) p.attention_probs = p.inputs[0];  // P rounded as q, k, v
    p.note = c.note;
    return p;
  }
  const void* memory_space() const override { return cuda::gpu_memory_space(); }

  Tensor allocate_like(const Tensor& like) override { return Device::get().buffer_like(like); }
  void poison(Tensor& t) override {
    need_device(t, "poison");
    Device& d = Device::get();
    STRAND_CUDA(cudaMemsetAsync(t.data, 0xff, t.nbytes(), d.stream()));  // all-ones: NaN in f32/f16/bf16
  }
  void copy_in(const Tensor& host, Tensor& dev) override {
    if (memory_of(host)) fail("cuda tier: copy_in from a tensor that is not in host memory");
    need_device(dev, "copy_in");
    same_layout(host, dev);
    Device::get().copy_in(host.data, dev.data, host.nbytes());
  }
  void copy_out(const Tensor& dev, Tensor& host) override {
    need_device(dev, "copy_out");
    if (memory_of(host)) fail("cuda tier: copy_out into a tensor that is not in host memory");
    same_layout(dev, host);
    Device::get().copy_out(dev.data, host.data, dev.nbytes());
  }
  Tensor resident(const Tensor& host) override {
    if (memory_of(host)) fail("cuda tier: a resident copy of a tensor that is not in host memory");
    return Device::get().resident(host);
  }

  // Training state on the GPU: AdamW and the gradient norm run here (train.cu).
  bool trains_in_place() const override { return true; }
  void adamw_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWUpdate& u) override {
    for (const Tensor* t : std::initializer_list<const Tensor*>{&p, &g, &m, &v}) {
      need_device(*t, "adamw_update");
      if (t->dtype != DType::F32 || !t->contiguous() || t->shape != p.shape)
        fail("cuda tier: adamw_update takes contiguous f32 tensors of one shape");
    }
    cuda::AdamWArgs a;
    a.beta1 = u.beta1;
    a.beta2 = u.beta2;
    a.eps = u.eps;
    a.step_size = u.step_size;
    a.bc2_sqrt = u.bc2_sqrt;
    a.decay = u.decay;
    a.grad_scale = u.grad_scale;
    std::lock_guard<std::mutex> lk(mu_);
    cuda::adamw_update(p.ptr<float>(), g.ptr<const float>(), m.ptr<float>(), v.ptr<float>(), p.numel(), a,
                       Device::get().stream());
  }
  double sum_squares(const std::vector<Tensor>& ts) override {
    int64_t blocks = 0;
    for (const Tensor& t : ts) {
      need_device(t, "sum_squares");
      if (t.dtype != DType::F32 || !t.contiguous()) fail("cuda tier: sum_squares takes contiguous f32 tensors");
      blocks += cuda::sum_squares_blocks(t.numel());
    }
    std::lock_guard<std::mutex> lk(mu_);
    Device& d = Device::get();
    double* part = static_cast<double*>(d.scratch(kScratchSquares, size_t(blocks + 1) * sizeof(double)));
    int64_t off = 0;
    for (const Tensor& t : ts) {
      cuda::sum_squares_partials(t.ptr<const float>(), t.numel(), part + off, d.stream());
      off += cuda::sum_squares_blocks(t.numel());
    }
    cuda::sum_in_order(part, blocks, part + blocks, d.stream());
    double total = 0;
    d.copy_out(part + blocks, &total, sizeof(double));
    return total;
  }

  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override;
  void sync() override {
    Device::get().sync();
    STRAND_CUDA_LAUNCHED("the segment");
  }

 private:
  static void need_device(const Tensor& t, const std::string& what) {
    if (memory_of(t) != cuda::gpu_memory_space())
      fail("cuda tier: {} was handed a tensor in {} memory, not the GPU's", what,
           memory_of(t) ? device_buffer_of(t)->tier : "host");
  }
  static void same_layout(const Tensor& a, const Tensor& b) {
    if (a.dtype != b.dtype || a.shape != b.shape || a.strides != b.strides)
      fail("cuda tier: copy between tensors of different layouts ({} {} and {} {})", dtype_name(a.dtype),
           shape_str(a.shape), dtype_name(b.dtype), shape_str(b.shape));
  }
  // Scratch the node needs (reserved before a capture).
  void reserve_scratch(const Graph& g, const Node& nd, const std::vector<Tensor>& values);
  void exec(const Graph& g, const Node& nd, std::vector<Tensor>& values, DType mdt);
  // out = a·b (+ bias); with trans_a, out = aᵀ·b (a stored [K, M], f32 only).
  void matmul(const Node& nd, const Tensor& a, const Tensor& b, bool trans_b, const Tensor* bias, Tensor& out,
              bool trans_a = false);

  CudaOptions opt_;
  std::mutex mu_;  // run() is not re-entrant: scratch and the graph cache are shared
  GraphCache graphs_;
};

Verdict CudaBackend::supports(const Graph& g, const Node& n) const {
  // A graph with a loss (a training or evaluation step) reads the optimizer's latest weights:
  // with AdamW on the host the runtime hands this tier fresh copies on every run; with AdamW
  // here (trains_in_place) its resident copies are the weights, updated in place
  // (RunOptions::weights).
  auto dt = [&](size_t i) { return g.value(n.inputs[i]).dtype; };
  auto need_f32 = [&](size_t i, const char* what) -> std::string {
    if (dt(i) == DType::F32) return {};
    return fmt::format("{} is {}: the cuda tier takes f32 activations", what, dtype_name(dt(i)));
  };
  auto need_param = [&](size_t i, const char* what) -> std::string {
    if (is_float_weight(dt(i))) return {};
    if (dt(i) == DType::Q8)
      return fmt::format("{} is q8 (int8): the cuda tier has no int8 kernels (it falls back; its inputs cross to "
                         "the host and back)",
                         what);
    return fmt::format("{} is {}: not a weight dtype here (f32/f16/bf16)", what, dtype_name(dt(i)));
  };
  auto first = [](std::initializer_list<std::string> checks) {
    for (const std::string& c : checks)
      if (!c.empty()) return c;
    return std::string();
  };
  std::string why;
  switch (n.op) {
    case OpKind::GatherRows:
      why = first({need_param(0, "the table"), dt(1) == DType::I32 ? "" : "ids must be i32"});
      return why.empty() ? Verdict::yes("row gather, widened to f32") : Verdict::no(why);
    case OpKind::Add:
      why = first({need_f32(0, "a"), need_param(1, "b")});
      return why.empty() ? Verdict::yes("elementwise kernel") : Verdict::no(why);
    case OpKind::LayerNorm:
      why = first({need_f32(0, "x"), need_param(1, "the gain"), need_param(2, "the bias")});
      return why.empty() ? Verdict::yes("one block per row, tree sums") : Verdict::no(why);
    case OpKind::MatMul:
    case OpKind::Linear: {
      why = first({need_f32(0, "a"), need_param(1, "b"), n.op == OpKind::Linear ? need_param(2, "the bias") : ""});
      if (!why.empty()) return Verdict::no(why);
      const DType w = dt(1);
      const int64_t M = product_rows(g, n);
      const std::string epi = n.op == OpKind::Linear ? ", bias in the epilogue" : "";
      if (M <= cuda::kGemvMaxRows)
        return Verdict::yes(fmt::format("strand GEMV, f32{} (exact f32)",
                                        w == DType::F32 ? "" : fmt::format(" with {} weights widened", dtype_name(w))));
      if (w == DType::F32 && opt_.bf16)
        return Verdict::yes("cuBLASLt on bf16 tensor cores (a and b rounded to bf16, f32 accumulation)" + epi);
      if (w == DType::F32)
        return Verdict::yes(opt_.tf32 ? "cuBLASLt on TF32 tensor cores (a and b rounded to tf32)" + epi
                                      : "cuBLASLt f32 on the FP32 units (exact f32)" + epi);
      return Verdict::yes(fmt::format("cuBLASLt on {0} tensor cores (a rounded to {0}, f32 accumulation){1}",
                                      dtype_name(w), epi));
    }
    case OpKind::Activation:
    case OpKind::Scale:
    case OpKind::Softmax:
      why = need_f32(0, "x");
      return why.empty() ? Verdict::yes(n.op == OpKind::Softmax ? "one block per row" : "elementwise kernel")
                         : Verdict::no(why);
    case OpKind::CausalMask:
    case OpKind::SliceCols:
    case OpKind::SliceRows:
      why = need_f32(0, "x");
      return why.empty() ? Verdict::yes("copy kernel") : Verdict::no(why);
    case OpKind::ConcatCols:
      for (size_t i = 0; i < n.inputs.size() && why.empty(); ++i) why = need_f32(i, "a part");
      return why.empty() ? Verdict::yes("copy kernel") : Verdict::no(why);
    case OpKind::KvStore:
      why = first({need_f32(0, "the cache"), need_f32(1, "the new rows")});
      return why.empty() ? Verdict::yes("rows copied into the cache on the GPU") : Verdict::no(why);
    case OpKind::Attention: {
      why = first({need_f32(0, "q"), need_f32(1, "k"), need_f32(2, "v")});
      if (!why.empty()) return Verdict::no(why);
      const int64_t seqs = std::max<int64_t>(1, n.attrs.seqs);
      const int64_t T = g.value(n.inputs[0]).shape[0] / seqs, C = g.value(n.inputs[0]).shape[1];
      const int64_t D = n.attrs.heads > 0 ? C / n.attrs.heads : 0;
      if (D > cuda::kAttnMaxD) return Verdict::no(fmt::format("head size {} above {}", D, cuda::kAttnMaxD));
      if (T > 65535 || seqs > 65535) return Verdict::no("more than 65535 queries or sequences in one attention");
      if (flash_attention(g, n))
        return Verdict::yes(fmt::format("flash attention on {0} tensor cores (q, k, v and the probabilities rounded "
                                        "to {0}; f32 softmax)",
                                        dtype_name(matrix_dtype(g))));
      if (seqs > 1)
        return Verdict::yes(fmt::format("fused f32 attention (exact), one block per head, query and sequence ({} "
                                        "sequences)",
                                        seqs));
      return Verdict::yes(T <= cuda::kGemvMaxRows ? "fused f32 attention, decode: the KV cache read on the GPU"
                                                  : "fused f32 attention (exact), one block per head and query");
    }
    // Training: the loss and the backward ops, all f32 (train.cu).
    case OpKind::MatMulAt:
      why = first({need_f32(0, "a"), need_f32(1, "b")});
      if (!why.empty()) return Verdict::no(why);
      if (opt_.bf16)
        return Verdict::yes("cuBLASLt on bf16 tensor cores, A read transposed (a and b rounded to bf16, f32 accumulation)");
      return Verdict::yes(opt_.tf32 ? "cuBLASLt on TF32 tensor cores, A read transposed (a and b rounded to tf32)"
                                    : "cuBLASLt f32, A read transposed (exact f32)");
    case OpKind::CausalZero:
    case OpKind::PadCols:
    case OpKind::PadRows:
    case OpKind::BroadcastRows:
      why = need_f32(0, "x");
      return why.empty() ? Verdict::yes("copy kernel") : Verdict::no(why);
    case OpKind::SumRows:
      why = need_f32(0, "x");
      return why.empty() ? Verdict::yes("column sums, a thread per column, rows in order") : Verdict::no(why);
    case OpKind::ScatterAddRows:
      why = first({need_f32(0, "dy"), dt(1) == DType::I32 ? "" : "ids must be i32"});
      return why.empty() ? Verdict::yes("row adds, a thread per column, ids in order") : Verdict::no(why);
    case OpKind::CrossEntropy:
    case OpKind::CrossEntropyBackward:
      why = first({need_f32(0, "logits"), dt(1) == DType::I32 ? "" : "targets must be i32",
                   n.op == OpKind::CrossEntropyBackward ? need_f32(2, "dloss") : ""});
      return why.empty() ? Verdict::yes("one block per row") : Verdict::no(why);
    case OpKind::LayerNormBackward:
      why = first({need_f32(0, "x"), need_param(1, "the gain"), need_f32(2, "dy")});
      return why.empty() ? Verdict::yes("one block per row, tree sums") : Verdict::no(why);
    case OpKind::LayerNormGainGrad:
      why = first({need_f32(0, "x"), need_f32(1, "dy")});
      return why.empty() ? Verdict::yes("row statistics, then a thread per column") : Verdict::no(why);
    case OpKind::ActivationBackward:
      why = first({need_f32(0, "x"), need_f32(1, "dy")});
      return why.empty() ? Verdict::yes("elementwise kernel") : Verdict::no(why);
    case OpKind::SoftmaxBackward:
      why = first({need_f32(0, "y"), need_f32(1, "dy")});
      return why.empty() ? Verdict::yes("one block per row") : Verdict::no(why);
    case OpKind::AttentionBackward: {
      why = first({need_f32(0, "q"), need_f32(1, "k"), need_f32(2, "v"), need_f32(3, "dy")});
      if (!why.empty()) return Verdict::no(why);
      const int64_t C = g.value(n.inputs[0]).shape[1];
      const int64_t D = n.attrs.heads > 0 ? C / n.attrs.heads : 0;
      if (D > cuda::kAttnMaxD) return Verdict::no(fmt::format("head size {} above {}", D, cuda::kAttnMaxD));
      const int64_t T = g.value(n.inputs[0]).shape[0] / std::max<int64_t>(1, n.attrs.seqs);
      if (n.attrs.past + T > 65535) return Verdict::no("more than 65535 keys in one attention");
      return Verdict::yes("exact f32: per query its probabilities and dq, per key dk and dv (P and dS in scratch)");
    }
    case OpKind::kCount: break;
  }
  return Verdict::no("unknown op");
}

void CudaBackend::reserve_scratch(const Graph& g, const Node& nd, const std::vector<Tensor>& values) {
  Device& d = Device::get();
  switch (nd.op) {
    case OpKind::CrossEntropy:
      d.scratch(kScratchXent, size_t(std::max<int64_t>(1, values[size_t(nd.inputs[0])].dim(0))) * 4);
      return;
    case OpKind::LayerNormGainGrad:
      d.scratch(kScratchLnStats, size_t(std::max<int64_t>(1, 2 * values[size_t(nd.inputs[0])].dim(0))) * 4);
      [[fallthrough]];
    case OpKind::SumRows: {
      const Tensor& x = values[size_t(nd.inputs[0])];
      d.scratch(kScratchColSums, size_t(std::max<int64_t>(1, cuda::column_sum_chunks(x.dim(0)) * x.dim(1))) * 4);
      return;
    }
    case OpKind::AttentionBackward:
      d.scratch(kScratchAttnBwd, size_t(std::max<int64_t>(1, cuda::attention_backward_scratch(attn_args(nd, values)))) * 4);
      return;
    default: break;
  }
  if (nd.op != OpKind::MatMul && nd.op != OpKind::Linear && nd.op != OpKind::MatMulAt) return;
  const Tensor& a = values[size_t(nd.inputs[0])];
  const Tensor& b = values[size_t(nd.inputs[1])];
  if (bf16_product(g, nd, opt_)) {
    d.scratch(kScratchHalfA, size_t(a.numel()) * 2);
    d.scratch(kScratchHalfB, size_t(b.numel()) * 2);
  } else if (nd.op != OpKind::MatMulAt && a.dim(0) > cuda::kGemvMaxRows && is_half(b.dtype)) {
    d.scratch(kScratchHalfA, size_t(a.numel()) * 2);
  }
  if (nd.op == OpKind::Linear) {
    const Tensor& bias = values[size_t(nd.inputs[2])];
    if (bias.dtype != DType::F32) d.scratch(kScratchBias, size_t(bias.numel()) * 4);
  }
}

void CudaBackend::run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) {
  std::lock_guard<std::mutex> lk(mu_);
  Device& d = Device::get();
  const DType mdt = matrix_dtype(g);
  int64_t rows = 0;
  for (NodeId n : nodes) {
    const Value& o = g.value(g.node(n).output);
    if (g.node(n).op != OpKind::KvStore) rows = std::max(rows, o.shape.empty() ? 1 : o.shape[0]);
  }
  const bool capture = opt_.graphs && nodes.size() >= 4 && rows <= kGraphMaxRows;
  if (!capture) {
    for (NodeId n : nodes) exec(g, g.node(n), values, mdt);
    return;
  }
  for (NodeId n : nodes) reserve_scratch(g, g.node(n), values);  // no allocation while capturing
  // The signature: every node's op and output width (rows of kv_store's view grow step by step).
  std::string key = fmt::format("{}:", mdt == DType::F32 ? 0 : int(mdt));
  for (NodeId n : nodes) {
    const Node& nd = g.node(n);
    const Shape& s = g.value(nd.output).shape;
    key += fmt::format("{}.{}.{};", int(nd.op), s.size() > 1 ? s[1] : 0, nd.op == OpKind::KvStore ? 0 : s[0]);
  }
  graphs_.run(key, d.stream(), [&] {
    for (NodeId n : nodes) exec(g, g.node(n), values, mdt);
  });
}

void CudaBackend::matmul(const Node& nd, const Tensor& a, const Tensor& b_in, bool trans_b, const Tensor* bias_t,
                         Tensor& out, bool trans_a) {
  Device& d = Device::get();
  cudaStream_t s = d.stream();
  // A column-major weight is its row-major storage read transposed (as on the cpu tier).
  const bool col = b_in.col_major();
  const Tensor b = col ? b_in.col_major_storage() : b_in;
  const bool lines = col ? !trans_b : trans_b;  // B stored as N lines of K
  if (!b.contiguous()) fail("node {}: the weight must be contiguous or column-major", nd.name);
  if (!a.contiguous()) fail("node {}: a must be contiguous", nd.name);
  const int64_t M = trans_a ? a.dim(1) : a.dim(0), K = trans_a ? a.dim(0) : a.dim(1), N = out.dim(1);
  float* C = out.ptr<float>();
  const float* bias = nullptr;
  if (bias_t) {
    if (bias_t->dtype == DType::F32) {
      bias = bias_t->ptr<const float>();
    } else {
      float* w = static_cast<float*>(d.scratch(kScratchBias, size_t(N) * 4));
      cuda::to_f32(bias_t->data, elem_of(bias_t->dtype), N, w, s);
      bias = w;
    }
  }
  if (M == 0 || N == 0) return;
  if (K == 0) {
    STRAND_CUDA(cudaMemsetAsync(C, 0, size_t(M * N) * 4, s));
    if (bias) cuda::add(C, bias, Elem::F32, true, M, N, C, s);
    return;
  }
  if (opt_.bf16 && b.dtype == DType::F32 && (trans_a || M > cuda::kGemvMaxRows)) {
    // Mixed precision: both operands rounded to bf16 (in their own layouts), f32 accumulation.
    if (a.dtype != DType::F32) fail("node {}: a must be f32", nd.name);
    void* ha = d.scratch(kScratchHalfA, size_t(a.numel()) * 2);
    void* hb = d.scratch(kScratchHalfB, size_t(b.numel()) * 2);
    cuda::to_half(a.ptr<const float>(), a.numel(), Elem::BF16, ha, s);
    cuda::to_half(b.ptr<const float>(), b.numel(), Elem::BF16, hb, s);
    if (!d.lt().matmul(ha, Elem::BF16, M, K, hb, lines, N, bias, C, false, s, trans_a))
      cuda::gemm_fallback(ha, hb, Elem::BF16, lines, M, N, K, bias, C, s, trans_a);
    return;
  }
  if (trans_a) {  // a weight's gradient: f32 operands (supports() asks for them)
    if (a.dtype != DType::F32 || b.dtype != DType::F32) fail("node {}: aᵀ·b takes f32 operands", nd.name);
    if (!d.lt().matmul(a.data, Elem::F32, M, K, b.data, lines, N, bias, C, opt_.tf32, s, /*a_trans=*/true))
      cuda::gemm_fallback(a.data, b.data, Elem::F32, lines, M, N, K, bias, C, s, /*a_trans=*/true);
    return;
  }
  if (M <= cuda::kGemvMaxRows) {
    cuda::gemv(a.ptr<const float>(), M, K, b.data, elem_of(b.dtype), lines, N, bias, C, s);
    return;
  }
  if (b.dtype == DType::F32) {
    if (!d.lt().matmul(a.data, Elem::F32, M, K, b.data, lines, N, bias, C, opt_.tf32, s))
      cuda::gemm_fallback(a.data, b.data, Elem::F32, lines, M, N, K, bias, C, s);
    return;
  }
  void* half = d.scratch(kScratchHalfA, size_t(M * K) * 2);
  cuda::to_half(a.ptr<const float>(), M * K, elem_of(b.dtype), half, s);
  if (!d.lt().matmul(half, elem_of(b.dtype), M, K, b.data, lines, N, bias, C, false, s))
    cuda::gemm_fallback(half, b.data, elem_of(b.dtype), lines, M, N, K, bias, C, s);
}

void CudaBackend::exec(const Graph& g, const Node& nd, std::vector<Tensor>& values, DType mdt) {
  const Attrs& at = nd.attrs;
  cudaStream_t s = Device::get().stream();
  auto in = [&](size_t i) -> const Tensor& {
    const Tensor& t = values[size_t(nd.inputs[i])];
    if (memory_of(t) != cuda::gpu_memory_space()) need_device(t, fmt::format("node {} (input {})", nd.name, i));
    return t;
  };
  auto f32 = [&](size_t i, const char* what) -> const float* {
    const Tensor& t = in(i);
    if (t.dtype != DType::F32 || !t.contiguous())
      fail("node {}: {} must be a contiguous f32 tensor (is {} {})", nd.name, what, dtype_name(t.dtype),
           shape_str(t.shape));
    return t.ptr<const float>();
  };
  auto param = [&](size_t i, const char* what) -> const Tensor& {
    const Tensor& t = in(i);
    if (!t.contiguous()) fail("node {}: {} must be contiguous", nd.name, what);
    elem_of(t.dtype);
    return t;
  };
  Tensor& out = values[size_t(nd.output)];
  if (memory_of(out) != cuda::gpu_memory_space()) need_device(out, fmt::format("node {} (output)", nd.name));
  if (out.dtype != DType::F32 || !out.contiguous()) fail("node {}: the output buffer must be contiguous f32", nd.name);
  float* o = out.ptr<float>();

  switch (nd.op) {
    case OpKind::GatherRows: {
      const Tensor& table = param(0, "the table");
      const Tensor& ids = in(1);
      if (ids.dtype != DType::I32) fail("node {}: ids must be i32", nd.name);
      cuda::gather_rows(table.data, elem_of(table.dtype), table.dim(0), table.dim(1), ids.ptr<const int32_t>(),
                        ids.dim(0), o, s);
      break;
    }
    case OpKind::Add: {
      const Tensor& b = param(1, "b");
      cuda::add(f32(0, "a"), b.data, elem_of(b.dtype), b.rank() == 1, out.dim(0), out.dim(1), o, s);
      break;
    }
    case OpKind::LayerNorm: {
      const Tensor& gm = param(1, "the gain");
      const Tensor& bt = param(2, "the bias");
      cuda::layernorm(f32(0, "x"), gm.data, elem_of(gm.dtype), bt.data, elem_of(bt.dtype), out.dim(0), out.dim(1),
                      float(at.eps), o, s);
      break;
    }
    case OpKind::MatMul:
      f32(0, "a");
      matmul(nd, in(0), in(1), at.trans_b, nullptr, out);
      break;
    case OpKind::Linear: {
      f32(0, "a");
      const Tensor& bias = param(2, "the bias");
      matmul(nd, in(0), in(1), false, &bias, out);
      break;
    }
    case OpKind::Activation:
      cuda::activation(f32(0, "x"), out.numel(), int(at.act), o, s);
      break;
    case OpKind::Scale:
      cuda::scale(f32(0, "x"), out.numel(), float(at.scale), o, s);
      break;
    case OpKind::CausalMask:
      cuda::causal_mask(f32(0, "x"), out.dim(0), out.dim(1), at.past, o, s);
      break;
    case OpKind::Softmax:
      cuda::softmax(f32(0, "x"), out.dim(0), out.dim(1), o, s);
      break;
    case OpKind::SliceCols:
      cuda::copy_cols(f32(0, "x"), in(0).dim(1), at.start, out.dim(0), at.len, o, at.len, 0, s);
      break;
    case OpKind::SliceRows: {
      const float* x = f32(0, "x");
      const int64_t N = out.dim(1);
      if (at.len * N > 0)
        STRAND_CUDA(cudaMemcpyAsync(o, x + at.start * N, size_t(at.len * N) * 4, cudaMemcpyDeviceToDevice, s));
      break;
    }
    case OpKind::ConcatCols: {
      const int64_t M = out.dim(0), W = out.dim(1);
      int64_t off = 0;
      for (size_t p = 0; p < nd.inputs.size(); ++p) {
        const int64_t n = in(p).dim(1);
        cuda::copy_cols(f32(p, "a part"), n, 0, M, n, o, W, off, s);
        off += n;
      }
      break;
    }
    case OpKind::KvStore: {
      const Tensor& cache = in(0);
      f32(0, "the cache");
      const float* rows = f32(1, "the new rows");
      if (out.data != cache.data) fail("node {}: kv_store output must alias its cache", nd.name);
      const int64_t n = in(1).dim(0), C = in(1).dim(1);
      if (n * C > 0)
        STRAND_CUDA(cudaMemcpyAsync(static_cast<float*>(cache.data) + at.past * C, rows, size_t(n * C) * 4,
                                    cudaMemcpyDeviceToDevice, s));
      break;
    }
    case OpKind::Attention: {
      f32(0, "q");
      f32(1, "k");
      f32(2, "v");
      cuda::AttnArgs a = attn_args(nd, values);
      a.out = o;
      if (flash_attention(g, nd))
        cuda::attention_flash(a, elem_of(mdt), s);
      else
        cuda::attention_f32(a, s);
      break;
    }
    // ---- training ----
    case OpKind::MatMulAt:
      f32(0, "a");
      matmul(nd, in(0), in(1), at.trans_b, nullptr, out, /*trans_a=*/true);
      break;
    case OpKind::CausalZero:
      cuda::causal_zero(f32(0, "g"), out.dim(0), out.dim(1), at.past, o, s);
      break;
    case OpKind::PadCols:
      cuda::pad_cols(f32(0, "x"), out.dim(0), in(0).dim(1), at.start, out.dim(1), o, s);
      break;
    case OpKind::PadRows:
      cuda::pad_rows(f32(0, "x"), in(0).dim(0), out.dim(1), at.start, out.dim(0), o, s);
      break;
    case OpKind::SumRows: {
      const int64_t M = in(0).dim(0), N = in(0).dim(1);
      float* part = static_cast<float*>(
          Device::get().scratch(kScratchColSums, size_t(std::max<int64_t>(1, cuda::column_sum_chunks(M) * N)) * 4));
      cuda::sum_rows(f32(0, "x"), M, N, part, o, s);
      break;
    }
    case OpKind::BroadcastRows:
      cuda::broadcast_rows(f32(0, "x"), out.dim(0), out.dim(1), o, s);
      break;
    case OpKind::ScatterAddRows: {
      const Tensor& ids = in(1);
      if (ids.dtype != DType::I32) fail("node {}: ids must be i32", nd.name);
      cuda::scatter_add_rows(f32(0, "dy"), ids.ptr<const int32_t>(), in(0).dim(0), in(0).dim(1), out.dim(0), o, s);
      break;
    }
    case OpKind::CrossEntropy:
    case OpKind::CrossEntropyBackward: {
      const float* x = f32(0, "logits");
      const Tensor& tg = in(1);
      if (tg.dtype != DType::I32) fail("node {}: targets must be i32", nd.name);
      const int64_t n = in(0).dim(0), V = in(0).dim(1);
      if (nd.op == OpKind::CrossEntropy) {
        float* rows = static_cast<float*>(Device::get().scratch(kScratchXent, size_t(std::max<int64_t>(1, n)) * 4));
        cuda::cross_entropy(x, tg.ptr<const int32_t>(), n, V, rows, o, s);
      } else {
        cuda::cross_entropy_backward(x, tg.ptr<const int32_t>(), f32(2, "dloss"), n, V, o, s);
      }
      break;
    }
    case OpKind::LayerNormBackward: {
      const Tensor& gm = param(1, "the gain");
      cuda::layernorm_backward(f32(0, "x"), gm.data, elem_of(gm.dtype), f32(2, "dy"), out.dim(0), out.dim(1),
                               float(at.eps), o, s);
      break;
    }
    case OpKind::LayerNormGainGrad: {
      const int64_t M = in(0).dim(0), N = in(0).dim(1);
      float* stats = static_cast<float*>(Device::get().scratch(kScratchLnStats, size_t(std::max<int64_t>(1, 2 * M)) * 4));
      float* part = static_cast<float*>(
          Device::get().scratch(kScratchColSums, size_t(std::max<int64_t>(1, cuda::column_sum_chunks(M) * N)) * 4));
      cuda::layernorm_gain_grad(f32(0, "x"), f32(1, "dy"), M, N, float(at.eps), stats, part, o, s);
      break;
    }
    case OpKind::ActivationBackward:
      cuda::activation_backward(f32(0, "x"), f32(1, "dy"), out.numel(), int(at.act), o, s);
      break;
    case OpKind::SoftmaxBackward:
      cuda::softmax_backward(f32(0, "y"), f32(1, "dy"), out.dim(0), out.dim(1), o, s);
      break;
    case OpKind::AttentionBackward: {
      f32(0, "q");
      f32(1, "k");
      f32(2, "v");
      const float* dy = f32(3, "dy");
      const cuda::AttnArgs a = attn_args(nd, values);
      const size_t bytes = size_t(std::max<int64_t>(1, cuda::attention_backward_scratch(a))) * 4;
      float* scratch = static_cast<float*>(Device::get().scratch(kScratchAttnBwd, bytes));
      cuda::attention_backward(a, dy, scratch, o, s);
      break;
    }
    case OpKind::kCount: fail("node {}: invalid op", nd.name);
  }
}

bool env_flag(const char* name, bool dflt) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  return !(v[0] == '0' || v[0] == 'n' || v[0] == 'N' || v[0] == 'f' || v[0] == 'F');
}

}  // namespace

CudaOptions cuda_options_from_env() {
  CudaOptions o;
  o.graphs = env_flag("STRAND_CUDA_GRAPHS", true);
  o.tf32 = env_flag("STRAND_CUDA_TF32", false);
  o.bf16 = env_flag("STRAND_CUDA_BF16", false);
  return o;
}

std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& opt) { return std::make_unique<CudaBackend>(opt); }

CudaPrecision cuda_node_precision(const Graph& g, const Node& n, const CudaOptions& opt) {
  CudaPrecision p;
  p.inputs.assign(n.inputs.size(), CudaRounding::None);
  auto rounding = [](DType t) { return t == DType::BF16 ? CudaRounding::BF16 : CudaRounding::F16; };
  if (bf16_product(g, n, opt)) {
    p.inputs[0] = p.inputs[1] = CudaRounding::BF16;
    p.note = "bf16 tensor cores: a and b rounded to bf16, f32 accumulation (mixed precision)";
    return p;
  }
  if (n.op == OpKind::MatMulAt && opt.tf32) {
    p.inputs[0] = p.inputs[1] = CudaRounding::TF32;
    p.note = "tf32 tensor cores: a and b rounded to tf32 (10-bit mantissa), f32 accumulation";
  }
  if ((n.op == OpKind::MatMul || n.op == OpKind::Linear) && product_rows(g, n) > cuda::kGemvMaxRows) {
    const DType w = g.value(n.inputs[1]).dtype;
    if (is_half(w)) {
      p.inputs[0] = rounding(w);
      p.note = fmt::format("{} tensor cores: a rounded to {}, f32 accumulation", dtype_name(w), dtype_name(w));
    } else if (w == DType::F32 && opt.tf32) {
      p.inputs[0] = p.inputs[1] = CudaRounding::TF32;
      p.note = "tf32 tensor cores: a and b rounded to tf32 (10-bit mantissa), f32 accumulation";
    }
  }
  if (n.op == OpKind::Attention && flash_attention(g, n)) {
    const DType m = matrix_dtype(g);
    p.inputs = {rounding(m), rounding(m), rounding(m)};
    p.note = fmt::format("{} tensor cores: q, k, v rounded to {}, and the probabilities before P·V; f32 softmax",
                         dtype_name(m), dtype_name(m));
  }
  if (p.note.empty()) p.note = "f32";
  return p;
}

CudaGraphStats cuda_graph_stats() {
  std::lock_guard<std::mutex> lk(g_stats_mu);
  return g_stats;
}

double cuda_resident_bytes() { return cuda::Device::unavailable_reason().empty() ? Device::get().resident_bytes() : 0; }
int cuda_resident_count() { return cuda::Device::unavailable_reason().empty() ? Device::get().resident_count() : 0; }

}  // namespace strand
