// Relative logit error shared by the model-level tests: max |a - b| / max |b|.
#pragma once

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "core/tensor.h"

namespace strand::test {

// A [T, V] logits tensor against golden rows (golden.json's "logits").
inline double rel_error(const Tensor& logits, const nlohmann::json& rows) {
  double err = 0, scale = 0;
  const int64_t V = logits.dim(1);
  for (size_t t = 0; t < rows.size(); ++t)
    for (int64_t j = 0; j < V; ++j) {
      const double g = rows[t][size_t(j)].get<double>();
      scale = std::max(scale, std::abs(g));
      err = std::max(err, std::abs(load_as_double(logits, int64_t(t) * V + j) - g));
    }
  return err / scale;
}

// Two tensors of equal size; b is the reference.
inline double rel_error(const Tensor& a, const Tensor& b) {
  double err = 0, scale = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    scale = std::max(scale, std::abs(load_as_double(b, i)));
    err = std::max(err, std::abs(load_as_double(a, i) - load_as_double(b, i)));
  }
  return err / scale;
}

}  // namespace strand::test
