// strand/backends/cuda/peaks.cpp — the GPU as `strand devices` and `strand bench gemm --gpu`
// see it: what it is, its measured ceilings (bf16 tensor-core rate, copy bandwidth), and the
// GEMM ladder's GPU rungs. Timed with CUDA events on the tier's stream, warm-ups first, the
// median of the timed runs; inputs are random (never zeros).
#include <algorithm>
#include <cmath>
#include <vector>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "backends/cuda/context.h"
#include "backends/cuda/cuda.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"
#include "core/error.h"

namespace strand {

namespace {

using cuda::Device;
using cuda::Elem;

// A device buffer for the measurements (freed when it goes).
struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t bytes) { STRAND_CUDA(cudaMalloc(&p, std::max<size_t>(bytes, 256))); }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// Seconds of each of `reps` runs of fn (after `warm` untimed ones), timed with events.
template <class Fn>
std::vector<double> time_runs(Fn&& fn, int warm, int reps) {
  cudaStream_t s = Device::get().stream();
  for (int i = 0; i < warm; ++i) fn();
  cudaEvent_t a, b;
  STRAND_CUDA(cudaEventCreate(&a));
  STRAND_CUDA(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    STRAND_CUDA(cudaEventRecord(a, s));
    fn();
    STRAND_CUDA(cudaEventRecord(b, s));
    STRAND_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    STRAND_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(double(ms) * 1e-3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

std::string CudaDeviceInfo::summary() const {
  if (!available) return why;
  return fmt::format("{}, {} SMs, {:.1f} GiB, sm_{}{}, {:.2f} GHz, L2 {:.0f} MiB; driver {}.{}, runtime {}.{}", name,
                     sms, memory_gib, cc_major, cc_minor, clock_ghz, l2_mib, driver_version / 1000,
                     driver_version % 1000 / 10, runtime_version / 1000, runtime_version % 1000 / 10);
}

CudaDeviceInfo cuda_device_info() {
  CudaDeviceInfo d;
  d.built = true;
  d.why = Device::unavailable_reason();
  cudaDriverGetVersion(&d.driver_version);
  cudaRuntimeGetVersion(&d.runtime_version);
  if (!d.why.empty()) return d;
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
    d.why = "cudaGetDeviceProperties failed";
    return d;
  }
  d.available = true;
  d.name = p.name;
  d.sms = p.multiProcessorCount;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.memory_gib = double(p.totalGlobalMem) / double(1ull << 30);
  d.l2_mib = double(p.l2CacheSize) / double(1 << 20);
  int khz = 0;
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0) == cudaSuccess) d.clock_ghz = khz / 1e6;
  return d;
}

CudaPeaks measure_cuda_peaks(bool quick) {
  Device& dev = Device::get();
  cudaStream_t s = dev.stream();
  CudaPeaks r;
  {
    const int64_t n = quick ? 2048 : 8192;
    DevBuf af(size_t(n * n) * 4), a(size_t(n * n) * 2), b(size_t(n * n) * 2), c(size_t(n * n) * 4);
    cuda::fill_random(af.as<float>(), n * n, 1, s);
    cuda::to_half(af.as<float>(), n * n, Elem::BF16, a.p, s);
    cuda::fill_random(af.as<float>(), n * n, 2, s);
    cuda::to_half(af.as<float>(), n * n, Elem::BF16, b.p, s);
    const int reps = quick ? 3 : 10;
    const std::vector<double> t = time_runs(
        [&] {
          if (!dev.lt().matmul(a.p, Elem::BF16, n, n, b.p, false, n, nullptr, c.as<float>(), false, s))
            fail("cuBLASLt has no bf16 algorithm for {0}x{0}x{0}", n);
        },
        3, reps);
    const double flops = 2.0 * double(n) * double(n) * double(n);
    r.bf16_tflops = flops / median(t) / 1e12;
    r.bf16_detail = fmt::format("cuBLASLt bf16 {0}x{0}x{0}, f32 out, random inputs; median of {1} after 3 warm-ups",
                                n, reps);
  }
  {
    const size_t bytes = quick ? size_t(64) << 20 : size_t(1) << 30;
    DevBuf src(bytes), dst(bytes);
    cuda::fill_random(src.as<float>(), int64_t(bytes / 4), 3, s);
    const int reps = quick ? 3 : 10;
    const std::vector<double> t = time_runs(
        [&] { STRAND_CUDA(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice, s)); }, 2, reps);
    r.copy_gbs = 2.0 * double(bytes) / median(t) / 1e9;
    r.copy_detail = fmt::format("device-to-device copy of {} MiB, bytes read + written; median of {} after 2 warm-ups",
                                bytes >> 20, reps);
  }
  dev.sync();
  return r;
}

