// tests/train_fixtures.h — the training fixtures (tests/fixtures/train, made by
// tools/gen_train_golden.py) as the training tests of both test executables read them.
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>

#include "formats/safetensors.h"
#include "model/gpt2.h"
#include "model/weight_cast.h"
#include "train/step.h"

namespace strand::train_test {

inline std::string train_fixtures() { return std::string(STRAND_SOURCE_DIR) + "/tests/fixtures/train"; }

// PyTorch's float64 run: batches, losses, gradients and the parameters after two AdamW steps.
inline const Tensor& golden_tensor(const std::string& name) {
  static const std::shared_ptr<SafeTensors> g = SafeTensors::open(train_fixtures() + "/golden.safetensors");
  const Tensor* t = g->find(name);
  if (!t) throw std::runtime_error("golden.safetensors has no " + name);
  return *t;
}

// The fixture model ("tied" or "untied") with its weights as owned, writable f32 tensors.
inline Gpt2Model trainable(const std::string& tag) {
  Gpt2Model m = Gpt2Model::load(train_fixtures() + "/" + tag);
  m.weights = cast_gpt2_weights(m.weights, DType::F32);
  return m;
}

// max |a - b| / max |b| over a tensor pair (b the reference); infinite when a holds a NaN.
inline double rel_err(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(DType::F64), y = b.to(DType::F64);
  double d = 0, s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    const double u = x.ptr<const double>()[i], v = y.ptr<const double>()[i];
    if (std::isnan(u)) return INFINITY;
    d = std::max(d, std::abs(u - v));
    s = std::max(s, std::abs(v));
  }
  return d / (s > 0 ? s : 1.0);
}

// The golden batches' shape.
constexpr int64_t kGoldenSeqs = 3, kGoldenT = 9;

struct StepErrors {
  double loss = 0, grads = 0;  // relative errors against the golden
};

// Loss and gradients of the first golden batch on `chain`, against PyTorch's float64 run.
inline StepErrors first_step_errors(const std::string& tag, const std::vector<std::shared_ptr<Backend>>& chain,
                                    bool strict = false) {
  Gpt2Model m = trainable(tag);
  StepRunner r(build_train_graph(m, kGoldenSeqs, kGoldenT), chain, strict);
  const double loss =
      r.run(golden_tensor(tag + ".ids1").ptr<const int32_t>(), golden_tensor(tag + ".targets1").ptr<const int32_t>());
  StepErrors e;
  const double want = golden_tensor(tag + ".loss1").ptr<const double>()[0];
  e.loss = std::abs(loss - want) / std::abs(want);
  for (size_t i = 0; i < r.params().size(); ++i)
    e.grads = std::max(e.grads, rel_err(r.grad(i), golden_tensor(tag + ".grad1." + r.params()[i].name)));
  return e;
}

}  // namespace strand::train_test
