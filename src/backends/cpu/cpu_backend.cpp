// strand/backends/cpu/cpu_backend.cpp — the cpu tier: placement answers and op dispatch.
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "backends/cpu/cpu.h"
#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/quant.h"
#include "backends/cpu/threadpool.h"
#include "backends/cpu/train_ops.h"
#include "core/error.h"

namespace strand {

namespace {

using cpu::Kernels;
using cpu::ThreadPool;

// Work below this many elements runs on the calling thread (waking the pool costs more).
constexpr int64_t kMinParallel = 16384;
// A one-row product is split over the threads only when each gets at least this much of the
// weight to read (a wake-up and join cost about as much as streaming ~100-200 KiB here).
constexpr int64_t kMinGemvBytesPerThread = 256 << 10;
// Attention is split over the threads only when each gets at least this many multiply-adds.
constexpr int64_t kMinParallelAttention = 65536;

bool is_float_storage(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::Q8; }
bool is_gemm_weight(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::Q8; }

std::string isa_words(const Kernels& k) {
  const std::string isa = k.isa;
  return isa == "avx512" ? "AVX-512" : isa == "avx2" ? "AVX2" : "portable";
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const Kernels& k) : k_(k) {}

  std::string name() const override { return "cpu"; }
  std::string description() const override {
    return "optimized CPU: fused SIMD kernels, packed GEMM, int8 GEMV, all cores";
  }
  Verdict probe() const override {
    return Verdict::yes(fmt::format("{} kernels, {} threads", isa_words(k_), pool().size()));
  }
  Verdict supports(const Graph& g, const Node& n) const override;
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override;

 private:
  ThreadPool& pool() const { return ThreadPool::global(); }
  void exec(const Node& nd, std::vector<Tensor>& values);
  void matmul(const Node& nd, const Tensor& a, const Tensor& b, bool trans_b, const float* bias, Tensor& out,
              bool trans_a = false);
  cpu::AttnArgs attn_args(const Node& nd, const Tensor& q, const Tensor& k, const Tensor& v, int64_t seqs);
  void attention(const cpu::AttnArgs& a);  // one sequence
  // `t` as f32 floats: its own data when it already is, else widened into conversion buffer `slot`.
  const float* as_f32(const Tensor& t, int slot, const std::string& node);
  void gemv_kn_split_k(const cpu::GemvArgs& g, ThreadPool* pool);

