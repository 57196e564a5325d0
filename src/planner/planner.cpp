#include "planner/planner.h"

#include <map>
#include <set>

#include <fmt/format.h>

#include "core/error.h"

namespace strand {

Plan make_plan(const Graph& g, const std::vector<std::shared_ptr<Backend>>& chain, bool strict) {
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

  // Copies: a value read by a tier whose memory differs from where the value lives.
  std::set<std::pair<ValueId, int>> moved;
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const int t = plan.placement[size_t(n)].tier;
    for (ValueId v : g.node(n).inputs) {
      const NodeId prod = g.value(v).producer;
      const bool src_host = prod < 0 || chain[size_t(plan.placement[size_t(prod)].tier)]->host_memory();
      if (src_host != chain[size_t(t)]->host_memory()) moved.insert({v, t});
    }
  }
  plan.copies = int(moved.size());
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
  s += fmt::format("nodes: {}  segments: {}  copies: {}  total: {:.3f} GFLOP\n", g.nodes().size(), segments.size(),
                   copies, total / 1e9);
  for (size_t t = 0; t < chain.size(); ++t)
    s += fmt::format("  {:<10} {:6.2f}% of FLOPs\n", chain[t]->name(), total > 0 ? 100.0 * flops[t] / total : 0.0);
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
  return {{"nodes", nodes}, {"segments", segments.size()}, {"copies", copies}, {"flops", total}, {"flop_share", tiers}};
}

}  // namespace strand
