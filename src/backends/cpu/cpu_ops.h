// strand/backends/cpu/cpu_ops.h — the cpu tier's single-threaded kernels, one table per ISA.
//
// Every entry works on a slice of an op (some rows, some columns, some attention units) on
// the calling thread; cpu_backend.cpp spreads the slices over the thread pool. The table is
// picked once at start-up: the AVX-512 one (cpu_ops_avx512.cpp) when the CPU has AVX-512
// F/BW/VL/DQ, else the AVX2 one (cpu_ops_avx2.cpp) when it has AVX2, FMA and F16C, else the
// portable one (plain loops that any compiler vectorises as it can, the non-x86 path).
//
// Shapes: all activations are f32, row-major, with the leading dimensions given. Weights
// (matrix B of a product, gains, biases, tables) may be f32, f16, bf16 or Q8 as documented.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/dtype.h"
#include "ops/ops.h"

namespace strand::cpu {

// y[M, n0:n1] = x[M, K] · B (+ bias) for small M (at most kGemvRows): streams B once.
// (The cpu tier sends f32/f16/bf16 products with more rows to cpu::gemm; q8 products with up
// to 16 rows come here four rows at a time, see quant.h.)
struct GemvArgs {
  int64_t M = 0, K = 0, N = 0;
  const float* x = nullptr;
  int64_t ldx = 0;
  // B as stored. gemv_kn: [K, N] row-major, f32/f16/bf16, row stride ldb.
  //              gemv_nk: N lines of K, line stride ldb: f32/f16/bf16, or Q8 (ldb =
  //              q8_padded(K) int8, scales[n * q8_blocks(K) + b]).
  const void* B = nullptr;
  DType b_dtype = DType::F32;
  int64_t ldb = 0;
  const float* scales = nullptr;  // Q8 only
  float* y = nullptr;
  int64_t ldy = 0;
  const float* bias = nullptr;  // optional, [N]
};
constexpr int64_t kGemvRows = 4;  // rows of x one call takes

// Causal multi-head attention, q [T, C], k and v [past + T, C] (row stride C), out [T, C].
struct AttnArgs {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  float* out = nullptr;
  int64_t T = 0, C = 0, H = 1, D = 0, past = 0;
  float scale = 1;  // 1 / sqrt(D)
};
// Prefill work is cut into units of (head, block of kAttnQueryBlock queries), head-major;
// decode work (at most kAttnDecodeMaxQueries queries) into units of (head, query).
constexpr int64_t kAttnQueryBlock = 32;
constexpr int64_t kAttnDecodeMaxQueries = 4;
inline int64_t attn_prefill_units(const AttnArgs& a) { return a.H * ((a.T + kAttnQueryBlock - 1) / kAttnQueryBlock); }
inline int64_t attn_decode_units(const AttnArgs& a) { return a.H * a.T; }
// Scratch floats one thread needs for a unit (either kind), 64-byte multiples.
int64_t attn_scratch_floats(const AttnArgs& a);

struct Kernels {
  const char* isa;  // "avx512", "avx2" or "portable"

  // out[r, :] = layernorm(x[r, :]) * g + b for r in [0, rows)        x, out [rows, n]
  void (*layernorm)(const float* x, const float* g, const float* b, int64_t rows, int64_t n, float eps, float* out);
  // out = a + b (n elements; b may alias neither or both)
  void (*add)(const float* a, const float* b, int64_t n, float* out);
  // out[r, :] = a[r, :] + row for r in [0, rows)                      a, out [rows, n], row [n]
  void (*add_row)(const float* a, const float* row, int64_t rows, int64_t n, float* out);
  // out = x * s
  void (*scale)(const float* x, int64_t n, float s, float* out);
  // out = act(x)
  void (*activation)(const float* x, int64_t n, Act act, float* out);
  // out[r, :] = softmax(x[r, :])
  void (*softmax)(const float* x, int64_t rows, int64_t n, float* out);
  // out = float(src) for f32/f16/bf16 src
  void (*widen)(const void* src, DType dt, int64_t n, float* out);

  // GEMV, columns [n0, n1) of y, B as [K, N] (see GemvArgs).
  void (*gemv_kn)(const GemvArgs& a, int64_t n0, int64_t n1);
  // GEMV, lines [n0, n1) of B as [N, K] lines (f32/f16/bf16/Q8), i.e. columns n0..n1 of y.
  void (*gemv_nk)(const GemvArgs& a, int64_t n0, int64_t n1);
  // out[(l - l0) * ldo + p] = q[l * ldq + p] * scales[l * q8_blocks(len) + p / 32], l in [l0, l1), p < len
  void (*q8_dequant)(const int8_t* q, const float* scales, int64_t ldq, int64_t len, int64_t l0, int64_t l1,
                     float* out, int64_t ldo);

  // Attention units [u0, u1) (see above); scratch holds attn_scratch_floats(a) floats.
  void (*attn_prefill)(const AttnArgs& a, int64_t u0, int64_t u1, float* scratch);
  void (*attn_decode)(const AttnArgs& a, int64_t u0, int64_t u1, float* scratch);

  // out = dy · act'(x), n elements (training: the gradient of activation).
  void (*activation_backward)(const float* x, const float* dy, int64_t n, Act act, float* out);
};

class ThreadPool;

// Splits [0, n) into at most one range per thread of `pool` (nullptr: the caller alone), each a
// multiple of `align` long (but the last), none shorter than `min_len` unless n is; calls
// fn(begin, end) on each. Work too small to split runs on the calling thread.
void parallel_ranges(ThreadPool* pool, int64_t n, int64_t align, int64_t min_len,
                     const std::function<void(int64_t begin, int64_t end)>& fn);
// Same, but fn also gets the index of the thread running the range (for per-thread scratch).
void parallel_ranges_t(ThreadPool* pool, int64_t n, int64_t align, int64_t min_len,
                       const std::function<void(int thread, int64_t begin, int64_t end)>& fn);

const Kernels& portable_kernels();
// The AVX-512 (F/BW/VL/DQ) and AVX2 (+FMA, F16C) tables, or nullptr when this build or this
// CPU has none.
const Kernels* avx512_kernels();
const Kernels* avx2_kernels();
// The table the cpu tier uses: the fastest this CPU runs; STRAND_CPU_ISA=avx2|portable lowers it.
const Kernels& best_kernels();
// The table named "avx512", "avx2" or "portable" ("" or "auto": best_kernels()); nullptr when
// that one is not available here.
const Kernels* kernels_named(const std::string& isa);

}  // namespace strand::cpu
