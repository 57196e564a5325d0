#include "validate/validate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "backends/amx/amx.h"
#include "backends/naive/naive.h"
#include "backends/blas/blas.h"
#include "backends/registry.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "model/gpt2.h"
#include "model/gpt2_weights.h"
#include "model/weight_cast.h"
#include "tokenizer/gpt2_tokenizer.h"
#include "validate/gradcheck.h"
#include "validate/opcheck.h"
#include "validate/precision.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace strand {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

constexpr double kFloor = 4.0 * double(std::numeric_limits<float>::epsilon());

double tolerance_for(const Backend& tier, double naive_err) {
  return tier.name() == "naive" ? kNaiveF32Bound : 2.0 * naive_err + kFloor;
}

// Numbers in tables: 0 stays 0, infinity reads "inf".
std::string num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return "inf";
  if (v == 0) return "0";
  return fmt::format("{:.2e}", v);
}

// JSON has no infinity: write null for it.
json jnum(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// ---- ops -----------------------------------------------------------------------------------

using RowKey = std::tuple<int, int, size_t>;  // op, dtype, tier index

void add_case(OpTierResult& row, const OpCheck& c, uint64_t seed) {
  ++row.cases;
  if (!c.supported) {
    ++row.declined;
    if (row.reason.empty() || row.status == CheckStatus::NotSupported) row.reason = c.reason;
    return;
  }
  ++row.ran;
  if (!c.pass) ++row.failed;
  if (row.precision.empty()) row.precision = c.precision;
  if (!std::isnan(c.err)) row.max_err = std::max(row.max_err, c.err);
  // Keep the case nearest to (or furthest over) its tolerance; a failure always wins over a pass.
  const double ratio = c.tolerance > 0 ? c.err / c.tolerance : c.err;
  const double best = row.tolerance > 0 ? row.err / row.tolerance : row.err;
  const bool first = row.ran == 1;
  const bool worse_fail = !c.pass && (row.failed == 1 || ratio > best);
  const bool worse_pass = c.pass && row.failed == 0 && ratio >= best;
  if (first || worse_fail || worse_pass) {
    row.err = c.err;
    row.naive_err = c.naive_err;
    row.tolerance = c.tolerance;
    row.worst = c.label;
    row.worst_seed = seed;
    if (!c.pass)
      row.reason = c.unwritten ? fmt::format("{}: an output element was left unwritten", c.label)
                   : !c.reason.empty() ? fmt::format("{}: {}", c.label, c.reason)
                                       : fmt::format("{}: error {} > tolerance {}", c.label, num(c.err), num(c.tolerance));
  }
}

void finish_row(OpTierResult& row) {
  if (row.ran == 0) {
    row.status = CheckStatus::NotSupported;
    return;
  }
  if (row.failed > 0) {
    row.status = CheckStatus::Fail;
    if (row.failed > 1) row.reason += fmt::format(" ({} of {} cases failed)", row.failed, row.ran);
    return;
  }
  row.status = CheckStatus::Pass;
  if (row.declined > 0) row.reason = fmt::format("{} of {} cases declined: {}", row.declined, row.cases, row.reason);
}

// ---- models --------------------------------------------------------------------------------

struct NamedModel {
  std::string name;
  std::unique_ptr<Gpt2Model> model;
};

// max |y - ref| / max |ref| over rows [row0, row0 + rows) of [*, V] logits; infinite when y
// has a NaN (an unwritten element) where the reference does not.
double logit_error(const Tensor& y, const Tensor& ref, int64_t row0, int64_t rows, double* scale_out = nullptr) {
  const int64_t V = ref.dim(1);
  double err = 0, scale = 0;
  for (int64_t i = row0 * V; i < (row0 + rows) * V; ++i) {
    const double r = load_as_double(ref, i);
    scale = std::max(scale, std::abs(r));
  }
  if (scale == 0) scale = 1;
  for (int64_t i = row0 * V; i < (row0 + rows) * V; ++i) {
    const double r = load_as_double(ref, i), v = load_as_double(y, i);
    if (std::isnan(v)) return std::numeric_limits<double>::infinity();
    err = std::max(err, std::abs(v - r) / scale);
  }
  if (scale_out) *scale_out = scale;
  return err;
}

int64_t argmax_row(const Tensor& logits, int64_t row) {
  const int64_t V = logits.dim(1);
  int64_t best = 0;
  double bv = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < V; ++j) {
    const double v = load_as_double(logits, row * V + j);
    if (v > bv) {
      bv = v;
      best = j;
    }
  }
  return best;
}

struct Step {
  bool prefill = false;
  int64_t ref_tok = 0, tier_tok = 0;
  double margin = 0, scale = 1;  // the reference's logit gap between the two tokens; its row scale
};

