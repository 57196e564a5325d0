// strand/backends/cpu/gemm.h — the cpu tier's matrix product (interface).
//
//   C[M, N] = A[M, K] · B  (+ bias[N])      or, with trans_a, Aᵀ · B for A stored [K, M]
// A and C are f32, row-major with leading dimensions lda / ldc (with trans_a, A's rows are its
// K rows of M values: weight gradients Xᵀ·dY read the activations as stored). B is [K, N] row-major (ldb),
// or [N, K] when trans_b (ldb is then its row stride), stored as f32, f16 or bf16; B is
// widened to f32 while it is packed, so products are always computed in f32.
// C is written, never read (no beta): its old contents do not matter. C must not overlap
// A, B or bias. K == 0 gives C = bias (or 0).
//
// How it works (gemm.cpp has the details):
//   * M > kGemvMaxRows: the packed path. B is packed per thread into KC x NC blocks of
//     NR-wide panels (widened to f32, transposed when trans_b), A into MR x KC micro-panels,
//     and a register-tiled MR x NR micro-kernel does the products. Threads split N (or M, when
//     N is too narrow to feed every thread).
//   * M <= kGemvMaxRows (decode): the GEMV path. No packing: B is streamed from memory once,
//     converted on the fly, with N split over the threads. It is memory-bound.
//   * The SIMD code is picked at run time: AVX-512, AVX2+FMA, or portable C++.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace strand::cpu {

class ThreadPool;

struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;
  int64_t lda = 0;
  bool trans_a = false;  // A is stored [K, M] (row stride lda >= M) and read transposed
  const void* B = nullptr;
  DType b_dtype = DType::F32;
  int64_t ldb = 0;
  bool trans_b = false;
  float* C = nullptr;
  int64_t ldc = 0;
  const float* bias = nullptr;  // optional, added to every row
};

// The production kernel: packed, cache-blocked, register-tiled, SIMD chosen at run time,
// spread over `pool` (nullptr: the calling thread only). Throws strand::Error on bad
// arguments (negative sizes, leading dimensions too small, null pointers, a B dtype that is
// not f32/f16/bf16).
void gemm(const GemmArgs& g, ThreadPool* pool);

// ---- choices, for tests and benchmarks ----------------------------------------------------

enum class GemmIsa : uint8_t { Auto, Generic, Avx2, Avx512 };
enum class GemmPath : uint8_t { Auto, Packed, Gemv };

struct GemmOptions {
  GemmIsa isa = GemmIsa::Auto;    // Auto: the best this CPU runs (see gemm_best_isa)
  GemmPath path = GemmPath::Auto;  // Auto: Gemv when M <= kGemvMaxRows, else Packed
  int64_t mc = 0, kc = 0, nc = 0;  // block sizes of the packed path; 0: the ISA's defaults
  // Work (M*N*K) below which one thread does everything; < 0: the default (about 1e6, where a
  // wake-up of the workers starts to pay). 0 always splits (tests of the threaded paths).
  double min_parallel_work = -1;
};

// Rows up to which the GEMV path is taken (it handles at most this many rows at once).
constexpr int64_t kGemvMaxRows = 8;

// Like gemm(g, pool), forcing an ISA and/or a path. Throws strand::Error when the ISA
// was not compiled in or this CPU cannot run it.
void gemm(const GemmArgs& g, ThreadPool* pool, const GemmOptions& opt);

bool gemm_isa_available(GemmIsa isa);  // compiled in and supported by this CPU
GemmIsa gemm_best_isa();               // what Auto means here (STRAND_GEMM_ISA can lower it)
const char* gemm_isa_name(GemmIsa isa);  // "auto", "generic", "avx2", "avx512"

// The blocking an ISA's packed path uses (for reports).
struct GemmBlocking {
  int mr = 0, nr = 0;           // register tile: MR rows x NR columns of C
  int64_t mc = 0, kc = 0, nc = 0;  // rows of a packed A block, depth of the blocks, columns of a packed B block
};
GemmBlocking gemm_blocking(GemmIsa isa);

// Runs a loop of independent FMAs on the calling thread for about `seconds` and returns the
// FLOP/s it sustained (2 FLOP per FMA lane). Uses the widest vectors of `isa`
// (Generic: what the compiler makes of a plain loop). The peak the benchmarks compare against.
double fma_loop_flops(GemmIsa isa, double seconds);

namespace detail {

// One ISA's building blocks; gemm.cpp drives them (blocking, threading, edges).
struct GemmKernels {
  GemmIsa isa;
  int mr, nr;           // register tile
  int64_t mc, kc, nc;   // default block sizes
  // C[0..m, 0..n] = (acc ? C : 0) + sum_k Ap[k*mr + i] * Bp[k*nr + j]  (+ bias[j] if bias),
  // for 1 <= m <= mr, 1 <= n <= nr. Ap, Bp are packed and 64-byte aligned.
  void (*micro)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int m, int n,
                bool acc, const float* bias);
  // Ap[k*mr + i] = A[i*lda + k] for i < m (rows m..mr-1 are zero), k < kc.
  void (*pack_a)(const float* A, int64_t lda, int m, int64_t kc, float* Ap);
  // Packs B[k0..k0+kc, n0..n0+nc] (logical [K, N] view, whatever trans_b and dtype) as
  // ceil(nc/nr) panels: row k of panel p (columns n0+p*nr..) at Bp + p*ps + k*nr, zero-padded
  // to nr columns. ps (the panel stride) >= kc*nr lets a block be packed a few rows at a time.
  void (*pack_b)(const GemmArgs& g, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* Bp, int64_t ps);
  // The GEMV path: C[0..M, n0..n1] for M <= kGemvMaxRows, streaming B.
  void (*gemv)(const GemmArgs& g, int64_t n0, int64_t n1);
  // Single-thread loop of independent FMAs, `iters` rounds (see fma_loop_flops); returns
  // the FLOPs it did.
  double (*fma_loop)(int64_t iters);
};

const GemmKernels& kernels_generic();
const GemmKernels* kernels_avx2();    // nullptr when not compiled in
const GemmKernels* kernels_avx512();  // nullptr when not compiled in

// Ap[k*mr + i] = A[k*lda + i] for i < m (rows m..mr-1 zero), k < kc: an A block of a trans_a
// product (A stored [K, M]) packed for any ISA's micro-kernel. Plain copies: vectorised as the
// compiler can.
void pack_a_trans(const float* A, int64_t lda, int m, int mr, int64_t kc, float* Ap);

// Portable pieces the SIMD kernel sets may reuse.
void pack_b_generic(const GemmArgs& g, int nr, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* Bp,
                    int64_t ps);
void gemv_generic(const GemmArgs& g, int64_t n0, int64_t n1);

}  // namespace detail

}  // namespace strand::cpu
