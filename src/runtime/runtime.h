// strand/runtime/runtime.h — execute a plan.
//
// Allocates a buffer for every node output (in the activation dtype of the node's tier, in the
// memory of that tier; an op that writes in place gets a view of its input), optionally
// poisons them so that an element no kernel wrote shows up as NaN, and dispatches the segments
// in order, timing each. Performs the plan's transfers (planner.h): before a segment, the
// copies its nodes read (a tier with its own memory keeps weights resident instead, unless they
// change from run to run: RunOptions::weights); after the
// last, graph outputs back to the host and states written in place elsewhere back to their
// home. A segment's nodes see the copies in place of the originals; on return `values` holds
// the originals, and every graph output on the host. A host tier is never handed a tensor in
// another memory, nor a tier with its own memory one outside it: the runtime checks both.
#pragma once

#include <vector>

#include "graph/graph.h"
#include "planner/planner.h"

namespace strand {

struct RunOptions {
  bool poison = false;  // fill outputs with NaN before running
  // Hand the tiers one node at a time (each call followed by the tier's sync) and time each:
  // where a run's time goes, at the price of the tiers' per-call overhead and of any fusion
  // a tier does across the nodes of a segment.
  bool time_nodes = false;
  // Keep a node's output buffer when `values` already holds one of the right shape and dtype
  // (from an earlier run of the same graph): a training step runs the same graph again and
  // again, and gigabytes of fresh pages per step cost time.
  bool reuse_outputs = false;
  // What a tier with memory of its own reads a weight from. Resident: its resident copy
  // (uploaded once; the tier's copy is the weight, as when an optimizer updates it there).
  // Fresh: a copy made on this run, because the host weights may have changed in place since
  // the last (an optimizer step on the host). Auto: Fresh for a graph with a loss (a training or
  // evaluation step), Resident otherwise.
  enum class Weights : uint8_t { Auto, Resident, Fresh };
  Weights weights = Weights::Auto;
  // Graph outputs left in the memory of the tier that made them instead of copied to the host
  // (a trainer whose optimizer runs there keeps the gradients there).
  std::vector<ValueId> outputs_stay;
};

struct RunStats {
  std::vector<double> segment_seconds;  // one per plan segment (its copies in included)
  std::vector<double> node_seconds;     // with time_nodes: one per graph node (else empty)
  double seconds = 0;
  int copies = 0;              // transfers made (the plan's `copies`, performed)
  double copy_bytes = 0;
  int resident_weights = 0;    // weights read through a tier's resident copy
  double copy_seconds = 0;     // spent copying (included in seconds)
};

// `values` must have one entry per graph value with every input, weight and state bound;
// on return every node output holds its result.
RunStats execute(const Graph& g, const Plan& plan, std::vector<Tensor>& values, const RunOptions& opt = {});

// Convenience: a plan over the whole graph on one tier, executed.
RunStats execute_on(const Graph& g, const std::shared_ptr<Backend>& tier, std::vector<Tensor>& values,
                    const RunOptions& opt = {});

}  // namespace strand
