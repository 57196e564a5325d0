// probe_devices(): measured peaks per tier, memory bandwidth, the blas crossover, and the cache.
#include "devices/probe.h"

#include "devices/gpu.h"

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <limits>
#include <memory>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "backends/blas/blas.h"
#include "backends/cpu/gemm.h"
#include "backends/registry.h"
#include "core/progress.h"
#include "core/rng.h"
#include "devices/busy.h"
#include "devices/readers.h"
#include "devices/stranded.h"
#include "graph/graph.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace strand {

namespace {

// 2: the bandwidth probe reads 12 streams per thread (version 1's single stream read less;
// its figures are measured again rather than mixed with the new ones).
// 3: measured FP32 peaks (an FMA loop on all the tier's threads) instead of cores x clock x
// FLOP/cycle, and the memory bound raced between several readers (devices/readers.h).
// 4: the stranded table's compute units and the amx tier's row crossovers (devices/stranded.h).
constexpr int kCacheFormatVersion = 4;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kBlasHandicap = 1.05;  // blas must be 5% faster to count as faster

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : std::string();
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Best (smallest) time of fn() within about `seconds`, after one untimed warm-up run; at least
// min_reps timed runs, at most max_reps.
template <class F>
double best_time(F&& fn, double seconds, int min_reps = 2, int max_reps = 50) {
  fn();
  double best = kInf;
  const auto start = Clock::now();
  for (int r = 0; r < max_reps; ++r) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, seconds_since(t0));
    if (r + 1 >= min_reps && seconds_since(start) >= seconds) break;
  }
  return best;
}

// Cheap deterministic fill in [-1, 1): the values do not matter for timing, only that they
// are ordinary numbers (no denormals, no NaN).
void fill(Tensor& t, uint64_t seed) {
  float* p = t.ptr<float>();
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    p[i] = float(int32_t(x >> 40) - (1 << 23)) * (1.0f / float(1 << 23));
  }
}

// One f32 matmul node [M, K] x [K, N] ready to run on any host tier.
struct MatmulBench {
  Graph g;
  NodeId node = 0;
  std::vector<Tensor> values;
  double flops = 0, bytes = 0;

  MatmulBench(int64_t M, int64_t K, int64_t N) {
    const ValueId a = g.input("a", {M, K}, DType::F32);
    const ValueId b = g.weight("b", {K, N}, DType::F32);
    const ValueId out = g.add(OpKind::MatMul, {a, b}, Attrs{}, "probe.matmul");
    g.mark_output(out);
    node = NodeId(g.nodes().size() - 1);
    values.resize(g.values().size());
    values[size_t(a)] = Tensor::empty({M, K}, DType::F32);
    values[size_t(b)] = Tensor::empty({K, N}, DType::F32);
    values[size_t(out)] = Tensor::empty({M, N}, DType::F32);
    fill(values[size_t(a)], 1);
    fill(values[size_t(b)], 2);
    flops = 2.0 * double(M) * double(N) * double(K);
    bytes = 4.0 * double(M * K + K * N + M * N);
  }
  Verdict supported_by(const Backend& t) const { return t.supports(g, g.node(node)); }
  void run(Backend& t) {
    const NodeId n = node;
    t.run(g, std::span<const NodeId>(&n, 1), values);
    t.sync();
  }
};

// The tier's fp32 peak uses this many cores.
int tier_threads(const std::string& name, int threads) { return name == "naive" ? 1 : threads; }

// GEMM peak: squares from 128 up to budget.gemm_max_n, climbing while the next size (8x the
// work) still fits the budget; the best GFLOP/s seen.
void measure_gemm(Backend& tier, const ProbeBudget& budget, TierPeak& tp) {
  double best = 0;
  std::string shape;
  for (int64_t n = std::min<int64_t>(128, budget.gemm_max_n); n <= budget.gemm_max_n; n *= 2) {
    MatmulBench mb(n, n, n);
    const Verdict v = mb.supported_by(tier);
    if (!v.ok) {
      if (best == 0) tp.why += fmt::format(" (declined the probe GEMM: {})", v.reason);
      break;
    }
    const double t = best_time([&] { mb.run(tier); }, budget.seconds_per_measurement);
    if (mb.flops / t / 1e9 > best) {
      best = mb.flops / t / 1e9;
      shape = fmt::format("{0}x{0}x{0}", n);
    }
    if (t * 8 * 3 > budget.seconds_per_measurement * 2) break;  // the next size would not fit
  }
  tp.measured_gflops = best;
  tp.gemm_shape = shape;
}

// GEMV bandwidth: [1, K] x [K, K], the weight as large as the bandwidth buffer (well beyond
// L3, so that it streams from memory). Built once and shared by the tiers.
void measure_gemv(Backend& tier, const ProbeBudget& budget, MatmulBench& mb, TierPeak& tp) {
  if (!mb.supported_by(tier).ok) return;
  const double t = best_time([&] { mb.run(tier); }, budget.seconds_per_measurement);
  tp.measured_bandwidth_gbs = mb.bytes / t / 1e9;
  tp.gemv_shape = fmt::format("1x{0} · {0}x{0}", mb.values[0].dim(1));
}

