// strand/backends/cuda — the NVIDIA GPU tier (CUDA), resident on the device.
//
// Built when CMake finds the CUDA toolkit (nvcc and cuBLASLt) and STRAND_WITH_CUDA is on;
// else cuda_stub.cpp, whose probe() says "not built". Usable when a GPU of compute capability
// 8.0 or newer is visible (sm_80 and sm_90 machine code are built in, with sm_90 PTX).
//
// What runs where: matrix products through cuBLASLt (f32 on the FP32 units, f16/bf16 weights
// on tensor cores with the activations rounded to the weight's dtype and f32 accumulation),
// except products of at most kGemvMaxRows rows (decode), which strand's GEMV computes in f32
// with the weight widened; strand's own kernels for the rest (embedding gather, layernorm,
// activations, softmax, adds, masks, slices) and for causal attention: exact f32 for decode
// and f32 models, a flash-style tensor-core kernel for the prefill of f16/bf16 models. q8
// weights are declined (they fall back to a host tier, with the copies that costs).
//
// Residency (backends/backend.h): weights are uploaded once and kept, the KV cache lives on
// the GPU, a whole forward is one segment, and only the token ids and positions cross in and
// the logits out. A segment of at most kGraphMaxRows rows (a decode step) is captured as a
// CUDA graph and replayed: the first step instantiates it, later steps update the executable
// graph in place (new cache length, new buffers) and launch it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace strand {

struct CudaOptions {
  bool graphs = true;  // capture decode-sized segments as CUDA graphs (STRAND_CUDA_GRAPHS=0: off)
  bool tf32 = false;   // f32 products on TF32 tensor cores (STRAND_CUDA_TF32=1; validate then judges it as tf32)
  // Products of f32 operands (weights and activations alike: a training step's forward, dx and
  // dw) on bf16 tensor cores, both operands rounded to bf16, f32 accumulation: mixed precision
  // as PyTorch's bf16 autocast does it, the weights and optimizer staying f32
  // (STRAND_CUDA_BF16=1; above tf32 when both are set).
  bool bf16 = false;
};
// The defaults, as the environment sets them.
CudaOptions cuda_options_from_env();

std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& opt = cuda_options_from_env());

// Segments whose largest node output has at most this many rows are captured as CUDA graphs.
constexpr int64_t kGraphMaxRows = 4;

// ---- the precision the tier computes in (for validate; see backends/backend.h) ----
// What the tier rounds each input of a node to before it computes. Products with f16/bf16
// weights round the activations (input 0) to the weight's dtype; with tf32 on, f32 products
// round both operands to tf32, with bf16 on to bf16 (decode-sized products, M <= 4, stay f32). Prefill attention of an f16/bf16 model rounds q, k, v (and
// the probabilities, internally) to that dtype. Everything else: none.
enum class CudaRounding { None, F16, BF16, TF32 };
struct CudaPrecision {
  std::vector<CudaRounding> inputs;  // one per node input
  std::string note;                  // in words, e.g. "bf16 tensor cores, f32 accumulation"
};
CudaPrecision cuda_node_precision(const Graph& g, const Node& n, const CudaOptions& opt = cuda_options_from_env());

// ---- the GPU, for `strand devices` ----
struct CudaDeviceInfo {
  bool built = false;      // the tier is compiled in
  bool available = false;  // a GPU it can use is visible
  std::string why;         // when not available
  std::string name;        // "NVIDIA H200"
  int sms = 0;
  int cc_major = 0, cc_minor = 0;
  double memory_gib = 0;
  double l2_mib = 0;
  double clock_ghz = 0;
  int driver_version = 0, runtime_version = 0;  // e.g. 13000
  std::string summary() const;  // one line
};
CudaDeviceInfo cuda_device_info();

// Measured ceilings: the bf16 tensor-core rate of a large cuBLASLt product on random data, and
// the device-to-device copy bandwidth (bytes read + written). Each the median of timed runs
// after warm-ups, timed with CUDA events. quick: small sizes, a fraction of a second.
struct CudaPeaks {
  double bf16_tflops = 0;
  std::string bf16_detail;
  double copy_gbs = 0;
  std::string copy_detail;
};
CudaPeaks measure_cuda_peaks(bool quick);
// The f32 rate a training step's products can reach: a 4096³ cuBLASLt product in f32 (on the
// FP32 units, or with `tf32` on TF32 tensor cores), median of timed runs, in TFLOP/s.
double measure_cuda_f32_peak_tflops(bool tf32);

// CUDA graph counters since the process started (tests, the explain notes).
struct CudaGraphStats {
  int64_t captures = 0;        // segments captured
  int64_t instantiations = 0;  // executable graphs built
  int64_t updates = 0;         // executable graphs updated in place
  int64_t launches = 0;        // graph launches (replays)
};
CudaGraphStats cuda_graph_stats();

// Bytes the tier keeps on the GPU for resident weights, and how many tensors.
double cuda_resident_bytes();
int cuda_resident_count();

// ---- the GEMM ladder on the GPU (`strand bench gemm --gpu`) ----
struct CudaGemmCell {
  std::string rung;     // "cuda-naive", "cuda-tiled", "cublaslt-f32", ..., "strand-gemv-bf16"
  std::string what;     // one line
  std::string shape;    // "4096x4096x4096" or a GPT-2 label
  int64_t M = 0, N = 0, K = 0;
  double tflops_median = 0, tflops_min = 0, tflops_max = 0;
  double gbs_median = 0;  // bytes of A, B, C once / time
  int reps = 0;
  std::string note;     // e.g. why it was skipped
};
struct CudaGemmShape {
  std::string label;
  int64_t M = 0, N = 0, K = 0;
};
std::vector<CudaGemmCell> cuda_gemm_ladder(const std::vector<CudaGemmShape>& shapes, int reps,
                                           const std::function<void(const std::string&)>& progress);

}  // namespace strand
