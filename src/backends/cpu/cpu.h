// strand/backends/cpu — the optimized CPU tier: fused kernels, threads, SIMD.
//
// Every op runs here: matrix products through the packed GEMM (cpu/gemm.h) or, for a few
// rows (decode), a GEMV that streams the weight once; f32, f16, bf16 and Q8 (int8) weights,
// widened in registers, never converted whole per call; layernorm, activations, softmax,
// adds and the causal mask as SIMD row kernels; attention as one fused kernel for prefill
// (heads x query blocks) and for decode against the KV cache (heads). Kernels are AVX-512 or
// AVX2 when the CPU has them, else portable loops (cpu/cpu_ops.h); threads come from
// cpu::ThreadPool::global() (STRAND_THREADS).
#pragma once

#include <memory>
#include <string>

#include "backends/backend.h"

namespace strand {

// `isa` picks the kernel table: "" (the best this CPU runs), "avx512", "avx2" or "portable"
// (tests use it to prove every path on one machine). Throws strand::Error when that table is
// not available here.
std::unique_ptr<Backend> make_cpu_backend(const std::string& isa = "");

}  // namespace strand
