// tests/cuda/gpu_test.h — what every cuda test starts with: skip with the reason when no GPU
// is visible (or the tier is not built), fail instead when STRAND_REQUIRE_GPU=1.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "backends/cuda/cuda.h"

namespace strand::cuda_test {

// "" when the cuda tier is built and a GPU it can use is visible, else why not.
inline std::string gpu_missing() {
  const CudaDeviceInfo d = cuda_device_info();
  if (!d.built) return "the cuda tier is not built (" + d.why + ")";
  return d.available ? std::string() : d.why;
}

inline bool gpu_required() {
  const char* v = std::getenv("STRAND_REQUIRE_GPU");
  return v && std::string(v) == "1";
}

}  // namespace strand::cuda_test

#define STRAND_NEED_GPU()                                                                           \
  do {                                                                                              \
    const std::string strand_gpu_missing_ = ::strand::cuda_test::gpu_missing();                     \
    if (!strand_gpu_missing_.empty()) {                                                             \
      if (::strand::cuda_test::gpu_required()) FAIL() << "STRAND_REQUIRE_GPU=1, but " << strand_gpu_missing_; \
      GTEST_SKIP() << "no GPU to test the cuda tier on: " << strand_gpu_missing_;                   \
    }                                                                                               \
  } while (0)