double measure_cuda_f32_peak_tflops(bool tf32) {
  Device& dev = Device::get();
  cudaStream_t s = dev.stream();
  const int64_t n = 4096;
  DevBuf a(size_t(n * n) * 4), b(size_t(n * n) * 4), c(size_t(n * n) * 4);
  cuda::fill_random(a.as<float>(), n * n, 4, s);
  cuda::fill_random(b.as<float>(), n * n, 5, s);
  const std::vector<double> t = time_runs(
      [&] {
        if (!dev.lt().matmul(a.p, Elem::F32, n, n, b.p, false, n, nullptr, c.as<float>(), tf32, s))
          fail("cuBLASLt has no f32 algorithm for {0}x{0}x{0}", n);
      },
      2, 5);
  dev.sync();
  return 2.0 * double(n) * double(n) * double(n) / median(t) / 1e12;
}

std::vector<CudaGemmCell> cuda_gemm_ladder(const std::vector<CudaGemmShape>& shapes, int reps,
                                           const std::function<void(const std::string&)>& progress) {
  Device& dev = Device::get();
  cudaStream_t s = dev.stream();
  std::vector<CudaGemmCell> out;
  struct Rung {
    const char* name;
    const char* what;
  };
  const Rung rungs[] = {
      {"cuda-naive", "one thread per element of C, f32 (a dot product down K)"},
      {"cuda-tiled", "64x64 tiles of C through shared memory, 4x4 per thread, f32"},
      {"cublaslt-f32", "cuBLASLt, f32 on the FP32 units"},
      {"cublaslt-tf32", "cuBLASLt, f32 operands on TF32 tensor cores"},
      {"cublaslt-f16", "cuBLASLt, f16 tensor cores, f32 accumulation"},
      {"cublaslt-bf16", "cuBLASLt, bf16 tensor cores, f32 accumulation"},
      {"strand-gemv-bf16", "strand's GEMV (decode rows), bf16 weights as lines widened to f32"},
  };
  for (const CudaGemmShape& sh : shapes) {
    const int64_t M = sh.M, N = sh.N, K = sh.K;
    DevBuf a(size_t(M * K) * 4), b(size_t(K * N) * 4), c(size_t(M * N) * 4), ah(size_t(M * K) * 2),
        bh(size_t(K * N) * 2);
    cuda::fill_random(a.as<float>(), M * K, 11, s);
    cuda::fill_random(b.as<float>(), K * N, 12, s);
    for (const Rung& rg : rungs) {
      const std::string name = rg.name;
      CudaGemmCell cell;
      cell.rung = name;
      cell.what = rg.what;
      cell.shape = sh.label;
      cell.M = M, cell.N = N, cell.K = K;
      const double flops = 2.0 * double(M) * double(N) * double(K);
      const bool gemv = name == "strand-gemv-bf16";
      if (gemv && M > cuda::kGemvMaxRows) {
        cell.note = fmt::format("M > {}: the tier uses cuBLASLt there", cuda::kGemvMaxRows);
        out.push_back(cell);
        continue;
      }
      if (name == "cuda-naive" && flops > 2e11) {
        cell.note = "skipped: over 2e11 FLOP (seconds per run)";
        out.push_back(cell);
        continue;
      }
      std::function<void()> fn;
      double bytes = 4.0 * double(M * K + K * N + M * N);
      if (name == "cuda-naive") {
        fn = [&] { cuda::gemm_naive_f32(a.as<float>(), b.as<float>(), c.as<float>(), M, N, K, s); };
      } else if (name == "cuda-tiled") {
        fn = [&] { cuda::gemm_tiled_f32(a.as<float>(), b.as<float>(), c.as<float>(), M, N, K, s); };
      } else if (name == "cublaslt-f32" || name == "cublaslt-tf32") {
        const bool tf32 = name == "cublaslt-tf32";
        fn = [&, tf32] {
          if (!dev.lt().matmul(a.p, Elem::F32, M, K, b.p, false, N, nullptr, c.as<float>(), tf32, s))
            fail("cuBLASLt has no algorithm for {}", sh.label);
        };
      } else {
        const Elem e = name == "cublaslt-f16" ? Elem::F16 : Elem::BF16;
        cuda::to_half(a.as<float>(), M * K, e, ah.p, s);
        cuda::to_half(b.as<float>(), K * N, e, bh.p, s);
        bytes = 2.0 * double(M * K + K * N) + 4.0 * double(M * N);
        if (gemv)
          fn = [&] { cuda::gemv(a.as<float>(), M, K, bh.p, Elem::BF16, true, N, nullptr, c.as<float>(), s); };
        else
          fn = [&, e] {
            if (!dev.lt().matmul(ah.p, e, M, K, bh.p, false, N, nullptr, c.as<float>(), false, s))
              fail("cuBLASLt has no algorithm for {}", sh.label);
          };
      }
      if (progress) progress(fmt::format("gpu {} {}", name, sh.label));
      const int r = name == "cuda-naive" ? std::max(1, std::min(reps, 3)) : reps;
      std::vector<double> t = time_runs(fn, 2, r);
      std::sort(t.begin(), t.end());
      cell.reps = r;
      cell.tflops_median = flops / median(t) / 1e12;
      cell.tflops_min = flops / t.back() / 1e12;
      cell.tflops_max = flops / t.front() / 1e12;
      cell.gbs_median = bytes / median(t) / 1e9;
      out.push_back(cell);
    }
  }
  dev.sync();
  return out;
}

}  // namespace strand
