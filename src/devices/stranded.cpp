// strand/devices/stranded.cpp — the compute units of the machine and what strand leaves idle
// on them (the stranded table of `strand devices`), and the amx tier's row crossovers.
#include "devices/stranded.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "backends/amx/amx.h"
#include "backends/amx/kernels.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/threadpool.h"
#include "core/cpu_features.h"
#include "core/rng.h"
#include "graph/graph.h"

using json = nlohmann::json;

namespace strand {

#if !defined(STRAND_HAVE_AVX512BF16_BUILD)
double bf16_dot_loop_flops(double) { return 0; }
#endif
#if !defined(STRAND_HAVE_AVX512FP16_BUILD)
double fp16_fma_loop_flops(double) { return 0; }
#endif

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

constexpr double kTierHandicap = 1.05;  // the tier must be 5% faster to take a product

// The sum over the pool's threads of what `per_thread` measures on each, all at once.
double on_every_thread(const std::function<double()>& per_thread) {
  cpu::ThreadPool& pool = cpu::ThreadPool::global();
  std::vector<double> v(size_t(pool.size()), 0.0);
  pool.run([&](int t) { v[size_t(t)] = per_thread(); });
  double s = 0;
  for (double x : v) s += x;
  return s;
}

// Rate of a loop that reports the work it did for `iters` rounds: best over about `seconds`.
double loop_rate(double (*loop)(int64_t), double seconds) {
  loop(1 << 10);  // warm-up: tile state, clocks
  double best = 0;
  int64_t iters = 1 << 12;
  const auto start = Clock::now();
  do {
    const auto t0 = Clock::now();
    const double work = loop(iters);
    const double dt = since(t0);
    if (dt > 0) best = std::max(best, work / dt);
    if (dt < 1e-3) iters *= 2;
  } while (since(start) < seconds);
  return best;
}

// One matrix product node with a weight, ready to run on any host tier. With copies > 1 the
// weight is bound to one copy after another (each its own memory, so each packed once by a tier
// that packs), as a decode reads a model's weights: from memory, not from the cache.
struct ProductBench {
  Graph g;
  NodeId node = 0, weight = 0;
  std::vector<Tensor> values;
  std::vector<Tensor> copies;
  size_t next = 0;
  double flops = 0;

  ProductBench(int64_t M, int64_t K, int64_t N, DType w, uint64_t seed, int n_copies = 1) {
    const ValueId a = g.input("a", {M, K}, DType::F32);
    const ValueId b = g.weight("b", {K, N}, w);
    const ValueId out = g.add(OpKind::MatMul, {a, b}, Attrs{}, "stranded.matmul");
    g.mark_output(out);
    node = NodeId(g.nodes().size() - 1);
    values.resize(g.values().size());
    Rng rng(seed);
    Tensor at = Tensor::empty({M, K}, DType::F32), bt = Tensor::empty({K, N}, DType::F32);
    for (int64_t i = 0; i < at.numel(); ++i) at.ptr<float>()[i] = float(rng.uniform(-1.0, 1.0));
    for (int64_t i = 0; i < bt.numel(); ++i) bt.ptr<float>()[i] = float(rng.uniform(-1.0, 1.0));
    values[size_t(a)] = at;
    for (int c = 0; c < std::max(1, n_copies); ++c)
      copies.push_back(w == DType::Q8 ? bt.to_q8(0) : bt.to_col_major(w));  // as strand runs models
    weight = b;
    values[size_t(b)] = copies[0];
    values[size_t(out)] = Tensor::empty({M, N}, DType::F32);
    flops = 2.0 * double(M) * double(N) * double(K);
  }
  bool supported_by(const Backend& t) const { return t.supports(g, g.node(node)).ok; }
  void run(Backend& t) {
    const NodeId n = node;
    values[size_t(weight)] = copies[next++ % copies.size()];
    t.run(g, std::span<const NodeId>(&n, 1), values);
    t.sync();
  }
  double best_seconds(Backend& t, double seconds) {
    for (size_t c = 0; c < copies.size(); ++c) run(t);  // warm-up: packs every copy, wakes the threads
    double best = std::numeric_limits<double>::infinity();
    const auto start = Clock::now();
    for (int rep = 0; rep < 20; ++rep) {
      const auto t0 = Clock::now();
      run(t);
      best = std::min(best, since(t0));
      if (rep >= 2 && since(start) >= seconds) break;
    }
    return best;
  }
};

std::string rate_str(double v, const std::string& unit) {
  if (v <= 0) return "-";
  return v >= 1000 ? fmt::format("{:.2f} T{}", v / 1000, unit.substr(1)) : fmt::format("{:.1f} {}", v, unit);
}

}  // namespace