ModelCheck check_model(const NamedModel& nm, const std::shared_ptr<Backend>& tier,
                       const std::shared_ptr<Backend>& fallback, uint64_t seed, int greedy_tokens) {
  const Gpt2Model& m = *nm.model;
  ModelCheck mc;
  mc.model = nm.name;
  mc.weights = std::string(dtype_name(m.weights.dtype));
  mc.tier = tier->name();
  std::vector<std::shared_ptr<Backend>> chain = {tier};
  if (fallback && fallback->name() != tier->name()) chain.push_back(fallback);
  for (const auto& b : chain) mc.chain += (mc.chain.empty() ? "" : ",") + b->name();

  const int64_t ctx = m.config.n_positions;
  const int steps = std::max(1, std::min<int>(greedy_tokens, int(ctx / 2)));
  const int64_t P = std::max<int64_t>(1, std::min<int64_t>(13, ctx - steps));
  Rng rng(seed);
  std::vector<int32_t> prompt;
  for (int64_t i = 0; i < P; ++i) prompt.push_back(int32_t(rng.below(uint64_t(m.config.vocab_size))));
  mc.prompt_tokens = P;

  Gpt2Runner rr(m, {reference_backend()});
  // The bar: the naive tier at the precision the tier declares for each node it takes (for a
  // tier that rounds nothing, the plain naive tier).
  Gpt2Runner rn(m, {std::shared_ptr<Backend>(make_precision_naive(tier))});
  Gpt2Runner rt(m, chain, {false, true});
  KvCache cr = rr.new_cache(), cn = rn.new_cache(), ct = rt.new_cache();

  std::vector<Step> trace;
  try {
    Tensor lr = rr.forward(prompt, cr, true);
    Tensor ln = rn.forward(prompt, cn, true);
    Tensor lt = rt.forward(prompt, ct, true);
    {
      const Graph& g = rt.last_graph();
      const Plan& plan = rt.last_plan();
      double on = 0, total = 0;
      for (NodeId n = 0; n < NodeId(g.nodes().size()); ++n) {
        const double f = g.node_flops(n);
        total += f;
        if (plan.placement[size_t(n)].tier == 0) on += f;
      }
      mc.tier_flop_share = total > 0 ? on / total : 0;
      mc.precision = plan_precision(g, plan, *tier);
    }
    double scale = 1;
    mc.prefill_err = logit_error(lt, lr, 0, P, &scale);
    mc.prefill_naive_err = logit_error(ln, lr, 0, P);
    int64_t row = P - 1;
    for (int s = 0; s < steps; ++s) {
      Step st;
      st.prefill = s == 0;
      st.ref_tok = argmax_row(lr, row);
      st.tier_tok = argmax_row(lt, row);
      const int64_t V = lr.dim(1);
      st.margin = load_as_double(lr, row * V + st.ref_tok) - load_as_double(lr, row * V + st.tier_tok);
      st.scale = scale;
      if (s > 0) {
        double sc = 1;
        mc.decode_err = std::max(mc.decode_err, logit_error(lt, lr, 0, 1, &sc));
        mc.decode_naive_err = std::max(mc.decode_naive_err, logit_error(ln, lr, 0, 1));
        st.scale = sc;
      }
      trace.push_back(st);
      if (s + 1 == steps) break;
      const int32_t next[1] = {int32_t(st.ref_tok)};  // teacher forcing: everyone takes the reference's token
      lr = rr.forward(next, cr, false);
      ln = rn.forward(next, cn, false);
      lt = rt.forward(next, ct, false);
      row = 0;
    }
  } catch (const Error& e) {
    mc.status = CheckStatus::Fail;
    mc.reason = e.what();
    return mc;
  }
  mc.prefill_tol = tolerance_for(*tier, mc.prefill_naive_err);
  mc.decode_tol = tolerance_for(*tier, mc.decode_naive_err);
  mc.tokens = int(trace.size());
  std::vector<std::string> problems;
  if (!(mc.prefill_err <= mc.prefill_tol))
    problems.push_back(fmt::format("prefill logit error {} > tolerance {}", num(mc.prefill_err), num(mc.prefill_tol)));
  if (!(mc.decode_err <= mc.decode_tol))
    problems.push_back(fmt::format("decode logit error {} > tolerance {}", num(mc.decode_err), num(mc.decode_tol)));
  for (size_t s = 0; s < trace.size(); ++s) {
    const Step& st = trace[s];
    if (st.ref_tok == st.tier_tok) {
      ++mc.agree;
      continue;
    }
    // Both tokens' logits may each be off by tol * scale: a gap below twice that is a tie.
    const double tol = st.prefill ? mc.prefill_tol : mc.decode_tol;
    if (st.margin <= 2.0 * tol * st.scale) {
      ++mc.near_ties;
    } else if (problems.size() < 4) {
      problems.push_back(fmt::format("greedy token {}: {} chose {}, the reference {} (reference margin {:.3g})", s,
                                     mc.tier, st.tier_tok, st.ref_tok, st.margin));
    }
  }
  if (!problems.empty()) {
    mc.status = CheckStatus::Fail;
    for (const auto& p : problems) mc.reason += (mc.reason.empty() ? "" : "; ") + p;
  } else if (mc.near_ties > 0) {
    mc.reason = fmt::format("{} greedy disagreement(s) within the tolerance of a near tie", mc.near_ties);
  }
  return mc;
}