std::string not_built_reason(const std::string& tier) {
#ifdef __APPLE__
  const bool apple = true;
#else
  const bool apple = false;
#endif
  if (tier == "cuda") return "not built: this build has no CUDA tier (it needs the CUDA toolkit and an NVIDIA GPU)";
  if (tier == "metal")
    return apple ? "not built: this build has no Metal tier" : "not built: Metal exists on Apple platforms only";
  if (tier == "coreml")
    return apple ? "not built: this build has no Core ML tier"
                 : "not built: Core ML (the way to the Apple Neural Engine) exists on Apple platforms only";
  return "not built";
}

// The tier blas is compared with: "cpu" when it is usable, else the next usable host tier.
std::shared_ptr<Backend> crossover_opponent(const std::vector<std::shared_ptr<Backend>>& all) {
  for (const auto& b : all)
    if (b->name() == "cpu" && b->probe().ok && b->host_memory()) return b;
  bool after_blas = false;
  for (const auto& b : all) {
    if (b->name() == "blas") {
      after_blas = true;
      continue;
    }
    if (after_blas && b->probe().ok && b->host_memory()) return b;
  }
  return nullptr;
}

void measure_crossover(const std::shared_ptr<Backend>& opponent, int threads, const ProbeBudget& budget,
                       DeviceReport& r) {
  auto blas = make_blas_backend(BlasOptions{BlasCrossover{0, false, "probe"}, threads});
  if (!blas->probe().ok) {
    r.crossover_note = "no blas tier in this build";
    return;
  }
  if (!opponent) {
    r.crossover_note = "no tier below blas to compare with";
    return;
  }
  r.crossover_vs = opponent->name();
  // Each tier is timed in a block of its own, blas first: after a call, OpenBLAS's workers
  // spin for a while (~2^28 cycles by default) before they sleep, and on a machine with no
  // spare core they would halve the speed of a tier timed right after (measured: the cpu tier
  // 2x slower on whole rows of this table when the two alternated). Between the blocks the
  // probe waits for them to park. (The same contention is real in a chain that mixes blas
  // with another multi-threaded tier: a reason for blas to claim only shapes it clearly wins.)
  const double per_shape = budget.seconds_per_measurement / 3;
  auto best_of = [&](MatmulBench& mb, Backend& t) {
    mb.run(t);  // warm-up (thread start-up, page faults)
    double best = kInf;
    const auto start = Clock::now();
    for (int rep = 0; rep < 15; ++rep) {
      const auto t0 = Clock::now();
      mb.run(t);
      best = std::min(best, seconds_since(t0));
      if (rep >= 2 && seconds_since(start) >= per_shape) break;
    }
    return best;
  };
  bool stopped_early = false;
  for (const auto& [K, N] : budget.crossover_kn) {
    std::vector<std::unique_ptr<MatmulBench>> shapes;
    std::vector<double> tb;
    for (const int64_t M : budget.crossover_m) {
      auto mb = std::make_unique<MatmulBench>(M, K, N);
      if (!mb->supported_by(*opponent).ok) continue;
      tb.push_back(best_of(*mb, *blas));
      shapes.push_back(std::move(mb));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // let OpenBLAS's workers park
    int wins_in_a_row = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      MatmulBench& mb = *shapes[i];
      const double to = best_of(mb, *opponent);
      CrossoverPoint p;
      p.m = mb.values[0].dim(0), p.k = K, p.n = N, p.flops = mb.flops, p.blas_seconds = tb[i], p.other_seconds = to;
      p.blas_wins = kBlasHandicap * tb[i] < to;
      r.crossover_points.push_back(p);
      wins_in_a_row = 2 * tb[i] < to ? wins_in_a_row + 1 : 0;
      // A slow opponent (naive) would take seconds on the big shapes: once blas has been more
      // than twice as fast on three sizes in a row and the opponent's runs outgrow the budget,
      // the larger sizes are blas's.
      if (wins_in_a_row >= 3 && to * 3 > per_shape) {
        stopped_early = true;
        break;
      }
    }
  }
  r.blas_crossover_flops = crossover_from_points(r.crossover_points);
  r.crossover_note = crossover_note(r.crossover_points, r.blas_crossover_flops, r.crossover_vs, stopped_early);
}

// How many L3 instances the machine has (from sysfs; 1 when unknown).
int l3_instances(const MachineInfo& m) {
  std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list");
  std::string list;
  if (!(f >> list)) return 1;
  int sharing = 0;
  std::stringstream ss(list);
  std::string part;
  while (std::getline(ss, part, ',')) {
    const size_t dash = part.find('-');
    if (dash == std::string::npos)
      sharing += 1;
    else
      sharing += std::atoi(part.c_str() + dash + 1) - std::atoi(part.c_str()) + 1;
  }
  return sharing > 0 ? std::max(1, m.logical_cpus / sharing) : 1;
}

// ---- JSON ----------------------------------------------------------------------------------

json flops_json(double f) {
  if (f < 0) return nullptr;
  if (std::isinf(f)) return "never";
  return f;
}