double amx_bf16_loop_flops(double seconds) {
  return amx_status().usable ? loop_rate(amx::hw_kernels()->peak_bf16, seconds) : 0;
}
double amx_int8_loop_ops(double seconds) {
  return amx_status().usable ? loop_rate(amx::hw_kernels()->peak_int8, seconds) : 0;
}

long long crossover_rows_from_points(const std::vector<RowCrossoverPoint>& points) {
  if (points.empty()) return -1;
  std::vector<long long> candidates = {kNeverRows};
  for (const RowCrossoverPoint& p : points) candidates.push_back(p.m);
  std::sort(candidates.begin(), candidates.end(), std::greater<>());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  long long best = kNeverRows;
  double best_cost = std::numeric_limits<double>::infinity();
  for (const long long c : candidates) {  // largest first: a tie keeps the more conservative one
    double cost = 0;
    for (const RowCrossoverPoint& p : points) {
      const double fastest = std::max(std::min(p.tier_seconds, p.other_seconds), 1e-12);
      cost += (p.m >= c ? kTierHandicap * p.tier_seconds : p.other_seconds) / fastest;
    }
    if (cost < best_cost * (1 - 1e-12)) best = c, best_cost = cost;
  }
  return best;
}

RowCrossover measure_row_crossover(Backend& tier, Backend& opponent, DType weights, const std::vector<int64_t>& ms,
                                   const std::vector<std::pair<int64_t, int64_t>>& kn, double seconds_per_point) {
  RowCrossover rc;
  rc.tier = tier.name();
  rc.vs = opponent.name();
  rc.path = weights == DType::Q8 ? "int8" : weights == DType::F32 ? "bf16" : "bf16-w16";
  uint64_t seed = 1;
  const double l3 = double(machine_info().l3_bytes);
  for (const auto& [K, N] : kn)
    for (const int64_t M : ms) {
      // Decode-sized products read the weight from memory: enough copies to fill the L3 twice
      // in the smaller form either tier reads (bf16 tiles: 2 bytes an element; q8: ~1).
      const double elem = weights == DType::Q8 ? 1.0 : 2.0;
      const int n_copies = M <= cpu::kGemvMaxRows ? copies_beyond_l3(elem * double(K * N), l3) : 1;
      ProductBench pb(M, K, N, weights, seed++, n_copies);
      if (!pb.supported_by(tier) || !pb.supported_by(opponent)) continue;
      RowCrossoverPoint p;
      p.m = M, p.k = K, p.n = N;
      p.tier_seconds = pb.best_seconds(tier, seconds_per_point);
      p.other_seconds = pb.best_seconds(opponent, seconds_per_point);
      rc.points.push_back(p);
    }
  rc.rows = crossover_rows_from_points(rc.points);
  if (rc.rows < 0) {
    rc.note = fmt::format("{} or {} declined every product measured", rc.tier, rc.vs);
  } else if (rc.rows >= kNeverRows) {
    rc.note = fmt::format("{} ({}) is not worth it against {} at any measured size", rc.tier, rc.path, rc.vs);
  } else {
    int wins = 0, above = 0;
    for (const RowCrossoverPoint& p : rc.points)
      if (p.m >= rc.rows) ++above, wins += kTierHandicap * p.tier_seconds < p.other_seconds;
    rc.note = fmt::format("the threshold with the least total time over the {} measured products; {} is 5%+ faster "
                          "on {} of the {} at or above it",
                          rc.points.size(), rc.tier, wins, above);
  }
  return rc;
}

