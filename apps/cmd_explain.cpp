// strand explain --tier ane — which parts of a GPT-2 model can run on the Apple Neural Engine,
// and for each part that cannot, why. Two views from one set of rules
// (src/export/coreml/ane_rules.h):
//   - the Core ML program `strand export coreml` writes: every op, grouped in blocks, with the
//     ANE's share of the FLOPs;
//   - strand's own graph: every node as the planner's coreml tier judges it (what falls back
//     along the chain ANE -> GPU -> BLAS -> CPU).
// On a Mac built with -DSTRAND_WITH_COREML=ON it adds Core ML's own compute plan (macOS 14.4+).
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "backends/coreml/coreml.h"
#include "core/error.h"
#include "export/coreml/ane_rules.h"
#include "export/coreml/gpt2_export.h"
#include "model/gpt2.h"

namespace strand::cli {

namespace {

struct ExplainArgs {
  std::string model, tier = "ane", mode = "prefill", units;
  int64_t seq = 0;
  bool ops = false, json = false;
};

int run_explain(const ExplainArgs& a) {
  if (a.tier != "ane" && a.tier != "coreml")
    fail("--tier {}: only the Neural Engine's placement is explained here (--tier ane)", a.tier);
  if (!a.units.empty()) set_coreml_compute_units(a.units);
  const Gpt2Model model = Gpt2Model::load(a.model);
  coreml::ExportOptions o;
  o.mode = a.mode;
  o.seq = a.seq;
  coreml::WeightBlob dry("");
  const coreml::Gpt2Program p = coreml::build_gpt2_program(model, o, dry);
  const coreml::AneReport rep = coreml::analyze_ane(p.fn);

  // strand's graph for the same work, judged node by node.
  const int64_t past = p.mode == "decode" ? p.cache - 1 : 0;
  const ForwardGraph fg = build_forward(model, p.tokens, past, p.mode == "prefill");
  const Graph& g = fg.graph;
  nlohmann::json nodes = nlohmann::json::array();
  std::string node_text;
  double gflops = 0, gane = 0;
  int gyes = 0;
  for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
    const Node& nd = g.node(n);
    const Verdict v = coreml::ane_supports_node(g, nd);
    const double f = g.node_flops(n);
    gflops += f;
    if (v.ok) {
      gane += f;
      ++gyes;
    }
    nodes.push_back({{"node", n}, {"name", nd.name}, {"op", std::string(op_name(nd.op))},
                     {"shape", shape_str(g.value(nd.output).shape)}, {"ane", v.ok}, {"reason", v.reason}, {"flops", f}});
    node_text += fmt::format("{:>5}  {:<24} {:<12} {:<12} {:<4} {}\n", n, nd.name, op_name(nd.op),
                             shape_str(g.value(nd.output).shape), v.ok ? "ANE" : "no", v.reason);
  }

  // Core ML's own plan, where this build can ask Core ML.
  std::string plan, plan_note;
  if (coreml_built()) {
    namespace fs = std::filesystem;
    const fs::path tmp = fs::temp_directory_path() / fmt::format("strand-explain-{}.mlpackage", ::getpid());
    try {
      coreml::export_gpt2_coreml(model, tmp.string(), o);
      plan = coreml_compute_plan(tmp.string(), coreml_compute_units());
    } catch (const Error& e) {
      plan_note = e.what();
    }
    std::error_code ec;
    fs::remove_all(tmp, ec);
  } else {
    plan_note = "Core ML's compute plan (the device Core ML picks per op) needs a macOS 14.4+ build with "
                "-DSTRAND_WITH_COREML=ON";
  }

  const std::string what = fmt::format("{} ({}, {} new token(s){})", model.dir, p.mode, p.tokens,
                                       p.cache ? fmt::format(", KV cache of {} slots", p.cache) : std::string());
  if (a.json) {
    nlohmann::json j = {{"model", model.dir}, {"mode", p.mode}, {"tokens", p.tokens}, {"cache_slots", p.cache}};
    j["program"] = coreml::ane_report_json(rep, p.fn);
    j["graph"] = {{"node_count", g.nodes().size()}, {"ane_nodes", gyes}, {"total_flops", gflops},
                  {"ane_flops", gane}, {"ane_flop_share", gflops > 0 ? gane / gflops : 0.0}, {"nodes", nodes}};
    j["compute_plan"] = plan.empty() ? nlohmann::json(nullptr) : nlohmann::json(plan);
    if (!plan_note.empty()) j["compute_plan_note"] = plan_note;
    std::puts(j.dump().c_str());
    return 0;
  }
  std::printf("ANE placement of %s\n\n", what.c_str());
  std::printf("== the Core ML program (strand export coreml): %zu ops, %d of them compute ==\n", p.fn.ops.size(),
              rep.compute_ops);
  std::fputs(coreml::format_ane_report(rep, p.fn, a.ops).c_str(), stdout);
  std::printf("\n== strand's graph, node by node, as the coreml tier judges it (planner fallback: ANE -> GPU -> BLAS -> CPU) ==\n");
  std::printf("%5s  %-24s %-12s %-12s %-4s %s\n", "node", "name", "op", "shape", "ANE", "why");
  std::fputs(node_text.c_str(), stdout);
  std::printf("nodes on the ANE: %d of %zu; ANE share: %.2f%% of %.3f MFLOP\n", gyes, g.nodes().size(),
              gflops > 0 ? 100.0 * gane / gflops : 0.0, gflops / 1e6);
  std::printf("\n== Core ML's compute plan ==\n%s\n", plan.empty() ? plan_note.c_str() : plan.c_str());
  return 0;
}

}  // namespace

Command add_explain(CLI::App& parent) {
  static ExplainArgs a;
  Command c;
  c.app = parent.add_subcommand("explain", "which parts of a model can run on a tier, and why not (--tier ane)");
  c.app->add_option("-m,--model", a.model, "Hugging Face GPT-2 directory (config.json, model.safetensors)")->required();
  c.app->add_option("--tier", a.tier, "the tier to explain: ane (the Apple Neural Engine through Core ML)");
  c.app->add_option("--mode", a.mode, "prefill or decode, as for strand export coreml")
      ->check(CLI::IsMember({"prefill", "decode"}));
  c.app->add_option("--seq", a.seq, "prefill: tokens per call; decode: KV-cache slots (default: the model's context)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  c.app->add_option("--compute-units", a.units, "Core ML compute units for the compute plan: all, cpu+ane, cpu+gpu, cpu")
      ->check(CLI::IsMember({"all", "cpu+ane", "cpu+gpu", "cpu"}));
  c.app->add_flag("--ops", a.ops, "list every op of the program, not only those that cannot go to the ANE");
  c.app->add_flag("--json", a.json, "print exactly one JSON value on stdout");
  c.app->footer("Example:\n  strand explain --tier ane -m ./gpt2 --seq 128\n  strand explain --tier ane -m ./gpt2 --mode decode --json");
  c.run = [] { return run_explain(a); };
  return c;
}

}  // namespace strand::cli
