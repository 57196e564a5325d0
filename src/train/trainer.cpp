#include "train/trainer.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "backends/registry.h"
#include "core/error.h"
#include "core/file_io.h"
#include "formats/safetensors.h"
#include "model/weight_cast.h"

namespace strand {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kStateFormat = "strand-train-1";

template <class T>
T get(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) fail("{}: missing \"{}\"", where, key);
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    fail("{}: \"{}\" has the wrong type", where, key);
  }
}

}  // namespace

json TrainConfig::to_json() const {
  return {{"steps", steps},         {"batch", batch},       {"ctx", ctx},
          {"lr", lr},               {"min_lr", min_lr},     {"warmup", warmup},
          {"weight_decay", weight_decay}, {"clip", clip},   {"beta1", beta1},
          {"beta2", beta2},         {"eps", eps},           {"seed", seed},
          {"eval_every", eval_every}, {"eval_windows", eval_windows}, {"val_split", val_split},
          {"tokenizer", tokenizer}, {"data", data},         {"init", init},
          {"backend", backend},     {"strict", strict}};
}

TrainConfig TrainConfig::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: \"config\" must be an object", where);
  TrainConfig c;
  c.steps = get<int64_t>(j, "steps", where);
  c.batch = get<int64_t>(j, "batch", where);
  c.ctx = get<int64_t>(j, "ctx", where);
  c.lr = get<double>(j, "lr", where);
  c.min_lr = get<double>(j, "min_lr", where);
  c.warmup = get<int64_t>(j, "warmup", where);
  c.weight_decay = get<double>(j, "weight_decay", where);
  c.clip = get<double>(j, "clip", where);
  c.beta1 = get<double>(j, "beta1", where);
  c.beta2 = get<double>(j, "beta2", where);
  c.eps = get<double>(j, "eps", where);
  c.seed = get<uint64_t>(j, "seed", where);
  c.eval_every = get<int64_t>(j, "eval_every", where);
  c.eval_windows = get<int64_t>(j, "eval_windows", where);
  c.val_split = get<double>(j, "val_split", where);
  c.tokenizer = get<std::string>(j, "tokenizer", where);
  c.data = get<std::vector<std::string>>(j, "data", where);
  c.init = get<std::string>(j, "init", where);
  c.backend = get<std::string>(j, "backend", where);
  c.strict = get<bool>(j, "strict", where);
  c.validate();
  return c;
}

void TrainConfig::validate() const {
  auto positive = [](int64_t v, const char* opt) {
    if (v < 1) fail("{} {}: must be at least 1", opt, v);
  };
  positive(steps, "--steps");
  positive(batch, "--batch");
  positive(ctx, "--ctx");
  if (!(std::isfinite(lr) && lr > 0)) fail("--lr {}: must be a positive number", lr);
  if (!(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= lr)) fail("--min-lr {}: must be in [0, --lr {}]", min_lr, lr);
  if (warmup < 0) fail("--warmup {}: must not be negative", warmup);
  if (!(std::isfinite(weight_decay) && weight_decay >= 0)) fail("--wd {}: must be a non-negative number", weight_decay);
  if (!(std::isfinite(clip) && clip >= 0)) fail("--clip {}: must be a non-negative number (0: no clipping)", clip);
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1)) fail("AdamW betas must be in [0, 1)");
  if (!(std::isfinite(eps) && eps > 0)) fail("AdamW eps must be positive");
  if (eval_every < 0) fail("--eval-every {}: must not be negative", eval_every);
  if (!(val_split >= 0 && val_split < 1)) fail("--val-split {}: must be in [0, 1)", val_split);
  if (tokenizer != "bytes" && tokenizer != "gpt2") fail("--tokenizer {}: must be bytes or gpt2", tokenizer);
}

Gpt2Model load_trainable(const std::string& dir) {
  Gpt2Model m = Gpt2Model::load(dir);
  m.weights = cast_gpt2_weights(m.weights, DType::F32);  // owned, writable, row-major
  return m;
}

