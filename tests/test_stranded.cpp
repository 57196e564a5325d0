// The stranded table of `strand devices` (devices/stranded.h): every compute unit found with its
// measured peak, the best a tier reaches on it and the share left idle; the row-crossover rule
// the amx tier's threshold comes from, and its measurement on real tiers; the JSON round trip.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "backends/amx/amx.h"
#include "backends/cpu/cpu.h"
#include "backends/naive/naive.h"
#include "cli_util.h"
#include "core/cpu_features.h"
#include "devices/probe.h"
#include "devices/stranded.h"

using namespace strand;
using json = nlohmann::json;
using strand::cli_test::run_strand;
using strand::cli_test::TempCacheDir;

namespace {

const ComputeUnit* find_unit(const DeviceReport& r, const std::string& prefix) {
  for (const ComputeUnit& u : r.units)
    if (u.name.rfind(prefix, 0) == 0) return &u;
  return nullptr;
}

RowCrossoverPoint pt(long long m, double tier, double other) { return {m, 768, 768, tier, other}; }

// A tier that runs nothing.
class OneDecliner final : public Backend {
 public:
  std::string name() const override { return "decliner"; }
  std::string description() const override { return "test tier: declines everything"; }
  Verdict probe() const override { return Verdict::yes(); }
  Verdict supports(const Graph&, const Node&) const override { return Verdict::no("test"); }
  void run(const Graph&, std::span<const NodeId>, std::vector<Tensor>&) override {}
};

}  // namespace

TEST(Stranded, RowCrossoverFromPoints) {
  EXPECT_EQ(crossover_rows_from_points({}), -1);
  // The tier wins from 16 rows on.
  EXPECT_EQ(crossover_rows_from_points({pt(1, 2.0, 1.0), pt(8, 2.0, 1.5), pt(16, 1.0, 2.0), pt(64, 1.0, 4.0)}), 16);
  // It never wins: never.
  EXPECT_EQ(crossover_rows_from_points({pt(1, 2.0, 1.0), pt(64, 3.0, 2.0)}), kNeverRows);
  // A near tie (within 5%) stays below.
  EXPECT_EQ(crossover_rows_from_points({pt(1, 1.0, 1.02), pt(32, 1.0, 3.0)}), 32);
  // One noisy small point does not pull the threshold down.
  EXPECT_EQ(crossover_rows_from_points({pt(1, 2.0, 1.0), pt(2, 0.9, 1.0), pt(4, 2.0, 1.0), pt(8, 2.0, 1.0), pt(16, 1.0, 2.0),
                                        pt(32, 1.0, 2.0)}),
            16);
}

TEST(Stranded, RowCrossoverMeasuredOnRealTiers) {
  // The measurement on two real tiers: every product both take is timed on both, and the
  // threshold is the rule's on those points (which tier wins is timing, not asserted here).
  const auto cpu = make_cpu_backend();
  const auto naive = make_naive_backend();
  for (DType w : {DType::F32, DType::BF16, DType::Q8}) {
    const RowCrossover rc = measure_row_crossover(*cpu, *naive, w, {1, 8, 32}, {{64, 48}, {32, 40}}, 0.001);
    EXPECT_EQ(rc.tier, "cpu");
    EXPECT_EQ(rc.vs, "naive");
    EXPECT_EQ(rc.path, w == DType::Q8 ? "int8" : w == DType::F32 ? "bf16" : "bf16-w16");
    ASSERT_EQ(rc.points.size(), 6u);
    for (const auto& p : rc.points) {
      EXPECT_GT(p.tier_seconds, 0);
      EXPECT_GT(p.other_seconds, 0);
      EXPECT_TRUE(p.m == 1 || p.m == 8 || p.m == 32);
    }
    EXPECT_EQ(rc.rows, crossover_rows_from_points(rc.points));
    EXPECT_FALSE(rc.note.empty());
  }
  // A tier that declines every product measured: no points, not measured.
  OneDecliner decl;
  const RowCrossover none = measure_row_crossover(decl, *cpu, DType::F32, {1, 8}, {{64, 48}}, 0.001);
  EXPECT_TRUE(none.points.empty());
  EXPECT_EQ(none.rows, -1);
  EXPECT_NE(none.note.find("declined every product"), std::string::npos) << none.note;
}