void measure_compute_units(const std::vector<std::shared_ptr<Backend>>& all, const ProbeBudget& budget,
                           DeviceReport& r) {
  const double secs = std::min(0.3, budget.seconds_per_measurement);
  const CpuFeatures& f = cpu_features();
  r.units.clear();
  r.units_absent.clear();
  auto tier_row = [&](const std::string& name) -> TierPeak* {
    for (TierPeak& t : r.tiers)
      if (t.tier == name) return &t;
    return nullptr;
  };

  // FP32 FMA lanes: every f32 tier computes on them.
  {
    ComputeUnit u;
    const cpu::GemmIsa isa = cpu::gemm_best_isa();
    const std::string isa_name = isa == cpu::GemmIsa::Avx512 ? "AVX-512" : isa == cpu::GemmIsa::Avx2 ? "AVX2" : "scalar";
    u.name = fmt::format("FP32 FMA lanes ({})", isa_name);
    u.peak = on_every_thread([&] { return cpu::fma_loop_flops(isa, secs / 2); }) / 1e9;
    u.peak_how = fmt::format("independent {} FMAs on {} threads", isa_name, cpu::ThreadPool::global().size());
    for (const char* name : {"cpu", "blas", "naive"})
      if (const TierPeak* t = tier_row(name); t && t->usable && t->measured_gflops > u.best) {
        u.best = t->measured_gflops;
        u.best_tier = name;
        u.best_how = fmt::format("f32 GEMM {}", t->gemm_shape);
      }
    r.units.push_back(u);
  }
  std::shared_ptr<Backend> cpu_tier;
  for (const auto& b : all)
    if (b->name() == "cpu" && b->probe().ok) cpu_tier = b;
  // AVX-512-BF16: the avx512bf16 tier (the amx tier's bf16 kernels on vdpbf16ps) when usable.
  if (f.avx512_bf16) {
    ComputeUnit u;
    u.name = "AVX-512-BF16 (vdpbf16ps)";
    u.peak = on_every_thread([&] { return bf16_dot_loop_flops(secs / 2); }) / 1e9;
    u.peak_how = "independent vdpbf16ps";
    u.best_how = "no strand tier uses it";
    if (TierPeak* t = tier_row("avx512bf16"); t && t->usable && u.peak > 0) {
      u.best = t->measured_gflops;
      u.best_tier = t->tier;
      u.best_how = fmt::format("GEMM {}, f32 weights as bf16 tiles, only when named", t->gemm_shape);
      t->peak_gflops = u.peak;  // its peak is vdpbf16ps's, not the FMA lanes'
      t->why += "; peak: the measured vdpbf16ps peak";
      if (cpu_tier) {
        AmxOptions o;
        o.unit = AmxUnit::Avx512Bf16;
        o.min_rows_bf16 = 1;  // measure every size
        auto every = make_amx_backend(o);
        for (const DType w : {DType::F32, DType::BF16})
          r.row_crossovers.push_back(measure_row_crossover(*every, *cpu_tier, w, budget.crossover_m, budget.crossover_kn,
                                                           budget.seconds_per_measurement / 6));
      }
    }
    if (u.peak > 0) r.units.push_back(u);
  } else {
    r.units_absent.push_back("AVX-512-BF16 (not in CPUID)");
  }
  if (f.avx512_fp16) {
    ComputeUnit u;
    u.name = "AVX-512-FP16 (vfmadd231ph)";
    u.peak = on_every_thread([&] { return fp16_fma_loop_flops(secs / 2); }) / 1e9;
    u.peak_how = "independent vfmadd231ph";
    u.best_how = "no strand tier uses it";
    if (u.peak > 0) r.units.push_back(u);
  } else {
    r.units_absent.push_back("AVX-512-FP16 (not in CPUID)");
  }

  // The AMX unit.
  const AmxStatus amx = amx_status();
  std::shared_ptr<Backend> amx_tier;
  for (const auto& b : all)
    if (b->name() == "amx" && b->probe().ok) amx_tier = b;
  if (amx.usable && amx_tier) {
    ComputeUnit ub, ui;
    ub.name = "AMX tiles, bf16 (tdpbf16ps)";
    ub.peak = on_every_thread([&] { return amx_bf16_loop_flops(secs / 2); }) / 1e9;
    ub.peak_how = "independent tdpbf16ps, 4 accumulator tiles";
    ui.name = "AMX tiles, int8 (tdpbssd)";
    ui.unit = "GOP/s";
    ui.peak = on_every_thread([&] { return amx_int8_loop_ops(secs / 2); }) / 1e9;
    ui.peak_how = "independent tdpbssd, 4 accumulator tiles";
    if (TierPeak* t = tier_row("amx")) {
      ub.best = t->measured_gflops;
      ub.best_tier = "amx";
      ub.best_how = fmt::format("GEMM {}, f32 weights as bf16 tiles", t->gemm_shape);
      t->peak_gflops = ub.peak;  // the amx tier's peak is its tiles', not the FMA lanes'
      t->why += "; peak: the measured bf16 tile peak";
    }
    {
      ProductBench pb(512, 768, 3072, DType::Q8, 7);
      if (pb.supported_by(*amx_tier)) {
        ui.best = pb.flops / pb.best_seconds(*amx_tier, secs) / 1e9;
        ui.best_tier = "amx";
        ui.best_how = "q8 GEMM 512x768x3072 (int8 tiles)";
      }
    }
    r.units.push_back(ub);
    r.units.push_back(ui);
    // Where the amx tier starts to pay, per path (against the cpu tier).
    if (cpu_tier) {
      AmxOptions o;
      o.min_rows_bf16 = o.min_rows_int8 = 1;  // measure every size
      auto every = make_amx_backend(o);
      std::vector<int64_t> ms = budget.crossover_m;
      const double per_point = budget.seconds_per_measurement / 6;
      for (const DType w : {DType::F32, DType::BF16, DType::Q8})
        r.row_crossovers.push_back(measure_row_crossover(*every, *cpu_tier, w, ms, budget.crossover_kn, per_point));
    }
  } else {
    r.units_absent.push_back("AMX (" + amx.reason + ")");
  }
  // A GPU: the cuda tier measures it (devices/gpu.h) by a bf16 GEMM; there is no loop of
  // independent instructions for it here yet, so its idle share is not known.
  for (const auto& b : all) {
    if (b->name() != "cuda") continue;
    const TierPeak* t = tier_row("cuda");
    if (b->probe().ok && t && t->measured_gflops > 0) {
      ComputeUnit u;
      u.name = "GPU tensor cores, bf16 (cuda)";
      u.peak = t->measured_gflops;
      u.peak_how = "the cuda tier's bf16 GEMM (devices/gpu.h), not a peak loop";
      u.best_tier = "cuda";
      u.best = t->measured_gflops;
      u.best_how = "the same GEMM; the idle share needs a peak of its own";
      u.idle_unknown = true;
      r.units.push_back(u);
    } else if (!b->probe().ok) {
      r.units_absent.push_back("GPU (cuda tier: " + b->probe().reason + ")");
    }
  }
  if (std::none_of(all.begin(), all.end(), [](const auto& b) { return b->name() == "cuda"; }))
    r.units_absent.push_back("GPU (this build has no CUDA tier)");
#ifdef __APPLE__
  r.units_absent.push_back("ANE (reached only through the coreml tier: not measured here)");
#else
  r.units_absent.push_back("ANE (Apple silicon only)");
#endif
}

