// strand/planner/planner.h — place every node on a tier, with a reason.
//
// The chain is an ordered list of tiers (fastest first). Each node goes to the first tier
// whose supports() says yes; every tier that said no before it is recorded in the node's
// reason. Consecutive nodes on one tier form a segment; a value that crosses between tiers
// with different memory costs a copy. In strict mode any node that does not land on the
// first tier of the chain is an error naming the node and the reason.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "graph/graph.h"

namespace strand {

struct Placement {
  int tier = -1;       // index into Plan::chain
  std::string reason;  // "naive: runs every op" or "cpu declined (below crossover) -> naive: ..."
};

struct Segment {
  int tier = -1;
  std::vector<NodeId> nodes;
};

struct Plan {
  std::vector<std::shared_ptr<Backend>> chain;
  std::vector<Placement> placement;  // one per node
  std::vector<Segment> segments;
  int copies = 0;

  // Human-readable placement: one line per node, then totals (segments, copies, FLOP share per tier).
  std::string explain(const Graph& g) const;
  nlohmann::json to_json(const Graph& g) const;
};

Plan make_plan(const Graph& g, const std::vector<std::shared_ptr<Backend>>& chain, bool strict);

}  // namespace strand
