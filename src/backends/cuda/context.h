// strand/backends/cuda/context.h — the process's GPU: stream, memory pool, resident weights,
// scratch buffers and the cuBLASLt handle, shared by every cuda tier object.
//
// One device (CUDA device 0), one stream: every kernel, copy and memset of the tier is queued
// on it, so a buffer given back to the pool can be handed out again at once (whatever used it
// before is ahead of its next user on the same stream). Device memory comes from cudaMalloc
// only (no managed memory), is kept in a pool by size when released, and the pool is emptied
// and the allocation retried once when cudaMalloc runs out.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "backends/backend.h"
#include "backends/cuda/gemm.h"

namespace strand::cuda {

// The identifier of GPU memory (Backend::memory_space of every cuda tier object).
const void* gpu_memory_space();

class Device {
 public:
  // The GPU; throws strand::Error saying why when there is none to use.
  static Device& get();
  // "" when a GPU can be used, else why not (no driver, no device, ...). Cheap after the first call.
  static const std::string& unavailable_reason();

  cudaStream_t stream() const { return stream_; }
  const cudaDeviceProp& prop() const { return prop_; }
  LtGemm& lt() { return *lt_; }

  // A device buffer shaped like `like` (its nbytes), from the pool; the tensor gives it back.
  Tensor buffer_like(const Tensor& like);
  // The resident copy of a host weight (uploaded on the first call, then the same copy while
  // the host tensor's storage lives; once it is gone, the copy is dropped at the next upload).
  Tensor resident(const Tensor& host);
  int resident_count() const;
  double resident_bytes() const;
  // Scratch for a kernel's temporaries: slot `slot` grown to at least `bytes` (contents are not
  // kept when it grows). Grow before a graph capture, never during one.
  void* scratch(int slot, size_t bytes);
  size_t scratch_size(int slot) const;

  // host <-> device, on the stream (copy_out waits for the bytes).
  void copy_in(const void* host, void* dev, size_t bytes);
  void copy_out(const void* dev, void* host, size_t bytes);
  void sync();

 private:
  Device();
  void* raw_alloc(size_t bytes);
  void release(void* p, size_t bytes);

  int id_ = 0;
  cudaDeviceProp prop_{};
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<LtGemm> lt_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;  // released buffers by capacity
  struct Resident {
    std::weak_ptr<void> host;  // the host storage: while it lives, its address means these bytes
    size_t bytes = 0;
    DType dtype = DType::F32;
    std::vector<int64_t> strides;
    Tensor dev;
  };
  std::map<const void*, Resident> resident_;
  double resident_bytes_ = 0;
  std::map<int, std::pair<void*, size_t>> scratch_;
};

}  // namespace strand::cuda
