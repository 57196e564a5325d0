#include "train/adamw.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/threadpool.h"
#include "core/error.h"

namespace strand {

AdamW::AdamW(std::vector<Tensor> params, std::vector<bool> decay, AdamWConfig cfg)
    : p_(std::move(params)), decay_(std::move(decay)), cfg_(cfg) {
  if (decay_.size() != p_.size()) fail("AdamW: {} decay flags for {} parameters", decay_.size(), p_.size());
  for (const Tensor& p : p_) {
    if (p.dtype != DType::F32 || !p.contiguous()) fail("AdamW: parameters must be contiguous f32 tensors");
    Tensor m = Tensor::empty(p.shape, DType::F32), v = Tensor::empty(p.shape, DType::F32);
    for (int64_t i = 0; i < p.numel(); ++i) m.ptr<float>()[i] = v.ptr<float>()[i] = 0.0f;
    m_.push_back(m);
    v_.push_back(v);
  }
}

void AdamW::step(const std::vector<Tensor>& grads, double lr, double grad_scale) {
  if (grads.size() != p_.size()) fail("AdamW: {} gradients for {} parameters", grads.size(), p_.size());
  ++t_;
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2), eps = float(cfg_.eps);
  const float bc1 = float(1.0 - std::pow(cfg_.beta1, double(t_)));
  const float bc2_sqrt = float(std::sqrt(1.0 - std::pow(cfg_.beta2, double(t_))));
  const float step_size = float(lr) / bc1;
  const float gs = float(grad_scale);
  cpu::ThreadPool& pool = cpu::ThreadPool::global();
  for (size_t i = 0; i < p_.size(); ++i) {
    const Tensor& g = grads[i];
    if (g.shape != p_[i].shape || g.dtype != DType::F32 || !g.contiguous())
      fail("AdamW: the gradient of parameter {} is {} {}, the parameter {}", i, dtype_name(g.dtype), shape_str(g.shape),
           shape_str(p_[i].shape));
    const float decay = decay_[i] ? float(1.0 - lr * cfg_.weight_decay) : 1.0f;
    float* p = p_[i].ptr<float>();
    float* m = m_[i].ptr<float>();
    float* v = v_[i].ptr<float>();
    const float* gr = g.ptr<const float>();
    auto body = [&](int64_t s, int64_t e) {
      for (int64_t j = s; j < e; ++j) {
        const float gj = gr[j] * gs;
        m[j] = b1 * m[j] + (1.0f - b1) * gj;
        v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
        p[j] = p[j] * decay - step_size * (m[j] / (std::sqrt(v[j]) / bc2_sqrt + eps));
      }
    };
    const int64_t n = p_[i].numel();
    if (n < (int64_t(1) << 16)) body(0, n);
    else pool.parallel_for(n, body);
  }
}

double lr_at(int64_t step, int64_t total, double lr, double min_lr, int64_t warmup) {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  const int64_t span = total - warmup;
  if (span <= 1) return lr;
  const double progress = std::min(1.0, double(step - warmup) / double(span - 1));
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(3.141592653589793 * progress));
}

double global_grad_norm(const std::vector<Tensor>& grads) {
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
  return std::sqrt(total);
}

}  // namespace strand
