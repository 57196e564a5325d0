// strand/backends/backend.h — the one interface every compute tier implements.
//
// A backend is asked three things by the planner and one by the runtime:
//   probe()      is this tier usable on this machine (and if not, why);
//   supports(n)  can it run this node, with a reason either way;
//   run(nodes)   execute a segment: consecutive nodes placed on it, in order.
// and validate asks one more:
//   precision(n) what it rounds the node's inputs to before computing (default: nothing).
// A tier may also keep out of the chains strand builds by default (in_default_chain).
// A segment may be one op or a whole model (a compiled Core ML block): nothing here assumes
// one op per call. Buffers of host backends are plain host memory, so passing values between
// two host backends needs no copy.
//
// Tiers with memory of their own (a GPU): memory_space() is not null, and every value lives
// where the tier that produced it runs. The planner decides where each value lives and counts
// every crossing (planner.h); the runtime asks such a tier for its buffers (allocate), fills
// them with NaN (poison), copies values in and out (copy_in, copy_out), and keeps one copy of
// each weight it reads (resident: uploaded the first time, then reused while the tier lives).
// Every tensor such a tier hands out carries a DeviceBuffer deleter, so memory_of(t) tells its
// tensors, and every view of them, from host ones: a host tier is never handed one (the
// runtime checks), and a tier refuses a pointer into memory it did not hand out.
#pragma once

#include <cmath>

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/rounding.h"
#include "core/tensor.h"
#include "graph/graph.h"

namespace strand {

struct Verdict {
  bool ok = false;
  std::string reason;  // why (not), in a few words: "f16 weights only", "not built: ..."
  static Verdict yes(std::string why = {}) { return {true, std::move(why)}; }
  static Verdict no(std::string why) { return {false, std::move(why)}; }
};

// The compute precision of one node on a tier: what each input is rounded to before the tier
// computes with it (core/rounding.h). Every tier accumulates in f32 at least. The default,
// exact(), is "the inputs as given": f32 activations, weights widened from their stored dtype.
//   amx      bf16 path: activations and f32/f16/bf16 weights rounded to bf16;
//            int8 path (q8 weights): activations quantized as Rounding::Q8, weights as stored;
//            attention: q, k, v rounded to bf16, and the softmax weights P rounded to bf16
//            before they multiply v (attention_probs).
//   cuda     products with f16/bf16 weights: activations rounded to the weight's dtype; with
//            tf32 on, f32 products round both operands to tf32; flash attention of an f16/bf16
//            model: q, k, v and P rounded to that dtype (cuda_node_precision).
// validate (validate/precision.h) evaluates the float64 reference on inputs rounded the same
// way and takes the naive tier computing at this precision as the 2x bar; the declaration is
// what a tier is judged on, so it must say exactly what the kernels do.
struct Precision {
  std::vector<Rounding> inputs;               // one per node input; missing entries: None
  Rounding attention_probs = Rounding::None;  // Attention: P (the softmax weights) before P·V
  std::string note;                           // one line, e.g. "bf16 tiles, f32 accumulation"

  Rounding input(size_t i) const { return i < inputs.size() ? inputs[i] : Rounding::None; }
  bool exact() const {
    for (Rounding r : inputs)
      if (r != Rounding::None) return false;
    return attention_probs == Rounding::None;
  }
  // "a bf16, b bf16" / "q, k, v bf16; P bf16" style summary ("" when exact), inputs named by
  // `names` where given (else in0, in1, ...).
  std::string summary(const std::vector<std::string>& names = {}) const {
    std::string s;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i] == Rounding::None) continue;
      if (!s.empty()) s += ", ";
      s += i < names.size() ? names[i] : "in" + std::to_string(i);
      s += ' ';
      s += rounding_short(inputs[i]);
    }
    if (attention_probs != Rounding::None) {
      if (!s.empty()) s += "; ";
      s += "P ";
      s += rounding_short(attention_probs);
    }
    return s;
  }
};

