#include "reference/execute.h"

#include <type_traits>
#include <utility>

#include "reference/kernels.h"

namespace strand {

namespace {

template <class T>
constexpr DType dtype_of() {
  return std::is_same_v<T, double> ? DType::F64 : DType::F32;
}

// A contiguous view of `t` in type T: `t` itself when it already is, else a converted copy.
template <class T>
Tensor as(const Tensor& t) {
  if (t.dtype == dtype_of<T>() && t.contiguous()) return t;
  return t.to(dtype_of<T>());
}

// The weight of a matrix product as row-major bytes and whether they hold B or Bᵀ: a
// column-major [K, N] weight is its [N, K] storage read transposed (no copy when it already
// is in T).
template <class T>
std::pair<Tensor, bool> weight_as(const Tensor& w, bool trans_b) {
  if (w.col_major()) return {as<T>(w.col_major_storage()), !trans_b};
  return {as<T>(w), trans_b};
}

}  // namespace

template <class T>
void execute_node(const Graph& g, const Node& nd, std::vector<Tensor>& values) {
  const Attrs& a = nd.attrs;
  Tensor& out = values[size_t(nd.output)];
  if (out.dtype != dtype_of<T>()) fail("node {}: output buffer is {}, expected {}", nd.name, dtype_name(out.dtype), dtype_name(dtype_of<T>()));
  auto in = [&](size_t i) { return as<T>(values[size_t(nd.inputs[i])]); };
  T* o = out.ptr<T>();

  switch (nd.op) {
    case OpKind::GatherRows: {
      const Tensor table = in(0);
      const Tensor& ids = values[size_t(nd.inputs[1])];
      if (ids.dtype != DType::I32) fail("node {}: ids must be i32", nd.name);
      kernels::gather_rows(table.ptr<const T>(), table.dim(0), table.dim(1), ids.ptr<const int32_t>(), ids.dim(0), o);
      break;
    }
    case OpKind::Add: {
      const Tensor x = in(0), b = in(1);
      kernels::add(x.ptr<const T>(), b.ptr<const T>(), b.rank() == 1, x.dim(0), x.dim(1), o);
      break;
    }
    case OpKind::LayerNorm: {
      const Tensor x = in(0), gm = in(1), bt = in(2);
      kernels::layernorm(x.ptr<const T>(), gm.ptr<const T>(), bt.ptr<const T>(), x.dim(0), x.dim(1), a.eps, o);
      break;
    }
    case OpKind::MatMul: {
      const Tensor x = in(0);
      const std::pair<Tensor, bool> wb = weight_as<T>(values[size_t(nd.inputs[1])], a.trans_b);
      const Tensor& w = wb.first;
      const bool tb = wb.second;
      kernels::matmul(x.ptr<const T>(), w.ptr<const T>(), tb, x.dim(0), x.dim(1), out.dim(1), o);
      break;
    }
    case OpKind::Activation: {
      const Tensor x = in(0);
      kernels::activation(x.ptr<const T>(), x.numel(), a.act, o);
      break;
    }
    case OpKind::Scale: {
      const Tensor x = in(0);
      kernels::scale(x.ptr<const T>(), x.numel(), a.scale, o);
      break;
    }
    case OpKind::CausalMask: {
      const Tensor x = in(0);
      kernels::causal_mask(x.ptr<const T>(), x.dim(0), x.dim(1), a.past, o);
      break;
    }
    case OpKind::Softmax: {
      const Tensor x = in(0);
      kernels::softmax(x.ptr<const T>(), x.dim(0), x.dim(1), o);
      break;
    }
    case OpKind::SliceCols: {
      const Tensor x = in(0);
      kernels::slice_cols(x.ptr<const T>(), x.dim(0), x.dim(1), a.start, a.len, o);
      break;
    }
    case OpKind::SliceRows: {
      const Tensor x = in(0);
      kernels::slice_rows(x.ptr<const T>(), x.dim(1), a.start, a.len, o);
      break;
    }
    case OpKind::ConcatCols: {
      int64_t off = 0;
      for (size_t i = 0; i < nd.inputs.size(); ++i) {
        const Tensor x = in(i);
        kernels::place_cols(x.ptr<const T>(), x.dim(0), x.dim(1), off, out.dim(1), o);
        off += x.dim(1);
      }
      break;
    }
    case OpKind::KvStore: {
      Tensor& cache = values[size_t(nd.inputs[0])];
      if (cache.dtype != dtype_of<T>() || !cache.contiguous())
        fail("node {}: the cache is {}, this tier writes {}", nd.name, dtype_name(cache.dtype), dtype_name(dtype_of<T>()));
      const Tensor rows = in(1);
      kernels::kv_store(cache.ptr<T>(), rows.ptr<const T>(), rows.dim(0), rows.dim(1), a.past);
      // The output is a view of the cache's first past + n rows.
      if (out.data != cache.data) fail("node {}: kv_store output must alias its cache", nd.name);
      break;
    }
    case OpKind::Linear: {
      const Tensor x = in(0), b = in(2);
      const std::pair<Tensor, bool> wb = weight_as<T>(values[size_t(nd.inputs[1])], false);
      const Tensor& w = wb.first;
      const bool tb = wb.second;
      kernels::matmul(x.ptr<const T>(), w.ptr<const T>(), tb, x.dim(0), x.dim(1), out.dim(1), o);
      kernels::add(o, b.ptr<const T>(), true, out.dim(0), out.dim(1), o);
      break;
    }
    case OpKind::Attention: {
      const Tensor q = in(0), k = in(1), v = in(2);
      const int64_t C = q.dim(1), t = q.dim(0) / a.seqs, keys = a.past + t;
      std::vector<T> scores(static_cast<size_t>(keys));
      for (int64_t s = 0; s < a.seqs; ++s)
        kernels::attention(q.ptr<const T>() + s * t * C, k.ptr<const T>() + s * keys * C, v.ptr<const T>() + s * keys * C,
                           t, C, a.heads, a.past, scores.data(), o + s * t * C);
      break;
    }
    case OpKind::MatMulAt: {
      const Tensor x = in(0);
      const std::pair<Tensor, bool> wb = weight_as<T>(values[size_t(nd.inputs[1])], a.trans_b);
      kernels::matmul_at(x.ptr<const T>(), wb.first.ptr<const T>(), wb.second, out.dim(0), x.dim(0), out.dim(1), o);
      break;
    }
    case OpKind::CausalZero: {
      const Tensor x = in(0);
      kernels::causal_zero(x.ptr<const T>(), x.dim(0), x.dim(1), a.past, o);
      break;
    }
    case OpKind::PadCols: {
      const Tensor x = in(0);
      kernels::pad_cols(x.ptr<const T>(), x.dim(0), x.dim(1), a.start, a.len, o);
      break;
    }
    case OpKind::PadRows: {
      const Tensor x = in(0);
      kernels::pad_rows(x.ptr<const T>(), x.dim(0), x.dim(1), a.start, a.len, o);
      break;
    }
    case OpKind::SumRows: {
      const Tensor x = in(0);
      kernels::sum_rows(x.ptr<const T>(), x.dim(0), x.dim(1), o);
      break;
    }
    case OpKind::BroadcastRows: {
      const Tensor x = in(0);
      kernels::broadcast_rows(x.ptr<const T>(), out.dim(0), out.dim(1), o);
      break;
    }
    case OpKind::ScatterAddRows: {
      const Tensor dy = in(0);
      const Tensor& ids = values[size_t(nd.inputs[1])];
      if (ids.dtype != DType::I32) fail("node {}: ids must be i32", nd.name);
      kernels::scatter_add_rows(dy.ptr<const T>(), ids.ptr<const int32_t>(), dy.dim(0), dy.dim(1), a.len, o);
      break;
    }
    case OpKind::CrossEntropy:
    case OpKind::CrossEntropyBackward: {
      const Tensor x = in(0);
      const Tensor& tg = values[size_t(nd.inputs[1])];
      if (tg.dtype != DType::I32) fail("node {}: targets must be i32", nd.name);
      if (nd.op == OpKind::CrossEntropy) {
        kernels::cross_entropy(x.ptr<const T>(), tg.ptr<const int32_t>(), x.dim(0), x.dim(1), o);
      } else {
        const Tensor dl = in(2);
        kernels::cross_entropy_backward(x.ptr<const T>(), tg.ptr<const int32_t>(), dl.ptr<const T>()[0], x.dim(0),
                                        x.dim(1), o);
      }
      break;
    }
    case OpKind::LayerNormBackward: {
      const Tensor x = in(0), gm = in(1), dy = in(2);
      kernels::layernorm_backward(x.ptr<const T>(), gm.ptr<const T>(), dy.ptr<const T>(), x.dim(0), x.dim(1), a.eps, o);
      break;
    }
    case OpKind::LayerNormGainGrad: {
      const Tensor x = in(0), dy = in(1);
      kernels::layernorm_gain_grad(x.ptr<const T>(), dy.ptr<const T>(), x.dim(0), x.dim(1), a.eps, o);
      break;
    }
    case OpKind::ActivationBackward: {
      const Tensor x = in(0), dy = in(1);
      kernels::activation_backward(x.ptr<const T>(), dy.ptr<const T>(), x.numel(), a.act, o);
      break;
    }
    case OpKind::SoftmaxBackward: {
      const Tensor y = in(0), dy = in(1);
      kernels::softmax_backward(y.ptr<const T>(), dy.ptr<const T>(), y.dim(0), y.dim(1), o);
      break;
    }
    case OpKind::AttentionBackward: {
      const Tensor q = in(0), k = in(1), v = in(2), dy = in(3);
      const int64_t C = q.dim(1), t = q.dim(0) / a.seqs, keys = a.past + t;
      std::vector<T> scratch(static_cast<size_t>(2 * keys));
      for (int64_t i = 0; i < out.numel(); ++i) o[i] = 0;
      for (int64_t s = 0; s < a.seqs; ++s)
        kernels::attention_backward(q.ptr<const T>() + s * t * C, k.ptr<const T>() + s * keys * C,
                                    v.ptr<const T>() + s * keys * C, dy.ptr<const T>() + s * t * C, t, C, a.heads,
                                    a.past, scratch.data(), o + s * keys * 3 * C);
      break;
    }
    case OpKind::kCount: fail("node {}: invalid op", nd.name);
  }
}

template void execute_node<float>(const Graph&, const Node&, std::vector<Tensor>&);
template void execute_node<double>(const Graph&, const Node&, std::vector<Tensor>&);

}  // namespace strand
