#include "train/adamw.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/cpu/threadpool.h"
#include "core/error.h"

namespace strand {

namespace {

Tensor zeros_like(const Tensor& p) {
  Tensor z = Tensor::empty(p.shape, DType::F32);
  std::fill(z.ptr<float>(), z.ptr<float>() + z.numel(), 0.0f);
  return z;
}

}  // namespace

AdamW::AdamW(std::vector<Tensor> params, std::vector<bool> decay, AdamWConfig cfg, std::shared_ptr<Backend> device)
    : p_(std::move(params)), decay_(std::move(decay)), cfg_(cfg), device_(std::move(device)) {
  if (decay_.size() != p_.size()) fail("AdamW: {} decay flags for {} parameters", decay_.size(), p_.size());
  if (device_ && (device_->host_memory() || !device_->trains_in_place()))
    fail("AdamW: the {} tier does not train in its own memory", device_->name());
  for (const Tensor& p : p_) {
    if (p.dtype != DType::F32 || !p.contiguous()) fail("AdamW: parameters must be contiguous f32 tensors");
    Tensor z = zeros_like(p);
    if (device_) {
      dp_.push_back(device_->resident(p));
      Tensor m = device_->allocate(p.shape, DType::F32), v = device_->allocate(p.shape, DType::F32);
      device_->copy_in(z, m);
      device_->copy_in(z, v);
      m_.push_back(m);
      v_.push_back(v);
    } else {
      m_.push_back(z);
      v_.push_back(zeros_like(p));
    }
  }
}

void AdamW::step(const std::vector<Tensor>& grads, double lr, double grad_scale) {
  if (grads.size() != p_.size()) fail("AdamW: {} gradients for {} parameters", grads.size(), p_.size());
  ++t_;
  AdamWUpdate u;
  u.beta1 = float(cfg_.beta1);
  u.beta2 = float(cfg_.beta2);
  u.eps = float(cfg_.eps);
  u.step_size = float(lr) / float(1.0 - std::pow(cfg_.beta1, double(t_)));
  u.bc2_sqrt = float(std::sqrt(1.0 - std::pow(cfg_.beta2, double(t_))));
  u.grad_scale = float(grad_scale);
  cpu::ThreadPool& pool = cpu::ThreadPool::global();
  for (size_t i = 0; i < p_.size(); ++i) {
    const Tensor& g = grads[i];
    if (g.shape != p_[i].shape || g.dtype != DType::F32 || !g.contiguous())
      fail("AdamW: the gradient of parameter {} is {} {}, the parameter {}", i, dtype_name(g.dtype), shape_str(g.shape),
           shape_str(p_[i].shape));
    u.decay = decay_[i] ? float(1.0 - lr * cfg_.weight_decay) : 1.0f;
    if (device_) {
      device_->adamw_update(dp_[i], g, m_[i], v_[i], u);
      if (i + 1 == p_.size()) device_->sync();  // the step is done when step() returns
      continue;
    }
    if (memory_of(g)) fail("AdamW: the gradient of parameter {} is in {} memory, the optimizer on the host", i,
                           device_buffer_of(g)->tier);
    float* p = p_[i].ptr<float>();
    float* m = m_[i].ptr<float>();
    float* v = v_[i].ptr<float>();
    const float* gr = g.ptr<const float>();
    auto body = [&](int64_t s, int64_t e) {
      for (int64_t j = s; j < e; ++j) adamw_element(p[j], gr[j], m[j], v[j], u);
    };
    const int64_t n = p_[i].numel();
    if (n < (int64_t(1) << 16)) body(0, n);
    else pool.parallel_for(n, body);
  }
}

double AdamW::grad_norm(const std::vector<Tensor>& grads) const {
  return device_ ? std::sqrt(device_->sum_squares(grads)) : global_grad_norm(grads);
}

Tensor AdamW::moment_m(size_t i) const {
  if (!device_) return m_.at(i);
  Tensor h = Tensor::empty(m_.at(i).shape, DType::F32);
  device_->copy_out(m_[i], h);
  return h;
}

Tensor AdamW::moment_v(size_t i) const {
  if (!device_) return v_.at(i);
  Tensor h = Tensor::empty(v_.at(i).shape, DType::F32);
  device_->copy_out(v_[i], h);
  return h;
}

void AdamW::set_moments(size_t i, const Tensor& m, const Tensor& v) {
  for (const Tensor* t : {&m, &v})
    if (t->dtype != DType::F32 || t->shape != p_.at(i).shape || !t->contiguous() || memory_of(*t))
      fail("AdamW: moments of parameter {} must be host f32 {}", i, shape_str(p_[i].shape));
  if (device_) {
    device_->copy_in(m, m_[i]);
    device_->copy_in(v, v_[i]);
    return;
  }
  std::memcpy(m_[i].data, m.data, m.nbytes());
  std::memcpy(v_[i].data, v.data, v.nbytes());
}

void AdamW::sync_to_host() {
  if (!device_) return;
  for (size_t i = 0; i < p_.size(); ++i) device_->copy_out(dp_[i], p_[i]);
}

double lr_at(int64_t step, int64_t total, double lr, double min_lr, int64_t warmup) {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  const int64_t span = total - warmup;
  if (span <= 1) return lr;
  const double progress = std::min(1.0, double(step - warmup) / double(span - 1));
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(3.141592653589793 * progress));
}

double global_grad_norm(const std::vector<Tensor>& grads) { return std::sqrt(global_sum_squares(grads)); }

double global_sum_squares(const std::vector<Tensor>& grads) {
  double total = 0;
  for (const Tensor& g : grads) {
    const float* x = g.ptr<const float>();
    const int64_t n = g.numel();
    // Fixed blocks of 4096 summed in order: the same result on any machine and thread count.
    for (int64_t b = 0; b < n; b += 4096) {
      double s = 0;
      const int64_t e = std::min<int64_t>(n, b + 4096);
      for (int64_t j = b; j < e; ++j) s += double(x[j]) * double(x[j]);
      total += s;
    }
  }
  return total;
}

}  // namespace strand
