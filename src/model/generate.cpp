#include "model/generate.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/progress.h"

namespace strand {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::vector<float> row_f32(const Tensor& logits, int64_t row) {
  const int64_t V = logits.dim(1);
  std::vector<float> r(static_cast<size_t>(V));
  for (int64_t j = 0; j < V; ++j) r[size_t(j)] = float(load_as_double(logits, row * V + j));
  return r;
}

}  // namespace

// ---- stop strings ----------------------------------------------------------------------------

StopStrings::StopStrings(std::vector<std::string> stops) {
  for (std::string& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string StopStrings::feed(std::string_view piece) {
  if (stopped_) return {};
  std::string buf = held_;
  buf.append(piece);
  held_.clear();
  // The earliest complete stop string ends generation; the text before it is final.
  size_t first = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t at = buf.find(s);
    if (at < first || (at == first && s.size() > matched_.size())) first = at, matched_ = s;
  }
  if (first != std::string::npos) {
    stopped_ = true;
    return buf.substr(0, first);
  }
  // Hold back the longest tail that some stop string starts with.
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t len = std::min(s.size() - 1, buf.size()); len > hold; --len)
      if (buf.compare(buf.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
  held_ = buf.substr(buf.size() - hold);
  buf.resize(buf.size() - hold);
  return buf;
}

std::string StopStrings::flush() {
  std::string s = stopped_ ? std::string() : held_;
  held_.clear();
  return s;
}

// ---- generation ------------------------------------------------------------------------------

GenerateResult generate(Gpt2Runner& runner, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        const std::function<void(int32_t)>& on_token,
                        const std::function<void(std::string_view)>& on_text) {
  const int64_t model_ctx = runner.model().config.n_positions;
  const int64_t ctx = opt.context > 0 ? std::min(opt.context, model_ctx) : model_ctx;
  if (prompt.empty()) fail("generate: the prompt has no tokens");
  if (int64_t(prompt.size()) > ctx)
    fail("the prompt is {} tokens, longer than the context of {} tokens", prompt.size(), ctx);
  if (opt.n < 0) fail("-n must be >= 0, got {}", opt.n);
  if (!opt.stop.empty() && !opt.token_bytes) fail("generate: stop strings need the tokens' bytes");
  Sampler sampler(opt.sampler);
  StopStrings stops(opt.stop);
  // The cache holds what this run can use: the prompt and n tokens, within the context.
  KvCache cache = runner.new_cache(std::min<int64_t>(ctx, int64_t(prompt.size()) + opt.n));
  GenerateResult res;
  res.stop = "length";
  if (opt.n == 0) return res;

  std::vector<int32_t> context = prompt;  // what the repetition penalty looks at
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    res.text += s;
    if (on_text) on_text(s);
  };
  double t0 = now();
  Tensor logits = runner.forward(prompt, cache, false);
  res.prefill_seconds = now() - t0;
  t0 = now();
  for (int i = 0; i < opt.n; ++i) {
    const int32_t next = sampler.sample(row_f32(logits, logits.dim(0) - 1), context);
    if (opt.eot_id >= 0 && next == opt.eot_id) {
      res.stop = "eot";
      break;
    }
    res.ids.push_back(next);
    context.push_back(next);
    if (on_token) on_token(next);
    if (opt.token_bytes) {
      emit(stops.feed(opt.token_bytes(next)));
      if (stops.stopped()) {
        res.stop = "stop";
        res.stop_string = stops.matched();
        break;
      }
    }
    if (i + 1 == opt.n) break;
    if (cache.len >= ctx) {
      res.stop = "context";
      break;
    }
    const int32_t one[1] = {next};
    logits = runner.forward(one, cache, false);
  }
  emit(stops.flush());
  res.decode_seconds = now() - t0;
  return res;
}

GenerateResult generate(Gpt2Runner& runner, const std::vector<int32_t>& prompt, int n, const SamplerConfig& sc,
                        int32_t eot_id, const std::function<void(int32_t)>& on_token) {
  GenerateOptions o;
  o.n = n;
  o.sampler = sc;
  o.eot_id = eot_id;
  return generate(runner, prompt, o, on_token);
}

// ---- perplexity ------------------------------------------------------------------------------

PerplexityResult perplexity(Gpt2Runner& runner, const std::vector<int32_t>& ids, int64_t stride, int64_t window) {
  const int64_t N = int64_t(ids.size());
  const int64_t ctx = runner.model().config.n_positions;
  if (window > ctx) fail("-c {}: larger than the model's context of {} tokens", window, ctx);
  const int64_t W = window > 0 ? window : ctx;
  if (W < 2) fail("-c {}: a window must hold at least 2 tokens", W);
  if (N < 2) fail("perplexity needs at least 2 tokens, the text has {}", N);
  if (stride <= 0) stride = std::max<int64_t>(1, W / 2);
  if (stride > W - 1) fail("--stride {} must be below the window of {} tokens", stride, W);

  PerplexityResult r;
  r.tokens = N;
  r.window = W;
  Progress progress("perplexity", double(N - 1), "tokens");
  double total = 0;
  int64_t scored_up_to = 0;  // tokens [1, scored_up_to] are scored
  for (int64_t s = 0;; s += stride) {
    const int64_t end = std::min(s + W, N);
    std::vector<int32_t> win(ids.begin() + s, ids.begin() + end);
    KvCache cache = runner.new_cache(end - s);
    const Tensor logits = runner.forward(win, cache, true);
    const int64_t V = logits.dim(1);
    // Position i of the window predicts token s + i + 1.
    for (int64_t i = std::max<int64_t>(0, scored_up_to - s); i + 1 < end - s; ++i) {
      double mx = -INFINITY;
      for (int64_t j = 0; j < V; ++j) mx = std::max(mx, load_as_double(logits, i * V + j));
      double sum = 0;
      for (int64_t j = 0; j < V; ++j) sum += std::exp(load_as_double(logits, i * V + j) - mx);
      const double logp = load_as_double(logits, i * V + win[size_t(i + 1)]) - mx - std::log(sum);
      total -= logp;
      ++r.scored;
    }
    scored_up_to = end - 1;
    ++r.windows;
    progress.set(double(r.scored));
    if (end == N) break;
  }
  progress.finish();
  r.nll = total / double(r.scored);
  r.ppl = std::exp(r.nll);
  return r;
}

}  // namespace strand