double flops_from_json(const json& j) {
  if (j.is_null()) return -1;
  if (j.is_string()) {
    if (j.get<std::string>() == "never") return kInf;
    throw std::runtime_error("blas_crossover_flops: expected a number, \"never\" or null");
  }
  return j.get<double>();
}

MachineInfo machine_from_json(const json& j) {
  MachineInfo m;
  m.cpu_model = j.at("cpu_model").get<std::string>();
  m.physical_cores = j.at("physical_cores").get<int>();
  m.logical_cpus = j.at("logical_cpus").get<int>();
  m.simd = j.at("simd").get<std::vector<std::string>>();
  m.base_ghz = j.at("base_ghz").get<double>();
  m.max_ghz = j.at("max_ghz").get<double>();
  m.os = j.at("os").get<std::string>();
  m.compiler = j.at("compiler").get<std::string>();
  m.openblas_version = j.at("openblas_version").get<std::string>();
  m.openblas_corename = j.at("openblas_corename").get<std::string>();
  m.onednn_version = j.at("onednn_version").get<std::string>();
  m.l1d_bytes = j.at("l1d_bytes").get<size_t>();
  m.l2_bytes = j.at("l2_bytes").get<size_t>();
  m.l3_bytes = j.at("l3_bytes").get<size_t>();
  m.arch = j.value("arch", "");
  m.vendor = j.value("vendor", "");
  m.cpu_family = j.value("cpu_family", 0);
  m.cpu_model_id = j.value("cpu_model_id", 0);
  m.uarch = j.value("uarch", "");
  m.ghz_source = j.value("ghz_source", "");
  m.openblas_config = j.value("openblas_config", "");
  m.openblas_note = j.value("openblas_note", "");
  return m;
}

// The tiers a report lists, with their usability: the registry's, then placeholders for the
// tiers this build has no code for.
const char* const kUnbuiltTiers[] = {"cuda", "metal", "coreml"};

std::vector<std::pair<std::string, bool>> tier_list(const std::vector<std::shared_ptr<Backend>>& all) {
  std::vector<std::pair<std::string, bool>> v;
  for (const auto& b : all) v.push_back({b->name(), b->probe().ok});
  for (const char* name : kUnbuiltTiers)
    if (std::none_of(all.begin(), all.end(), [&](const auto& b) { return b->name() == name; })) v.push_back({name, false});
  return v;
}

// Whether a cached report still describes this build: the same tiers, equally usable, and
// the crossover measured against the tier it would be measured against now.
bool cache_matches_build(const DeviceReport& cached, const std::vector<std::shared_ptr<Backend>>& all,
                         const std::shared_ptr<Backend>& opponent) {
  std::vector<std::pair<std::string, bool>> then;
  for (const TierPeak& t : cached.tiers) then.push_back({t.tier, t.usable});
  if (then != tier_list(all)) return false;
  const bool blas = std::any_of(all.begin(), all.end(), [](const auto& b) { return b->name() == "blas" && b->probe().ok; });
  return cached.crossover_vs == (blas && opponent ? opponent->name() : std::string());
}

}  // namespace

// ---- public --------------------------------------------------------------------------------

ProbeBudget quick_probe_budget() {
  ProbeBudget b;
  b.seconds_per_measurement = 0.01;
  b.gemm_max_n = 128;
  b.bandwidth_bytes = size_t(8) << 20;
  b.gemv_weight_bytes = size_t(1) << 20;
  b.crossover_m = {1, 16, 64};
  b.crossover_kn = {{256, 256}};
  b.quick = true;
  return b;
}

std::string device_cache_path() {
  if (const std::string d = env("STRAND_CACHE_DIR"); !d.empty()) return (fs::path(d) / "devices.json").string();
  if (const std::string x = env("XDG_CACHE_HOME"); !x.empty() && fs::path(x).is_absolute())
    return (fs::path(x) / "strand" / "devices.json").string();
  if (const std::string h = env("HOME"); !h.empty()) return (fs::path(h) / ".cache" / "strand" / "devices.json").string();
  return {};
}

std::string display_path(const std::string& path) {
  const std::string h = env("HOME");
  if (!h.empty() && path.size() > h.size() && path.compare(0, h.size(), h) == 0 && path[h.size()] == '/')
    return "~" + path.substr(h.size());
  return path;
}

json device_cache_key(const MachineInfo& m, int threads) {
  return {{"cpu_model", m.cpu_model},
          {"cpu_family", m.cpu_family},
          {"cpu_model_id", m.cpu_model_id},
          {"threads", threads},
          {"strand_version", STRAND_VERSION},
          {"openblas_kernel", m.openblas_corename}};
}