std::vector<NamedModel> models_to_check(const ValidateOptions& opt, std::vector<std::string>& notes) {
  std::vector<NamedModel> out;
  if (!opt.fixtures_dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(opt.fixtures_dir, ec)) {
      notes.push_back(fmt::format("fixtures: {} is not a directory: skipped", opt.fixtures_dir));
    } else {
      std::vector<fs::path> dirs;
      for (const auto& e : fs::directory_iterator(opt.fixtures_dir, ec))
        if (e.is_directory() && fs::exists(e.path() / "config.json") && fs::exists(e.path() / "model.safetensors"))
          dirs.push_back(e.path());
      std::sort(dirs.begin(), dirs.end());
      if (dirs.empty()) notes.push_back(fmt::format("fixtures: no model directory in {}: skipped", opt.fixtures_dir));
      for (const auto& d : dirs) {
        NamedModel nm;
        nm.name = d.filename().string() + " (fixture, matrices as loaded)";
        nm.model = std::make_unique<Gpt2Model>(Gpt2Model::load(d.string()));
        out.push_back(std::move(nm));
      }
    }
  }
  // A random GPT-2 made in memory: works from an installed binary, in every weight dtype.
  Gpt2Config cfg;
  cfg.n_layer = 2;
  cfg.n_embd = 128;
  cfg.n_head = 4;
  cfg.n_positions = 64;
  cfg.vocab_size = 509;
  cfg.n_inner = 4 * cfg.n_embd;
  cfg.validate("validate");
  const std::string name =
      fmt::format("random GPT-2 {}x{}, vocab {} (in memory, column-major matrices)", cfg.n_layer, cfg.n_embd, cfg.vocab_size);
  const Gpt2Weights base = random_gpt2_weights(cfg, opt.seed ^ 0x9e3779b97f4a7c15ull, DType::F32);
  for (DType dt : case_weight_dtypes()) {
    NamedModel nm;
    nm.name = name;
    nm.model = std::make_unique<Gpt2Model>();
    nm.model->dir = "(in memory)";
    nm.model->config = cfg;
    // In the layout strand runs models in (column-major matrices, weight_cast.h); the
    // fixtures above keep the [in, out] layout they were loaded in, so both are checked.
    if (dt == DType::F32) {
      nm.model->weights = cast_gpt2_weights(base, dt, MatrixLayout::ColMajor);
    } else if (dt == DType::F16 || dt == DType::BF16) {
      nm.model->weights =
          cast_gpt2_weights(random_gpt2_weights(cfg, opt.seed ^ 0x9e3779b97f4a7c15ull, dt), dt, MatrixLayout::ColMajor);
    } else {
      nm.model->weights = cast_gpt2_weights(base, dt);
    }
    out.push_back(std::move(nm));
  }
  return out;
}

// ---- precision cost --------------------------------------------------------------------------

// A fixed English text for models with a tokenizer (strand's own words).
constexpr const char* kCostText =
    "The river rose slowly through the night, and by morning the lower fields were under water. The farmers "
    "had seen floods before; they moved the animals to the high barn, carried the seed grain up the hill, and "
    "waited. Nobody spoke much. When the rain stopped at noon, the children went down to the edge of the water "
    "and threw stones into it, counting the rings. An old woman said the river always gives back what it takes, "
    "but nobody believed her, and by evening the water had begun to fall. Two days later the roads were open "
    "again, the bridge was still standing, and the market in the town was as loud as ever. People talked about "
    "the flood for a week, then about the price of bread, then about the weather, which was fine.";

// Log-probabilities of one row of logits (f32 or f64), in double.
void log_softmax_row(const Tensor& logits, int64_t row, std::vector<double>& out) {
  const int64_t V = logits.dim(1);
  out.resize(size_t(V));
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < V; ++j) mx = std::max(mx, load_as_double(logits, row * V + j));
  double sum = 0;
  for (int64_t j = 0; j < V; ++j) sum += std::exp(load_as_double(logits, row * V + j) - mx);
  const double lse = mx + std::log(sum);
  for (int64_t j = 0; j < V; ++j) out[size_t(j)] = load_as_double(logits, row * V + j) - lse;
}

int64_t argmax_of(const std::vector<double>& v) { return std::max_element(v.begin(), v.end()) - v.begin(); }

struct CostModel {
  std::string name, text;
  Gpt2Config config;
  Gpt2Weights f32;  // the weights in f32 (the baseline); each dtype is cast from them
  std::vector<int32_t> ids;
  bool large = false;  // the naive tier is skipped on it (minutes per run)
};

