// strand/planner/planner.h — place every node on a tier, with a reason.
//
// The chain is an ordered list of tiers (fastest first). Each node goes to the first tier
// whose supports() says yes; every tier that said no before it is recorded in the node's
// reason. Consecutive nodes on one tier form a segment. In strict mode any node that does not
// land on the first tier of the chain is an error naming the node and the reason.
//
// Where values live (home), and what crosses (transfers). A memory is the host or the memory
// of a tier whose memory_space() is not null. Every value has a home:
//   inputs and weights   where their bound tensors are (the host when planned unbound);
//   state (the KV cache) where its bound tensor is; planned unbound, where the tier that first
//                        uses it (kv_store writes it in place) runs;
//   node outputs         where the node runs (an op writing in place: its input's home).
// A node that reads a value living in another memory reads a copy made before its segment
// runs: one transfer per (value, memory), counted in `copies`, except weights, which a tier
// with its own memory keeps resident (uploaded once, counted apart: `resident_weights`). A
// graph output living off the host is copied back after the last segment; a state written in
// place in another memory than its home is copied there before and back after (`writeback`).
// The runtime performs exactly these transfers (RunStats counts them).
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

// A memory: -1 for the host, else the index in Plan::chain of the first tier on that memory.
using MemoryId = int;
constexpr MemoryId kHost = -1;

struct Transfer {
  ValueId value = -1;
  MemoryId from = kHost, to = kHost;
  double bytes = 0;
  NodeId before = -1;      // the first node that reads the copy (-1: after the last node)
  bool weight = false;     // a weight kept resident on `to` (uploaded once, not every run)
  bool output = false;     // a graph output brought back to the host after the last node
  bool writeback = false;  // a state written in place off its home, copied back after the last node
};

struct Plan {
  std::vector<std::shared_ptr<Backend>> chain;
  std::vector<Placement> placement;  // one per node
  std::vector<Segment> segments;
  std::vector<MemoryId> home;        // one per value: the memory it lives in
  std::vector<Transfer> transfers;   // in the order the runtime performs them
  int copies = 0;                    // transfers made on every run (all but resident weights)
  double copy_bytes = 0;
  int resident_weights = 0;          // weights a tier with its own memory keeps
  double resident_bytes = 0;

  // The memory tier `t` computes in (kHost for host tiers).
  MemoryId memory_of_tier(int t) const;
  std::string memory_name(MemoryId m) const;  // "host", "cuda"

  // Human-readable placement: one line per node, then totals (segments, copies, FLOP share per tier).
  std::string explain(const Graph& g) const;
  nlohmann::json to_json(const Graph& g) const;
};

// `bound`, when given, holds the tensors bound to the graph's inputs, weights and state (as
// execute() receives them): their homes are then where those tensors are.
Plan make_plan(const Graph& g, const std::vector<std::shared_ptr<Backend>>& chain, bool strict,
               const std::vector<Tensor>* bound = nullptr);

}  // namespace strand