json to_json(const MachineInfo& m) {
  return {{"cpu_model", m.cpu_model},
          {"physical_cores", m.physical_cores},
          {"logical_cpus", m.logical_cpus},
          {"simd", m.simd},
          {"base_ghz", m.base_ghz},
          {"max_ghz", m.max_ghz},
          {"os", m.os},
          {"compiler", m.compiler},
          {"openblas_version", m.openblas_version},
          {"openblas_corename", m.openblas_corename},
          {"openblas_config", m.openblas_config},
          {"openblas_note", m.openblas_note},
          {"onednn_version", m.onednn_version},
          {"l1d_bytes", m.l1d_bytes},
          {"l2_bytes", m.l2_bytes},
          {"l3_bytes", m.l3_bytes},
          {"arch", m.arch},
          {"vendor", m.vendor},
          {"cpu_family", m.cpu_family},
          {"cpu_model_id", m.cpu_model_id},
          {"uarch", m.uarch},
          {"ghz_source", m.ghz_source}};
}

json to_json(const DeviceReport& r) {
  json tiers = json::array();
  for (const TierPeak& t : r.tiers)
    tiers.push_back({{"tier", t.tier},
                     {"usable", t.usable},
                     {"why", t.why},
                     {"peak_gflops", t.peak_gflops},
                     {"measured_gflops", t.measured_gflops},
                     {"measured_bandwidth_gbs", t.measured_bandwidth_gbs},
                     {"threads", t.threads},
                     {"gemm_shape", t.gemm_shape},
                     {"gemv_shape", t.gemv_shape},
                     {"device", t.device}});
  json points = json::array();
  for (const CrossoverPoint& p : r.crossover_points)
    points.push_back({{"m", p.m},
                      {"k", p.k},
                      {"n", p.n},
                      {"flops", p.flops},
                      {"blas_seconds", p.blas_seconds},
                      {"other_seconds", p.other_seconds},
                      {"blas_wins", p.blas_wins}});
  json j = {{"machine", to_json(r.machine)},
          {"tiers", tiers},
          {"bandwidth_gbs", r.bandwidth_gbs},
          {"bandwidth_detail", r.bandwidth_detail},
          {"peak_detail", r.peak_detail},
          {"blas_crossover_flops", flops_json(r.blas_crossover_flops)},
          {"crossover_vs", r.crossover_vs},
          {"crossover_note", r.crossover_note},
          {"crossover_points", points},
          {"threads", r.threads},
          {"from_cache", r.from_cache},
          {"cache_path", r.cache_path},
          {"peak_1thread_gflops", r.peak_1thread_gflops},
          {"bandwidth_reader", r.bandwidth_reader},
          {"busy", r.busy},
          {"busy_detail", r.busy_detail},
          {"measured_at", r.measured_at},
          {"strand_version", r.strand_version},
          {"quick", r.quick},
          {"warnings", r.warnings}};
  units_to_json(r, j);
  return j;
}

DeviceReport report_from_json(const json& j) {
  DeviceReport r;
  r.machine = machine_from_json(j.at("machine"));
  for (const json& t : j.at("tiers")) {
    TierPeak tp;
    tp.tier = t.at("tier").get<std::string>();
    tp.usable = t.at("usable").get<bool>();
    tp.why = t.at("why").get<std::string>();
    tp.peak_gflops = t.at("peak_gflops").get<double>();
    tp.measured_gflops = t.at("measured_gflops").get<double>();
    tp.measured_bandwidth_gbs = t.at("measured_bandwidth_gbs").get<double>();
    tp.threads = t.at("threads").get<int>();
    tp.gemm_shape = t.value("gemm_shape", "");
    tp.gemv_shape = t.value("gemv_shape", "");
    tp.device = t.value("device", "");
    r.tiers.push_back(tp);
  }
  r.bandwidth_gbs = j.at("bandwidth_gbs").get<double>();
  r.bandwidth_detail = j.value("bandwidth_detail", "");
  r.peak_detail = j.value("peak_detail", "");
  r.blas_crossover_flops = flops_from_json(j.at("blas_crossover_flops"));
  r.crossover_vs = j.value("crossover_vs", "");
  r.crossover_note = j.value("crossover_note", "");
  for (const json& p : j.value("crossover_points", json::array())) {
    CrossoverPoint c;
    c.m = p.at("m").get<long long>();
    c.k = p.at("k").get<long long>();
    c.n = p.at("n").get<long long>();
    c.flops = p.at("flops").get<double>();
    c.blas_seconds = p.at("blas_seconds").get<double>();
    c.other_seconds = p.at("other_seconds").get<double>();
    c.blas_wins = p.at("blas_wins").get<bool>();
    r.crossover_points.push_back(c);
  }
  r.threads = j.at("threads").get<int>();
  r.from_cache = j.value("from_cache", false);
  r.cache_path = j.value("cache_path", "");
  r.peak_1thread_gflops = j.value("peak_1thread_gflops", 0.0);
  r.bandwidth_reader = j.value("bandwidth_reader", "");
  r.busy = j.value("busy", false);
  r.busy_detail = j.value("busy_detail", "");
  r.measured_at = j.value("measured_at", "");
  r.strand_version = j.value("strand_version", "");
  r.quick = j.value("quick", false);
  r.warnings = j.value("warnings", std::vector<std::string>{});
  units_from_json(j, r);
  return r;
}