std::vector<PrecisionCost> precision_costs(const ValidateOptions& opt, const std::vector<std::shared_ptr<Backend>>& tiers,
                                           const std::shared_ptr<Backend>& fallback, std::vector<std::string>& notes) {
  std::vector<CostModel> models;
  {
    CostModel cm;
    cm.config.n_layer = 2;
    cm.config.n_embd = 128;
    cm.config.n_head = 4;
    cm.config.n_positions = 64;
    cm.config.vocab_size = 509;
    cm.config.n_inner = 4 * cm.config.n_embd;
    cm.config.validate("validate");
    cm.name = fmt::format("random GPT-2 {}x{}, vocab {} (in memory)", cm.config.n_layer, cm.config.n_embd,
                          cm.config.vocab_size);
    cm.f32 = random_gpt2_weights(cm.config, opt.seed ^ 0x9e3779b97f4a7c15ull, DType::F32);
    Rng rng(opt.seed ^ 0x7f4a7c159e3779b9ull);
    const int64_t n = opt.cost_tokens > 0 ? std::min<int64_t>(opt.cost_tokens, cm.config.n_positions) : cm.config.n_positions;
    for (int64_t i = 0; i < n; ++i) cm.ids.push_back(int32_t(rng.below(uint64_t(cm.config.vocab_size))));
    cm.text = fmt::format("{} random tokens (seed {})", n, opt.seed);
    models.push_back(std::move(cm));
  }
  if (!opt.model_dir.empty()) {
    Gpt2Model m = Gpt2Model::load(opt.model_dir);
    CostModel cm;
    cm.name = opt.model_dir;
    cm.config = m.config;
    cm.f32 = cast_gpt2_weights(m.weights, DType::F32);
    cm.large = int64_t(m.config.n_layer) * 12 * m.config.n_embd * m.config.n_embd > 20'000'000;
    const int64_t cap = opt.cost_tokens > 0 ? opt.cost_tokens : 256;
    const int64_t n = std::min<int64_t>(cap, m.config.n_positions);
    try {
      const Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(opt.model_dir);
      cm.ids = tok.encode(kCostText);
      if (int64_t(cm.ids.size()) > n) cm.ids.resize(size_t(n));
      cm.text = fmt::format("a fixed English text, {} tokens", cm.ids.size());
    } catch (const Error& e) {
      Rng rng(opt.seed);
      for (int64_t i = 0; i < n; ++i) cm.ids.push_back(int32_t(rng.below(uint64_t(cm.config.vocab_size))));
      cm.text = fmt::format("{} random tokens (no tokenizer: {})", n, e.what());
    }
    models.push_back(std::move(cm));
  }

  // The f32 baseline: the cpu tier when there is one (proven against float64 above), else naive.
  std::shared_ptr<Backend> base_tier;
  for (const auto& b : all_backends())
    if (b->name() == "cpu" && b->probe().ok) base_tier = b;
  if (!base_tier) base_tier = std::shared_ptr<Backend>(make_naive_backend());

  auto chain_for = [&](const std::shared_ptr<Backend>& t) {
    std::vector<std::shared_ptr<Backend>> c;
    c.push_back(t);
    if (fallback && fallback->name() != t->name()) c.push_back(fallback);
    return c;
  };
  auto chain_name = [](const std::vector<std::shared_ptr<Backend>>& c) {
    std::string s;
    for (const auto& b : c) {
      if (!s.empty()) s += ',';
      s += b->name();
    }
    return s;
  };

  std::vector<PrecisionCost> out;
  for (const CostModel& cm : models) {
    if (cm.ids.size() < 2) {
      notes.push_back(fmt::format("precision cost: {}: fewer than 2 tokens to score: skipped", cm.name));
      continue;
    }
    if (opt.progress) opt.progress(fmt::format("precision cost: {} (f32 baseline on {})", cm.name, base_tier->name()));
    Gpt2Model mb;
    mb.dir = cm.name;
    mb.config = cm.config;
    mb.weights = cast_gpt2_weights(cm.f32, DType::F32, MatrixLayout::ColMajor);
    const auto base_chain = chain_for(base_tier);
    Tensor base_logits;
    {
      Gpt2Runner r(mb, base_chain);
      KvCache c = r.new_cache();
      base_logits = r.forward(cm.ids, c, true);
    }
    const int64_t P = int64_t(cm.ids.size()) - 1;  // predicted positions
    std::vector<std::vector<double>> base_lp(static_cast<size_t>(P));
    double base_nll = 0;
    for (int64_t p = 0; p < P; ++p) {
      log_softmax_row(base_logits, p, base_lp[size_t(p)]);
      base_nll -= base_lp[size_t(p)][size_t(cm.ids[size_t(p + 1)])];
    }
    const double ppl_f32 = std::exp(base_nll / double(P));
    for (const auto& tier : tiers) {
      if (cm.large && tier->name() == "naive") {
        notes.push_back(fmt::format("precision cost: {}: the naive tier skipped (minutes per run at this size)", cm.name));
        continue;
      }
      for (DType dt : case_weight_dtypes()) {
        PrecisionCost pc;
        pc.model = cm.name;
        pc.text = cm.text;
        pc.tier = tier->name();
        pc.weights = std::string(dtype_name(dt));
        pc.baseline = chain_name(base_chain) + " with f32 weights";
        pc.tokens = int64_t(cm.ids.size());
        pc.ppl_f32 = ppl_f32;
        const auto chain = chain_for(tier);
        pc.chain = chain_name(chain);
        if (opt.progress) opt.progress(fmt::format("precision cost: {} {} on {}", cm.name, pc.weights, pc.chain));
        try {
          Gpt2Model m;
          m.dir = cm.name;
          m.config = cm.config;
          m.weights = cast_gpt2_weights(cm.f32, dt, MatrixLayout::ColMajor);
          Gpt2Runner r(m, chain);
          KvCache c = r.new_cache();
          const Tensor logits = r.forward(cm.ids, c, true);
          pc.precision = plan_precision(r.last_graph(), r.last_plan(), *tier);
          double nll = 0, kl = 0;
          int64_t agree = 0;
          std::vector<double> lp;
          for (int64_t p = 0; p < P; ++p) {
            log_softmax_row(logits, p, lp);
            nll -= lp[size_t(cm.ids[size_t(p + 1)])];
            const std::vector<double>& b = base_lp[size_t(p)];
            agree += argmax_of(lp) == argmax_of(b);
            for (size_t j = 0; j < lp.size(); ++j) kl += std::exp(b[j]) * (b[j] - lp[j]);
          }
          pc.ppl = std::exp(nll / double(P));
          pc.top1_agree = double(agree) / double(P);
          pc.kl = kl / double(P);
        } catch (const Error& e) {
          pc.error = e.what();
        }
        out.push_back(pc);
      }
    }
  }
  return out;
}

}  // namespace

std::string_view status_name(CheckStatus s) {
  switch (s) {
    case CheckStatus::Pass: return "pass";
    case CheckStatus::Fail: return "FAIL";
    case CheckStatus::NotSupported: return "not supported";
  }
  return "?";
}

int ValidateReport::failures() const {
  int n = 0;
  for (const auto& r : ops) n += r.status == CheckStatus::Fail;
  for (const auto& m : models) n += m.status == CheckStatus::Fail;
  return n;
}