  const Kernels& k_;
  std::mutex mu_;  // run() is not re-entrant: scratch below is shared
  std::vector<float> conv_[3];
  std::vector<float> q8_scratch_;
  std::vector<float> gemv_partial_;  // partial sums of the K-split GEMV
  std::vector<std::vector<float>> attn_scratch_;
};

Verdict CpuBackend::supports(const Graph& g, const Node& n) const {
  auto dt = [&](size_t i) { return g.value(n.inputs[i]).dtype; };
  auto need_f32 = [&](size_t i, const char* what) -> std::string {
    if (dt(i) == DType::F32) return {};
    return fmt::format("{} is {}: the cpu tier takes f32 activations", what, dtype_name(dt(i)));
  };
  auto need_param = [&](size_t i, const char* what) -> std::string {
    if (is_float_storage(dt(i))) return {};
    return fmt::format("{} is {}: not a weight dtype (f32/f16/bf16/q8)", what, dtype_name(dt(i)));
  };
  std::string why;
  auto first = [&](std::initializer_list<std::string> checks) {
    for (const std::string& c : checks)
      if (!c.empty()) return c;
    return std::string();
  };
  const std::string simd = "fused " + isa_words(k_) + " kernel";
  switch (n.op) {
    case OpKind::GatherRows:
      why = first({need_param(0, "the table"), dt(1) == DType::I32 ? "" : "ids must be i32"});
      return why.empty() ? Verdict::yes("row copy, widened on the fly") : Verdict::no(why);
    case OpKind::Add:
      why = first({need_f32(0, "a"), need_param(1, "b")});
      return why.empty() ? Verdict::yes(simd) : Verdict::no(why);
    case OpKind::LayerNorm:
      why = first({need_f32(0, "x"), need_param(1, "the gain"), need_param(2, "the bias")});
      return why.empty() ? Verdict::yes(simd) : Verdict::no(why);
    case OpKind::MatMul:
    case OpKind::Linear: {
      why = need_f32(0, "a");
      if (why.empty() && !is_gemm_weight(dt(1))) why = fmt::format("b is {}: not a weight dtype", dtype_name(dt(1)));
      if (why.empty() && n.op == OpKind::Linear) why = need_param(2, "the bias");
      if (!why.empty()) return Verdict::no(why);
      const bool trans = n.op == OpKind::MatMul && n.attrs.trans_b;
      const int64_t M = g.value(n.inputs[0]).shape[0];
      const DType w = dt(1);
      if (w == DType::Q8)
        return Verdict::yes(M <= 16 ? "int8 GEMV (q8 weights blocked along K)"
                                    : "q8 panels dequantized into the packed GEMM");
      const std::string wd = w == DType::F32 ? "" : fmt::format(", {} weights widened in registers", dtype_name(w));
      if (M <= cpu::kGemvMaxRows) return Verdict::yes(fmt::format("streaming GEMV{}{}", trans ? " (Bᵀ)" : "", wd));
      return Verdict::yes(fmt::format("packed GEMM{}", w == DType::F32 ? "" : fmt::format(", {} widened while packing", dtype_name(w))));
    }
    case OpKind::Activation:
    case OpKind::Scale:
    case OpKind::Softmax:
      why = need_f32(0, "x");
      return why.empty() ? Verdict::yes(simd) : Verdict::no(why);
    case OpKind::CausalMask:
    case OpKind::SliceCols:
    case OpKind::SliceRows:
      why = need_f32(0, "x");
      return why.empty() ? Verdict::yes("row copy") : Verdict::no(why);
    case OpKind::ConcatCols:
      for (size_t i = 0; i < n.inputs.size() && why.empty(); ++i) why = need_f32(i, "a part");
      return why.empty() ? Verdict::yes("row copy") : Verdict::no(why);
    case OpKind::KvStore:
      why = first({need_f32(0, "the cache"), need_f32(1, "the new rows")});
      return why.empty() ? Verdict::yes("row copy into the cache") : Verdict::no(why);
    case OpKind::Attention: {
      why = first({need_f32(0, "q"), need_f32(1, "k"), need_f32(2, "v")});
      if (!why.empty()) return Verdict::no(why);
      const int64_t T = g.value(n.inputs[0]).shape[0] / std::max<int64_t>(1, n.attrs.seqs);
      return Verdict::yes(fmt::format("fused {} attention ({}{})", isa_words(k_),
                                      T <= cpu::kAttnDecodeMaxQueries ? "decode: heads x queries" : "prefill: heads x query blocks",
                                      n.attrs.seqs > 1 ? fmt::format(", {} sequences", n.attrs.seqs) : ""));
    }
    case OpKind::MatMulAt:
      why = first({need_f32(0, "a"), need_f32(1, "b")});
      return why.empty() ? Verdict::yes("packed GEMM, A read transposed") : Verdict::no(why);
    case OpKind::CausalZero:
    case OpKind::PadCols:
    case OpKind::PadRows:
      why = need_f32(0, "x");
      return why.empty() ? Verdict::yes("row copy") : Verdict::no(why);
    case OpKind::SumRows:
      why = need_f32(0, "x");
      return why.empty() ? Verdict::yes("column sums, columns split over threads") : Verdict::no(why);
    case OpKind::BroadcastRows:
      why = need_f32(0, "x");
      return why.empty() ? Verdict::yes("row copy") : Verdict::no(why);
    case OpKind::ScatterAddRows:
      why = first({need_f32(0, "dy"), dt(1) == DType::I32 ? "" : "ids must be i32"});
      return why.empty() ? Verdict::yes("row adds, columns split over threads") : Verdict::no(why);
    case OpKind::CrossEntropy:
    case OpKind::CrossEntropyBackward:
      why = first({need_f32(0, "logits"), dt(1) == DType::I32 ? "" : "targets must be i32"});
      return why.empty() ? Verdict::yes(simd + " softmax per row") : Verdict::no(why);
    case OpKind::LayerNormBackward:
      why = first({need_f32(0, "x"), need_param(1, "the gain"), need_f32(2, "dy")});
      return why.empty() ? Verdict::yes("rows split over threads") : Verdict::no(why);
    case OpKind::LayerNormGainGrad:
    case OpKind::ActivationBackward:
    case OpKind::SoftmaxBackward:
      why = first({need_f32(0, "x"), need_f32(1, "dy")});
      return why.empty() ? Verdict::yes("split over threads") : Verdict::no(why);
    case OpKind::AttentionBackward:
      why = first({need_f32(0, "q"), need_f32(1, "k"), need_f32(2, "v"), need_f32(3, "dy")});
      return why.empty() ? Verdict::yes("per (sequence, head): probabilities recomputed, five packed GEMMs")
                         : Verdict::no(why);
    case OpKind::kCount: break;
  }
  return Verdict::no("unknown op");
}

void CpuBackend::run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) {
  std::lock_guard<std::mutex> lk(mu_);
  for (NodeId n : nodes) exec(g.node(n), values);
}

