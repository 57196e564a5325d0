// strand/validate/validate.h — prove every tier this build has against the float64 reference.
//
// Two parts:
//   ops    every op of the op table × every weight dtype × every tier, on random odd shapes
//          (opcheck.h: random_op_cases + large_op_cases), each case held to the 2×-naive rule.
//          A tier that declines a case is "not supported" with its reason, never a failure.
//   model  the whole GPT-2 per tier: the tiny fixture directories when given, and a random
//          GPT-2 made in memory in every weight dtype. Each runs on the chain {tier, bottom
//          rung} (so a tier that takes only some ops still runs the model), in lockstep with
//          the float64 reference and the naive f32 tier: the prefill's logits, then greedy
//          decode steps on the KV cache, each step fed the reference's greedy token (teacher
//          forcing), so every step compares like with like. Logit errors obey the 2×-naive rule;
//          a step whose greedy token differs from the reference's fails unless the reference's
//          own margin between the two tokens is within the tolerance (a near tie).
//   cost   what each tier's declared precision (Backend::precision) and each weight dtype cost
//          end to end: the perplexity of one model on a fixed token sequence against the same
//          model with f32 weights on an exact f32 tier, and how often their greedy (argmax)
//          tokens agree position by position — as llama.cpp reports per quantization.
// A tier that rounds (bf16 or int8 tiles) is judged at its declared precision
// (validate/precision.h): the reference on inputs rounded as it declares, the naive tier
// computing at that precision as the 2x bar.
//
// `strand validate` prints the report (table or JSON) and writes docs/ops.md from it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "core/dtype.h"

namespace strand {

struct ValidateOptions {
  // Tiers to prove; empty: every tier of all_backends() (unusable ones are listed with their
  // reason and skipped).
  std::vector<std::shared_ptr<Backend>> tiers;
  uint64_t seed = 1;
  int cases_per_op = 4;  // random small cases per op (random_op_cases rounds)
  bool large_cases = true;   // plus large_op_cases (GPT-2-sized products, decode rows)
  bool models = true;        // the whole-GPT-2 checks
  // Gradients (gradcheck.h): every differentiable op's rule against float64 finite
  // differences (rows with tier "finite-diff"), and its backward graph on every tier against
  // the reference (rows named "<op> gradient", the same 2× rule).
  bool gradients = true;
  // Directory holding tiny GPT-2 fixture directories (each with config.json and
  // model.safetensors), e.g. tests/fixtures/gpt2; empty: none.
  std::string fixtures_dir;
  int greedy_tokens = 16;  // decode steps per model check
  // The precision-cost table (perplexity and greedy agreement against f32, per tier and weight
  // dtype), on the in-memory random GPT-2 and on `model_dir` when given.
  bool precision_cost = true;
  std::string model_dir;   // a Hugging Face GPT-2 directory (its tokenizer scores a fixed English text)
  int cost_tokens = 0;     // tokens scored; 0: min(context, 256)
  // Called with a short line before each stage (progress on a terminal); may be empty.
  std::function<void(const std::string&)> progress;
};

enum class CheckStatus { Pass, Fail, NotSupported };
std::string_view status_name(CheckStatus s);  // "pass", "FAIL", "not supported"

// One op × weight dtype × tier, over all its cases.
struct OpTierResult {
  std::string op;
  DType dtype = DType::F32;  // the weight dtype of the cases (f32 for ops without weights)
  std::string tier;
  CheckStatus status = CheckStatus::Pass;
  std::string reason;        // why declined (NotSupported), what failed (Fail), or a note
  int cases = 0;             // cases of this op and dtype
  int ran = 0, declined = 0, failed = 0;
  // The case nearest to (or furthest over) its tolerance: its error, the naive tier's error on
  // it, and its tolerance. max_err is the largest error over all cases that ran.
  double err = 0, naive_err = 0, tolerance = 0, max_err = 0;
  std::string worst;         // that case's label
  uint64_t worst_seed = 0;   // the seed its inputs were drawn from
  std::string precision;     // what the tier rounds in these cases ("" when nothing; see OpCheck)
};

// One GPT-2 × weight dtype × tier.
struct ModelCheck {
  std::string model;         // "tiny-f32 (fixture)", "random GPT-2 2x128 (in memory)"
  std::string weights;       // f32, f16, bf16, q8
  std::string tier;
  std::string chain;         // "cpu,naive"
  double tier_flop_share = 0;  // fraction of the prefill's FLOPs placed on `tier`
  int64_t prompt_tokens = 0;
  // Prefill, every position's logits: max |y - ref| / max |ref|.
  double prefill_err = 0, prefill_naive_err = 0, prefill_tol = 0;
  // Decode steps (one token each, on the KV cache): the largest per-step error.
  double decode_err = 0, decode_naive_err = 0, decode_tol = 0;
  int tokens = 0;            // greedy steps compared (the prefill's last position included)
  int agree = 0;             // steps whose greedy token equals the reference's
  int near_ties = 0;         // disagreements the reference's own margin explains
  CheckStatus status = CheckStatus::Pass;
  std::string reason;
  std::string precision;     // what the tier rounds in this model ("" when nothing), by op
};

// One tier x weight dtype end to end against f32: perplexity on a fixed token sequence and the
// agreement of greedy tokens, position by position (not a pass/fail check: what rounding costs).
struct PrecisionCost {
  std::string model;        // which model
  std::string text;         // what was scored
  std::string tier, weights, chain;
  std::string precision;    // what the tier rounds ("" when nothing)
  std::string baseline;     // "cpu,naive with f32 weights"
  int64_t tokens = 0;       // tokens in the sequence (tokens - 1 are predicted)
  double ppl = 0, ppl_f32 = 0;
  double top1_agree = 0;    // share of positions whose argmax equals the baseline's
  double kl = 0;            // mean KL(baseline || this) over the positions, nats
  std::string error;        // set when it could not run
};

struct TierInfo {
  std::string name, description;
  bool usable = false;
  std::string reason;  // probe()'s
};

struct ValidateReport {
  uint64_t seed = 0;
  int cases_per_op = 0;
  int total_cases = 0;  // op cases per tier
  int large_cases = 0;  // of which GPT-2-sized (large_op_cases)
  std::vector<TierInfo> tiers;
  std::vector<OpTierResult> ops;
  std::vector<ModelCheck> models;
  std::vector<PrecisionCost> costs;
  std::vector<std::string> notes;  // e.g. "no fixtures at ...: skipped"
  double seconds = 0;

  int failures() const;  // op rows and model checks with status Fail
  bool pass() const { return failures() == 0; }

  std::string table() const;           // the human report
  nlohmann::json to_json() const;      // one JSON object
};

ValidateReport run_validate(const ValidateOptions& opt);

// The generated docs/ops.md: how it was produced (command, machine, date), then the op × tier
// support table (✓ with the worst error / the reason a tier declines), the model checks, and
// the tiers that are compiled in but not usable here. Names every op of the op table.
std::string ops_markdown(const ValidateReport& r, const std::string& command, const std::string& machine,
                         const std::string& date);
// Writes ops_markdown() to `path` (throws strand::Error naming the path on failure).
void write_ops_markdown(const std::string& path, const ValidateReport& r, const std::string& command,
                        const std::string& machine, const std::string& date);

}  // namespace strand
