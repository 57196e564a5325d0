// tests/fake_device.h — test-only tiers for device residency, runnable on any CPU.
//
// FakeDevice is a tier whose buffers are not "host memory" (memory_space() is its own): every
// buffer it hands out is its own allocation, tagged with a DeviceBuffer deleter, and it refuses
// (throws) any pointer it did not hand out, in run() and in its copies. It computes with the
// naive tier's loops (its memory is ordinary RAM underneath), so its results equal the naive
// tier's bit for bit. It counts what crosses: copies in and out, resident uploads.
//
// HostGuard is a host tier (the naive loops) that throws when handed a tensor living in any
// tier's own memory: the runtime must never let a device pointer reach a host tier.
#pragma once

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/naive/naive.h"
#include "core/error.h"
#include "train/adamw.h"

namespace strand::testing {

class FakeDevice final : public Backend {
 public:
  // The ops it declines (the planner places them on the next tier of the chain).
  explicit FakeDevice(std::set<OpKind> declines = {}) : declines_(std::move(declines)) {}

  std::string name() const override { return "fakedev"; }
  std::string description() const override { return "test tier with memory of its own (naive loops)"; }
  Verdict probe() const override { return Verdict::yes("test tier"); }
  Verdict supports(const Graph&, const Node& n) const override {
    if (declines_.count(n.op)) return Verdict::no(fmt::format("declines {} on purpose", op_name(n.op)));
    return Verdict::yes("naive loops on its own memory");
  }
  const void* memory_space() const override { return mem_.get(); }

  // Training state in its memory: the host's AdamW update and sum of squares, on its buffers.
  bool trains_in_place() const override { return train_in_place; }
  void adamw_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWUpdate& u) override {
    for (const Tensor* t : std::initializer_list<const Tensor*>{&p, &g, &m, &v}) need_mine(*t, "adamw_update");
    ++optimizer_updates;
    float* pp = p.ptr<float>();
    float* mm = m.ptr<float>();
    float* vv = v.ptr<float>();
    const float* gg = g.ptr<const float>();
    for (int64_t j = 0; j < p.numel(); ++j) adamw_element(pp[j], gg[j], mm[j], vv[j], u);
  }
  double sum_squares(const std::vector<Tensor>& ts) override {
    for (const Tensor& t : ts) need_mine(t, "sum_squares");
    return global_sum_squares(ts);
  }
  bool train_in_place = true;
  int optimizer_updates = 0;

  Tensor allocate_like(const Tensor& like) override {
    const size_t bytes = std::max<size_t>(1, like.nbytes());
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) fail("fakedev: out of memory");
    std::shared_ptr<Memory> mem = mem_;
    {
      std::lock_guard<std::mutex> lk(mem->mu);
      mem->live[reinterpret_cast<uintptr_t>(p)] = bytes;
    }
    ++allocations;
    DeviceBuffer d{mem_.get(), name(), [mem](void* q) {
                     {
                       std::lock_guard<std::mutex> lk(mem->mu);
                       mem->live.erase(reinterpret_cast<uintptr_t>(q));
                     }
                     std::free(q);
                   }};
    return device_tensor(p, like.dtype, like.shape, like.strides, std::move(d));
  }
  void poison(Tensor& t) override {
    need_mine(t, "poison");
    t.poison();
  }
  void copy_in(const Tensor& host, Tensor& dev) override {
    if (memory_of(host)) fail("fakedev: copy_in from a tensor that is not in host memory");
    need_mine(dev, "copy_in");
    same_bytes(host, dev);
    std::memcpy(dev.data, host.data, host.nbytes());
    ++copies_in;
    bytes_in += double(host.nbytes());
  }
  void copy_out(const Tensor& dev, Tensor& host) override {
    need_mine(dev, "copy_out");
    if (memory_of(host)) fail("fakedev: copy_out into a tensor that is not in host memory");
    same_bytes(dev, host);
    std::memcpy(host.data, dev.data, dev.nbytes());
    ++copies_out;
    bytes_out += double(dev.nbytes());
  }
  Tensor resident(const Tensor& host) override {
    if (memory_of(host)) fail("fakedev: resident copy of a tensor that is not in host memory");
    auto it = resident_.find(host.data);
    if (it != resident_.end() && it->second.host.nbytes() == host.nbytes() && it->second.host.dtype == host.dtype)
      return it->second.dev;
    Tensor dev = allocate_like(host);
    std::memcpy(dev.data, host.data, host.nbytes());
    resident_[host.data] = {host, dev};
    ++uploads;
    return dev;
  }

  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    ++runs;
    for (NodeId n : nodes) {
      const Node& nd = g.node(n);
      if (!supports(g, nd).ok) fail("fakedev: handed node {}, which it declines", nd.name);
      for (ValueId v : nd.inputs) need_mine(values[size_t(v)], nd.name.c_str());
      need_mine(values[size_t(nd.output)], nd.name.c_str());
    }
    naive_->run(g, nodes, values);
  }

  // Whether `t` points into a buffer this tier handed out (and still holds).
  bool holds(const Tensor& t) const {
    if (memory_of(t) != mem_.get()) return false;
    std::lock_guard<std::mutex> lk(mem_->mu);
    const uintptr_t p = reinterpret_cast<uintptr_t>(t.data);
    auto it = mem_->live.upper_bound(p);
    if (it == mem_->live.begin()) return false;
    --it;
    return p >= it->first && p + t.nbytes() <= it->first + it->second;
  }

  int runs = 0, allocations = 0, copies_in = 0, copies_out = 0, uploads = 0;
  double bytes_in = 0, bytes_out = 0;

 private:
  struct Memory {
    std::mutex mu;
    std::map<uintptr_t, size_t> live;  // base -> bytes
  };
  struct Resident {
    Tensor host, dev;
  };
  void need_mine(const Tensor& t, const char* what) const {
    if (!holds(t)) fail("fakedev: {} was handed a pointer it did not hand out ({} memory)", what,
                        memory_of(t) ? device_buffer_of(t)->tier : "host");
  }
  static void same_bytes(const Tensor& a, const Tensor& b) {
    if (a.dtype != b.dtype || a.shape != b.shape || a.strides != b.strides || a.nbytes() != b.nbytes())
      fail("fakedev: copy between tensors of different layouts ({} {} vs {} {})", dtype_name(a.dtype),
           shape_str(a.shape), dtype_name(b.dtype), shape_str(b.shape));
  }

  std::set<OpKind> declines_;
  std::shared_ptr<Memory> mem_ = std::make_shared<Memory>();
  std::map<const void*, Resident> resident_;
  std::unique_ptr<Backend> naive_ = make_naive_backend();
};

class HostGuard final : public Backend {
 public:
  std::string name() const override { return "hostguard"; }
  std::string description() const override { return "test host tier that refuses device pointers (naive loops)"; }
  Verdict probe() const override { return Verdict::yes("test tier"); }
  Verdict supports(const Graph&, const Node&) const override { return Verdict::yes("naive loops"); }
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    ++runs;
    for (NodeId n : nodes) {
      const Node& nd = g.node(n);
      auto check = [&](ValueId v) {
        if (memory_of(values[size_t(v)]))
          fail("hostguard: node {} was handed %{} in the memory of the {} tier", nd.name, v,
               device_buffer_of(values[size_t(v)])->tier);
      };
      for (ValueId v : nd.inputs) check(v);
      check(nd.output);
    }
    naive_->run(g, nodes, values);
  }
  int runs = 0;

 private:
  std::unique_ptr<Backend> naive_ = make_naive_backend();
};

}  // namespace strand::testing