const float* f32_data(const Tensor& t, const std::string& node, const char* what) {
  if (t.dtype != DType::F32 || !t.contiguous())
    fail("node {}: {} must be a contiguous f32 tensor (is {} {})", node, what, dtype_name(t.dtype), shape_str(t.shape));
  return t.ptr<const float>();
}

const float* CpuBackend::as_f32(const Tensor& t, int slot, const std::string& node) {
  if (t.dtype == DType::F32 && t.contiguous()) return t.ptr<const float>();
  std::vector<float>& buf = conv_[slot];
  if (buf.size() < size_t(t.numel())) buf.resize(size_t(t.numel()));
  if (t.dtype == DType::Q8) {
    const Tensor f = t.to(DType::F32);
    std::memcpy(buf.data(), f.data, size_t(t.numel()) * 4);
  } else {
    if (!t.contiguous() || (t.dtype != DType::F16 && t.dtype != DType::BF16))
      fail("node {}: cannot read a {} {} tensor as f32", node, t.contiguous() ? "" : "non-contiguous", dtype_name(t.dtype));
    k_.widen(t.data, t.dtype, t.numel(), buf.data());
  }
  return buf.data();
}

void CpuBackend::matmul(const Node& nd, const Tensor& a, const Tensor& b_in, bool trans_b, const float* bias, Tensor& out,
                        bool trans_a) {
  const float* A = f32_data(a, nd.name, "a");
  // A column-major weight (see core/tensor.h) is its row-major storage read transposed.
  const bool lines = b_in.col_major();
  const Tensor b = lines ? b_in.col_major_storage() : b_in;
  if (lines) trans_b = !trans_b;
  // trans_a (matmul_at): a is stored [K, M] and read transposed; only cpu::gemm takes that.
  const int64_t M = trans_a ? a.dim(1) : a.dim(0), K = trans_a ? a.dim(0) : a.dim(1), N = out.dim(1);
  if (trans_a && b.dtype == DType::Q8) fail("node {}: a transposed product with q8 weights is not supported", nd.name);
  float* C = out.ptr<float>();
  ThreadPool* pool = &this->pool();
  if (b.dtype == DType::Q8) {
    cpu::q8_matmul(k_, A, M, K, K, b, trans_b, bias, C, N, pool, q8_scratch_);
    return;
  }
  if (!b.contiguous()) fail("node {}: the weight must be contiguous", nd.name);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * N + j] = bias ? bias[j] : 0.0f;
    return;
  }
  if (M <= cpu::kGemvRows && !trans_a) {
    cpu::GemvArgs g;
    g.M = M;
    g.K = K;
    g.N = N;
    g.x = A;
    g.ldx = K;
    g.B = b.data;
    g.b_dtype = b.dtype;
    g.ldb = trans_b ? K : N;
    g.y = C;
    g.ldy = N;
    g.bias = bias;
    // Each thread gets at least kMinGemvBytesPerThread of B, or the wake-up is not worth it.
    const int64_t min_cols =
        std::max<int64_t>(16, kMinGemvBytesPerThread / std::max<int64_t>(1, K * int64_t(dtype_size(b.dtype))));
    if (trans_b)
      cpu::parallel_ranges(pool, N, 4, min_cols, [&](int64_t s, int64_t e) { k_.gemv_nk(g, s, e); });
    else
      gemv_kn_split_k(g, pool);
    return;
  }
  cpu::GemmArgs g;
  g.M = M;
  g.N = N;
  g.K = K;
  g.A = A;
  g.lda = trans_a ? M : K;
  g.trans_a = trans_a;
  g.B = b.data;
  g.b_dtype = b.dtype;
  g.ldb = trans_b ? K : N;
  g.trans_b = trans_b;
  g.C = C;
  g.ldc = N;
  g.bias = bias;
  cpu::gemm(g, pool);
}

