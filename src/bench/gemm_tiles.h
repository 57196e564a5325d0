// strand/bench/gemm_tiles.h — the reduced-precision rungs of the GEMM ladder.
//
//   amx-bf16     strand's AMX tiles (backends/amx/gemm.h): B rounded to bf16 and packed into
//                tiles once per B (untimed, as a model's weights are at load); each timed run
//                rounds A to bf16 and multiplies, all threads;
//   amx-int8     the same with B quantized to q8 along K and A quantized per row in blocks of
//                32 (the amx tier's int8 path with q8 weights);
//   avx512bf16   amx-bf16's kernels on AVX-512-BF16 (vdpbf16ps) where there is no AMX (the
//                avx512bf16 tier);
//   onednn-bf16  oneDNN's bf16 matmul with B reordered once into oneDNN's own layout: the bar
//                the amx rung is held to (on an AMX machine oneDNN uses the tiles itself).
// Their error is checked against float64 on inputs rounded the way each rung rounds them, and
// their speed against the peak of the unit they run on (MachinePeak: bf16_gflops, int8_gops).
#pragma once

#include <string>
#include <vector>

#include "bench/gemm_ladder.h"

namespace strand::bench {

// The four rungs, each available or not with the reason.
std::vector<Rung> tile_rungs(cpu::ThreadPool& pool);

// Measures MachinePeak's bf16_gflops / bf16_unit / int8_gops on every thread of `pool`.
void measure_tile_peaks(cpu::ThreadPool& pool, MachinePeak& pk);

}  // namespace strand::bench
