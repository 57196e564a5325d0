#include "runtime/runtime.h"

#include <algorithm>
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

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A buffer like `like` (dtype, shape, strides) in memory `m` of the plan.
Tensor buffer_in(const Plan& plan, MemoryId m, const Tensor& like) {
  if (m == kHost) {
    if (like.dtype == DType::Q8) return Tensor::empty_q8(like.shape, like.q8_axis());
    if (like.contiguous()) return Tensor::empty(like.shape, like.dtype);
    // Same bytes, same layout (a column-major weight): its storage, with like's strides.
    Tensor t = Tensor::empty({int64_t(like.nbytes() / dtype_size(like.dtype))}, like.dtype);
    t.shape = like.shape;
    t.strides = like.strides;
    return t;
  }
  return plan.chain[size_t(m)]->allocate_like(like);
}

// Copies `src` (living in `from`) into a new buffer in `to`.
Tensor copy_between(const Plan& plan, const Tensor& src, MemoryId from, MemoryId to) {
  if (from != kHost && to != kHost) {  // between two devices: through the host
    return copy_between(plan, copy_between(plan, src, from, kHost), kHost, to);
  }
  Tensor dst = buffer_in(plan, to, src);
  if (to != kHost)
    plan.chain[size_t(to)]->copy_in(src, dst);
  else
    plan.chain[size_t(from)]->copy_out(src, dst);
  return dst;
}

// The memory a bound tensor is in, as the plan numbers memories (kHost for host bytes).
MemoryId where(const Plan& plan, const Tensor& t) {
  const void* space = memory_of(t);
  if (!space) return kHost;
  for (size_t i = 0; i < plan.chain.size(); ++i)
    if (plan.chain[i]->memory_space() == space) return plan.memory_of_tier(int(i));
  return -2;  // a memory no tier of the chain has
}

}  // namespace