// B as [K, N] rows: the threads split K, not N, so that each reads one contiguous block of
// B (a split of N has every thread read a short piece of every row, and jump: the hardware
// prefetcher cannot keep up, measured ~30% slower at N = 768). Thread 0 accumulates into y;
// the others into scratch rows that are added to y after the join (N floats each: cheap).
void CpuBackend::gemv_kn_split_k(const cpu::GemvArgs& g, ThreadPool* pool) {
  const int64_t bytes = g.K * g.N * int64_t(dtype_size(g.b_dtype));
  int threads = pool ? pool->size() : 1;
  // Each thread gets at least kMinGemvBytesPerThread of B and 8 rows, or the wake-up is not worth it.
  threads = int(std::min<int64_t>(
      {int64_t(threads), std::max<int64_t>(1, bytes / kMinGemvBytesPerThread), std::max<int64_t>(1, g.K / 8)}));
  if (threads <= 1) {
    k_.gemv_kn(g, 0, g.N);
    return;
  }
  const int64_t rows_y = g.M * g.N;
  if (int64_t(gemv_partial_.size()) < (threads - 1) * rows_y) gemv_partial_.resize(size_t((threads - 1) * rows_y));
  const size_t esize = dtype_size(g.b_dtype);
  pool->run([&](int t) {
    if (t >= threads) return;
    const int64_t k0 = g.K * t / threads, k1 = g.K * (t + 1) / threads;
    cpu::GemvArgs s = g;
    s.K = k1 - k0;
    s.x = g.x + k0;
    s.B = static_cast<const char*>(g.B) + size_t(k0 * g.ldb) * esize;
    if (t > 0) {
      s.y = gemv_partial_.data() + (t - 1) * rows_y;
      s.ldy = g.N;
      s.bias = nullptr;
    }
    k_.gemv_kn(s, 0, g.N);
  });
  for (int t = 1; t < threads; ++t) {
    const float* p = gemv_partial_.data() + (t - 1) * rows_y;
    for (int64_t m = 0; m < g.M; ++m) k_.add(g.y + m * g.ldy, p + m * g.N, g.N, g.y + m * g.ldy);
  }
}