ValidateReport run_validate(const ValidateOptions& opt) {
  const double t0 = now();
  ValidateReport rep;
  rep.seed = opt.seed;
  rep.cases_per_op = opt.cases_per_op;
  auto progress = [&](const std::string& s) {
    if (opt.progress) opt.progress(s);
  };

  const std::vector<std::shared_ptr<Backend>> all = opt.tiers.empty() ? all_backends() : opt.tiers;
  std::vector<std::shared_ptr<Backend>> tiers;
  for (const auto& b : all) {
    TierInfo ti;
    ti.name = b->name();
    ti.description = b->description();
    const Verdict v = b->probe();
    ti.usable = v.ok;
    ti.reason = v.reason;
    if (v.ok && b->name() == "blas") {
      // The crossover decides where blas is worth it, not whether it is right: validate checks
      // every product on it (on a machine where it never wins, it would otherwise check none).
      tiers.push_back(make_blas_backend(
          BlasOptions{BlasCrossover{0, false, "validate: every product, whatever the measured crossover"}, 0}));
      ti.reason += "; checked on every product, whatever its crossover";
    } else if (std::unique_ptr<Backend> every = v.ok ? amx_without_crossover(*b) : nullptr) {
      // Likewise the tile tiers (amx, avx512bf16): every product, attention from one query.
      tiers.push_back(std::move(every));
      ti.reason += "; checked on every product and prefill attention, whatever its crossover";
    } else if (v.ok) {
      tiers.push_back(b);
    }
    rep.tiers.push_back(ti);
  }
  if (tiers.empty()) fail("validate: no usable tier to check");

  // ---- every op ----
  std::vector<OpCase> cases = random_op_cases(opt.seed, std::max(1, opt.cases_per_op));
  if (opt.large_cases) {
    std::vector<OpCase> large = large_op_cases(opt.seed);
    rep.large_cases = int(large.size());
    cases.insert(cases.end(), large.begin(), large.end());
  }
  rep.total_cases = int(cases.size());
  std::map<RowKey, OpTierResult> rows;
  progress(fmt::format("ops: {} cases on {} tier(s), seed {}", cases.size(), tiers.size(), opt.seed));
  Progress op_progress("validate: op cases", double(cases.size()), "cases");
  for (size_t i = 0; i < cases.size(); ++i) {
    op_progress.set(double(i));
    const OpCase& c = cases[i];
    const uint64_t case_seed = opt.seed + i;
    std::vector<OpCheck> checks;
    try {
      checks = check_op_tiers(c, tiers, case_seed);
    } catch (const Error& e) {
      // The reference or naive tier could not run it: every tier fails the case, with the reason.
      for (const auto& t : tiers) {
        OpCheck k;
        k.label = c.label;
        k.tier = t->name();
        k.err = std::numeric_limits<double>::infinity();
        k.reason = fmt::format("the reference could not run it: {}", e.what());
        checks.push_back(k);
      }
    }
    const DType wdt = case_weight_dtype(c);
    for (size_t t = 0; t < tiers.size(); ++t) {
      OpTierResult& row = rows[{int(c.op), int(wdt), t}];
      if (row.cases == 0) {
        row.op = std::string(op_name(c.op));
        row.dtype = wdt;
        row.tier = tiers[t]->name();
      }
      add_case(row, checks[t], case_seed);
    }
  }
  op_progress.set(double(cases.size()));
  op_progress.finish();
  // ---- gradients ----
  if (opt.gradients) {
    const std::vector<OpCase> gcases = grad_cases(opt.seed, std::max(1, opt.cases_per_op));
    progress(fmt::format("gradients: {} cases on {} tier(s) and by finite differences", gcases.size(), tiers.size()));
    const size_t fd_tier = tiers.size();  // the row index of the finite-difference check
    for (size_t i = 0; i < gcases.size(); ++i) {
      const OpCase& c = gcases[i];
      const uint64_t case_seed = opt.seed + 100003 + i;
      const std::string name = std::string(op_name(c.op)) + " gradient";
      const int key = 1000 + int(c.op);  // after the ops, in table order
      std::vector<OpCheck> checks;
      try {
        checks = check_grad_tiers(c, tiers, case_seed);
      } catch (const Error& e) {
        for (const auto& t : tiers) {
          OpCheck k;
          k.label = c.label + " (gradient)";
          k.tier = t->name();
          k.err = std::numeric_limits<double>::infinity();
          k.reason = fmt::format("the reference could not run it: {}", e.what());
          checks.push_back(k);
        }
      }
      for (size_t t = 0; t < tiers.size(); ++t) {
        OpTierResult& row = rows[{key, int(DType::F32), t}];
        if (row.cases == 0) {
          row.op = name;
          row.tier = tiers[t]->name();
        }
        add_case(row, checks[t], case_seed);
      }
      const FdCheck fd = fd_check(c, case_seed);
      OpCheck k;
      k.label = c.label + " (finite differences)";
      k.tier = "finite-diff";
      k.supported = fd.differentiable;
      k.reason = fd.reason;
      k.err = fd.err;
      k.tolerance = kFdBound;
      k.pass = fd.differentiable && fd.err <= kFdBound;
      OpTierResult& row = rows[{key, int(DType::F64), fd_tier}];
      if (row.cases == 0) {
        row.op = name;
        row.dtype = DType::F64;
        row.tier = "finite-diff";
      }
      add_case(row, k, case_seed);
    }
  }
  for (auto& [key, row] : rows) {
    finish_row(row);
    rep.ops.push_back(row);
  }

  // ---- the whole GPT-2 ----
  if (opt.models) {
    std::shared_ptr<Backend> fallback;  // the bottom rung: the last usable tier of the registry
    for (const auto& b : all_backends())
      if (b->probe().ok) fallback = b;
    std::vector<NamedModel> models = models_to_check(opt, rep.notes);
    Progress model_progress("validate: GPT-2 per tier", double(models.size() * tiers.size()), "checks");
    for (size_t mi = 0; mi < models.size(); ++mi) {
      for (const auto& t : tiers) {
        model_progress.set(double(mi * tiers.size() + size_t(&t - tiers.data())));
        progress(fmt::format("model: {} {} on {}", models[mi].name, dtype_name(models[mi].model->weights.dtype),
                             t->name()));
        rep.models.push_back(check_model(models[mi], t, fallback, opt.seed + 7919 * (mi + 1), opt.greedy_tokens));
      }
    }
  }
  // ---- what the rounding costs end to end ----
  if (opt.precision_cost) {
    std::shared_ptr<Backend> fallback;  // the bottom rung, as for the model checks
    for (const auto& b : all_backends())
      if (b->probe().ok) fallback = b;
    rep.costs = precision_costs(opt, tiers, fallback, rep.notes);
  }
  rep.seconds = now() - t0;
  return rep;
}