// One AdamW step's constants (train/adamw.h has the update rule), and the update of one element
// in f32; a tier that trains in place computes these operations in this order, each rounded on
// its own (the cuda tier's kernel gives the same bits).
struct AdamWUpdate {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float step_size = 0;  // lr / (1 - beta1^t)
  float bc2_sqrt = 1;   // sqrt(1 - beta2^t)
  float decay = 1;      // 1 - lr * weight_decay where decay applies, else 1
  float grad_scale = 1; // clipping (and loss scaling) folded into the gradient
};
inline void adamw_element(float& p, float g, float& m, float& v, const AdamWUpdate& u) {
  const float gs = g * u.grad_scale;
  m = u.beta1 * m + (1.0f - u.beta1) * gs;
  v = u.beta2 * v + (1.0f - u.beta2) * gs * gs;
  p = p * u.decay - u.step_size * (m / (std::sqrt(v) / u.bc2_sqrt + u.eps));
}

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;         // short tier name used on the command line
  virtual std::string description() const = 0;  // one line: what this tier is
  virtual Verdict probe() const = 0;
  virtual Verdict supports(const Graph& g, const Node& n) const = 0;

  // The dtype of the intermediates it produces (f32 for every tier but the f64 reference).
  virtual DType activation_dtype() const { return DType::F32; }

  // Where its buffers live: null for host memory, else an identifier of its memory that every
  // tier object on the same memory shares (two cuda tier objects on one GPU: one memory).
  virtual const void* memory_space() const { return nullptr; }
  // Whether its buffers are host memory (a GPU tier's are not: crossing costs a copy).
  bool host_memory() const { return memory_space() == nullptr; }

  // ---- memory of its own (only called when memory_space() is not null) ----
  // An uninitialised buffer in its memory with the dtype, shape and strides of `like` (its
  // storage bytes, like.nbytes(): a column-major or q8 layout is kept); like.data is not read.
  virtual Tensor allocate_like(const Tensor& like);
  // A contiguous, uninitialised buffer in its memory.
  Tensor allocate(const Shape& shape, DType dtype);
  // Fill one of its buffers with NaN (floats) or a sentinel (i32), as Tensor::poison does.
  virtual void poison(Tensor& t);
  // host -> its memory, and back. Same dtype, shape and strides on both sides; the bytes are
  // copied as they are (a column-major or q8 tensor keeps its layout). copy_out returns when
  // the bytes are on the host.
  virtual void copy_in(const Tensor& host, Tensor& device);
  virtual void copy_out(const Tensor& device, Tensor& host);
  // Its own copy of a weight (same dtype, shape, strides), uploaded on the first call for those
  // host bytes and kept while the tier's memory lives; later calls return the same copy. The
  // host tensor is kept alive with it, so its address cannot be reused for other bytes.
  virtual Tensor resident(const Tensor& host);

  // ---- training state in its own memory (optional) ----
  // Whether it runs the optimizer where its memory is: a trainer whose whole step runs on this
  // tier then keeps the weights (its resident copies, updated in place), the gradients and
  // AdamW's moments there: per step only the inputs go in and the loss and the gradient norm come out.
  virtual bool trains_in_place() const { return false; }
  // One AdamW update of a parameter in its memory (p, g, m, v: contiguous f32 of one shape).
  virtual void adamw_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWUpdate& u);
  // The sum of the squares of every element of `ts` (in its memory), in double, in an order that
  // depends only on the shapes: each tensor by blocks of 4096 elements.
  virtual double sum_squares(const std::vector<Tensor>& ts);

  // What it rounds node `n`'s inputs to (see Precision). Asked only for nodes it supports.
  virtual Precision precision(const Graph& g, const Node& n) const { return {}; }
  // The bytes it reads of input `i` of node `n` each time it runs the node, when that input is a
  // weight of `bytes` bytes as bound: the size of the form it converts a weight into once and
  // keeps (bf16 or int8 tiles), else `bytes`. Asked only for nodes it supports (bench model's
  // decode GB/s counts these bytes).
  virtual double weight_read_bytes(const Graph& g, const Node& n, size_t i, double bytes) const { return bytes; }
  // Whether it joins the chains strand makes by default ("auto"). A tier that changes what is
  // computed (a lower precision) for a modest gain says false: it runs only when named.
  virtual bool in_default_chain() const { return true; }

  // Run `nodes` of `g` in order. `values` holds a tensor per value id: inputs, weights and
  // state are bound; every output of these nodes is allocated (activation_dtype, contiguous).
  virtual void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) = 0;
  virtual void sync() {}
};

// The deleter of every buffer a tier with its own memory hands out (see the top of this file).
struct DeviceBuffer {
  const void* space = nullptr;           // the tier's memory_space()
  std::string tier;                      // its name, for messages
  std::function<void(void*)> release;    // gives the bytes back (may outlive the tier object)
  void operator()(void* p) const {
    if (release) release(p);
  }
};

// The memory a tensor's bytes live in: null for host memory, else the memory_space() of the
// tier that handed them out. Views share their owner, so a view answers like its buffer.
inline const DeviceBuffer* device_buffer_of(const Tensor& t) {
  return t.owner ? std::get_deleter<DeviceBuffer>(t.owner) : nullptr;
}
inline const void* memory_of(const Tensor& t) {
  const DeviceBuffer* d = device_buffer_of(t);
  return d ? d->space : nullptr;
}
// A tensor over `bytes` handed out by a tier (its owner carries the DeviceBuffer).
Tensor device_tensor(void* data, DType dtype, const Shape& shape, const std::vector<int64_t>& strides, DeviceBuffer d);

}  // namespace strand
