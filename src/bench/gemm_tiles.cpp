// strand/bench/gemm_tiles.cpp — the amx-bf16, amx-int8 and onednn-bf16 rungs of the GEMM ladder.
#include "bench/gemm_tiles.h"

#include <functional>
#include <map>
#include <memory>

#include <fmt/format.h>

#include "backends/amx/amx.h"
#include "backends/amx/gemm.h"
#include "backends/amx/pack.h"
#include "backends/cpu/threadpool.h"
#include "backends/onednn/onednn.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/rounding.h"
#include "devices/stranded.h"

namespace strand::bench {

namespace {

// What a rung keeps per B: its packed form, for the problem shape in use (a new shape drops
// the others, so that a ladder over many shapes does not pile them up).
template <class T>
class PerB {
 public:
  T& get(const GemmProblem& p, const std::function<std::unique_ptr<T>()>& make) {
    const Shape key = {p.M, p.N, p.K, p.trans_b ? 1 : 0, int64_t(p.b_dtype)};
    if (key != shape_) {
      items_.clear();
      shape_ = key;
    }
    auto& slot = items_[p.B];
    if (!slot) slot = make();
    return *slot;
  }

 private:
  Shape shape_;
  std::map<const void*, std::unique_ptr<T>> items_;
};

void need_f32_b(const GemmProblem& p, const char* rung) {
  if (p.b_dtype != DType::F32) fail("{} rung: B must be f32 (it rounds B itself)", rung);
}

PerB<amx::PackedBf16> g_bf16;
PerB<amx::PackedInt8> g_int8;
PerB<OnednnBf16Matmul> g_dnn;
amx::GemmScratch g_scratch;

amx::PackedBf16& packed_bf16(const GemmProblem& p) {
  need_f32_b(p, "bf16");
  return g_bf16.get(p, [&] { return std::make_unique<amx::PackedBf16>(amx::pack_b_bf16(p.B, p.b_dtype, p.K, p.N, p.trans_b)); });
}

amx::PackedInt8& packed_int8(const GemmProblem& p) {
  need_f32_b(p, "amx-int8");
  return g_int8.get(p, [&] {
    // B as a tensor over the caller's memory, quantized along K (as strand's q8 weights are).
    const Tensor b = Tensor::view_of(const_cast<void*>(p.B), DType::F32, p.trans_b ? Shape{p.N, p.K} : Shape{p.K, p.N}, nullptr);
    return std::make_unique<amx::PackedInt8>(amx::pack_b_int8(b.to_q8(p.trans_b ? 1 : 0), p.trans_b));
  });
}

OnednnBf16Matmul& onednn_bf16(const GemmProblem& p) {
  need_f32_b(p, "onednn-bf16");
  return g_dnn.get(p, [&] {
    return std::make_unique<OnednnBf16Matmul>(p.M, p.N, p.K, static_cast<const float*>(p.B), p.trans_b);
  });
}

const amx::KernelSet& hw() {
  const AmxStatus s = amx_status();
  if (!s.usable) fail("amx rung: {}", s.reason);
  return *amx::hw_kernels();
}

}  // namespace

std::vector<Rung> tile_rungs(cpu::ThreadPool& pool) {
  std::vector<Rung> r;
  const AmxStatus amx = amx_status();
  Rung b{"amx-bf16", "strand's AMX bf16 tiles: B packed once, A rounded to bf16 per call, all threads", true, false,
         amx.usable, amx.usable ? "" : amx.reason,
         [&pool](const GemmProblem& p) {
           amx::matmul_bf16(hw(), p.A, p.K, p.M, p.K, packed_bf16(p), p.C, p.N, {}, &pool, g_scratch);
         }};
  b.a_rounding = b.b_rounding = Rounding::BF16;
  b.prepare = [](const GemmProblem& p) { packed_bf16(p); };
  b.peak = Rung::Peak::Bf16;
  b.b_elem_bytes = 2;
  r.push_back(b);
  Rung i{"amx-int8", "strand's AMX int8 tiles: B as q8 packed once, A quantized per row in blocks of 32, all threads", true,
         false, amx.usable, amx.usable ? "" : amx.reason,
         [&pool](const GemmProblem& p) {
           amx::matmul_int8(hw(), p.A, p.K, p.M, p.K, packed_int8(p), p.C, p.N, {}, &pool, g_scratch);
         }};
  i.a_rounding = i.b_rounding = Rounding::Q8;
  i.prepare = [](const GemmProblem& p) { packed_int8(p); };
  i.peak = Rung::Peak::Int8;
  i.b_elem_bytes = 1.0 + 4.0 / double(amx::kTileDepth);  // int8 and an f32 scale per block of 32 along K
  r.push_back(i);
  const AmxStatus v = avx512bf16_status();
  Rung a{"avx512bf16", "strand's bf16 tile kernels on AVX-512-BF16 (vdpbf16ps): B packed once, A rounded per call, all threads",
         true, false, v.usable, v.usable ? "" : v.reason,
         [&pool](const GemmProblem& p) {
           const amx::KernelSet* k = amx::avx512bf16_kernels();
           if (!k) fail("avx512bf16 rung: {}", avx512bf16_status().reason);
           amx::matmul_bf16(*k, p.A, p.K, p.M, p.K, packed_bf16(p), p.C, p.N, {}, &pool, g_scratch);
         }};
  a.a_rounding = a.b_rounding = Rounding::BF16;
  a.prepare = [](const GemmProblem& p) { packed_bf16(p); };
  a.peak = Rung::Peak::Avx512Bf16;
  a.b_elem_bytes = 2;
  r.push_back(a);
  Rung d{"onednn-bf16", "oneDNN bf16 matmul, B reordered once into oneDNN's layout, A converted per call", true, false,
         true, "", [](const GemmProblem& p) { onednn_bf16(p).run(p.A, p.C); }};
  d.available = onednn_available(&d.why_not);
  if (d.available) {
    // Whether oneDNN has a bf16 matmul for this CPU (it falls back to reference loops if not).
    try {
      const float b1[4] = {1, 2, 3, 4};
      const OnednnBf16Matmul probe(2, 2, 2, b1, false);
      d.what += " (implementation: " + probe.implementation() + ")";
    } catch (const Error& e) {
      d.available = false;
      d.why_not = e.what();
    }
  }
  d.a_rounding = d.b_rounding = Rounding::BF16;
  d.prepare = [](const GemmProblem& p) { onednn_bf16(p); };
  d.peak = Rung::Peak::Bf16;
  d.b_elem_bytes = 2;  // reordered once into oneDNN's bf16 layout
  r.push_back(d);
  return r;
}

void measure_tile_peaks(cpu::ThreadPool& pool, MachinePeak& pk) {
  auto all_threads = [&](double (*loop)(double)) {
    std::vector<double> v(size_t(pool.size()), 0.0);
    pool.run([&](int t) { v[size_t(t)] = loop(0.25); });
    double s = 0;
    for (double x : v) s += x;
    return s * 1e-9;
  };
  if (cpu_features().avx512_bf16) pk.avx512_bf16_gflops = all_threads(bf16_dot_loop_flops);
  if (amx_status().usable) {
    pk.bf16_gflops = all_threads(amx_bf16_loop_flops);
    pk.bf16_unit = "AMX tiles (tdpbf16ps)";
    pk.int8_gops = all_threads(amx_int8_loop_ops);
  } else if (pk.avx512_bf16_gflops > 0) {
    pk.bf16_gflops = pk.avx512_bf16_gflops;
    pk.bf16_unit = "AVX-512-BF16 (vdpbf16ps)";
  }
}

}  // namespace strand::bench