// ---- output ----------------------------------------------------------------------------------

std::string ValidateReport::table() const {
  std::string s;
  s += fmt::format("seed {} (rerun with --seed {}): {} op cases per tier ({} random round(s) over every op, {} "
                   "GPT-2-sized)\n",
                   seed, seed, total_cases, cases_per_op, large_cases);
  s += "rule: error = max |y - ref| / max |ref| against the float64 reference; a tier passes a case when its error\n"
       "      is at most 2 x the naive f32 tier's error on it + 4 f32 ulps (the naive tier itself: 1e-4); a tier that\n"
       "      rounds (bf16/int8 tiles) is judged on inputs rounded as it declares, the naive tier at that precision\n"
       "      giving the bar (shown as [at its precision: ...])\n\n";
  s += "tiers:\n";
  for (const auto& t : tiers)
    s += fmt::format("  {:<10} {}  [{}{}]\n", t.name, t.description, t.usable ? "usable" : "NOT USABLE",
                     t.reason.empty() ? "" : ": " + t.reason);
  s += "\nops (per row: the case nearest its tolerance; 'max err' is the largest over all cases that ran)\n";
  s += fmt::format("{:<28} {:<7} {:<11} {:>7}  {:>9}  {:>9}  {:>9}  {:>9}  {}\n", "op", "weights", "tier", "cases",
                   "err", "naive err", "tolerance", "max err", "result");
  for (const auto& r : ops) {
    const std::string cases = r.declined ? fmt::format("{}/{}", r.ran, r.cases) : fmt::format("{}", r.cases);
    std::string result(status_name(r.status));
    if (!r.reason.empty()) result += ": " + r.reason;
    if (!r.precision.empty()) result += " [at its precision: " + r.precision + "]";
    if (r.status == CheckStatus::NotSupported)
      s += fmt::format("{:<28} {:<7} {:<11} {:>7}  {:>9}  {:>9}  {:>9}  {:>9}  {}\n", r.op, dtype_name(r.dtype), r.tier,
                       cases, "-", "-", "-", "-", result);
    else
      s += fmt::format("{:<28} {:<7} {:<11} {:>7}  {:>9}  {:>9}  {:>9}  {:>9}  {}\n", r.op, dtype_name(r.dtype), r.tier,
                       cases, num(r.err), num(r.naive_err), num(r.tolerance), num(r.max_err), result);
  }
  if (!models.empty()) {
    s += "\nGPT-2 end to end (logits against the float64 reference; greedy steps fed the reference's token)\n";
    s += fmt::format("{:<44} {:<7} {:<10} {:<12} {:>6}  {:>9}  {:>9}  {:>9}  {:>9}  {:>7}  {}\n", "model", "weights",
                     "tier", "chain", "flops%", "prefill", "tol", "decode", "tol", "greedy", "result");
    for (const auto& m : models) {
      std::string result(status_name(m.status));
      if (!m.reason.empty()) result += ": " + m.reason;
      if (!m.precision.empty()) result += " [at its precision: " + m.precision + "]";
      s += fmt::format("{:<44} {:<7} {:<10} {:<12} {:>5.1f}%  {:>9}  {:>9}  {:>9}  {:>9}  {:>7}  {}\n", m.model,
                       m.weights, m.tier, m.chain, 100.0 * m.tier_flop_share, num(m.prefill_err), num(m.prefill_tol),
                       num(m.decode_err), num(m.decode_tol), fmt::format("{}/{}", m.agree, m.tokens), result);
    }
  }
  if (!costs.empty()) {
    s += "\nwhat each tier's precision and each weight dtype cost end to end (not a check): perplexity on a fixed "
         "token\nsequence against the same model with f32 weights on an exact f32 tier, the share of positions whose "
         "greedy\ntoken agrees with it, and the mean KL divergence from it\n";
    std::string last_model;
    for (const auto& c : costs) {
      if (c.model != last_model) {
        last_model = c.model;
        s += fmt::format("  {}: {}; baseline {}, ppl {:.4f}\n", c.model, c.text, c.baseline, c.ppl_f32);
        s += fmt::format("  {:<10} {:<7} {:>12} {:>10} {:>9} {:>8} {:>10}  {}\n", "tier", "weights", "ppl", "Δppl",
                         "Δ%", "top-1", "KL", "rounds");
      }
      if (!c.error.empty()) {
        s += fmt::format("  {:<10} {:<7} error: {}\n", c.tier, c.weights, c.error);
        continue;
      }
      s += fmt::format("  {:<10} {:<7} {:>12.4f} {:>+10.4f} {:>+8.3f}% {:>7.1f}% {:>10.2e}  {}\n", c.tier, c.weights,
                       c.ppl, c.ppl - c.ppl_f32, 100.0 * (c.ppl / c.ppl_f32 - 1), 100.0 * c.top1_agree, c.kl,
                       c.precision.empty() ? "nothing" : c.precision);
    }
  }
  for (const auto& n : notes) s += "note: " + n + "\n";
  int pass = 0, fail = 0, unsup = 0, mpass = 0, mfail = 0;
  for (const auto& r : ops) {
    pass += r.status == CheckStatus::Pass;
    fail += r.status == CheckStatus::Fail;
    unsup += r.status == CheckStatus::NotSupported;
  }
  for (const auto& m : models) (m.status == CheckStatus::Fail ? mfail : mpass)++;
  int usable = 0;
  for (const auto& t : tiers) usable += t.usable;
  s += fmt::format("\nsummary: {} usable tier(s); ops: {} pass, {} FAIL, {} not supported; models: {} pass, {} FAIL "
                   "({:.1f} s) -> {}\n",
                   usable, pass, fail, unsup, mpass, mfail, seconds, failures() == 0 ? "PASS" : "FAIL");
  return s;
}