CachedRowCrossovers cached_row_crossovers(const std::string& tier, int threads) {
  CachedRowCrossovers c;
  c.path = display_path(device_cache_path());
  static const MachineInfo m = machine_info();
  const CacheLookup look = read_device_cache(m, threads);
  c.warning = look.warning;
  if (!look.report) return c;
  for (const RowCrossover& x : look.report->row_crossovers) {
    if (x.tier != tier || x.rows < 0) continue;
    if (x.path == "bf16") c.bf16 = x.rows;
    if (x.path == "bf16-w16") c.bf16_w16 = x.rows;
    if (x.path == "int8") c.int8 = x.rows;
  }
  return c;
}

void units_to_json(const DeviceReport& r, json& j) {
  json units = json::array();
  for (const ComputeUnit& u : r.units)
    units.push_back({{"name", u.name},
                     {"unit", u.unit},
                     {"peak", u.peak},
                     {"peak_how", u.peak_how},
                     {"best_tier", u.best_tier},
                     {"best", u.best},
                     {"best_how", u.best_how},
                     {"idle_unknown", u.idle_unknown},
                     {"stranded", u.idle_unknown ? json(nullptr) : json(u.stranded())}});
  j["units"] = units;
  j["units_absent"] = r.units_absent;
  json rc = json::array();
  for (const RowCrossover& x : r.row_crossovers) {
    json pts = json::array();
    for (const RowCrossoverPoint& p : x.points)
      pts.push_back({{"m", p.m}, {"k", p.k}, {"n", p.n}, {"tier_seconds", p.tier_seconds}, {"other_seconds", p.other_seconds}});
    rc.push_back({{"tier", x.tier},
                  {"path", x.path},
                  {"vs", x.vs},
                  {"rows", x.rows >= kNeverRows ? json("never") : x.rows < 0 ? json(nullptr) : json(x.rows)},
                  {"note", x.note},
                  {"points", pts}});
  }
  j["row_crossovers"] = rc;
}