void CpuBackend::exec(const Node& nd, std::vector<Tensor>& values) {
  const Attrs& at = nd.attrs;
  auto in = [&](size_t i) -> const Tensor& { return values[size_t(nd.inputs[i])]; };
  Tensor& out = values[size_t(nd.output)];
  if (out.dtype != DType::F32 || !out.contiguous()) fail("node {}: the output buffer must be contiguous f32", nd.name);
  float* o = out.ptr<float>();
  ThreadPool* pool = &this->pool();
  const Kernels& k = k_;

  switch (nd.op) {
    case OpKind::GatherRows: {
      const Tensor& table = in(0);
      const Tensor& ids = in(1);
      if (ids.dtype != DType::I32) fail("node {}: ids must be i32", nd.name);
      const int64_t V = table.dim(0), C = table.dim(1), n = ids.dim(0);
      const int32_t* id = ids.ptr<const int32_t>();
      for (int64_t t = 0; t < n; ++t)
        if (id[t] < 0 || id[t] >= V) fail("token id {} is out of range [0, {})", id[t], V);
      if (table.dtype != DType::Q8 && !table.contiguous()) fail("node {}: the table must be contiguous", nd.name);
      cpu::parallel_ranges(pool, n, 1, std::max<int64_t>(1, kMinParallel / std::max<int64_t>(1, C)), [&](int64_t s, int64_t e) {
        for (int64_t t = s; t < e; ++t) {
          float* row = o + t * C;
          const int64_t r = id[t];
          if (table.dtype == DType::Q8) {
            if (table.q8_axis() == 1) {
              k.q8_dequant(table.q8_data(), table.q8_scales(), q8_padded(C), C, r, r + 1, row, C);
            } else {
              for (int64_t c = 0; c < C; ++c) row[c] = float(load_as_double(table, r * C + c));
            }
          } else {
            k.widen(static_cast<const char*>(table.data) + size_t(r * C) * dtype_size(table.dtype), table.dtype, C, row);
          }
        }
      });
      break;
    }
    case OpKind::Add: {
      const float* a = f32_data(in(0), nd.name, "a");
      const bool row = in(1).rank() == 1;
      const float* b = as_f32(in(1), 0, nd.name);
      const int64_t M = out.dim(0), N = out.dim(1);
      if (row)
        cpu::parallel_ranges(pool, M, 1, std::max<int64_t>(1, kMinParallel / std::max<int64_t>(1, N)),
                             [&](int64_t s, int64_t e) { k.add_row(a + s * N, b, e - s, N, o + s * N); });
      else
        cpu::parallel_ranges(pool, M * N, 16, kMinParallel, [&](int64_t s, int64_t e) { k.add(a + s, b + s, e - s, o + s); });
      break;
    }
    case OpKind::LayerNorm: {
      const float* x = f32_data(in(0), nd.name, "x");
      const float* gm = as_f32(in(1), 0, nd.name);
      const float* bt = as_f32(in(2), 1, nd.name);
      const int64_t M = out.dim(0), N = out.dim(1);
      cpu::parallel_ranges(pool, M, 1, std::max<int64_t>(1, kMinParallel / std::max<int64_t>(1, N)), [&](int64_t s, int64_t e) {
        k.layernorm(x + s * N, gm, bt, e - s, N, float(at.eps), o + s * N);
      });
      break;
    }
    case OpKind::MatMul:
      matmul(nd, in(0), in(1), at.trans_b, nullptr, out);
      break;
    case OpKind::Linear: {
      const float* bias = as_f32(in(2), 2, nd.name);
      matmul(nd, in(0), in(1), false, bias, out);
      break;
    }
    case OpKind::Activation: {
      const float* x = f32_data(in(0), nd.name, "x");
      cpu::parallel_ranges(pool, out.numel(), 64, kMinParallel / 4,
                           [&](int64_t s, int64_t e) { k.activation(x + s, e - s, at.act, o + s); });
      break;
    }
    case OpKind::Scale: {
      const float* x = f32_data(in(0), nd.name, "x");
      cpu::parallel_ranges(pool, out.numel(), 64, kMinParallel,
                           [&](int64_t s, int64_t e) { k.scale(x + s, e - s, float(at.scale), o + s); });
      break;
    }
    case OpKind::CausalMask: {
      const float* x = f32_data(in(0), nd.name, "x");
      const int64_t T = out.dim(0), S = out.dim(1);
      for (int64_t i = 0; i < T; ++i) {
        const int64_t keep = std::min(S, at.past + i + 1);
        std::memcpy(o + i * S, x + i * S, size_t(keep) * 4);
        for (int64_t j = keep; j < S; ++j) o[i * S + j] = -std::numeric_limits<float>::infinity();
      }
      break;
    }
    case OpKind::Softmax: {
      const float* x = f32_data(in(0), nd.name, "x");
      const int64_t M = out.dim(0), N = out.dim(1);
      cpu::parallel_ranges(pool, M, 1, std::max<int64_t>(1, kMinParallel / 4 / std::max<int64_t>(1, N)),
                           [&](int64_t s, int64_t e) { k.softmax(x + s * N, e - s, N, o + s * N); });
      break;
    }
    case OpKind::SliceCols: {
      const float* x = f32_data(in(0), nd.name, "x");
      const int64_t M = out.dim(0), N = in(0).dim(1);
      for (int64_t i = 0; i < M; ++i) std::memcpy(o + i * at.len, x + i * N + at.start, size_t(at.len) * 4);
      break;
    }
    case OpKind::SliceRows: {
      const float* x = f32_data(in(0), nd.name, "x");
      const int64_t N = out.dim(1);
      std::memcpy(o, x + at.start * N, size_t(at.len * N) * 4);
      break;
    }
    case OpKind::ConcatCols: {
      const int64_t M = out.dim(0), W = out.dim(1);
      int64_t off = 0;
      for (size_t p = 0; p < nd.inputs.size(); ++p) {
        const float* x = f32_data(in(p), nd.name, "a part");
        const int64_t n = in(p).dim(1);
        for (int64_t i = 0; i < M; ++i) std::memcpy(o + i * W + off, x + i * n, size_t(n) * 4);
        off += n;
      }
      break;
    }
    case OpKind::KvStore: {
      const Tensor& cache = in(0);
      f32_data(cache, nd.name, "the cache");
      const float* rows = f32_data(in(1), nd.name, "the new rows");
      if (out.data != cache.data) fail("node {}: kv_store output must alias its cache", nd.name);
      const int64_t n = in(1).dim(0), C = in(1).dim(1);
      std::memcpy(cache.ptr<float>() + at.past * C, rows, size_t(n * C) * 4);
      break;
    }
    case OpKind::Attention: {
      const int64_t seqs = std::max<int64_t>(1, at.seqs);
      cpu::AttnArgs a = attn_args(nd, in(0), in(1), in(2), seqs);
      a.out = o;
      if (a.T == 0) break;
      for (int64_t s = 0; s < seqs; ++s) {  // sequences one after the other
        cpu::AttnArgs one = a;
        one.q += s * a.T * a.C;
        one.k += s * (a.past + a.T) * a.C;
        one.v += s * (a.past + a.T) * a.C;
        one.out += s * a.T * a.C;
        attention(one);
      }
      break;
    }
    case OpKind::MatMulAt:
      matmul(nd, in(0), in(1), at.trans_b, nullptr, out, /*trans_a=*/true);
      break;
    case OpKind::CausalZero: {
      const float* x = f32_data(in(0), nd.name, "x");
      const int64_t T = out.dim(0), S = out.dim(1);
      for (int64_t i = 0; i < T; ++i) {
        const int64_t keep = std::min(S, at.past + i + 1);
        std::memcpy(o + i * S, x + i * S, size_t(keep) * 4);
        std::memset(o + i * S + keep, 0, size_t(S - keep) * 4);
      }
      break;
    }
    case OpKind::PadCols: {
      const float* x = f32_data(in(0), nd.name, "x");
      const int64_t M = out.dim(0), W = out.dim(1), n = in(0).dim(1);
      for (int64_t i = 0; i < M; ++i) {
        float* r = o + i * W;
        std::memset(r, 0, size_t(at.start) * 4);
        std::memcpy(r + at.start, x + i * n, size_t(n) * 4);
        std::memset(r + at.start + n, 0, size_t(W - at.start - n) * 4);
      }
      break;
    }
    case OpKind::PadRows: {
      const float* x = f32_data(in(0), nd.name, "x");
      const int64_t N = out.dim(1), m = in(0).dim(0);
      std::memset(o, 0, size_t(at.start * N) * 4);
      std::memcpy(o + at.start * N, x, size_t(m * N) * 4);
      std::memset(o + (at.start + m) * N, 0, size_t((out.dim(0) - at.start - m) * N) * 4);
      break;
    }
    case OpKind::SumRows:
      cpu::sum_rows(f32_data(in(0), nd.name, "x"), in(0).dim(0), in(0).dim(1), o, pool);
      break;
    case OpKind::BroadcastRows: {
      const float* x = f32_data(in(0), nd.name, "x");
      const int64_t N = out.dim(1);
      for (int64_t i = 0; i < out.dim(0); ++i) std::memcpy(o + i * N, x, size_t(N) * 4);
      break;
    }
    case OpKind::ScatterAddRows: {
      const Tensor& ids = in(1);
      if (ids.dtype != DType::I32) fail("node {}: ids must be i32", nd.name);
      cpu::scatter_add_rows(f32_data(in(0), nd.name, "dy"), ids.ptr<const int32_t>(), in(0).dim(0), in(0).dim(1),
                            out.dim(0), o, pool);
      break;
    }
    case OpKind::CrossEntropy:
    case OpKind::CrossEntropyBackward: {
      const float* x = f32_data(in(0), nd.name, "logits");
      const Tensor& tg = in(1);
      if (tg.dtype != DType::I32) fail("node {}: targets must be i32", nd.name);
      const int64_t n = in(0).dim(0), V = in(0).dim(1);
      if (nd.op == OpKind::CrossEntropy)
        cpu::cross_entropy(k, x, tg.ptr<const int32_t>(), n, V, o, pool);
      else
        cpu::cross_entropy_backward(k, x, tg.ptr<const int32_t>(), f32_data(in(2), nd.name, "dloss")[0], n, V, o, pool);
      break;
    }
    case OpKind::LayerNormBackward:
      cpu::layernorm_backward(f32_data(in(0), nd.name, "x"), as_f32(in(1), 0, nd.name), f32_data(in(2), nd.name, "dy"),
                              out.dim(0), out.dim(1), float(at.eps), o, pool);
      break;
    case OpKind::LayerNormGainGrad:
      cpu::layernorm_gain_grad(f32_data(in(0), nd.name, "x"), f32_data(in(1), nd.name, "dy"), in(0).dim(0),
                               in(0).dim(1), float(at.eps), o, pool);
      break;
    case OpKind::ActivationBackward:
      cpu::activation_backward(k, f32_data(in(0), nd.name, "x"), f32_data(in(1), nd.name, "dy"), out.numel(), at.act,
                               o, pool);
      break;
    case OpKind::SoftmaxBackward:
      cpu::softmax_backward(f32_data(in(0), nd.name, "y"), f32_data(in(1), nd.name, "dy"), out.dim(0), out.dim(1), o,
                            pool);
      break;
    case OpKind::AttentionBackward: {
      const int64_t seqs = std::max<int64_t>(1, at.seqs);
      const cpu::AttnArgs a = attn_args(nd, in(0), in(1), in(2), seqs);
      cpu::attention_backward(k, a, f32_data(in(3), nd.name, "dy"), seqs, o, pool, attn_scratch_);
      break;
    }
    case OpKind::kCount: fail("node {}: invalid op", nd.name);
  }
}

