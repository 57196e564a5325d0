// strand/export/coreml/ane_rules.h — which work the Apple Neural Engine can take, and why not.
//
// The ANE is reached only through Core ML, which decides per operation at load time. Its
// constraints are not published as one list; these rules encode the documented and widely
// observed ones (see docs/ane.md):
//   dtype        fp16 only (int32 only for indices and compile-time parameters);
//   static shape every dimension fixed at export;
//   operation    one of the ops below (convolution, matmul, elementwise, normalization,
//                softmax, activations, layout ops); gather (an embedding lookup) is not;
//   size         no tensor dimension above 16384, rank at most 5.
// The same rules judge the ops of an exported ML Program (analyze_ane, for `strand explain
// --tier ane` and `strand export coreml --explain`) and the nodes of strand's own graphs
// (ane_supports_node, the coreml tier's supports() in the planner's fallback chain).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "export/coreml/mil.h"

namespace strand::coreml {

inline constexpr int64_t kAneMaxDim = 16384;
inline constexpr int kAneMaxRank = 5;

// Whether the ANE executes a MIL op type at all; `why` says what it is or why not.
bool ane_op_supported(const std::string& type, std::string* why);
// dtype / static shape / rank / size of one tensor (`what` names it in the reason).
Verdict ane_check_tensor(const std::string& what, const TensorType& t, bool parameter);
// One op of a MIL function (types: every value's type, from MilFunction::types()).
Verdict ane_check_op(const MilOp& op, const std::map<std::string, TensorType>& types);
// Floating-point operations of one execution of the op (data movement counts zero).
double mil_op_flops(const MilOp& op, const std::map<std::string, TensorType>& types);

struct AneOp {
  bool compute = false;  // false for const ops (weights and parameters)
  bool ane = false;
  std::string reason;
  double flops = 0;
};

struct AneBlock {
  std::string name;
  int ops = 0, ane_ops = 0;  // compute ops
  double flops = 0, ane_flops = 0;
  std::vector<std::string> reasons;  // distinct reasons of the ops that cannot go to the ANE
};

struct AneReport {
  std::vector<AneOp> ops;  // one per MilFunction::ops
  std::vector<AneBlock> blocks;
  int compute_ops = 0, ane_ops = 0;
  double total_flops = 0, ane_flops = 0;
};

AneReport analyze_ane(const MilFunction& fn);
// A table of blocks (and, with all_ops, of every op), the failing ops with their reasons and the
// ANE's share of the FLOPs.
std::string format_ane_report(const AneReport& r, const MilFunction& fn, bool all_ops);
nlohmann::json ane_report_json(const AneReport& r, const MilFunction& fn);

// A node of a strand graph, judged as the exporter would lower it (Linear -> 1x1 conv,
// Attention -> per-head matmul + softmax, the vocabulary projection -> chunks, ...).
Verdict ane_supports_node(const Graph& g, const Node& n);

}  // namespace strand::coreml
