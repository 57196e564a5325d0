// strand/bench/gemm_ladder.h — the GEMM ladder: one matrix product, one optimization per rung.
//
// Each rung is a separate function so that the steps can be read one after the other:
//
//   naive    i-j-k triple loop, one multiply-add at a time, B walked down its columns
//   blocked  the same arithmetic in cache-sized blocks (i-k-j order inside), still scalar
//   simd     blocked + a 6 x 16 register tile of C in vector registers, 1 thread
//   threads  the simd rung with the columns of C split over the thread pool
//   packed   the production kernel, strand::cpu::gemm: packed panels, 14 x 32 AVX-512
//            micro-kernel (or AVX2 / portable), a GEMV path for M <= 8, all threads
//   blas     OpenBLAS's cblas_sgemm (when strand was built with it)
//   onednn   oneDNN's dnnl_sgemm (when strand was built with it)
//
// The benchmark (`strand bench gemm`) times every rung on square sizes and on the GPT-2 124M
// shapes, and reports GFLOP/s (median and spread over repetitions), % of the measured FMA
// peak, speedup over naive, and the crossover sizes between rungs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"

namespace strand::cpu {
class ThreadPool;
}

namespace strand {
enum class Rounding : uint8_t;  // core/rounding.h
}

namespace strand::bench {

// C[M, N] = A[M, K] · B. Everything row-major and contiguous: lda = K, ldc = N, and B is
// [K, N] (ldb = N) or, when trans_b, [N, K] (ldb = K). Only `packed` takes a B in f16/bf16.
struct GemmProblem {
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;
  const void* B = nullptr;
  DType b_dtype = DType::F32;
  bool trans_b = false;
  float* C = nullptr;
};

// ---- the rungs ------------------------------------------------------------------------------
void gemm_naive(const GemmProblem& p);
void gemm_blocked(const GemmProblem& p);
void gemm_simd(const GemmProblem& p);
void gemm_threads(const GemmProblem& p, cpu::ThreadPool& pool);
void gemm_packed(const GemmProblem& p, cpu::ThreadPool& pool);
void gemm_blas(const GemmProblem& p);    // throws strand::Error when OpenBLAS was not built in
void gemm_onednn(const GemmProblem& p);  // throws strand::Error when oneDNN was not built in

struct Rung {
  std::string name;         // "naive", ...
  std::string what;         // one line: what this rung adds
  bool threaded = false;    // measured against the all-thread peak (else the 1-thread peak)
  bool any_dtype = false;   // takes B in f16/bf16 too (else f32 only)
  bool available = true;
  std::string why_not;      // when !available
  std::function<void(const GemmProblem&)> run;
  // The reduced-precision rungs (bench/gemm_tiles.h):
  // what the rung rounds A's rows and B's columns to (along K) before multiplying: the error
  // check compares with float64 on inputs rounded so;
  Rounding a_rounding{}, b_rounding{};  // {}: Rounding::None
  // untimed work before each timed run (packing this B, once per B);
  std::function<void(const GemmProblem&)> prepare = nullptr;
  // the peak it is compared with: the FMA lanes, the bf16 unit, the AMX int8 tiles, vdpbf16ps.
  enum class Peak { Fma, Bf16, Int8, Avx512Bf16 } peak = Peak::Fma;
  // Bytes per element of B in the form a timed run reads it (its packed copy: bf16 2, q8 with
  // its f32 block scales 1 + 4/32); 0: the size of B's dtype. GB/s and the copies that keep a
  // decode shape's B out of the L3 count these bytes.
  double b_elem_bytes = 0;
};
// Every rung in ladder order; `pool` is used by the threaded ones.
std::vector<Rung> gemm_rungs(cpu::ThreadPool& pool);

// ---- machine facts --------------------------------------------------------------------------
// The peaks are measured, never cores x clock x FLOP/cycle (a clock read from the OS or timed on
// one core says little about what the FMA units do under load).
struct MachinePeak {
  double fma_1t_gflops = 0;      // FMA loop, one thread, widest vectors
  double fma_1t_narrow_gflops = 0;  // the same with 256-bit vectors (x86 with AVX-512 only)
  double fma_all_gflops = 0;     // FMA loop on every thread at once
  double mem_read_gbs = 0;       // read bandwidth, all threads, from DRAM: the best reader's (devices/readers.h)
  std::string mem_reader;        // which reader reached it
  bool busy = false;             // measured while the machine was busy (devices/busy.h)
  std::string busy_detail;
  // The reduced-precision units (bench/gemm_tiles.h), all threads; 0 where absent:
  double bf16_gflops = 0;        // the fastest bf16 unit: AMX tiles (tdpbf16ps), else AVX-512-BF16 (vdpbf16ps)
  std::string bf16_unit;         // which one
  double int8_gops = 0;          // AMX tiles (tdpbssd)
  double avx512_bf16_gflops = 0; // AVX-512-BF16 (vdpbf16ps), where present
};
// Runs the FMA loops and the bandwidth readers (about a second in all).
MachinePeak measure_peak(cpu::ThreadPool& pool);
// CPU model, cores, SIMD, library versions: a JSON object.
nlohmann::json machine_info(cpu::ThreadPool& pool);

// ---- the benchmark --------------------------------------------------------------------------
struct LadderOptions {
  std::vector<int64_t> sizes;         // square sizes (M = N = K)
  bool gpt2 = false;                  // add the GPT-2 124M shapes
  std::vector<std::string> rungs;     // empty: all available
  int threads = 0;                    // 0: the global pool's current size
  int reps = 7;                       // timed repetitions per cell (fewer for slow cells)
  double max_seconds = 900;           // total time budget; later cells are skipped past it
  double max_cell_seconds = 20;       // a rung predicted to take longer per run is skipped
  DType b_dtype = DType::F32;         // B's dtype for the packed rung
  bool measure_peak = true;
};

// The GPT-2 124M shapes: rows M in {1, 128, 512} against K x N of 768x2304, 768x768,
// 768x3072, 3072x768, and the vocabulary projection 768x50257 with B transposed (wte).
struct GemmShape {
  std::string label;
  int64_t M = 0, N = 0, K = 0;
  bool trans_b = false;
  bool square = false;
};
std::vector<GemmShape> gpt2_shapes();

// Bytes per element of B as rung r reads it in a timed run, B given in b_dtype.
double b_read_bytes_per_elem(const Rung& r, DType b_dtype);

// Runs the ladder; `progress` (may be empty) gets one line per finished cell.
// Returns {"machine", "peak", "options", "results": [...], "crossovers": [...]}.
nlohmann::json run_gemm_ladder(const LadderOptions& opt, const std::function<void(const std::string&)>& progress);

std::string ladder_markdown(const nlohmann::json& report);
std::string ladder_csv(const nlohmann::json& report);

}  // namespace strand::bench