RunStats execute(const Graph& g, const Plan& plan, std::vector<Tensor>& values, const RunOptions& opt) {
  using Clock = std::chrono::steady_clock;
  if (values.size() != g.values().size())
    fail("internal: {} bound values for a graph of {}", values.size(), g.values().size());
  if (plan.home.size() != g.values().size()) fail("internal: the plan was made for another graph");
  for (ValueId v = 0; v < ValueId(g.values().size()); ++v) {
    const Value& val = g.value(v);
    if (val.producer >= 0) continue;
    if (val.kind == ValueKind::Intermediate) continue;  // left over by a decomposition
    const Tensor& t = values[size_t(v)];
    if (!t.defined()) fail("value {} ({}) is not bound", v, val.name);
    if (t.shape != val.shape)
      fail("value {} ({}) is bound to a tensor of shape {}, the graph expects {}", v, val.name, shape_str(t.shape),
           shape_str(val.shape));
    if (const MemoryId m = where(plan, t); m != plan.home[size_t(v)])
      fail("value {} ({}) is bound in {} memory, but the plan keeps it in {}", v, val.name,
           m == -2 ? device_buffer_of(t)->tier : plan.memory_name(m), plan.memory_name(plan.home[size_t(v)]));
  }
  // Allocate outputs, each in the memory of its node's tier.
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const Node& nd = g.node(n);
    const Value& ov = g.value(nd.output);
    const OpInfo& info = op_info(nd.op);
    if (info.aliases >= 0) continue;  // a view, made when its input is in place (below)
    const int tier = plan.placement[size_t(n)].tier;
    Backend& b = *plan.chain[size_t(tier)];
    const DType dt = b.activation_dtype();
    // reuse_outputs: the buffer an earlier run of this graph left, when it still fits.
    Tensor& cur = values[size_t(nd.output)];
    if (opt.reuse_outputs && cur.defined() && cur.dtype == dt && cur.shape == ov.shape && cur.contiguous() &&
        memory_of(cur) == b.memory_space()) {
      if (opt.poison) b.host_memory() ? cur.poison() : b.poison(cur);
      continue;
    }
    if (b.host_memory()) {
      values[size_t(nd.output)] = BufferPool::global().empty(ov.shape, dt);
      if (opt.poison) values[size_t(nd.output)].poison();
    } else {
      values[size_t(nd.output)] = b.allocate(ov.shape, dt);
      if (opt.poison) b.poison(values[size_t(nd.output)]);
    }
  }

  RunStats stats;
  const auto t0 = Clock::now();
  if (opt.time_nodes) stats.node_seconds.assign(g.nodes().size(), 0.0);
  // Copies made so far: (value, memory) -> the copy there.
  std::map<std::pair<ValueId, MemoryId>, Tensor> copies;
  size_t next = 0;  // the next transfer to perform
  const bool fresh_weights = opt.weights == RunOptions::Weights::Fresh ||
                             (opt.weights == RunOptions::Weights::Auto && g.has_op(OpKind::CrossEntropy));
  auto perform = [&](const Transfer& t) {
    const auto c0 = Clock::now();
    const Tensor& src = values[size_t(t.value)];
    if (t.weight && !fresh_weights) {
      copies[{t.value, t.to}] = plan.chain[size_t(t.to)]->resident(src);
      ++stats.resident_weights;
    } else {
      copies[{t.value, t.to}] = copy_between(plan, src, t.from, t.to);
      ++stats.copies;
      stats.copy_bytes += double(src.nbytes());
    }
    stats.copy_seconds += since(c0);
  };
  // Runs `nodes` (all on one tier) with every input they read seen in that tier's memory.
  auto run_nodes = [&](Backend& b, MemoryId m, std::span<const NodeId> nodes) {
    std::vector<std::pair<ValueId, Tensor>> saved;
    for (const NodeId n : nodes) {
      const Node& nd = g.node(n);
      for (const ValueId v : nd.inputs) {
        if (plan.home[size_t(v)] == m) continue;
        if (std::any_of(saved.begin(), saved.end(), [&](const auto& s) { return s.first == v; })) continue;
        const auto it = copies.find({v, m});
        if (it == copies.end()) fail("internal: node {} reads %{} from {} memory without a copy", nd.name, v,
                                     plan.memory_name(plan.home[size_t(v)]));
        saved.push_back({v, values[size_t(v)]});
        values[size_t(v)] = it->second;
      }
      // An op writing in place: its output is a view of the (possibly copied) input.
      const OpInfo& info = op_info(nd.op);
      if (info.aliases >= 0) {
        const Tensor& src = values[size_t(nd.inputs[size_t(info.aliases)])];
        const Value& ov = g.value(nd.output);
        if (!src.contiguous() || src.numel() < numel(ov.shape))
          fail("node {}: cannot write in place into its input", nd.name);
        values[size_t(nd.output)] = Tensor::view_of(src.data, src.dtype, ov.shape, src.owner);
      }
      // A host tier never sees another memory; a tier with its own memory sees only its own.
      const void* space = b.memory_space();
      auto check = [&](ValueId v, const char* what) {
        const Tensor& t = values[size_t(v)];
        if (t.defined() && memory_of(t) != space)
          fail("internal: node {} on the {} tier was handed its {} %{} in {} memory", nd.name, b.name(), what, v,
               memory_of(t) ? device_buffer_of(t)->tier : "host");
      };
      for (const ValueId v : nd.inputs) check(v, "input");
      check(nd.output, "output");
    }
    if (opt.time_nodes) {
      for (const NodeId n : nodes) {
        const auto n0 = Clock::now();
        b.run(g, std::span<const NodeId>(&n, 1), values);
        b.sync();
        stats.node_seconds[size_t(n)] = since(n0);
      }
    } else {
      b.run(g, nodes, values);
      b.sync();
    }
    for (auto it = saved.rbegin(); it != saved.rend(); ++it) values[size_t(it->first)] = it->second;
  };

  for (const Segment& seg : plan.segments) {
    const auto s0 = Clock::now();
    const NodeId last = seg.nodes.back();
    while (next < plan.transfers.size() && plan.transfers[next].before >= 0 && plan.transfers[next].before <= last)
      perform(plan.transfers[next++]);
    run_nodes(*plan.chain[size_t(seg.tier)], plan.memory_of_tier(seg.tier), seg.nodes);
    stats.segment_seconds.push_back(since(s0));
  }
  // After the last node: states written in place elsewhere go home, outputs to the host.
  for (; next < plan.transfers.size(); ++next) {
    const Transfer& t = plan.transfers[next];
    const auto c0 = Clock::now();
    if (t.writeback) {
      const auto it = copies.find({t.value, t.from});
      if (it == copies.end()) fail("internal: no copy of %{} to write back", t.value);
      Tensor& home = values[size_t(t.value)];
      if (t.to == kHost) {
        plan.chain[size_t(t.from)]->copy_out(it->second, home);
      } else {
        const Tensor staged = copy_between(plan, it->second, t.from, kHost);
        plan.chain[size_t(t.to)]->copy_in(staged, home);
      }
    } else if (t.output) {
      if (std::find(opt.outputs_stay.begin(), opt.outputs_stay.end(), t.value) != opt.outputs_stay.end()) continue;
      values[size_t(t.value)] = copy_between(plan, values[size_t(t.value)], t.from, kHost);
    } else {
      fail("internal: transfer of %{} has no node to come before", t.value);
    }
    ++stats.copies;
    stats.copy_bytes += t.bytes;
    stats.copy_seconds += since(c0);
  }
  stats.seconds = since(t0);
  return stats;
}

RunStats execute_on(const Graph& g, const std::shared_ptr<Backend>& tier, std::vector<Tensor>& values,
                    const RunOptions& opt) {
  const Plan plan = make_plan(g, {tier}, false, &values);
  return execute(g, plan, values, opt);
}

}  // namespace strand
