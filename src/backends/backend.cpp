// strand/backends/backend.cpp — what the Backend interface does by default (host tiers), and
// device_tensor(): the one way a tier with its own memory wraps the buffers it hands out.
#include "backends/backend.h"

#include "core/error.h"

namespace strand {

namespace {

[[noreturn]] void host_tier(const Backend& b, const char* what) {
  fail("internal: the runtime asked the {} tier to {}, but its buffers are host memory", b.name(), what);
}

}  // namespace

Tensor Backend::allocate_like(const Tensor&) { host_tier(*this, "allocate a buffer"); }

Tensor Backend::allocate(const Shape& shape, DType dtype) {
  Tensor like;
  like.dtype = dtype;
  like.shape = shape;
  like.strides = contiguous_strides(shape);
  return allocate_like(like);
}
void Backend::poison(Tensor&) { host_tier(*this, "poison a buffer"); }
void Backend::copy_in(const Tensor&, Tensor&) { host_tier(*this, "copy a value in"); }
void Backend::copy_out(const Tensor&, Tensor&) { host_tier(*this, "copy a value out"); }
Tensor Backend::resident(const Tensor&) { host_tier(*this, "keep a resident weight"); }
void Backend::adamw_update(Tensor&, const Tensor&, Tensor&, Tensor&, const AdamWUpdate&) {
  fail("the {} tier does not run the optimizer in its memory", name());
}
double Backend::sum_squares(const std::vector<Tensor>&) {
  fail("the {} tier does not sum gradients in its memory", name());
}

Tensor device_tensor(void* data, DType dtype, const Shape& shape, const std::vector<int64_t>& strides,
                     DeviceBuffer d) {
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.shape = shape;
  t.strides = strides;
  t.owner = std::shared_ptr<void>(data, std::move(d));
  return t;
}

}  // namespace strand
