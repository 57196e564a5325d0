// Device residency, proven on the CPU with a fake device (tests/fake_device.h): values live in
// the memory of the tier that made them, the runtime performs exactly the copies the planner
// counts, values cross both ways unchanged, a node the device declines falls back to a host
// tier with its copies shown in --explain, and a host tier never receives a device pointer.
#include <gtest/gtest.h>

#include <cstring>

#include "backends/naive/naive.h"
#include "core/error.h"
#include "core/rng.h"
#include "fake_device.h"
#include "model/gpt2.h"
#include "model/weight_cast.h"
#include "planner/planner.h"
#include "runtime/runtime.h"
#include "validate/opcheck.h"

using namespace strand;
using strand::testing::FakeDevice;
using strand::testing::HostGuard;

namespace {

const std::string kModel = std::string(STRAND_SOURCE_DIR) + "/tests/fixtures/gpt2/tiny-f32";
const std::vector<int32_t> kPrompt = {5, 262, 40, 299, 1, 17, 200};

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

int count_weights(const Graph& g) {
  int n = 0;
  for (const Value& v : g.values()) n += v.kind == ValueKind::Weight;
  return n;
}

}  // namespace

TEST(DeviceResidency, AWholeModelOnTheDeviceCopiesOnlyIdsInAndLogitsOut) {
  const Gpt2Model model = Gpt2Model::load(kModel);
  auto dev = std::make_shared<FakeDevice>();
  Gpt2Runner on_dev(model, {dev, make_naive_backend()}, {false, true});
  Gpt2Runner plain(model, {make_naive_backend()});
  // The weights went up at construction, once each (the tied wte/lm_head is one tensor).
  const int uploads = dev->uploads;
  EXPECT_GT(uploads, 0);
  EXPECT_EQ(dev->copies_in, 0);

  KvCache a = on_dev.new_cache(), b = plain.new_cache();
  for (const Tensor& t : a.k) EXPECT_TRUE(dev->holds(t)) << "the KV cache must live on the device";
  for (const Tensor& t : b.k) EXPECT_EQ(memory_of(t), nullptr);

  Tensor x = on_dev.forward(kPrompt, a, true), y = plain.forward(kPrompt, b, true);
  EXPECT_EQ(memory_of(x), nullptr) << "logits come back to the host";
  EXPECT_TRUE(same_bytes(x, y)) << "the fake device runs the naive loops: results must be identical";

  const Plan& plan = on_dev.last_plan();
  EXPECT_EQ(plan.segments.size(), 1u) << "the whole forward is one segment";
  EXPECT_EQ(plan.copies, 3) << plan.explain(on_dev.last_graph());  // ids, positions in; logits out
  EXPECT_EQ(on_dev.last_stats().copies, plan.copies);
  EXPECT_EQ(dev->copies_in, 2);
  EXPECT_EQ(dev->copies_out, 1);
  EXPECT_EQ(plan.resident_weights, count_weights(on_dev.last_graph()));
  EXPECT_EQ(dev->uploads, uploads) << "no weight is uploaded twice";

  // Decode steps on the device-resident cache: the same three copies each, the same logits.
  for (int step = 0; step < 4; ++step) {
    const int32_t id[1] = {int32_t(30 + step)};
    const int in0 = dev->copies_in, out0 = dev->copies_out;
    x = on_dev.forward(id, a, false);
    y = plain.forward(id, b, false);
    EXPECT_TRUE(same_bytes(x, y)) << "step " << step;
    EXPECT_EQ(on_dev.last_plan().copies, 3);
    EXPECT_EQ(on_dev.last_stats().copies, 3);
    EXPECT_EQ(dev->copies_in - in0, 2);
    EXPECT_EQ(dev->copies_out - out0, 1);
  }
  EXPECT_EQ(dev->uploads, uploads);

  const std::string text = on_dev.last_plan().explain(on_dev.last_graph());
  for (const char* s : {"copies: 3", "ids", "positions", "lm_head", "host -> fakedev", "fakedev -> host",
                        "weights resident on fakedev"})
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
}

