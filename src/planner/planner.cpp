#include "planner/planner.h"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include "core/error.h"

namespace strand {

namespace {

// Bytes of a value as it lives: its bound tensor's storage, else numel x the dtype it is made in.
double value_bytes(const Graph& g, const Plan& plan, const std::vector<Tensor>* bound, ValueId v) {
  if (bound && size_t(v) < bound->size() && (*bound)[size_t(v)].defined()) return double((*bound)[size_t(v)].nbytes());
  const Value& val = g.value(v);
  DType dt = val.dtype;
  if (val.producer >= 0) dt = plan.chain[size_t(plan.placement[size_t(val.producer)].tier)]->activation_dtype();
  if (dt == DType::Q8 && val.shape.size() == 2) return double(q8_bytes(val.shape[1], val.shape[0]));
  return double(numel(val.shape)) * double(dtype_size(dt));
}

// Homes and transfers (see planner.h).
void place_values(const Graph& g, Plan& plan, const std::vector<Tensor>* bound) {
  const size_t nv = g.values().size();
  plan.home.assign(nv, kHost);
  // Values without a producer: where their tensors are, or (state, unbound) where first used.
  for (ValueId v = 0; v < ValueId(nv); ++v) {
    const Value& val = g.value(v);
    if (val.producer >= 0) continue;
    if (bound && size_t(v) < bound->size() && (*bound)[size_t(v)].defined()) {
      const Tensor& t = (*bound)[size_t(v)];
      const void* space = memory_of(t);
      if (!space) continue;
      MemoryId m = kHost;
      for (size_t i = 0; i < plan.chain.size() && m == kHost; ++i)
        if (plan.chain[i]->memory_space() == space) m = plan.memory_of_tier(int(i));
      if (m == kHost)
        fail("value {} ({}) is bound to a tensor in the memory of the {} tier, which is not in the chain", v, val.name,
             device_buffer_of(t)->tier);
      plan.home[size_t(v)] = m;
    } else if (val.kind == ValueKind::State) {
      for (const Node& nd : g.nodes())
        if (std::find(nd.inputs.begin(), nd.inputs.end(), v) != nd.inputs.end()) {
          plan.home[size_t(v)] = plan.memory_of_tier(plan.placement[size_t(&nd - g.nodes().data())].tier);
          break;
        }
    }
  }
  // Node outputs, and the copies their inputs need.
  std::set<std::pair<ValueId, MemoryId>> made;
  std::vector<std::pair<ValueId, MemoryId>> written_off_home;  // producer-less values written in place elsewhere
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const Node& nd = g.node(n);
    const MemoryId m = plan.memory_of_tier(plan.placement[size_t(n)].tier);
    for (ValueId v : nd.inputs) {
      if (plan.home[size_t(v)] == m || !made.insert({v, m}).second) continue;
      Transfer t;
      t.value = v;
      t.from = plan.home[size_t(v)];
      t.to = m;
      t.bytes = value_bytes(g, plan, bound, v);
      t.before = n;
      t.weight = g.value(v).kind == ValueKind::Weight && m != kHost;
      plan.transfers.push_back(t);
    }
    const int alias = op_info(nd.op).aliases;
    if (alias >= 0) {
      const ValueId in = nd.inputs[size_t(alias)];
      if (plan.home[size_t(in)] != m && g.value(in).producer < 0) written_off_home.push_back({in, m});
    }
    plan.home[size_t(nd.output)] = m;
  }
  for (const auto& [v, m] : written_off_home) {
    Transfer t;
    t.value = v;
    t.from = m;
    t.to = plan.home[size_t(v)];
    t.bytes = value_bytes(g, plan, bound, v);
    t.writeback = true;
    plan.transfers.push_back(t);
  }
  for (ValueId v : g.outputs()) {
    if (plan.home[size_t(v)] == kHost) continue;
    Transfer t;
    t.value = v;
    t.from = plan.home[size_t(v)];
    t.to = kHost;
    t.bytes = value_bytes(g, plan, bound, v);
    t.output = true;
    plan.transfers.push_back(t);
  }
  for (const Transfer& t : plan.transfers) {
    if (t.weight) {
      ++plan.resident_weights;
      plan.resident_bytes += t.bytes;
    } else {
      ++plan.copies;
      plan.copy_bytes += t.bytes;
    }
  }
}

std::string bytes_str(double b) {
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.1f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.1f} KB", b / 1e3);
  return fmt::format("{:.0f} B", b);
}

}  // namespace

MemoryId Plan::memory_of_tier(int t) const {
  const void* space = chain[size_t(t)]->memory_space();
  if (!space) return kHost;
  for (int i = 0; i < t; ++i)
    if (chain[size_t(i)]->memory_space() == space) return i;
  return t;
}

std::string Plan::memory_name(MemoryId m) const { return m == kHost ? "host" : chain[size_t(m)]->name(); }

