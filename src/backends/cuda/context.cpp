// strand/backends/cuda/context.cpp — the process's GPU (context.h) and the CUDA error helpers.
#include "backends/cuda/context.h"

#include <fmt/format.h>

#include "backends/cuda/kernels.h"
#include "core/error.h"

namespace strand::cuda {

void cuda_fail(const char* call, int code, const char* message, const char* file, int line) {
  std::string f = file;
  const size_t slash = f.rfind("src/");
  if (slash != std::string::npos) f = f.substr(slash);
  fail("cuda: {} failed: {} (error {}) at {}:{}", call, message ? message : "?", code, f, line);
}

void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) cuda_fail(kernel, int(e), cudaGetErrorString(e), file, line);
}

const void* gpu_memory_space() {
  static const char token = 0;
  return &token;
}

namespace {

// Buffers are rounded to 256 bytes (small) or 64 KiB (large) so that a released buffer fits
// the next request of about the same size.
size_t rounded(size_t bytes) {
  const size_t q = bytes < (size_t(1) << 20) ? 256 : size_t(64) << 10;
  return std::max(q, (bytes + q - 1) / q * q);
}

}  // namespace

const std::string& Device::unavailable_reason() {
  static const std::string why = [] {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it
      int rt = 0;
      cudaRuntimeGetVersion(&rt);
      if (e == cudaErrorInsufficientDriver)
        return fmt::format("no NVIDIA GPU driver for CUDA {}.{} here (none installed, or an older one): {}", rt / 1000,
                           rt % 1000 / 10, cudaGetErrorName(e));
      if (e == cudaErrorNoDevice) return fmt::format("no NVIDIA GPU visible ({})", cudaGetErrorName(e));
      return fmt::format("no usable NVIDIA GPU: cudaGetDeviceCount says {} ({})", cudaGetErrorString(e),
                         cudaGetErrorName(e));
    }
    if (n == 0) return std::string("no NVIDIA GPU visible (cudaGetDeviceCount found 0 devices)");
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return std::string("cudaGetDeviceProperties failed on device 0");
    if (p.major < 8)
      return fmt::format("{} is compute capability {}.{}: this build targets sm_80 and newer", p.name, p.major,
                         p.minor);
    return std::string();
  }();
  return why;
}

Device& Device::get() {
  if (!unavailable_reason().empty()) fail("cuda tier: {}", unavailable_reason());
  static Device* d = new Device;  // never destroyed: tensors may give buffers back during exit
  return *d;
}

Device::Device() {
  STRAND_CUDA(cudaSetDevice(id_));
  STRAND_CUDA(cudaGetDeviceProperties(&prop_, id_));
  STRAND_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  lt_ = std::make_unique<LtGemm>();
}

void* Device::raw_alloc(size_t bytes) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    const auto it = free_.lower_bound(bytes);
    if (it != free_.end() && it->first <= 2 * bytes) {
      void* p = it->second;
      free_.erase(it);
      return p;
    }
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {  // give the pool back to the driver and try once more
    cudaGetLastError();
    STRAND_CUDA(cudaStreamSynchronize(stream_));
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [cap, q] : free_) cudaFree(q);
    free_.clear();
    e = cudaMalloc(&p, bytes);
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail("cuda: out of GPU memory allocating {:.1f} MiB ({:.1f} of {:.1f} GiB free)", double(bytes) / (1 << 20),
         double(free_b) / (1 << 30), double(total_b) / (1 << 30));
  }
  return p;
}

void Device::release(void* p, size_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  free_.emplace(bytes, p);
}

Tensor Device::buffer_like(const Tensor& like) {
  const size_t bytes = rounded(std::max<size_t>(1, like.nbytes()));
  void* p = raw_alloc(bytes);
  DeviceBuffer d{gpu_memory_space(), "cuda", [this, bytes](void* q) { release(q, bytes); }};
  return device_tensor(p, like.dtype, like.shape, like.strides, std::move(d));
}

Tensor Device::resident(const Tensor& host) {
  auto same = [&](const Resident& r) {
    return !r.host.expired() && r.bytes == host.nbytes() && r.dtype == host.dtype && r.strides == host.strides;
  };
  {
    std::lock_guard<std::mutex> lk(mu_);
    const auto it = resident_.find(host.data);
    if (it != resident_.end() && same(it->second)) return it->second.dev;
  }
  Tensor dev = buffer_like(host);
  copy_in(host.data, dev.data, host.nbytes());
  std::lock_guard<std::mutex> lk(mu_);
  // Copies of host tensors that are gone (or of other bytes at this address) go first.
  for (auto it = resident_.begin(); it != resident_.end();) {
    if (it->second.host.expired() || it->first == host.data) {
      resident_bytes_ -= double(it->second.bytes);
      it = resident_.erase(it);
    } else {
      ++it;
    }
  }
  resident_[host.data] = {host.owner, host.nbytes(), host.dtype, host.strides, dev};
  resident_bytes_ += double(host.nbytes());
  return dev;
}

int Device::resident_count() const {
  std::lock_guard<std::mutex> lk(mu_);
  return int(resident_.size());
}

double Device::resident_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  return resident_bytes_;
}

void* Device::scratch(int slot, size_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  auto& s = scratch_[slot];
  if (s.second >= bytes) return s.first;
  if (s.first) {
    STRAND_CUDA(cudaStreamSynchronize(stream_));  // the old buffer may still be read
    STRAND_CUDA(cudaFree(s.first));
  }
  const size_t want = rounded(std::max(bytes, s.second * 2));
  s.first = nullptr;
  STRAND_CUDA(cudaMalloc(&s.first, want));
  s.second = want;
  return s.first;
}

size_t Device::scratch_size(int slot) const {
  std::lock_guard<std::mutex> lk(mu_);
  const auto it = scratch_.find(slot);
  return it == scratch_.end() ? 0 : it->second.second;
}

void Device::copy_in(const void* host, void* dev, size_t bytes) {
  if (bytes == 0) return;
  // From pageable memory the call returns once the bytes are staged for the transfer: the
  // host buffer may be released as soon as it returns.
  STRAND_CUDA(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream_));
}

void Device::copy_out(const void* dev, void* host, size_t bytes) {
  if (bytes == 0) return;
  STRAND_CUDA(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream_));
  STRAND_CUDA(cudaStreamSynchronize(stream_));
}

void Device::sync() { STRAND_CUDA(cudaStreamSynchronize(stream_)); }

}  // namespace strand::cuda