TEST(DeviceResidency, ADeclinedNodeFallsBackToAHostTierWithItsCopiesShown) {
  const Gpt2Model model = Gpt2Model::load(kModel);
  const int layers = model.config.n_layer;
  auto dev = std::make_shared<FakeDevice>(std::set<OpKind>{OpKind::Attention});
  auto guard = std::make_shared<HostGuard>();
  Gpt2Runner mixed(model, {dev, guard}, {false, true});
  Gpt2Runner plain(model, {make_naive_backend()});
  KvCache a = mixed.new_cache(), b = plain.new_cache();
  for (int step = 0; step < 3; ++step) {
    const std::vector<int32_t> ids = step == 0 ? kPrompt : std::vector<int32_t>{int32_t(7 * step)};
    const int in0 = dev->copies_in, out0 = dev->copies_out;
    const Tensor x = mixed.forward(ids, a, step == 0), y = plain.forward(ids, b, step == 0);
    EXPECT_TRUE(same_bytes(x, y)) << "step " << step;
    const Plan& plan = mixed.last_plan();
    // Per layer: q, K and V (views of the device cache) come to the host for attention, its
    // output goes back; plus ids and positions in, logits out.
    EXPECT_EQ(plan.copies, 3 + 4 * layers) << plan.explain(mixed.last_graph());
    EXPECT_EQ(mixed.last_stats().copies, plan.copies);
    EXPECT_EQ(dev->copies_in - in0, 2 + layers);
    EXPECT_EQ(dev->copies_out - out0, 1 + 3 * layers);
    EXPECT_EQ(plan.segments.size(), size_t(2 * layers + 1));
  }
  EXPECT_GT(guard->runs, 0);  // the host tier ran, and never saw a device pointer (it throws)

  const std::string text = mixed.last_plan().explain(mixed.last_graph());
  for (const char* s : {"fakedev declined (declines attention on purpose) -> hostguard", "h.0.attn.q",
                        "h.1.attn.k_store", "fakedev -> host", "host -> fakedev", "before node"})
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
  const nlohmann::json j = mixed.last_plan().to_json(mixed.last_graph());
  EXPECT_EQ(j["copies"].get<int>(), 3 + 4 * layers);
  EXPECT_EQ(j["transfers"].size(), size_t(3 + 4 * layers + j["resident_weights"].get<int>()));
}

TEST(DeviceResidency, HostTiersRefuseDevicePointersAndTheDeviceRefusesHostOnes) {
  // The guard itself: a device tensor handed to it is an error (so the test above means something).
  auto dev = std::make_shared<FakeDevice>();
  HostGuard guard;
  Graph g;
  const ValueId x = g.input("x", {3, 5}, DType::F32);
  Attrs a;
  a.scale = 3.0;
  const ValueId y = g.add(OpKind::Scale, {x}, a, "thrice");
  g.mark_output(y);
  std::vector<Tensor> vals(g.values().size());
  vals[size_t(x)] = dev->allocate({3, 5}, DType::F32);
  vals[size_t(y)] = Tensor::empty({3, 5}, DType::F32);
  const NodeId n = 0;
  EXPECT_THROW(guard.run(g, std::span<const NodeId>(&n, 1), vals), Error);
  // And the device refuses host memory.
  vals[size_t(x)] = Tensor::empty({3, 5}, DType::F32);
  vals[size_t(y)] = dev->allocate({3, 5}, DType::F32);
  EXPECT_THROW(dev->run(g, std::span<const NodeId>(&n, 1), vals), Error);
}