namespace {

// The cache file parsed, or a warning saying why it cannot be used. A missing file is neither.
json load_cache_file(const std::string& path, std::string* warning) {
  std::error_code ec;
  if (path.empty() || !fs::exists(path, ec)) return nullptr;
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    *warning = fmt::format("device cache {} cannot be read; ignored", display_path(path));
    return nullptr;
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) {
    *warning = fmt::format("device cache {} is not valid JSON; ignored (the next measurement rewrites it)",
                           display_path(path));
    return nullptr;
  }
  if (!j.is_object() || j.value("format", "") != "strand-devices" || !j.contains("entries") ||
      !j["entries"].is_array()) {
    *warning = fmt::format("device cache {} is not a strand device cache; ignored (the next measurement rewrites it)",
                           display_path(path));
    return nullptr;
  }
  if (j.value("format_version", 0) != kCacheFormatVersion) return nullptr;  // another version's file: re-measure
  return j;
}

}  // namespace

int device_cache_format_version() { return kCacheFormatVersion; }

CacheLookup read_device_cache(const MachineInfo& m, int threads) {
  CacheLookup out;
  const std::string path = device_cache_path();
  const json file = load_cache_file(path, &out.warning);
  if (file.is_null()) return out;
  const json key = device_cache_key(m, threads);
  for (const json& e : file["entries"]) {
    if (!e.is_object() || !e.contains("key") || e["key"] != key) continue;
    try {
      DeviceReport r = report_from_json(e.at("report"));
      r.machine = m;
      r.from_cache = true;
      r.cache_path = path;
      r.warnings.clear();
      out.report = std::move(r);
    } catch (const std::exception& ex) {
      out.warning = fmt::format("device cache {}: the entry for this machine is damaged ({}); ignored",
                                display_path(path), ex.what());
    }
    break;
  }
  return out;
}

std::string write_device_cache(const DeviceReport& r) {
  const std::string path = device_cache_path();
  if (path.empty()) return "no cache location (HOME, XDG_CACHE_HOME and STRAND_CACHE_DIR are unset): not cached";
  try {
    std::string ignored;
    json file = load_cache_file(path, &ignored);
    if (file.is_null()) file = {{"format", "strand-devices"}, {"format_version", kCacheFormatVersion}, {"entries", json::array()}};
    const json key = device_cache_key(r.machine, r.threads);
    json entries = json::array();
    for (const json& e : file["entries"])
      if (!(e.is_object() && e.contains("key") && e["key"] == key)) entries.push_back(e);
    DeviceReport stored = r;
    stored.from_cache = false;
    stored.cache_path.clear();
    stored.warnings.clear();
    entries.push_back({{"key", key}, {"report", to_json(stored)}});
    file["entries"] = entries;

    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec) return fmt::format("cannot create {}: {}; not cached", display_path(fs::path(path).parent_path().string()), ec.message());
    const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f << file.dump(1) << '\n';
      f.close();
      if (!f) {
        fs::remove(tmp, ec);
        return fmt::format("cannot write {}; not cached", display_path(tmp));
      }
    }
    fs::rename(tmp, path, ec);
    if (ec) {
      fs::remove(tmp, ec);
      return fmt::format("cannot replace {}: {}; not cached", display_path(path), ec.message());
    }
  } catch (const std::exception& e) {
    return fmt::format("cannot write the device cache {}: {}", display_path(path), e.what());
  }
  return {};
}

CachedCrossover cached_blas_crossover(int threads) {
  CachedCrossover c;
  c.path = device_cache_path();
  const json file = load_cache_file(c.path, &c.warning);
  if (file.is_null()) return c;
  // The key's machine fields cannot change while the process runs: read them once.
  static const MachineInfo m = machine_info();
  const json key = device_cache_key(m, threads);
  for (const json& e : file["entries"]) {
    if (!e.is_object() || !e.contains("key") || e["key"] != key) continue;
    try {
      const json& r = e.at("report");
      const double f = flops_from_json(r.at("blas_crossover_flops"));
      if (f < 0) return c;  // not measured
      c.found = true;
      c.flops = f;
      c.vs = r.value("crossover_vs", "");
    } catch (const std::exception& ex) {
      c.warning = fmt::format("device cache {}: damaged entry ({})", display_path(c.path), ex.what());
    }
    break;
  }
  return c;
}

std::string crossover_note(const std::vector<CrossoverPoint>& points, double flops, const std::string& vs,
                           bool stopped_early) {
  if (flops < 0) return fmt::format("{} declined every product measured", vs);
  int wins = 0, wins_above = 0, above = 0;
  for (const CrossoverPoint& p : points) {
    wins += p.blas_wins;
    if (p.flops >= flops) ++above, wins_above += p.blas_wins;
  }
  if (std::isinf(flops))
    return wins == 0 ? fmt::format("blas is not 5% faster than {} on any measured product: it claims nothing", vs)
                     : fmt::format("blas is 5%+ faster on {} of the {} measured products, but every threshold on "
                                   "2·M·N·K that gives it those also gives it products where {} is faster, for more "
                                   "time lost than won: it claims nothing",
                                   wins, points.size(), vs);
  return fmt::format("the threshold with the least total time over the {} measured products; blas is 5%+ faster on {} "
                     "of the {} at or above it{}",
                     points.size(), wins_above, above,
                     stopped_early ? "; a series stopped once blas was over twice as fast three sizes in a row" : "");
}

