#include "runtime/runtime.h"

#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>

#include "core/error.h"

namespace strand {

namespace {

// Node outputs of 64 KiB and more come from a pool of buffers that earlier forward passes
// released: a model runs the same shapes again and again, and a fresh allocation of that size
// is fresh pages from the kernel, zeroed on first touch (measured: 10-13% of a 512-token
// prefill went to page faults before). A released buffer goes back to the pool while the pool
// holds less than kMaxHeld bytes; a request takes the smallest free buffer at least as large
// and at most twice as large. Small outputs come from malloc, which reuses them anyway.
class BufferPool {
 public:
  static BufferPool& global() {
    static BufferPool* p = new BufferPool;  // never destroyed: tensors may outlive static destruction
    return *p;
  }

  Tensor empty(const Shape& shape, DType dtype) {
    if (dtype == DType::Q8) return Tensor::empty(shape, dtype);
    const size_t bytes = size_t(numel(shape)) * dtype_size(dtype);
    if (bytes < kMinPooled) return Tensor::empty(shape, dtype);
    const size_t rounded = (bytes + kPage - 1) / kPage * kPage;
    size_t cap = rounded;
    void* p = take(rounded, &cap);
    if (!p) {
      p = std::aligned_alloc(64, rounded);
      if (!p) fail("out of memory allocating {} bytes for a tensor of shape {}", bytes, shape_str(shape));
    }
    return Tensor::view_of(p, dtype, shape, std::shared_ptr<void>(p, [cap](void* q) { global().give(q, cap); }));
  }

 private:
  static constexpr size_t kMinPooled = size_t(64) << 10;
  static constexpr size_t kPage = 4096;
  static constexpr size_t kMaxHeld = size_t(1) << 30;

  void* take(size_t bytes, size_t* cap) {
    std::lock_guard<std::mutex> lk(mu_);
    const auto it = free_.lower_bound(bytes);
    if (it == free_.end() || it->first > 2 * bytes) return nullptr;
    void* p = it->second;
    *cap = it->first;
    held_ -= it->first;
    free_.erase(it);
    return p;
  }
  void give(void* p, size_t cap) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (held_ + cap <= kMaxHeld) {
        free_.emplace(cap, p);
        held_ += cap;
        return;
      }
    }
    std::free(p);
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;  // capacity -> buffer
  size_t held_ = 0;
};

}  // namespace

RunStats execute(const Graph& g, const Plan& plan, std::vector<Tensor>& values, const RunOptions& opt) {
  if (values.size() != g.values().size())
    fail("internal: {} bound values for a graph of {}", values.size(), g.values().size());
  for (ValueId v = 0; v < ValueId(g.values().size()); ++v) {
    const Value& val = g.value(v);
    if (val.producer >= 0) continue;
    if (val.kind == ValueKind::Intermediate) continue;  // left over by a decomposition
    const Tensor& t = values[size_t(v)];
    if (!t.defined()) fail("value {} ({}) is not bound", v, val.name);
    if (t.shape != val.shape)
      fail("value {} ({}) is bound to a tensor of shape {}, the graph expects {}", v, val.name, shape_str(t.shape),
           shape_str(val.shape));
  }
  // Allocate outputs.
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const Node& nd = g.node(n);
    const Value& ov = g.value(nd.output);
    const OpInfo& info = op_info(nd.op);
    if (info.aliases >= 0) {
      const Tensor& src = values[size_t(nd.inputs[size_t(info.aliases)])];
      if (!src.contiguous() || src.numel() < numel(ov.shape))
        fail("node {}: cannot write in place into its input", nd.name);
      values[size_t(nd.output)] = Tensor::view_of(src.data, src.dtype, ov.shape, src.owner);
      continue;
    }
    const DType dt = plan.chain[size_t(plan.placement[size_t(n)].tier)]->activation_dtype();
    values[size_t(nd.output)] = BufferPool::global().empty(ov.shape, dt);
    if (opt.poison) values[size_t(nd.output)].poison();
  }
  RunStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  if (opt.time_nodes) stats.node_seconds.assign(g.nodes().size(), 0.0);
  for (const Segment& seg : plan.segments) {
    const auto s0 = std::chrono::steady_clock::now();
    Backend& b = *plan.chain[size_t(seg.tier)];
    if (opt.time_nodes) {
      for (const NodeId n : seg.nodes) {
        const auto n0 = std::chrono::steady_clock::now();
        b.run(g, std::span<const NodeId>(&n, 1), values);
        b.sync();
        stats.node_seconds[size_t(n)] = std::chrono::duration<double>(std::chrono::steady_clock::now() - n0).count();
      }
    } else {
      b.run(g, seg.nodes, values);
      b.sync();
    }
    stats.segment_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count());
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

RunStats execute_on(const Graph& g, const std::shared_ptr<Backend>& tier, std::vector<Tensor>& values,
                    const RunOptions& opt) {
  const Plan plan = make_plan(g, {tier}, false);
  return execute(g, plan, values, opt);
}

}  // namespace strand
