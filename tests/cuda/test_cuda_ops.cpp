// The cuda tier's ops against the float64 reference (the 2x-naive rule), on the GPU.
//
// Ops it computes in f32 are held to validate's check (validate/opcheck.h) as they are. Ops it
// computes in lower precision (products with f16/bf16 weights: the activations rounded to the
// weight's dtype; cuda_node_precision says which) are checked on inputs rounded as it rounds
// them: the reference and the naive tier see the same rounded inputs. Flash attention (which
// also rounds its probabilities) is held to twice the error of the naive loops computing in
// that precision. Inputs are random from printed seeds (STRAND_SEED reruns one), outputs are
// poisoned (NaN) before every run.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "backends/cuda/cuda.h"
#include "backends/naive/naive.h"
#include "backends/registry.h"
#include "core/error.h"
#include "core/rng.h"
#include "gpu_test.h"
#include "runtime/runtime.h"
#include "validate/opcheck.h"

using namespace strand;

namespace {

constexpr double kFloor = 4.0 * double(std::numeric_limits<float>::epsilon());

uint64_t test_seed(uint64_t dflt) {
  const char* s = std::getenv("STRAND_SEED");
  return s && *s ? std::strtoull(s, nullptr, 10) : dflt;
}

// Rounds a float tensor to `r`'s dtype and back to f32.
Tensor rounded(const Tensor& t, CudaRounding r) {
  if (r == CudaRounding::None) return t;
  if (r == CudaRounding::TF32) {  // 10-bit mantissa, nearest even (as the tensor cores read f32)
    Tensor o = t.to(DType::F32);
    for (int64_t i = 0; i < o.numel(); ++i) {
      uint32_t u;
      std::memcpy(&u, o.ptr<float>() + i, 4);
      u += 0xfffu + ((u >> 13) & 1u);
      u &= ~0x1fffu;
      std::memcpy(o.ptr<float>() + i, &u, 4);
    }
    return o;
  }
  return t.to(r == CudaRounding::BF16 ? DType::BF16 : DType::F16).to(DType::F32);
}

Tensor random_input(const Shape& shape, DType dt, Rng& rng, int64_t id_limit) {
  Tensor f = Tensor::empty(shape, dt == DType::I32 ? DType::I32 : DType::F32);
  for (int64_t i = 0; i < f.numel(); ++i) {
    if (dt == DType::I32)
      f.ptr<int32_t>()[i] = int32_t(rng.below(uint64_t(id_limit)));
    else
      f.ptr<float>()[i] = float(rng.normal());
  }
  return dt == DType::I32 || dt == DType::F32 ? f : f.to(dt);
}

struct Result {
  bool supported = true;
  std::string reason, precision;
  double err = 0, naive_err = 0, tol = 0;
  bool unwritten = false;
};

// One op case on the cuda tier with its inputs rounded as cuda_node_precision says; the
// reference and the naive tier run on the same rounded inputs.
Result check_rounded(const OpCase& c, uint64_t seed, const std::shared_ptr<Backend>& cuda) {
  Graph g;
  std::vector<ValueId> in;
  std::vector<Tensor> inputs;
  Rng rng(seed);
  const int64_t id_limit = c.op == OpKind::GatherRows ? c.shapes[0][0] : 1;
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    const bool state = c.op == OpKind::KvStore && i == 0;
    const std::string name = "in" + std::to_string(i);
    in.push_back(state ? g.state(name, c.shapes[i], c.dtypes[i]) : g.input(name, c.shapes[i], c.dtypes[i]));
    inputs.push_back(random_input(c.shapes[i], c.dtypes[i], rng, id_limit));
  }
  const ValueId out = g.add(c.op, in, c.attrs, c.label);
  g.mark_output(out);
  const Node& node = g.node(g.value(out).producer);
  Result r;
  const Verdict v = cuda->supports(g, node);
  if (!v.ok) {
    r.supported = false;
    r.reason = v.reason;
    return r;
  }
  const CudaPrecision p = cuda_node_precision(g, node);
  r.precision = p.note;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (p.inputs[i] == CudaRounding::None) continue;
    inputs[i] = rounded(inputs[i], p.inputs[i]);
    if (c.dtypes[i] != DType::F32) inputs[i] = inputs[i].to(c.dtypes[i]);  // a weight keeps its dtype
  }
  if (c.col_major_weight) inputs[1] = inputs[1].to_col_major();
  auto run = [&](const std::shared_ptr<Backend>& b) {
    std::vector<Tensor> vals(g.values().size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      const bool state = c.op == OpKind::KvStore && i == 0;
      vals[size_t(in[i])] = state ? inputs[i].to(b->activation_dtype()) : inputs[i];
    }
    RunOptions ro;
    ro.poison = true;
    execute_on(g, b, vals, ro);
    return vals[size_t(out)].to(DType::F64);
  };
  const Tensor ref = run(reference_backend()), naive = run(make_naive_backend()), got = run(cuda);
  double scale = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) scale = std::max(scale, std::abs(ref.ptr<const double>()[i]));
  if (c.op == OpKind::MatMul || c.op == OpKind::Linear) {  // as opcheck: sum_k |a||b| (+|bias|)
    Graph ga;
    std::vector<ValueId> ia;
    std::vector<Tensor> abs_in;
    for (size_t i = 0; i < inputs.size(); ++i) {
      Tensor x = inputs[i].to(DType::F64);
      for (int64_t j = 0; j < x.numel(); ++j) x.ptr<double>()[j] = std::abs(x.ptr<double>()[j]);
      abs_in.push_back(x);
      ia.push_back(ga.input("a" + std::to_string(i), x.shape, DType::F64));
    }
    const ValueId o = ga.add(c.op, ia, c.attrs, "abs");
    std::vector<Tensor> vals(ga.values().size());
    for (size_t i = 0; i < abs_in.size(); ++i) vals[size_t(ia[i])] = abs_in[i];
    execute_on(ga, reference_backend(), vals);
    for (int64_t i = 0; i < vals[size_t(o)].numel(); ++i) scale = std::max(scale, vals[size_t(o)].ptr<const double>()[i]);
  }
  if (scale == 0) scale = 1;
  auto error = [&](const Tensor& t, bool* unwritten) {
    double e = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) {
      const double y = t.ptr<const double>()[i], x = ref.ptr<const double>()[i];
      if (std::isnan(y) && !std::isnan(x)) *unwritten = true;
      if (std::isinf(x)) {
        if (y != x) e = std::numeric_limits<double>::infinity();
        continue;
      }
      e = std::max(e, std::abs(y - x) / scale);
    }
    return e;
  };
  bool ignored = false;
  r.naive_err = error(naive, &ignored);
  r.err = error(got, &r.unwritten);
  r.tol = 2.0 * r.naive_err + kFloor;
  return r;
}

}  // namespace

