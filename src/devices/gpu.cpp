// strand/devices/gpu.cpp — measure_device_tier (devices/gpu.h): the cuda tier's GPU.
#include "devices/gpu.h"

#include <fmt/format.h>

#include "backends/cuda/cuda.h"
#include "core/error.h"

namespace strand {

void measure_device_tier(bool quick, TierPeak& tp) {
  if (tp.tier != "cuda") {
    tp.device = "a tier with its own memory: no measurement for it yet";
    return;
  }
  const CudaDeviceInfo d = cuda_device_info();
  tp.threads = d.sms;
  try {
    const CudaPeaks p = measure_cuda_peaks(quick);
    tp.measured_gflops = p.bf16_tflops * 1e3;
    tp.gemm_shape = "bf16 tensor cores";
    tp.measured_bandwidth_gbs = p.copy_gbs;
    tp.gemv_shape = "device copy";
    tp.device = fmt::format("{}; bf16 tensor cores {:.1f} TFLOP/s ({}); copy {:.0f} GB/s ({})", d.summary(),
                            p.bf16_tflops, p.bf16_detail, p.copy_gbs, p.copy_detail);
  } catch (const Error& e) {
    tp.device = fmt::format("{}; not measured: {}", d.summary(), e.what());
  }
}

}  // namespace strand