Trainer::Trainer(Gpt2Config mcfg, Gpt2Weights weights, Gpt2Tokenizer tok, Corpus corpus, TrainConfig cfg, int threads)
    : tok_(std::move(tok)), corpus_(std::move(corpus)), cfg_(std::move(cfg)), threads_(threads) {
  cfg_.validate();
  model_.config = mcfg;
  model_.weights = std::move(weights);
  if (cfg_.ctx > mcfg.n_positions)
    fail("--ctx {}: longer than the model's context of {} tokens", cfg_.ctx, mcfg.n_positions);
  if (tok_.vocab_size() > mcfg.vocab_size)
    fail("the tokenizer has {} tokens, more than the model's vocabulary of {}", tok_.vocab_size(), mcfg.vocab_size);
  chain_ = make_chain(cfg_.backend);
  runner_ = std::make_unique<StepRunner>(build_train_graph(model_, cfg_.batch, cfg_.ctx), chain_, cfg_.strict);
  AdamWConfig ac;
  ac.beta1 = cfg_.beta1;
  ac.beta2 = cfg_.beta2;
  ac.eps = cfg_.eps;
  ac.weight_decay = cfg_.weight_decay;
  // The whole step on a tier that trains in place (a GPU): weights, gradients and moments stay
  // there; per step only the inputs go in and the loss and the gradient norm come out.
  opt_ = std::make_unique<AdamW>(make_adamw(*runner_, ac));
  const std::shared_ptr<Backend>& device = opt_->device();
  sampler_ = std::make_unique<BatchSampler>(corpus_.train, cfg_.batch, cfg_.ctx, cfg_.seed);
  // Validation: full batches of consecutive windows (fewer sequences when the held-out text is short).
  if (!corpus_.val.empty()) {
    const int64_t windows = std::min<int64_t>(cfg_.eval_windows, (int64_t(corpus_.val.size()) - 1) / cfg_.ctx);
    const int64_t seqs = std::min<int64_t>(cfg_.batch, windows);
    if (seqs >= 1) {
      eval_batches_ = eval_batches(corpus_.val, seqs, cfg_.ctx, cfg_.eval_windows);
      eval_ = std::make_unique<StepRunner>(build_eval_graph(model_, seqs, cfg_.ctx), chain_, cfg_.strict);
      eval_->set_device(device);  // with a device: its copies are the weights (host tiers get synced ones)
    }
  }
}

void Trainer::set_total_steps(int64_t steps) {
  if (steps < std::max<int64_t>(1, step_)) fail("--steps {}: the run is already at step {}", steps, step_);
  cfg_.steps = steps;
}

double Trainer::evaluate() {
  if (!eval_ || eval_batches_.empty()) return NAN;
  if (opt_->device() && !eval_->whole_step_device()) opt_->sync_to_host();  // host tiers read the host weights
  double total = 0;
  for (const EvalBatch& b : eval_batches_) total += eval_->run(b.ids.data(), b.targets.data());
  return total / double(eval_batches_.size());
}

StepLog Trainer::step() {
  if (done()) fail("the run has reached its {} steps", cfg_.steps);
  const auto t0 = std::chrono::steady_clock::now();
  StepLog log;
  log.step = step_ + 1;
  log.lr = lr_at(step_, cfg_.steps, cfg_.lr, cfg_.min_lr, cfg_.warmup);
  sampler_->next(ids_, targets_);
  log.loss = runner_->run(ids_.data(), targets_.data());
  if (!std::isfinite(log.loss)) fail("step {}: the loss is {} (try a lower --lr)", log.step, log.loss);
  std::vector<Tensor> grads;
  for (size_t i = 0; i < runner_->params().size(); ++i) grads.push_back(runner_->grad(i));
  log.grad_norm = opt_->grad_norm(grads);
  const double scale = cfg_.clip > 0 && log.grad_norm > cfg_.clip ? cfg_.clip / log.grad_norm : 1.0;
  opt_->step(grads, log.lr, scale);
  ++step_;
  const auto t1 = std::chrono::steady_clock::now();
  log.seconds = std::chrono::duration<double>(t1 - t0).count();
  if ((cfg_.eval_every > 0 && step_ % cfg_.eval_every == 0) || done()) {
    log.val_loss = evaluate();
    log.eval_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  }
  history_.push_back(log);
  return log;
}

void Trainer::save(const std::string& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("--out {}: cannot create the directory: {}", dir, ec.message());
  opt_->sync_to_host();
  save_gpt2_dir(dir, model_.config, model_.weights);
  tok_.write_files(dir);
  // AdamW's moments by parameter name.
  std::vector<std::pair<std::string, Tensor>> moments;
  const auto& params = runner_->params();
  for (size_t i = 0; i < params.size(); ++i) {
    moments.emplace_back("m." + params[i].name, opt_->moment_m(i));
    moments.emplace_back("v." + params[i].name, opt_->moment_v(i));
  }
  write_safetensors((fs::path(dir) / "optimizer.safetensors").string(), moments, {{"format", "strand-adamw"}});
  json hist = json::array();
  for (const StepLog& l : history_) {
    json e = {{"step", l.step}, {"loss", l.loss}, {"lr", l.lr}, {"grad_norm", l.grad_norm}, {"seconds", l.seconds}};
    if (std::isfinite(l.val_loss)) e["val_loss"] = l.val_loss, e["eval_seconds"] = l.eval_seconds;
    hist.push_back(e);
  }
  const Rng::State rs = sampler_->state();
  json st = {{"format", kStateFormat},
             {"step", step_},
             {"adamw_steps", opt_->steps()},
             {"config", cfg_.to_json()},
             {"threads", threads_},
             {"data_hash", corpus_.hash},
             {"train_tokens", corpus_.train.size()},
             {"val_tokens", corpus_.val.size()},
             {"sampler", {rs.s[0], rs.s[1], rs.s[2], rs.s[3]}},
             {"history", hist}};
  const std::string path = (fs::path(dir) / "trainer_state.json").string();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail("{}: cannot create", tmp);
    f << st.dump(1) << "\n";
    if (!f.flush()) fail("{}: cannot write", tmp);
  }
  fs::rename(tmp, path, ec);
  if (ec) fail("{}: cannot rename into place: {}", path, ec.message());
}