TEST(CudaTier, ProbeSaysWhereItStands) {
  const auto cuda = make_cuda_backend();
  EXPECT_EQ(cuda->name(), "cuda");
  EXPECT_FALSE(cuda->host_memory());
  const Verdict v = cuda->probe();
  const CudaDeviceInfo d = cuda_device_info();
  EXPECT_EQ(v.ok, d.available);
  EXPECT_FALSE(v.reason.empty());
  if (!d.built) EXPECT_EQ(v.reason.rfind("not built", 0), 0u) << v.reason;
  if (d.available) {
    EXPECT_NE(v.reason.find(d.name), std::string::npos) << v.reason;
    EXPECT_GT(d.sms, 0);
    EXPECT_GT(d.memory_gib, 0);
    EXPECT_GE(d.cc_major, 8);
  }
  STRAND_NEED_GPU();  // (the checks above hold everywhere; this reports the skip)
}

TEST(CudaTier, EveryOpAgainstTheFloat64Reference) {
  STRAND_NEED_GPU();
  const uint64_t seed = test_seed(20261202);
  std::shared_ptr<Backend> cuda = make_cuda_backend();
  std::vector<OpCase> cases = random_op_cases(seed, 6);
  const std::vector<OpCase> large = large_op_cases(seed);
  cases.insert(cases.end(), large.begin(), large.end());
  int exact = 0, rounded_cases = 0, declined = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const OpCase& c = cases[i];
    const uint64_t s = seed + i;
    SCOPED_TRACE(c.label + " (STRAND_SEED=" + std::to_string(seed) + ", case seed " + std::to_string(s) + ")");
    // Which path: the tier's own rounding declaration decides.
    Graph g;
    std::vector<ValueId> in;
    for (size_t k = 0; k < c.shapes.size(); ++k) in.push_back(g.input("x" + std::to_string(k), c.shapes[k], c.dtypes[k]));
    const ValueId o = g.add(c.op, in, c.attrs, c.label);
    const Node& node = g.node(g.value(o).producer);
    const Verdict v = cuda->supports(g, node);
    if (!v.ok) {
      ++declined;
      EXPECT_NE(v.reason.find("q8"), std::string::npos) << "only q8 weights may be declined: " << v.reason;
      continue;
    }
    const CudaPrecision p = cuda_node_precision(g, node);
    const bool exact_case = std::all_of(p.inputs.begin(), p.inputs.end(), [](CudaRounding r) { return r == CudaRounding::None; });
    if (exact_case) {
      ++exact;
      const OpCheck k = check_op(c, cuda, s);
      EXPECT_TRUE(k.supported) << k.reason;
      EXPECT_FALSE(k.unwritten) << "an output element was left unwritten";
      EXPECT_TRUE(k.pass) << "err " << k.err << " > tolerance " << k.tolerance << " (naive " << k.naive_err << ") "
                          << k.reason;
    } else {
      ++rounded_cases;
      const Result r = check_rounded(c, s, cuda);
      ASSERT_TRUE(r.supported) << r.reason;
      EXPECT_FALSE(r.unwritten) << "an output element was left unwritten";
      EXPECT_LE(r.err, r.tol) << "naive on the same rounded inputs: " << r.naive_err << "; " << r.precision;
    }
  }
  EXPECT_GT(exact, 50);
  EXPECT_GT(rounded_cases, 5);  // products with f16/bf16 weights on tensor cores
  EXPECT_GT(declined, 0);       // q8
}

