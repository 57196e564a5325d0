// The blas tier on a CBLAS (OpenBLAS here; see cblas_shim.h).
#include "backends/blas/blas.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "backends/blas/cblas_shim.h"
#include "core/error.h"
#include "devices/machine.h"
#include "devices/probe.h"

namespace strand {

namespace {

std::string trim(std::string s) {
  while (!s.empty() && s.front() == ' ') s.erase(s.begin());
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// 31000000 -> "3.1e7"; small values plainly.
std::string short_flops(double f) {
  if (std::isinf(f)) return "inf";
  if (f < 1e4) return fmt::format("{:.0f}", f);
  int e = int(std::floor(std::log10(f)));
  double m = f / std::pow(10.0, e);
  if (m >= 9.95) m /= 10, ++e;
  return fmt::format("{:.1f}e{}", m, e);
}

// A 2-D f32 operand as a pointer and a leading dimension; converted to a contiguous f32 copy
// when it is anything else.
struct Operand {
  const float* p = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
  Tensor keep;  // owns a converted copy
};

Operand operand(const Tensor& t, const std::string& node) {
  if (t.rank() != 2) fail("blas: node {}: expected a matrix, got {}", node, shape_str(t.shape));
  Operand o;
  o.rows = t.dim(0);
  o.cols = t.dim(1);
  const bool direct = t.dtype == DType::F32 && (o.cols <= 1 || t.strides[1] == 1) &&
                      (o.rows <= 1 || t.strides[0] >= std::max<int64_t>(o.cols, 1));
  if (direct) {
    o.p = t.ptr<const float>();
    o.ld = o.rows > 1 ? t.strides[0] : std::max<int64_t>(o.cols, 1);
  } else if (t.dtype == DType::F32) {  // any other strides: gather a contiguous copy
    o.keep = Tensor::empty({o.rows, o.cols}, DType::F32);
    float* d = o.keep.ptr<float>();
    const float* s = t.ptr<const float>();
    for (int64_t i = 0; i < o.rows; ++i)
      for (int64_t j = 0; j < o.cols; ++j) d[i * o.cols + j] = s[i * t.strides[0] + j * t.strides[1]];
    o.p = d;
    o.ld = std::max<int64_t>(o.cols, 1);
  } else if (t.contiguous()) {
    o.keep = t.to(DType::F32);
    o.p = o.keep.ptr<const float>();
    o.ld = std::max<int64_t>(o.cols, 1);
  } else {
    fail("blas: node {}: a non-contiguous {} operand", node, dtype_name(t.dtype));
  }
  return o;
}

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

class BlasBackend final : public Backend {
 public:
  BlasBackend(BlasCrossover crossover, int threads) : cross_(std::move(crossover)), threads_(threads) {
    cblas::set_threads(threads_);
    const BlasLibraryInfo lib = blas_library_info();
    lib_ = fmt::format("{} {}", lib.name, lib.version);
    probe_ = fmt::format("{}, {} kernel, {} thread{}", lib_, lib.corename.empty() ? "unknown" : lib.corename,
                         lib.threads, lib.threads == 1 ? "" : "s");
    if (!lib.coretype_env.empty()) probe_ += fmt::format(" (OPENBLAS_CORETYPE={} is set)", lib.coretype_env);
    static const std::string note = openblas_kernel_note(lib.corename, machine_info());  // fixed at load time
    if (!note.empty()) probe_ += "; " + note;
  }

  std::string name() const override { return "blas"; }
  std::string description() const override {
    return fmt::format("{} cblas_sgemm for f32 matrix products from the crossover up", lib_);
  }
  Verdict probe() const override { return Verdict::yes(probe_); }

  Verdict supports(const Graph& g, const Node& n) const override {
    if (n.op != OpKind::MatMul && n.op != OpKind::Linear) return Verdict::no("not a matrix product");
    const Value& a = g.value(n.inputs[0]);
    const Value& w = g.value(n.inputs[1]);
    if (w.dtype == DType::F16 || w.dtype == DType::BF16)
      return Verdict::no(fmt::format("{} weights: BLAS has no {} sgemm; the cpu tier packs them", dtype_name(w.dtype),
                                     dtype_name(w.dtype)));
    if (a.dtype != DType::F32 || w.dtype != DType::F32)
      return Verdict::no(fmt::format("{} x {} operands: sgemm takes f32", dtype_name(a.dtype), dtype_name(w.dtype)));
    if (a.shape.size() != 2 || w.shape.size() != 2) return Verdict::no("operands are not matrices");
    const int64_t M = a.shape[0], K = a.shape[1];
    const int64_t N = n.op == OpKind::MatMul && n.attrs.trans_b ? w.shape[0] : w.shape[1];
    if (!fits_int(M) || !fits_int(N) || !fits_int(K))
      return Verdict::no("a dimension over 2^31-1: CBLAS takes 32-bit sizes");
    const double flops = 2.0 * double(M) * double(N) * double(K);
    if (std::isinf(cross_.flops))
      return Verdict::no(fmt::format("blas never beat the tier below it ({})", cross_.source));
    if (flops < cross_.flops)
      return Verdict::no(fmt::format("below crossover 2·M·N·K = {} < {} FLOP ({})", short_flops(flops),
                                     short_flops(cross_.flops), cross_.source));
    return Verdict::yes(fmt::format("2·M·N·K = {} ≥ crossover {} FLOP ({})", short_flops(flops),
                                    short_flops(cross_.flops), cross_.source));
  }

  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    if (cblas::threads() != threads_) cblas::set_threads(threads_);  // another blas tier changed it
    for (NodeId id : nodes) {
      const Node& nd = g.node(id);
      if (nd.op != OpKind::MatMul && nd.op != OpKind::Linear)
        fail("blas: node {} ({}) is not a matrix product; the planner should not have placed it here", nd.name,
             op_name(nd.op));
      bool trans_b = nd.op == OpKind::MatMul && nd.attrs.trans_b;
      const Operand A = operand(values[size_t(nd.inputs[0])], nd.name);
      // A column-major weight (core/tensor.h) is its row-major storage, transposed.
      const Tensor& wt = values[size_t(nd.inputs[1])];
      const bool lines = wt.col_major();
      if (lines) trans_b = !trans_b;
      const Operand B = operand(lines ? wt.col_major_storage() : wt, nd.name);
      Tensor& out = values[size_t(nd.output)];
      const int64_t M = A.rows, K = A.cols, N = trans_b ? B.rows : B.cols;
      if ((trans_b ? B.cols : B.rows) != K || out.rank() != 2 || out.dim(0) != M || out.dim(1) != N ||
          out.dtype != DType::F32 || (N > 1 && out.strides[1] != 1))
        fail("blas: node {}: operand shapes {} x {}{} do not give the output {}", nd.name, shape_str({M, K}),
             shape_str({B.rows, B.cols}), trans_b ? "ᵀ" : "", shape_str(out.shape));
      if (!fits_int(M) || !fits_int(N) || !fits_int(K))
        fail("blas: node {}: a dimension over 2^31-1 (CBLAS takes 32-bit sizes)", nd.name);
      float* C = out.ptr<float>();
      const int64_t ldc = M > 1 ? out.strides[0] : std::max<int64_t>(N, 1);
      if (M == 0 || N == 0) continue;

      float beta = 0.0f;
      if (nd.op == OpKind::Linear) {  // C = bias in every row, then C += A·B
        const Tensor& bt = values[size_t(nd.inputs[2])];
        const Tensor b = bt.dtype == DType::F32 && bt.contiguous() ? bt : bt.to(DType::F32);
        if (b.numel() != N) fail("blas: node {}: bias has {} elements for {} columns", nd.name, b.numel(), N);
        for (int64_t i = 0; i < M; ++i) std::memcpy(C + i * ldc, b.ptr<const float>(), size_t(N) * sizeof(float));
        beta = 1.0f;
      } else if (K == 0) {
        for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
      }
      if (K == 0) continue;  // C is already bias (or 0)
      if (M == 1)
        cblas::sgemv_row(trans_b, int(N), int(K), A.p, B.p, int(B.ld), beta, C);
      else
        cblas::sgemm(trans_b, int(M), int(N), int(K), A.p, int(A.ld), B.p, int(B.ld), beta, C, int(ldc));
    }
  }

 private:
  BlasCrossover cross_;
  int threads_;
  std::string lib_, probe_;
};

}  // namespace

BlasLibraryInfo blas_library_info() {
  BlasLibraryInfo b;
  b.built = true;
  b.name = cblas::library_name();
  b.version = trim(cblas::version());
  if (b.version.rfind(b.name + " ", 0) == 0) b.version = b.version.substr(b.name.size() + 1);  // "OpenBLAS 0.3.21"
  b.corename = cblas::corename();
  b.config = trim(cblas::config());
  if (const char* e = std::getenv("OPENBLAS_CORETYPE"); e && *e) b.coretype_env = e;
  b.threads = cblas::threads();
  return b;
}

BlasCrossover blas_crossover_for(int threads) {
  const CachedCrossover c = cached_blas_crossover(threads);
  if (c.found) {
    const std::string where = fmt::format("cache {}", display_path(c.path));
    return {c.flops, true, c.vs == "cpu" ? "measured, " + where : fmt::format("measured against {}, {}", c.vs, where)};
  }
  std::string why = "built-in default; `strand devices` measures it";
  if (!c.warning.empty())
    why = "built-in default; " + c.warning;
  else if (c.path.empty())
    why = "built-in default; no cache location (HOME and STRAND_CACHE_DIR unset)";
  return {kBlasDefaultCrossoverFlops, false, why};
}

std::unique_ptr<Backend> make_blas_backend(const BlasOptions& opt) {
  const int threads = opt.threads > 0 ? opt.threads : default_thread_count();
  BlasCrossover c = opt.crossover ? *opt.crossover : blas_crossover_for(threads);
  return std::make_unique<BlasBackend>(std::move(c), threads);
}

}  // namespace strand
