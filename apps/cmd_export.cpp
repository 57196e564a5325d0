// strand export coreml — write a GPT-2 directory as a Core ML ML Program package in the layout
// the Apple Neural Engine wants (see docs/ane.md). Works on any OS: no Apple software is used.
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/error.h"
#include "export/coreml/ane_rules.h"
#include "export/coreml/gpt2_export.h"
#include "model/gpt2_weights.h"

namespace strand::cli {

namespace {

struct ExportArgs {
  std::string model, out, mode = "prefill";
  int64_t seq = 0;
  bool explain = false, json = false;
};

int run_export(const ExportArgs& a) {
  const Gpt2Model model = Gpt2Model::load(a.model);
  coreml::ExportOptions o;
  o.mode = a.mode;
  o.seq = a.seq;
  const coreml::ExportResult r = coreml::export_gpt2_coreml(model, a.out, o);
  const coreml::Gpt2Program& p = r.program;
  const coreml::AneReport rep = coreml::analyze_ane(p.fn);
  if (a.explain) std::fputs(coreml::format_ane_report(rep, p.fn, false).c_str(), stderr);
  nlohmann::json inputs = nlohmann::json::array(), outputs = nlohmann::json::array();
  for (const auto& v : p.fn.inputs) inputs.push_back({{"name", v.name}, {"type", coreml::type_str(v.type)}});
  for (const auto& v : p.fn.outputs) outputs.push_back({{"name", v.name}, {"type", coreml::type_str(v.type)}});
  if (a.json) {
    nlohmann::json j = {{"package", r.path},       {"mode", p.mode},          {"tokens", p.tokens},
                        {"cache_slots", p.cache},  {"ops", p.fn.ops.size()},  {"weight_bytes", r.weight_bytes},
                        {"blobs", r.blobs},        {"content_hash", fmt::format("{:016x}", r.content_hash)},
                        {"logits_chunks", p.logits_chunks}, {"inputs", inputs}, {"outputs", outputs},
                        {"ane_flop_share", rep.ane_flops / std::max(rep.total_flops, 1.0)}};
    std::puts(j.dump().c_str());
    return 0;
  }
  std::printf("wrote %s: Core ML ML Program (%s), %zu ops, %.1f MB of fp16 weights in %u blobs\n", r.path.c_str(),
              p.mode.c_str(), p.fn.ops.size(), double(r.weight_bytes) / 1e6, r.blobs);
  for (const auto& v : p.fn.inputs) std::printf("  input  %-16s %s\n", v.name.c_str(), coreml::type_str(v.type).c_str());
  for (const auto& v : p.fn.outputs) std::printf("  output %-16s %s\n", v.name.c_str(), coreml::type_str(v.type).c_str());
  std::printf("ANE-eligible: %.1f%% of the FLOPs, %d of %d compute ops (strand explain --tier ane for why)\n",
              100.0 * rep.ane_flops / std::max(rep.total_flops, 1.0), rep.ane_ops, rep.compute_ops);
  return 0;
}

}  // namespace

Command add_export(CLI::App& parent) {
  static ExportArgs a;
  Command c;
  c.app = parent.add_subcommand("export", "write the model in another runtime's format (Core ML)");
  c.app->require_subcommand(1);
  auto* cm = c.app->add_subcommand("coreml", "write a Core ML ML Program package (.mlpackage) in the ANE's layout");
  cm->add_option("-m,--model", a.model, "Hugging Face GPT-2 directory (config.json, model.safetensors)")->required();
  cm->add_option("-o,--out", a.out, "output package, e.g. gpt2.mlpackage (replaced if it is one)")->required();
  cm->add_option("--seq", a.seq, "prefill: tokens per call; decode: KV-cache slots (default: the model's context)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cm->add_option("--mode", a.mode, "prefill (a fixed number of tokens) or decode (one token against the KV cache)")
      ->check(CLI::IsMember({"prefill", "decode"}));
  cm->add_flag("--explain", a.explain, "also print which ops can run on the Neural Engine and why (on stderr)");
  cm->add_flag("--json", a.json, "print exactly one JSON value on stdout");
  cm->footer(
      "Example:\n  strand export coreml -m ./gpt2 -o gpt2-prefill.mlpackage --seq 128\n"
      "  strand export coreml -m ./gpt2 -o gpt2-decode.mlpackage --mode decode --seq 1024\n"
      "The package is fp16, channels-first (1, C, 1, S), with the causal mask as an input; see docs/ane.md.");
  c.run = [] { return run_export(a); };
  return c;
}

}  // namespace strand::cli