namespace {

// The naive loops of the reference attention in float, in the precision flash attention
// computes in: q, k, v given already rounded to `dt`, the normalized weights rounded to `dt`
// before they multiply v. The bar for the tensor-core kernel.
void naive_attention_rounded(const float* q, const float* k, const float* v, int64_t T, int64_t C, int64_t H,
                             int64_t past, DType dt, float* out) {
  const int64_t D = C / H;
  const float scale = 1.0f / std::sqrt(float(D));
  auto rnd = [&](float x) {
    return dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(x)) : f16_to_f32(f32_to_f16(x));
  };
  std::vector<float> s(size_t(past + T));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < T; ++i) {
      const int64_t n = past + i + 1;
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        float dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q[i * C + h * D + d] * k[j * C + h * D + d];
        s[size_t(j)] = dot * scale;
        mx = std::max(mx, s[size_t(j)]);
      }
      float sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        s[size_t(j)] = std::exp(s[size_t(j)] - mx);
        sum += s[size_t(j)];
      }
      for (int64_t d = 0; d < D; ++d) out[i * C + h * D + d] = 0;
      for (int64_t j = 0; j < n; ++j) {
        const float w = rnd(s[size_t(j)] / sum);
        for (int64_t d = 0; d < D; ++d) out[i * C + h * D + d] += w * v[j * C + h * D + d];
      }
    }
}

}  // namespace

TEST(CudaTier, AttentionExactForDecodeAndPrefillOnOddShapes) {
  STRAND_NEED_GPU();
  const uint64_t seed = test_seed(20261203);
  std::shared_ptr<Backend> cuda = make_cuda_backend();
  struct Shape4 {
    int64_t T, past, H, D;
  };
  // Decode (T = 1..4) over long caches, prefill blocks with tails, head sizes 1..256.
  const Shape4 shapes[] = {{1, 0, 1, 1},    {1, 700, 12, 64}, {3, 5, 3, 17},   {4, 1023, 2, 256},
                           {65, 0, 4, 64},  {130, 7, 3, 48},  {17, 31, 5, 100}, {1, 33, 25, 64}};
  int i = 0;
  for (const Shape4& s : shapes) {
    OpCase c;
    c.op = OpKind::Attention;
    const int64_t C = s.H * s.D;
    c.shapes = {{s.T, C}, {s.past + s.T, C}, {s.past + s.T, C}};
    c.dtypes = {DType::F32, DType::F32, DType::F32};
    c.attrs.heads = s.H;
    c.attrs.past = s.past;
    c.label = "attention T=" + std::to_string(s.T) + " past=" + std::to_string(s.past) + " H=" + std::to_string(s.H) +
              " D=" + std::to_string(s.D);
    const OpCheck k = check_op(c, cuda, seed + uint64_t(i++));
    EXPECT_TRUE(k.pass) << c.label << " (STRAND_SEED=" << seed << "): err " << k.err << " tol " << k.tolerance << " "
                        << k.reason << (k.unwritten ? " (unwritten elements)" : "");
  }
}