TEST(DeviceResidency, EveryOpCrossesBothWaysUnchanged) {
  // Every random op case (every op, every weight dtype, column-major weights, kv_store on a
  // state bound in host memory) run on the fake device with host inputs: the runtime copies the
  // inputs in, the outputs out, and the state back; the result must be the naive tier's.
  const uint64_t seed = 20261201;
  auto dev = std::make_shared<FakeDevice>();
  int ran = 0;
  for (const OpCase& c : random_op_cases(seed, 3)) {
    const OpCheck k = check_op(c, dev, seed);
    EXPECT_TRUE(k.supported) << c.label;
    EXPECT_TRUE(k.pass) << c.label << " (seed " << seed << "): err " << k.err << " tol " << k.tolerance << " "
                        << k.reason;
    EXPECT_EQ(k.err, k.naive_err) << c.label << ": the fake device runs the naive loops";
    ++ran;
  }
  EXPECT_GT(ran, 40);
}

TEST(DeviceResidency, AStateWrittenInPlaceOffItsHomeIsCopiedBack) {
  // kv_store on the device with the cache bound in host memory: the cache goes in, is written
  // there, and comes back; the host cache holds the new rows afterwards.
  auto dev = std::make_shared<FakeDevice>();
  Graph g;
  const ValueId cache = g.state("cache", {6, 4}, DType::F32);
  const ValueId rows = g.input("rows", {2, 4}, DType::F32);
  Attrs a;
  a.past = 3;
  const ValueId out = g.add(OpKind::KvStore, {cache, rows}, a, "store");
  g.mark_output(out);
  std::vector<Tensor> vals(g.values().size());
  vals[size_t(cache)] = Tensor::empty({6, 4}, DType::F32);
  vals[size_t(rows)] = Tensor::empty({2, 4}, DType::F32);
  for (int i = 0; i < 24; ++i) vals[size_t(cache)].ptr<float>()[i] = float(i);
  for (int i = 0; i < 8; ++i) vals[size_t(rows)].ptr<float>()[i] = float(100 + i);
  const Plan plan = make_plan(g, {dev}, false, &vals);
  EXPECT_EQ(plan.copies, 4);  // cache in, rows in, the output view out, the cache back
  const RunStats st = execute(g, plan, vals);
  EXPECT_EQ(st.copies, plan.copies);
  const float* c = vals[size_t(cache)].ptr<const float>();
  for (int i = 0; i < 24; ++i) EXPECT_EQ(c[i], i >= 12 && i < 20 ? float(100 + i - 12) : float(i)) << i;
  EXPECT_EQ(memory_of(vals[size_t(out)]), nullptr);
  EXPECT_EQ(vals[size_t(out)].dim(0), 5);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(vals[size_t(out)].ptr<const float>()[i], c[i]) << i;
}

TEST(DeviceResidency, AValueBoundInAMemoryTheChainCannotReadIsAnError) {
  auto dev = std::make_shared<FakeDevice>();
  Graph g;
  const ValueId x = g.input("x", {2, 3}, DType::F32);
  const ValueId y = g.add(OpKind::Softmax, {x}, {}, "softmax");
  g.mark_output(y);
  std::vector<Tensor> vals(g.values().size());
  vals[size_t(x)] = dev->allocate({2, 3}, DType::F32);
  try {
    make_plan(g, {make_naive_backend()}, false, &vals);
    FAIL() << "a device tensor was accepted by a host-only chain";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("memory of the fakedev tier, which is not in the chain"), std::string::npos)
        << e.what();
  }
}

TEST(DeviceResidency, NodeByNodeTimingMakesTheSameCopies) {
  // bench model --profile hands the tiers one node at a time: the same transfers, the same logits.
  const Gpt2Model model = Gpt2Model::load(kModel);
  auto dev = std::make_shared<FakeDevice>(std::set<OpKind>{OpKind::Softmax, OpKind::Attention});
  RunnerOptions timed;
  timed.time_nodes = true;
  Gpt2Runner a(model, {dev, make_naive_backend()}, timed);
  Gpt2Runner b(model, {make_naive_backend()});
  KvCache ca = a.new_cache(), cb = b.new_cache();
  const Tensor x = a.forward(kPrompt, ca, true), y = b.forward(kPrompt, cb, true);
  EXPECT_TRUE(same_bytes(x, y));
  EXPECT_EQ(a.last_stats().node_seconds.size(), a.last_graph().nodes().size());
  EXPECT_EQ(a.last_stats().copies, a.last_plan().copies);
  EXPECT_GT(a.last_plan().copies, 3);
  EXPECT_FALSE(a.node_times().by_kind.empty());
}

