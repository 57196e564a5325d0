// strand/train/adamw.h — AdamW, the learning-rate schedule and gradient clipping.
//
// AdamW as Loshchilov & Hutter define it and torch.optim.AdamW computes it, per element, in f32:
//   p -= lr · wd · p                       (decoupled weight decay, only where decay applies)
//   m  = β1 m + (1 - β1) g
//   v  = β2 v + (1 - β2) g²
//   p -= (lr / (1 - β1^t)) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)
// where g is the gradient times `grad_scale` (clipping and loss scaling fold into it) and t
// counts steps from 1. The moments m, v are f32 tensors shaped like the parameters.
//
// On the host by default. Given a tier that trains in place (Backend::trains_in_place, a GPU),
// it runs there instead: the parameters are that tier's resident copies of the host tensors
// (the very copies a training step reads), updated in place; the gradients are the step's,
// left in that memory (StepRunner::set_device); the moments live there too. The host tensors
// then lag behind until sync_to_host().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/tensor.h"

namespace strand {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  // `params` are updated in place (f32, contiguous); decay[i]: weight decay applies to params[i].
  // With `device` (a tier that trains in place), everything but the host tensors lives there.
  AdamW(std::vector<Tensor> params, std::vector<bool> decay, AdamWConfig cfg,
        std::shared_ptr<Backend> device = nullptr);

  // One step at learning rate lr with grads[i] for params[i] (f32, same shapes; in the
  // device's memory when there is one).
  void step(const std::vector<Tensor>& grads, double lr, double grad_scale = 1.0);
  // The global L2 norm of the gradients (global_grad_norm, or the device's sum of squares).
  double grad_norm(const std::vector<Tensor>& grads) const;

  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }
  const AdamWConfig& config() const { return cfg_; }
  const std::shared_ptr<Backend>& device() const { return device_; }

  // Moments as host tensors (on the host: AdamW's own, live; on a device: copies), and setting
  // them (resume).
  Tensor moment_m(size_t i) const;
  Tensor moment_v(size_t i) const;
  void set_moments(size_t i, const Tensor& m, const Tensor& v);
  // The device's parameters copied into the host tensors (nothing to do without a device).
  void sync_to_host();

 private:
  std::vector<Tensor> p_, m_, v_;
  std::vector<Tensor> dp_;  // with a device: its resident copies of p_
  std::vector<bool> decay_;
  AdamWConfig cfg_;
  std::shared_ptr<Backend> device_;
  int64_t t_ = 0;
};

// Learning rate at step `step` (0-based) of `total`: linear warmup from lr/warmup to lr over
// `warmup` steps, then a cosine from lr down to min_lr at the last step.
double lr_at(int64_t step, int64_t total, double lr, double min_lr, int64_t warmup);

// The global L2 norm of every gradient together, summed in double in a fixed order (each
// tensor by blocks of 4096 elements), and that sum of squares itself.
double global_grad_norm(const std::vector<Tensor>& grads);
double global_sum_squares(const std::vector<Tensor>& grads);

}  // namespace strand