void units_from_json(const json& j, DeviceReport& r) {
  r.units.clear();
  r.units_absent.clear();
  r.row_crossovers.clear();
  if (j.contains("units"))
    for (const json& u : j.at("units")) {
      ComputeUnit c;
      c.name = u.at("name").get<std::string>();
      c.unit = u.value("unit", "GFLOP/s");
      c.peak = u.at("peak").get<double>();
      c.peak_how = u.value("peak_how", "");
      c.best_tier = u.value("best_tier", "");
      c.best = u.value("best", 0.0);
      c.best_how = u.value("best_how", "");
      c.idle_unknown = u.value("idle_unknown", false);
      r.units.push_back(c);
    }
  if (j.contains("units_absent")) r.units_absent = j.at("units_absent").get<std::vector<std::string>>();
  if (j.contains("row_crossovers"))
    for (const json& x : j.at("row_crossovers")) {
      RowCrossover c;
      c.tier = x.at("tier").get<std::string>();
      c.path = x.at("path").get<std::string>();
      c.vs = x.value("vs", "");
      const json& rows = x.at("rows");
      c.rows = rows.is_null() ? -1 : rows.is_string() ? kNeverRows : rows.get<long long>();
      c.note = x.value("note", "");
      for (const json& p : x.at("points"))
        c.points.push_back({p.at("m").get<long long>(), p.at("k").get<long long>(), p.at("n").get<long long>(),
                            p.at("tier_seconds").get<double>(), p.at("other_seconds").get<double>()});
      r.row_crossovers.push_back(c);
    }
}

std::string stranded_table(const DeviceReport& r) {
  std::string s;
  s += "stranded: every compute unit found here, its measured peak (independent instructions on every thread), the\n"
       "best a strand tier reaches on it, and the share left idle\n";
  s += fmt::format("  {:<30} {:>15} {:<10} {:>15} {:>6}  {}\n", "unit", "peak", "tier", "reaches", "idle", "(what reaches it)");
  double top = 0, best = 0;
  std::string top_name, best_name, unknown;
  for (const ComputeUnit& u : r.units) {
    s += fmt::format("  {:<30} {:>15} {:<10} {:>15} {:>6}  ({})\n", u.name, rate_str(u.peak, u.unit),
                     u.best_tier.empty() ? "-" : u.best_tier, u.best > 0 ? rate_str(u.best, u.unit) : "0",
                     u.idle_unknown ? std::string("?") : fmt::format("{:.0f}%", 100.0 * u.stranded()), u.best_how);
    if (u.idle_unknown) {  // not in the share below: its peak is not known apart from its tier
      if (!unknown.empty()) unknown += ", ";
      unknown += u.name;
      continue;
    }
    if (u.unit == "GFLOP/s" && u.peak > top) top = u.peak, top_name = u.name;
    if (u.unit == "GFLOP/s" && u.best > best) best = u.best, best_name = u.best_tier;
  }
  for (const std::string& a : r.units_absent) s += "  not found: " + a + "\n";
  if (top > 0)
    s += fmt::format("  floating point: the fastest unit ({}) peaks at {}; the best strand reaches anywhere is {} ({}): "
                     "{:.0f}% of this machine's floating-point matrix throughput is stranded\n",
                     top_name, rate_str(top, "GFLOP/s"), rate_str(best, "GFLOP/s"), best_name.empty() ? "-" : best_name,
                     100.0 * std::max(0.0, 1.0 - best / top));
  if (top > 0 && !unknown.empty()) s += "  (" + unknown + " left out of that share: no peak of its own measured)\n";
  for (const RowCrossover& x : r.row_crossovers) {
    s += fmt::format("  {} crossover ({}) against {}: ", x.tier, x.path, x.vs);
    if (x.rows < 0) s += "not measured (" + x.note + ")\n";
    else if (x.rows >= kNeverRows) s += "never (" + x.note + ")\n";
    else s += fmt::format("M >= {} rows ({})\n", x.rows, x.note);
  }
  return s;
}

}  // namespace strand