TEST(Stranded, QuickProbeListsEveryUnitFound) {
  TempCacheDir cache;
  const DeviceReport r = probe_devices(true, 2, quick_probe_budget());
  const ComputeUnit* fma = find_unit(r, "FP32 FMA lanes");
  ASSERT_NE(fma, nullptr) << stranded_table(r);
  EXPECT_GT(fma->peak, 0);
  EXPECT_FALSE(fma->best_tier.empty());
  EXPECT_GT(fma->best, 0);
  EXPECT_EQ(fma->stranded(), std::max(0.0, 1.0 - fma->best / fma->peak));
  const CpuFeatures& f = cpu_features();
  const ComputeUnit* bf16 = find_unit(r, "AVX-512-BF16");
  if (f.avx512_bf16) {
    ASSERT_NE(bf16, nullptr) << stranded_table(r);
    EXPECT_GT(bf16->peak, 0);
    if (avx512bf16_status().usable) {  // the avx512bf16 tier computes on it
      EXPECT_EQ(bf16->best_tier, "avx512bf16");
      EXPECT_GT(bf16->best, 0);
      // Its crossovers against the cpu tier: f32 weights, and f16/bf16 weights.
      std::vector<std::string> paths;
      for (const RowCrossover& x : r.row_crossovers)
        if (x.tier == "avx512bf16") paths.push_back(x.path);
      EXPECT_EQ(paths, (std::vector<std::string>{"bf16", "bf16-w16"}));
    } else {  // no tier uses it: 100% stranded, not missing
      EXPECT_EQ(bf16->best, 0);
      EXPECT_EQ(bf16->stranded(), 1.0);
    }
  } else {
    EXPECT_EQ(bf16, nullptr);
  }
  const std::string table = stranded_table(r);
  const AmxStatus amx = amx_status();
  if (!amx.usable) {
    EXPECT_NE(table.find("not found: AMX (" + amx.reason + ")"), std::string::npos) << table;
    EXPECT_EQ(find_unit(r, "AMX"), nullptr);
    for (const RowCrossover& x : r.row_crossovers) EXPECT_NE(x.tier, "amx");
  } else {
    const ComputeUnit* tiles = find_unit(r, "AMX tiles, bf16");
    ASSERT_NE(tiles, nullptr) << table;
    EXPECT_GT(tiles->peak, fma->peak);
    EXPECT_EQ(std::count_if(r.row_crossovers.begin(), r.row_crossovers.end(), [](const auto& x) { return x.tier == "amx"; }), 3);
  }
  EXPECT_NE(table.find("of this machine's floating-point matrix throughput is stranded"), std::string::npos) << table;
  // JSON round trip.
  const DeviceReport back = report_from_json(json::parse(to_json(r).dump()));
  ASSERT_EQ(back.units.size(), r.units.size());
  for (size_t i = 0; i < r.units.size(); ++i) {
    EXPECT_EQ(back.units[i].name, r.units[i].name);
    EXPECT_EQ(back.units[i].peak, r.units[i].peak);
    EXPECT_EQ(back.units[i].best, r.units[i].best);
  }
  EXPECT_EQ(back.units_absent, r.units_absent);
}

TEST(Stranded, RowCrossoversSurviveTheJsonRoundTrip) {
  DeviceReport r;
  r.machine = machine_info();
  for (long long rows : {-1ll, kNeverRows, 24ll}) {
    RowCrossover c;
    c.tier = "amx";
    c.path = "int8";
    c.vs = "cpu";
    c.rows = rows;
    c.points = {pt(1, 1e-3, 2e-3)};
    r.row_crossovers = {c};
    const DeviceReport back = report_from_json(json::parse(to_json(r).dump()));
    ASSERT_EQ(back.row_crossovers.size(), 1u);
    EXPECT_EQ(back.row_crossovers[0].rows, rows);
    EXPECT_EQ(back.row_crossovers[0].points.size(), 1u);
  }
}

TEST(StrandedCli, DevicesEndsWithTheStrandedTable) {
  TempCacheDir cache;
  const auto r = run_strand({"devices", "--quick"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("stranded: every compute unit found here"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FP32 FMA lanes"), std::string::npos);
  const auto j = run_strand({"devices", "--quick", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.describe();
  const json v = json::parse(j.out);
  EXPECT_TRUE(v.contains("units"));
  EXPECT_GE(v["units"].size(), 1u);
}