Plan make_plan(const Graph& g, const std::vector<std::shared_ptr<Backend>>& chain, bool strict,
               const std::vector<Tensor>* bound) {
  if (chain.empty()) fail("the backend chain is empty: no tier to run on");
  Plan plan;
  plan.chain = chain;
  for (const Node& nd : g.nodes()) {
    std::string declined;
    Placement p;
    for (size_t t = 0; t < chain.size(); ++t) {
      const Verdict v = chain[t]->supports(g, nd);
      if (v.ok) {
        p.tier = int(t);
        p.reason = declined + chain[t]->name() + (v.reason.empty() ? "" : ": " + v.reason);
        break;
      }
      if (strict)
        fail("--no-fallback: node {} ({}) cannot run on {}: {}", nd.name, op_name(nd.op), chain[t]->name(), v.reason);
      declined += fmt::format("{} declined ({}) -> ", chain[t]->name(), v.reason);
    }
    if (p.tier < 0) fail("node {} ({}): no tier in the chain can run it: {}", nd.name, op_name(nd.op), declined);
    plan.placement.push_back(std::move(p));
  }

  // Segments: maximal runs of consecutive nodes on one tier.
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const int t = plan.placement[size_t(n)].tier;
    if (plan.segments.empty() || plan.segments.back().tier != t) plan.segments.push_back({t, {}});
    plan.segments.back().nodes.push_back(n);
  }

  place_values(g, plan, bound);
  return plan;
}

std::string Plan::explain(const Graph& g) const {
  std::string s = fmt::format("{:>5}  {:<28} {:<12} {:<14} {:<10} {}\n", "node", "name", "op", "shape", "tier", "reason");
  std::vector<double> flops(chain.size(), 0.0);
  double total = 0;
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const Node& nd = g.node(n);
    const Placement& p = placement[size_t(n)];
    const double f = g.node_flops(n);
    flops[size_t(p.tier)] += f;
    total += f;
    s += fmt::format("{:>5}  {:<28} {:<12} {:<14} {:<10} {}\n", n, nd.name, op_name(nd.op),
                     shape_str(g.value(nd.output).shape), chain[size_t(p.tier)]->name(), p.reason);
  }
  s += fmt::format("nodes: {}  segments: {}  copies: {} ({} per run)  total: {:.3f} GFLOP\n", g.nodes().size(),
                   segments.size(), copies, bytes_str(copy_bytes), total / 1e9);
  for (size_t t = 0; t < chain.size(); ++t)
    s += fmt::format("  {:<10} {:6.2f}% of FLOPs\n", chain[t]->name(), total > 0 ? 100.0 * flops[t] / total : 0.0);
  if (copies > 0) s += "copies, every run:\n";
  for (const Transfer& t : transfers) {
    if (t.weight) continue;
    const std::string when = t.output      ? "after the last node (a graph output)"
                             : t.writeback ? "after the last node (written in place there: copied back)"
                                           : fmt::format("before node {} ({})", t.before, g.node(t.before).name);
    s += fmt::format("  %{:<5} {:<28} {:>6} -> {:<6} {:>9}  {}\n", t.value, g.value(t.value).name, memory_name(t.from),
                     memory_name(t.to), bytes_str(t.bytes), when);
  }
  std::map<MemoryId, std::pair<int, double>> resident;
  for (const Transfer& t : transfers)
    if (t.weight) {
      resident[t.to].first += 1;
      resident[t.to].second += t.bytes;
    }
  for (const auto& [m, nb] : resident)
    s += fmt::format("weights resident on {}: {} tensors, {} (uploaded the first time, then kept)\n", memory_name(m),
                     nb.first, bytes_str(nb.second));
  return s;
}

nlohmann::json Plan::to_json(const Graph& g) const {
  nlohmann::json nodes = nlohmann::json::array();
  std::map<std::string, double> share;
  double total = 0;
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const Node& nd = g.node(n);
    const Placement& p = placement[size_t(n)];
    const double f = g.node_flops(n);
    share[chain[size_t(p.tier)]->name()] += f;
    total += f;
    nodes.push_back({{"id", n},
                     {"name", nd.name},
                     {"op", std::string(op_name(nd.op))},
                     {"shape", g.value(nd.output).shape},
                     {"tier", chain[size_t(p.tier)]->name()},
                     {"reason", p.reason},
                     {"flops", f}});
  }
  nlohmann::json tiers = nlohmann::json::object();
  for (const auto& b : chain) tiers[b->name()] = total > 0 ? share[b->name()] / total : 0.0;
  nlohmann::json tr = nlohmann::json::array();
  for (const Transfer& t : transfers)
    tr.push_back({{"value", t.value},
                  {"name", g.value(t.value).name},
                  {"from", memory_name(t.from)},
                  {"to", memory_name(t.to)},
                  {"bytes", t.bytes},
                  {"before_node", t.before},
                  {"kind", t.weight ? "resident weight" : t.output ? "output" : t.writeback ? "writeback" : "copy"}});
  return {{"nodes", nodes},           {"segments", segments.size()}, {"copies", copies},
          {"copy_bytes", copy_bytes}, {"resident_weights", resident_weights},
          {"resident_bytes", resident_bytes}, {"transfers", tr}, {"flops", total}, {"flop_share", tiers}};
}

}  // namespace strand
