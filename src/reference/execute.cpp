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
      std::vector<T> scores(size_t(k.dim(0)));
      kernels::attention(q.ptr<const T>(), k.ptr<const T>(), v.ptr<const T>(), q.dim(0), q.dim(1), a.heads, a.past,
                         scores.data(), o);
      break;
    }
    case OpKind::kCount: fail("node {}: invalid op", nd.name);
  }
}

template void execute_node<float>(const Graph&, const Node&, std::vector<Tensor>&);
template void execute_node<double>(const Graph&, const Node&, std::vector<Tensor>&);

}  // namespace strand