json ValidateReport::to_json() const {
  json j;
  j["seed"] = seed;
  j["cases_per_op"] = cases_per_op;
  j["cases_per_tier"] = total_cases;
  j["large_cases"] = large_cases;
  j["rule"] = "error = max|y-ref|/max|ref| vs the float64 reference; pass when error <= 2*naive_f32_error + 4*FLT_EPSILON "
              "(the naive tier itself: <= 1e-4); a tier that declares a lower precision is judged on inputs rounded as it "
              "declares, naive_f32_error being the naive tier's at that precision";
  json jt = json::array();
  for (const auto& t : tiers)
    jt.push_back({{"name", t.name}, {"description", t.description}, {"usable", t.usable}, {"reason", t.reason}});
  j["tiers"] = jt;
  json jo = json::array();
  for (const auto& r : ops)
    jo.push_back({{"op", r.op},
                  {"weights", std::string(dtype_name(r.dtype))},
                  {"tier", r.tier},
                  {"status", std::string(status_name(r.status))},
                  {"reason", r.reason},
                  {"cases", r.cases},
                  {"ran", r.ran},
                  {"declined", r.declined},
                  {"failed", r.failed},
                  {"err", jnum(r.err)},
                  {"naive_err", jnum(r.naive_err)},
                  {"tolerance", jnum(r.tolerance)},
                  {"max_err", jnum(r.max_err)},
                  {"worst_case", r.worst},
                  {"worst_case_seed", r.worst_seed},
                  {"precision", r.precision}});
  j["ops"] = jo;
  json jm = json::array();
  for (const auto& m : models)
    jm.push_back({{"model", m.model},
                  {"weights", m.weights},
                  {"tier", m.tier},
                  {"chain", m.chain},
                  {"tier_flop_share", m.tier_flop_share},
                  {"prompt_tokens", m.prompt_tokens},
                  {"prefill_err", jnum(m.prefill_err)},
                  {"prefill_naive_err", jnum(m.prefill_naive_err)},
                  {"prefill_tolerance", jnum(m.prefill_tol)},
                  {"decode_err", jnum(m.decode_err)},
                  {"decode_naive_err", jnum(m.decode_naive_err)},
                  {"decode_tolerance", jnum(m.decode_tol)},
                  {"greedy_tokens", m.tokens},
                  {"greedy_agree", m.agree},
                  {"greedy_near_ties", m.near_ties},
                  {"status", std::string(status_name(m.status))},
                  {"reason", m.reason},
                  {"precision", m.precision}});
  j["models"] = jm;
  json jc = json::array();
  for (const auto& c : costs)
    jc.push_back({{"model", c.model},
                  {"text", c.text},
                  {"tier", c.tier},
                  {"weights", c.weights},
                  {"chain", c.chain},
                  {"precision", c.precision},
                  {"baseline", c.baseline},
                  {"tokens", c.tokens},
                  {"ppl", jnum(c.ppl)},
                  {"ppl_f32", jnum(c.ppl_f32)},
                  {"top1_agree", jnum(c.top1_agree)},
                  {"kl", jnum(c.kl)},
                  {"error", c.error}});
  j["precision_costs"] = jc;
  j["notes"] = notes;
  j["failures"] = failures();
  j["pass"] = pass();
  j["seconds"] = seconds;
  return j;
}

namespace {

std::string md_escape(std::string s) {
  std::string o;
  for (char c : s) {
    if (c == '|') o += "\\|";
    else if (c == '\n') o += ' ';
    else o += c;
  }
  return o;
}

}  // namespace