std::unique_ptr<Trainer> Trainer::resume(const std::string& dir, int threads, int64_t steps) {
  const std::string path = (fs::path(dir) / "trainer_state.json").string();
  json st;
  try {
    st = json::parse(read_regular_file(path, "--resume", kMaxJsonConfigBytes));
  } catch (const json::exception& e) {
    fail("--resume {}: not valid JSON: {}", path, e.what());
  }
  if (!st.is_object() || !st.contains("format") || !st["format"].is_string() || st["format"] != kStateFormat)
    fail("--resume {}: not a strand training state (format \"{}\" expected)", path, kStateFormat);
  try {
    return resume_from(dir, path, st, threads, steps);
  } catch (const json::exception& e) {
    fail("--resume {}: a field has the wrong type or is missing ({})", path, e.what());
  }
}

std::unique_ptr<Trainer> Trainer::resume_from(const std::string& dir, const std::string& path, const json& st,
                                              int threads, int64_t steps) {
  TrainConfig cfg = TrainConfig::from_json(st.at("config"), path);
  if (steps > 0) cfg.steps = steps;
  const int saved_threads = get<int>(st, "threads", path);
  if (saved_threads != threads)
    std::fprintf(stderr,
                 "strand: warning: the run was saved with %d threads and goes on with %d: it continues, but not bit "
                 "for bit as an uninterrupted run would\n",
                 saved_threads, threads);
  Gpt2Model m = load_trainable(dir);
  Gpt2Tokenizer tok = Gpt2Tokenizer::load_dir(dir);
  if (cfg.data.empty() || (cfg.data.size() == 1 && cfg.data[0].rfind("(", 0) == 0))
    fail("--resume {}: the run trained on {} and cannot be resumed from files", dir,
         cfg.data.empty() ? "no files" : cfg.data[0]);
  Corpus corpus = load_corpus(cfg.data, tok, cfg.val_split);
  if (corpus.hash != get<uint64_t>(st, "data_hash", path))
    fail("--resume {}: the data in {} changed since the checkpoint (its tokens differ)", dir, cfg.data[0]);
  auto t = std::make_unique<Trainer>(m.config, std::move(m.weights), std::move(tok), std::move(corpus), cfg, threads);
  t->step_ = get<int64_t>(st, "step", path);
  if (t->step_ < 0 || t->step_ > cfg.steps)
    fail("--resume {}: step {} is outside the run's {} steps (give more with --steps)", dir, t->step_, cfg.steps);
  t->opt_->set_steps(get<int64_t>(st, "adamw_steps", path));
  // AdamW's moments.
  const auto opt = SafeTensors::open((fs::path(dir) / "optimizer.safetensors").string());
  const auto& params = t->runner_->params();
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor* mv[2] = {nullptr, nullptr};
    for (int k = 0; k < 2; ++k) {
      const std::string name = (k == 0 ? "m." : "v.") + params[i].name;
      const Tensor* src = opt->find(name);
      if (!src) fail("--resume {}: optimizer.safetensors has no {}", dir, name);
      if (src->dtype != DType::F32 || src->shape != params[i].tensor.shape)
        fail("--resume {}: optimizer.safetensors: {} is {} {}, expected f32 {}", dir, name, dtype_name(src->dtype),
             shape_str(src->shape), shape_str(params[i].tensor.shape));
      mv[k] = src;
    }
    t->opt_->set_moments(i, *mv[0], *mv[1]);
  }
  const json& s = st.at("sampler");
  if (!s.is_array() || s.size() != 4) fail("--resume {}: \"sampler\" must be 4 numbers", path);
  Rng::State rs;
  for (int i = 0; i < 4; ++i) rs.s[i] = s[size_t(i)].get<uint64_t>();
  t->sampler_->set_state(rs);
  for (const json& e : st.at("history")) {
    StepLog l;
    l.step = e.at("step").get<int64_t>();
    l.loss = e.at("loss").get<double>();
    l.lr = e.at("lr").get<double>();
    l.grad_norm = e.at("grad_norm").get<double>();
    l.seconds = e.at("seconds").get<double>();
    if (e.contains("val_loss")) l.val_loss = e.at("val_loss").get<double>();
    if (e.contains("eval_seconds")) l.eval_seconds = e.at("eval_seconds").get<double>();
    t->history_.push_back(l);
  }
  return t;
}

}  // namespace strand