TEST(CudaTier, FlashAttentionWithinTwiceTheNaiveErrorInItsPrecision) {
  STRAND_NEED_GPU();
  const uint64_t seed = test_seed(20261204);
  std::shared_ptr<Backend> cuda = make_cuda_backend();
  struct Shape4 {
    int64_t T, past, H, D;
  };
  const Shape4 shapes[] = {{5, 0, 1, 16}, {64, 0, 2, 64}, {65, 3, 3, 64}, {200, 0, 4, 32}, {129, 60, 2, 128}, {300, 0, 1, 48}};
  int idx = 0;
  for (DType dt : {DType::BF16, DType::F16})
    for (const Shape4& s : shapes) {
      Rng rng(seed + uint64_t(idx++));
      const int64_t C = s.H * s.D, L = s.past + s.T;
      // q, k, v already in the tier's precision; a bf16/f16 weight in the graph makes this an
      // f16/bf16 model's attention (the tier's rule).
      auto make = [&](int64_t rows) {
        Tensor t = Tensor::empty({rows, C}, DType::F32);
        for (int64_t j = 0; j < t.numel(); ++j) t.ptr<float>()[j] = float(rng.normal());
        return t.to(dt).to(DType::F32);
      };
      const Tensor q = make(s.T), k = make(L), v = make(L);
      Graph g;
      const ValueId vq = g.input("q", {s.T, C}, DType::F32), vk = g.input("k", {L, C}, DType::F32),
                    vv = g.input("v", {L, C}, DType::F32);
      const ValueId vx = g.input("x", {1, 4}, DType::F32);
      const ValueId vw = g.weight("w", {4, 4}, dt);
      g.add(OpKind::MatMul, {vx, vw}, {}, "the model's matrices are " + std::string(dtype_name(dt)));
      Attrs a;
      a.heads = s.H;
      a.past = s.past;
      const ValueId vo = g.add(OpKind::Attention, {vq, vk, vv}, a, "attention");
      g.mark_output(vo);
      const Node& node = g.node(g.value(vo).producer);
      const Verdict verdict = cuda->supports(g, node);
      ASSERT_TRUE(verdict.ok) << verdict.reason;
      EXPECT_NE(verdict.reason.find("flash"), std::string::npos) << verdict.reason;
      std::vector<Tensor> vals(g.values().size());
      vals[size_t(vq)] = q;
      vals[size_t(vk)] = k;
      vals[size_t(vv)] = v;
      vals[size_t(vx)] = Tensor::empty({1, 4}, DType::F32);
      for (int j = 0; j < 4; ++j) vals[size_t(vx)].ptr<float>()[j] = 1;
      Tensor w = Tensor::empty({4, 4}, DType::F32);
      for (int j = 0; j < 16; ++j) w.ptr<float>()[j] = 0.5f;
      vals[size_t(vw)] = w.to(dt);
      RunOptions ro;
      ro.poison = true;
      execute_on(g, cuda, vals, ro);
      const Tensor got = vals[size_t(vo)];
      // The float64 reference on the same (rounded) q, k, v, and the naive loops in dt.
      Graph gr;
      const ValueId rq = gr.input("q", {s.T, C}, DType::F32), rk = gr.input("k", {L, C}, DType::F32),
                    rv = gr.input("v", {L, C}, DType::F32);
      const ValueId ro_ = gr.add(OpKind::Attention, {rq, rk, rv}, a, "attention");
      std::vector<Tensor> rvals(gr.values().size());
      rvals[size_t(rq)] = q;
      rvals[size_t(rk)] = k;
      rvals[size_t(rv)] = v;
      execute_on(gr, reference_backend(), rvals);
      const Tensor& ref = rvals[size_t(ro_)];
      Tensor naive = Tensor::empty({s.T, C}, DType::F32);
      naive_attention_rounded(q.ptr<const float>(), k.ptr<const float>(), v.ptr<const float>(), s.T, C, s.H, s.past,
                              dt, naive.ptr<float>());
      double scale = 0, err = 0, naive_err = 0;
      bool unwritten = false;
      for (int64_t j = 0; j < ref.numel(); ++j) scale = std::max(scale, std::abs(ref.ptr<const double>()[j]));
      for (int64_t j = 0; j < ref.numel(); ++j) {
        const double x = ref.ptr<const double>()[j];
        if (std::isnan(got.ptr<const float>()[j])) unwritten = true;
        err = std::max(err, std::abs(double(got.ptr<const float>()[j]) - x) / scale);
        naive_err = std::max(naive_err, std::abs(double(naive.ptr<const float>()[j]) - x) / scale);
      }
      const std::string label = std::string(dtype_name(dt)) + " T=" + std::to_string(s.T) + " past=" +
                                std::to_string(s.past) + " H=" + std::to_string(s.H) + " D=" + std::to_string(s.D);
      EXPECT_FALSE(unwritten) << label;
      EXPECT_LE(err, 2 * naive_err + kFloor) << label << " (STRAND_SEED=" << seed << "): naive in " << dtype_name(dt)
                                             << " " << naive_err;
    }
}
