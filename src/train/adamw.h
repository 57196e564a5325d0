// strand/train/adamw.h — AdamW, the learning-rate schedule and gradient clipping.
//
// AdamW as Loshchilov & Hutter define it and torch.optim.AdamW computes it, per element, in f32:
//   p -= lr · wd · p                       (decoupled weight decay, only where decay applies)
//   m  = β1 m + (1 - β1) g
//   v  = β2 v + (1 - β2) g²
//   p -= (lr / (1 - β1^t)) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)
// where g is the gradient times `grad_scale` (clipping and loss scaling fold into it) and t
// counts steps from 1. The moments m, v are f32 tensors shaped like the parameters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace strand {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  // `params` are updated in place (f32, contiguous); decay[i]: weight decay applies to params[i].
  AdamW(std::vector<Tensor> params, std::vector<bool> decay, AdamWConfig cfg);

  // One step at learning rate lr with grads[i] for params[i] (f32, same shapes).
  void step(const std::vector<Tensor>& grads, double lr, double grad_scale = 1.0);

  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }
  std::vector<Tensor>& m() { return m_; }
  std::vector<Tensor>& v() { return v_; }
  const AdamWConfig& config() const { return cfg_; }

 private:
  std::vector<Tensor> p_, m_, v_;
  std::vector<bool> decay_;
  AdamWConfig cfg_;
  int64_t t_ = 0;
};

// Learning rate at step `step` (0-based) of `total`: linear warmup from lr/warmup to lr over
// `warmup` steps, then a cosine from lr down to min_lr at the last step.
double lr_at(int64_t step, int64_t total, double lr, double min_lr, int64_t warmup);

// The global L2 norm of every gradient together, summed in double in a fixed order.
double global_grad_norm(const std::vector<Tensor>& grads);

}  // namespace strand