std::string ops_markdown(const ValidateReport& r, const std::string& command, const std::string& machine,
                         const std::string& date) {
  std::string s;
  s += "# Op × tier support\n\n";
  s += "<!-- Generated by `strand validate`; do not edit by hand: rerun it to refresh this file. -->\n\n";
  s += fmt::format("Generated by `{}` on {}.\n\n", command, date);
  s += fmt::format("- machine: {}\n", md_escape(machine));
  s += fmt::format("- seed {}: {} op cases per tier ({} random round(s) over every op on odd shapes, {} GPT-2-sized)\n",
                   r.seed, r.total_cases, r.cases_per_op, r.large_cases);
  s += "- rule: error = max |y − ref| / max |ref| against the float64 reference; a tier passes a case when its error "
       "is at most 2 × the naive f32 tier's error on the same case + 4 f32 ulps (the naive tier itself: 1e-4); a tier "
       "that rounds (bf16 or int8 tiles) is judged on inputs rounded as it declares, against the naive tier computing "
       "at that precision (`✓ e at a bf16, b bf16`)\n";
  s += "- a cell reads `✓ e` (supported; e = the largest error over its cases), `FAIL e > tol`, or `— reason` "
       "(the tier declines the op, which is not a failure: the planner places it on the next tier of the chain)\n\n";

  std::vector<std::string> tier_names;
  for (const auto& t : r.tiers)
    if (t.usable) tier_names.push_back(t.name);
  s += "| op | weights |";
  for (const auto& t : tier_names) s += " " + t + " |";
  s += "\n|---|---|";
  for (size_t i = 0; i < tier_names.size(); ++i) s += "---|";
  s += "\n";
  std::map<std::pair<std::string, std::string>, std::map<std::string, const OpTierResult*>> table;
  std::vector<std::pair<std::string, std::string>> order;
  for (const auto& row : r.ops) {
    const auto key = std::make_pair(row.op, std::string(dtype_name(row.dtype)));
    if (!table.count(key)) order.push_back(key);
    table[key][row.tier] = &row;
  }
  for (int k = 0; k < int(OpKind::kCount); ++k) {
    const std::string op(op_name(OpKind(k)));
    bool any = false;
    for (const auto& key : order) {
      if (key.first != op) continue;
      any = true;
      s += fmt::format("| {} | {} |", op, key.second);
      for (const auto& t : tier_names) {
        const auto it = table[key].find(t);
        if (it == table[key].end()) {
          s += " |";
          continue;
        }
        const OpTierResult& x = *it->second;
        std::string cell;
        if (x.status == CheckStatus::NotSupported)
          cell = "— " + x.reason;
        else if (x.status == CheckStatus::Fail)
          cell = fmt::format("FAIL {} > {}", num(x.err), num(x.tolerance));
        else
          cell = fmt::format("✓ {}{}{}", num(x.max_err), x.precision.empty() ? std::string() : fmt::format(" at {}", x.precision),
                             x.declined ? fmt::format(" ({})", x.reason) : "");
        s += " " + md_escape(cell) + " |";
      }
      s += "\n";
    }
    if (!any) {
      s += fmt::format("| {} | — |", op);
      for (size_t i = 0; i < tier_names.size(); ++i) s += " not checked |";
      s += "\n";
    }
  }

  if (!r.models.empty()) {
    s += "\n## GPT-2 end to end\n\n";
    s += "Each tier runs the model on the chain shown (the tier first, the bottom rung for what it declines), in "
         "lockstep with the float64 reference: the prefill's logits, then greedy decode steps on the KV cache, each "
         "fed the reference's token. Errors as above; a greedy disagreement passes only as a near tie (the "
         "reference's own gap between the two tokens is within twice the tolerance).\n\n";
    s += "| model | weights | tier | chain | FLOPs on tier | prefill err (tol) | decode err (tol) | greedy agree | result |\n";
    s += "|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& m : r.models)
      s += fmt::format("| {} | {} | {} | {} | {:.1f}% | {} ({}) | {} ({}) | {}/{} | {} |\n", md_escape(m.model),
                       m.weights, m.tier, m.chain, 100.0 * m.tier_flop_share, num(m.prefill_err), num(m.prefill_tol),
                       num(m.decode_err), num(m.decode_tol), m.agree, m.tokens,
                       md_escape(std::string(status_name(m.status)) + (m.reason.empty() ? "" : ": " + m.reason)));
  }

  if (!r.costs.empty()) {
    s += "\n## What the rounding costs end to end\n\n";
    s += "Not a check: each tier and weight dtype runs the model on a fixed token sequence; perplexity against the "
         "same model with f32 weights on an exact f32 tier, the share of positions whose greedy (argmax) token agrees "
         "with it, and the mean KL divergence from it. `rounds` is the tier's declared precision.\n\n";
    s += "| model | tokens | tier | weights | ppl | f32 ppl | Δppl | top-1 agree | KL | rounds |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& c : r.costs) {
      if (!c.error.empty()) {
        s += fmt::format("| {} | {} | {} | {} | error: {} | | | | | |\n", md_escape(c.model), c.tokens, c.tier, c.weights,
                         md_escape(c.error));
        continue;
      }
      s += fmt::format("| {} | {} | {} | {} | {:.4f} | {:.4f} | {:+.4f} ({:+.3f}%) | {:.1f}% | {:.2e} | {} |\n",
                       md_escape(c.model), c.tokens, c.tier, c.weights, c.ppl, c.ppl_f32, c.ppl - c.ppl_f32,
                       100.0 * (c.ppl / c.ppl_f32 - 1), 100.0 * c.top1_agree, c.kl,
                       md_escape(c.precision.empty() ? "nothing" : c.precision));
    }
  }
  s += "\n## Tiers in this build\n\n| tier | what it is | here |\n|---|---|---|\n";
  for (const auto& t : r.tiers)
    s += fmt::format("| {} | {} | {} |\n", t.name, md_escape(t.description),
                     md_escape(t.usable ? "usable" : "not usable: " + t.reason));
  for (const auto& n : r.notes) s += "\nNote: " + md_escape(n) + "\n";
  s += fmt::format("\nResult: {} ({} failure(s)).\n", r.pass() ? "PASS" : "FAIL", r.failures());
  return s;
}

void write_ops_markdown(const std::string& path, const ValidateReport& r, const std::string& command,
                        const std::string& machine, const std::string& date) {
  const std::string text = ops_markdown(r, command, machine, date);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail("{}: cannot create", tmp);
    f << text;
    f.close();
    if (!f) fail("{}: cannot write", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    fail("{}: cannot write: {}", path, ec.message());
  }
}

}  // namespace strand