cpu::AttnArgs CpuBackend::attn_args(const Node& nd, const Tensor& q, const Tensor& k, const Tensor& v, int64_t seqs) {
  cpu::AttnArgs a;
  a.q = f32_data(q, nd.name, "q");
  a.k = f32_data(k, nd.name, "k");
  a.v = f32_data(v, nd.name, "v");
  a.T = q.dim(0) / seqs;
  a.C = q.dim(1);
  a.H = nd.attrs.heads;
  a.D = a.C / a.H;
  a.past = nd.attrs.past;
  a.scale = float(1.0 / std::sqrt(double(a.D)));
  return a;
}

void CpuBackend::attention(const cpu::AttnArgs& a) {
  ThreadPool* pool = &this->pool();
  const Kernels& k = k_;
  const bool decode = a.T <= cpu::kAttnDecodeMaxQueries;
  const int64_t units = decode ? cpu::attn_decode_units(a) : cpu::attn_prefill_units(a);
  const size_t need = size_t(cpu::attn_scratch_floats(a));
  if (attn_scratch_.size() < size_t(pool->size())) attn_scratch_.resize(size_t(pool->size()));
  for (auto& s : attn_scratch_)
    if (s.size() < need) s.resize(need);
  // A unit's work is about (past + T) * D multiply-adds: tiny decode steps stay on one thread.
  const int64_t per_unit = (a.past + a.T) * a.D * (decode ? 2 : 2 * cpu::kAttnQueryBlock);
  const int64_t min_units = std::max<int64_t>(1, kMinParallelAttention / std::max<int64_t>(1, per_unit));
  cpu::parallel_ranges_t(pool, units, 1, min_units, [&](int t, int64_t s, int64_t e) {
    float* scratch = attn_scratch_[size_t(t)].data();
    if (decode) k.attn_decode(a, s, e, scratch);
    else k.attn_prefill(a, s, e, scratch);
  });
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const std::string& isa) {
  const Kernels* k = cpu::kernels_named(isa);
  if (!k) fail("cpu tier: no '{}' kernels on this machine or in this build", isa);
  return std::make_unique<CpuBackend>(*k);
}

}  // namespace strand
