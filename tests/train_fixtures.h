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

}  // namespace strand::train_test
