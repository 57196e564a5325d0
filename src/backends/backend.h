// strand/backends/backend.h — the one interface every compute tier implements.
//
// A backend is asked three things by the planner and one by the runtime:
//   probe()      is this tier usable on this machine (and if not, why);
//   supports(n)  can it run this node, with a reason either way;
//   run(nodes)   execute a segment: consecutive nodes placed on it, in order.
// A segment may be one op or a whole model (a compiled Core ML block): nothing here assumes
// one op per call. Buffers of host backends are plain host memory, so passing values between
// two host backends needs no copy.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "graph/graph.h"

namespace strand {

struct Verdict {
  bool ok = false;
  std::string reason;  // why (not), in a few words: "f16 weights only", "not built: ..."
  static Verdict yes(std::string why = {}) { return {true, std::move(why)}; }
  static Verdict no(std::string why) { return {false, std::move(why)}; }
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;         // short tier name used on the command line
  virtual std::string description() const = 0;  // one line: what this tier is
  virtual Verdict probe() const = 0;
  virtual Verdict supports(const Graph& g, const Node& n) const = 0;

  // The dtype of the intermediates it produces (f32 for every tier but the f64 reference).
  virtual DType activation_dtype() const { return DType::F32; }
  // Whether its buffers are host memory (a GPU tier's are not: crossing costs a copy).
  virtual bool host_memory() const { return true; }

  // Run `nodes` of `g` in order. `values` holds a tensor per value id: inputs, weights and
  // state are bound; every output of these nodes is allocated (activation_dtype, contiguous).
  virtual void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) = 0;
  virtual void sync() {}
};

}  // namespace strand