TEST(DeviceResidency, WeightsChangedBetweenRunsReachTheDeviceWhenTheRunSaysSo) {
  // A product with a weight, with and without a loss behind it. Weights are resident by
  // default (uploaded once); an optimizer changes them in place, so a training step (a graph
  // with a loss) or a run with Weights::Fresh must read the new bytes, not the first copy.
  for (const bool with_loss : {false, true}) {
    SCOPED_TRACE(with_loss ? "graph with a loss" : "graph without a loss");
    Graph g;
    const ValueId x = g.input("x", {2, 3}, DType::F32);
    const ValueId w = g.weight("w", {3, 4}, DType::F32);
    const ValueId y = g.add(OpKind::MatMul, {x, w}, {}, "y");
    ValueId out = y;
    ValueId targets = -1;
    if (with_loss) {
      targets = g.input("targets", {2}, DType::I32);
      out = g.add(OpKind::CrossEntropy, {y, targets}, {}, "loss");
    }
    g.mark_output(out);
    auto dev = std::make_shared<FakeDevice>();
    const Plan plan = make_plan(g, {dev}, true);
    Tensor wt = Tensor::empty({3, 4}, DType::F32);
    std::vector<Tensor> values(g.values().size());
    values[size_t(x)] = Tensor::empty({2, 3}, DType::F32);
    for (int i = 0; i < 6; ++i) values[size_t(x)].ptr<float>()[i] = 0.25f * float(i + 1);
    for (int i = 0; i < 12; ++i) wt.ptr<float>()[i] = 0.1f * float(i % 5) - 0.2f;
    values[size_t(w)] = wt;
    if (with_loss) {
      values[size_t(targets)] = Tensor::empty({2}, DType::I32);
      values[size_t(targets)].ptr<int32_t>()[0] = 1;
      values[size_t(targets)].ptr<int32_t>()[1] = 3;
    }
    auto naive_result = [&] {
      std::vector<Tensor> v = values;
      execute_on(g, std::shared_ptr<Backend>(make_naive_backend()), v);
      return v[size_t(out)].to(DType::F32);
    };
    execute(g, plan, values);
    const Tensor first = values[size_t(out)].to(DType::F32);
    EXPECT_TRUE(same_bytes(first, naive_result()));
    for (int i = 0; i < 12; ++i) wt.ptr<float>()[i] *= -1.5f;  // the optimizer's step, in place
    const Tensor moved = naive_result();
    ASSERT_FALSE(same_bytes(first, moved)) << "the change does not move the result: the check is void";

    const int uploads = dev->uploads, copies = dev->copies_in;
    execute(g, plan, values);
    if (with_loss) {
      EXPECT_TRUE(same_bytes(values[size_t(out)].to(DType::F32), moved)) << "the device computed on a stale weight";
      EXPECT_EQ(dev->uploads, uploads);
      EXPECT_GT(dev->copies_in, copies) << "the weight was not copied in again";
    } else {
      // The resident copy is used as the contract says (weights do not change while bound)...
      EXPECT_EQ(dev->uploads, uploads);
      EXPECT_TRUE(same_bytes(values[size_t(out)].to(DType::F32), first));
      // ...unless the run says they changed.
      RunOptions ro;
      ro.weights = RunOptions::Weights::Fresh;
      execute(g, plan, values, ro);
      EXPECT_TRUE(same_bytes(values[size_t(out)].to(DType::F32), moved)) << "Weights::Fresh ignored";
      EXPECT_GT(dev->copies_in, copies + 1);
    }
  }
}