double crossover_from_points(const std::vector<CrossoverPoint>& points) {
  if (points.empty()) return -1;
  // Candidate thresholds: every measured size, and "never". The cost of a threshold is the
  // time the products would take with it, each product's time relative to its faster tier
  // (so that every shape counts alike), with blas's times 5% worse than measured so that a
  // near tie goes to the cpu tier. One noisy point cannot flip the choice the way a
  // "blas wins everything above" rule lets it.
  std::vector<double> candidates = {kInf};
  for (const CrossoverPoint& p : points) candidates.push_back(p.flops);
  std::sort(candidates.begin(), candidates.end(), std::greater<>());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  double best = kInf, best_cost = kInf;
  for (const double f : candidates) {  // largest first: ties keep the more conservative threshold
    double cost = 0;
    for (const CrossoverPoint& p : points) {
      const double fastest = std::max(std::min(p.blas_seconds, p.other_seconds), 1e-12);
      cost += (p.flops >= f ? kBlasHandicap * p.blas_seconds : p.other_seconds) / fastest;
    }
    if (cost < best_cost * (1 - 1e-12)) best = f, best_cost = cost;
  }
  return best;
}

double measure_tier_gemm_gflops(Backend& tier, int64_t n, double seconds) {
  MatmulBench mb(n, n, n);
  if (!mb.supported_by(tier).ok) return 0;
  return mb.flops / best_time([&] { mb.run(tier); }, seconds) / 1e9;
}

double measure_tier_gemv_gbs(Backend& tier, int64_t side, double seconds) {
  MatmulBench mb(1, side, side);
  if (!mb.supported_by(tier).ok) return 0;
  return mb.bytes / best_time([&] { mb.run(tier); }, seconds) / 1e9;
}

double measure_fma_peak_gflops(int threads, double seconds, double* spread) {
  threads = std::max(1, threads);
  const cpu::GemmIsa isa = cpu::gemm_best_isa();
  std::vector<double> per(size_t(threads), 0.0);
  std::barrier start(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      start.arrive_and_wait();  // every thread's loop runs at the same time
      per[size_t(t)] = cpu::fma_loop_flops(isa, seconds) * 1e-9;
    });
  for (auto& th : pool) th.join();
  double sum = 0, lo = kInf, hi = 0;
  for (double v : per) sum += v, lo = std::min(lo, v), hi = std::max(hi, v);
  if (spread) *spread = lo > 0 ? hi / lo : 0;
  return sum;
}

struct ReadBandwidthMeter::Impl {
  size_t words = 0;
  int threads = 1;
  uint64_t* buf = nullptr;
  size_t per = 0;
  std::vector<ReaderResult> last;
  size_t best = 0;
  Impl(size_t bytes, int t) : threads(std::max(1, t)) {
    // Slices of whole 4 KiB pages, so that every reader's streams split them evenly.
    per = std::max<size_t>(512, (bytes / 8 / size_t(threads) + 511) / 512 * 512);
    words = per * size_t(threads);
    buf = static_cast<uint64_t*>(::operator new(words * 8, std::align_val_t(4096)));
  }
  ~Impl() { ::operator delete(buf, std::align_val_t(4096)); }
  const uint64_t* slice(int t) const { return buf + size_t(t) * per; }
};

ReadBandwidthMeter::ReadBandwidthMeter(size_t bytes, int threads) : impl_(std::make_unique<Impl>(bytes, threads)) {
  // Each thread touches its own slice first (pages land near the thread that reads them).
  Impl& m = *impl_;
  std::vector<std::thread> pool;
  for (int t = 0; t < m.threads; ++t)
    pool.emplace_back([&m, t] {
      uint64_t* p = m.buf + size_t(t) * m.per;
      for (size_t i = 0; i < m.per; ++i) p[i] = i * 0x9e3779b97f4a7c15ull;
    });
  for (auto& th : pool) th.join();
}

ReadBandwidthMeter::~ReadBandwidthMeter() = default;

size_t ReadBandwidthMeter::bytes() const { return impl_->words * 8; }

const std::vector<ReadBandwidthMeter::ReaderResult>& ReadBandwidthMeter::last() const { return impl_->last; }

const ReadBandwidthMeter::ReaderResult& ReadBandwidthMeter::best() const {
  static const ReaderResult none;
  return impl_->last.empty() ? none : impl_->last[impl_->best];
}

double ReadBandwidthMeter::measure(double seconds, int* runs_out) {
  Impl& m = *impl_;
  const std::vector<MemoryReader>& readers = memory_readers();
  std::atomic<uint64_t> sink{0};
  std::atomic<int> which{0};
  std::atomic<bool> stop{false};
  std::barrier sync(m.threads);
  // Every run: wait for all, read the slice with the current reader, wait for all.
  auto worker = [&](int t) {
    while (true) {
      sync.arrive_and_wait();  // start of a run
      if (stop.load()) break;
      sink.fetch_add(readers[size_t(which.load())].read(m.slice(t), m.per), std::memory_order_relaxed);
      sync.arrive_and_wait();  // end of a run
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < m.threads; ++t) pool.emplace_back(worker, t);
  m.last.clear();
  int total_runs = 0;
  const double each = seconds / double(readers.size());
  for (size_t r = 0; r < readers.size(); ++r) {
    which.store(int(r));
    double best = kInf, worst = 0;
    int runs = 0;
    const auto start = Clock::now();
    while (runs < 3 || (seconds_since(start) < each && runs < 50)) {
      const auto t0 = Clock::now();
      sync.arrive_and_wait();
      sink.fetch_add(readers[r].read(m.slice(0), m.per), std::memory_order_relaxed);
      sync.arrive_and_wait();
      const double dt = seconds_since(t0);
      best = std::min(best, dt);
      worst = std::max(worst, dt);
      ++runs;
    }
    total_runs += runs;
    m.last.push_back({readers[r].name, double(m.words * 8) / best / 1e9, worst / best, runs});
  }
  stop.store(true);
  sync.arrive_and_wait();
  for (auto& th : pool) th.join();
  m.best = 0;
  for (size_t r = 1; r < m.last.size(); ++r)
    if (m.last[r].gbs > m.last[m.best].gbs) m.best = r;
  if (runs_out) *runs_out = total_runs;
  return m.last[m.best].gbs;
}

double measure_read_bandwidth(size_t bytes, int threads, double seconds, int* runs_out) {
  ReadBandwidthMeter meter(bytes, threads);
  return meter.measure(seconds, runs_out);
}

DeviceReport probe_devices(bool refresh, int threads) { return probe_devices(refresh, threads, ProbeBudget{}); }

DeviceReport probe_devices(bool refresh, int threads, const ProbeBudget& budget) {
  threads = threads > 0 ? threads : default_thread_count();
  MachineInfo m = machine_info();
  const auto all = all_backends();
  const auto opponent = crossover_opponent(all);

  std::vector<std::string> warnings;
  if (!refresh) {
    CacheLookup c = read_device_cache(m, threads);
    if (!c.warning.empty()) warnings.push_back(c.warning);
    if (c.report && cache_matches_build(*c.report, all, opponent)) {
      c.report->warnings = warnings;
      return *c.report;
    }
  }

  // Steps of the progress line: the peaks, the bandwidth (twice), each tier, the crossover, the
  // compute units of the stranded table.
  Progress progress("strand devices: measuring", double(5 + all.size()), "steps");
  const BusyMeter busy_meter;
  double worst_spread = 0;  // of the measurements below, for judge_busy
  DeviceReport r;
  r.machine = m;
  r.threads = threads;
  r.cache_path = device_cache_path();
  r.strand_version = STRAND_VERSION;
  r.measured_at = utc_now();
  r.quick = budget.quick;

  // The FP32 peak of 1 thread and of every thread count a tier below uses, measured.
  const int pool_threads = default_thread_count();
  const double fma_seconds = std::min(0.25, budget.seconds_per_measurement);
  std::map<int, double> peak_at;  // threads -> GFLOP/s
  auto peak_of = [&](int t) {
    if (!peak_at.count(t)) {
      double spread = 0;
      peak_at[t] = measure_fma_peak_gflops(t, fma_seconds, &spread);
      worst_spread = std::max(worst_spread, spread);
    }
    return peak_at[t];
  };
  r.peak_1thread_gflops = peak_of(1);
  std::string fpc_why;
  const double fpc = fp32_flops_per_cycle(m, &fpc_why);
  r.peak_detail = fmt::format("measured: an FMA loop ({} kernels) on every thread of a tier at once; 1 thread {:.1f} "
                              "GFLOP/s, {} threads {:.1f} GFLOP/s (the core design suggests {:g} FLOP/cycle: {})",
                              cpu::gemm_isa_name(cpu::gemm_best_isa()), r.peak_1thread_gflops, threads,
                              peak_of(threads), fpc, fpc_why);
  progress.add(1);

  // Memory bandwidth, all threads. The buffer is 4x the machine's L3 or 256 MiB: a 2x L3
  // buffer still reads partly from cache on some machines (victim caches, hypervisors).
  const size_t beyond_cache = std::max<size_t>(size_t(256) << 20, 4 * m.l3_bytes * size_t(l3_instances(m)));
  size_t bw_bytes = budget.bandwidth_bytes ? budget.bandwidth_bytes : beyond_cache;
  // Measured now and again after the tiers (on a shared or virtual machine the figure moves
  // from moment to moment): the higher is kept, both are reported.
  ReadBandwidthMeter meter(bw_bytes, threads);
  int runs = 0;
  const double bw_first = meter.measure(budget.seconds_per_measurement, &runs);
  const ReadBandwidthMeter::ReaderResult first_best = meter.best();
  worst_spread = std::max(worst_spread, first_best.spread);
  const auto bw_first_at = Clock::now();
  progress.add(1);

  if (pool_threads != threads)
    warnings.push_back(fmt::format("measured blas with {} threads, but the cpu tier's pool has {} (STRAND_THREADS)",
                                   threads, pool_threads));

  // Every tier compiled in, then the tiers this build has no code for.
  const size_t gemv_bytes = budget.gemv_weight_bytes ? budget.gemv_weight_bytes : beyond_cache;
  const int64_t side = std::max<int64_t>(64, int64_t(std::sqrt(double(gemv_bytes) / 4.0)) / 64 * 64);
  std::unique_ptr<MatmulBench> gemv;  // made when the first usable tier needs it
  for (const auto& b : all) {
    TierPeak tp;
    tp.tier = b->name();
    const Verdict v = b->probe();
    tp.usable = v.ok;
    tp.why = v.reason;
    if (v.ok && b->host_memory()) {
      tp.threads = tier_threads(tp.tier, tp.tier == "blas" || tp.tier == "naive" ? threads : pool_threads);
      tp.peak_gflops = peak_of(tp.threads);
    }
    if (v.ok && b->host_memory()) {
      // blas is measured without its crossover (which would decline small probes).
      std::shared_ptr<Backend> t =
          tp.tier == "blas" ? std::shared_ptr<Backend>(make_blas_backend(BlasOptions{BlasCrossover{0, false, "probe"}, threads})) : b;
      measure_gemm(*t, budget, tp);
      if (!gemv) gemv = std::make_unique<MatmulBench>(1, side, side);
      measure_gemv(*t, budget, *gemv, tp);
      // OpenBLAS's workers spin after a call: let them park before the next tier is timed.
      if (tp.tier == "blas") std::this_thread::sleep_for(std::chrono::milliseconds(150));
    } else if (v.ok) {
      measure_device_tier(budget.quick, tp);  // a GPU: its own ceilings (devices/gpu.h)
    }
    r.tiers.push_back(tp);
    progress.add(1);
  }
  for (const char* name : kUnbuiltTiers) {
    if (std::any_of(all.begin(), all.end(), [&](const auto& b) { return b->name() == name; })) continue;
    TierPeak tp;
    tp.tier = name;
    tp.usable = false;
    tp.why = not_built_reason(name);
    r.tiers.push_back(tp);
  }

  measure_crossover(opponent, threads, budget, r);
  progress.add(1);
  measure_compute_units(all, budget, r);  // the stranded table (devices/stranded.h)
  progress.add(1);

  int runs2 = 0;
  const double apart = seconds_since(bw_first_at);
  const double bw_second = meter.measure(budget.seconds_per_measurement, &runs2);
  const ReadBandwidthMeter::ReaderResult second_best = meter.best();
  progress.add(1);
  progress.finish();
  r.bandwidth_gbs = std::max(bw_first, bw_second);
  r.bandwidth_reader = bw_first >= bw_second ? first_best.name : second_best.name;
  std::string readers;
  for (const auto& x : meter.last()) readers += fmt::format("{}{} {:.1f}", readers.empty() ? "" : ", ", x.name, x.gbs);
  r.bandwidth_detail = fmt::format(
      "the best of {} readers on a {} MiB buffer, {} thread{}: {:.1f} GB/s ({}), then {:.1f} GB/s ({}) {:.0f} s later; "
      "{} runs in all; last round: {}{}",
      meter.last().size(), bw_bytes >> 20, threads, threads == 1 ? "" : "s", bw_first, first_best.name, bw_second,
      second_best.name, apart, runs + runs2, readers,
      m.l3_bytes && bw_bytes < 2 * m.l3_bytes ? "; it fits in cache: not a memory figure" : "");

  // A tier above its bound means the bound is wrong, not that the tier beat the hardware.
  for (const TierPeak& t : r.tiers) {
    if (!t.device.empty()) continue;  // a GPU: its own memory and ceilings (devices/gpu.h)
    if (t.measured_bandwidth_gbs > r.bandwidth_gbs && r.bandwidth_gbs > 0 && !budget.quick)
      warnings.push_back(fmt::format("the {} tier's GEMV read {:.1f} GB/s, above the memory bound of {:.1f} GB/s: the "
                                     "bound is too low (a strand bug: its readers should reach what its kernels do)",
                                     t.tier, t.measured_bandwidth_gbs, r.bandwidth_gbs));
    if (t.measured_gflops > t.peak_gflops * 1.02 && t.peak_gflops > 0 && !budget.quick)
      warnings.push_back(fmt::format("the {} tier's GEMM reached {:.1f} GFLOP/s, above its measured peak of {:.1f}: "
                                     "the peak is too low (a strand bug)",
                                     t.tier, t.measured_gflops, t.peak_gflops));
  }

  BusyVerdict bv = judge_busy(busy_meter.others_share(), worst_spread);
  if (budget.assume_quiet) bv = *budget.assume_quiet ? BusyVerdict{} : BusyVerdict{true, "taken as busy (a test)"};
  r.busy = bv.busy;
  r.busy_detail = bv.why;
  if (!budget.quick && !r.busy) {
    if (std::string w = write_device_cache(r); !w.empty()) warnings.push_back(w);
  }
  r.warnings = warnings;
  return r;
}

}  // namespace strand
