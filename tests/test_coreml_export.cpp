// Core ML export: the package strand writes is read back by an independent reader
// (tests/coreml_reader/reader.h: its own protobuf decoder and interpreter), whose logits must
// match strand's engine within fp16 tolerance for prefill and for KV-cache decode steps; the
// weight file's blob layout, the metadata, the ANE placement rules and the coreml tier in the
// planner's fallback chain are checked too.
//
// fp16 tolerance: the error of the reader's logits against the float64 reference must be at
// most twice the error of an fp16 run of the same math in strand's engine (every primitive op
// rounded to fp16, fp16 weights), never a guessed absolute number.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "backends/coreml/coreml.h"
#include "backends/naive/naive.h"
#include "backends/registry.h"
#include "cli_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "coreml_reader/reader.h"
#include "export/coreml/ane_rules.h"
#include "export/coreml/gpt2_export.h"
#include "export/coreml/segment.h"
#include "model/gpt2.h"
#include "model/weight_cast.h"
#include "planner/planner.h"
#include "reference/execute.h"

using namespace strand;
namespace fs = std::filesystem;
namespace rd = coreml_reader;
using cli_test::ScratchDir;

namespace {

const std::string kFixtures = std::string(STRAND_SOURCE_DIR) + "/tests/fixtures/gpt2/";

void round_to_f16(Tensor& t) {
  float* p = t.ptr<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = f16_to_f32(f32_to_f16(p[i]));
}

// An fp16 run of strand's own graph: every primitive op in f32, its output rounded to fp16;
// fused ops are run through their decomposition so that each primitive rounds.
class F16Emulation final : public Backend {
 public:
  std::string name() const override { return "f16-emulation"; }
  std::string description() const override { return "f32 loops rounding every op's output to fp16"; }
  Verdict probe() const override { return Verdict::yes(); }
  Verdict supports(const Graph&, const Node&) const override { return Verdict::yes(); }
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    for (NodeId id : nodes) {
      const Node& nd = g.node(id);
      if (!op_info(nd.op).fused) {
        execute_node<float>(g, nd, values);
        round_to_f16(values[size_t(nd.output)]);
        continue;
      }
      Graph sub;
      std::vector<ValueId> ins;
      for (size_t i = 0; i < nd.inputs.size(); ++i) {
        const Value& v = g.value(nd.inputs[i]);
        ins.push_back(sub.input("in" + std::to_string(i), v.shape, v.dtype));
      }
      sub.mark_output(sub.add(nd.op, ins, nd.attrs, nd.name));
      const Graph d = sub.decomposed();
      std::vector<Tensor> sv(d.values().size());
      for (size_t i = 0; i < ins.size(); ++i) sv[size_t(ins[i])] = values[size_t(nd.inputs[i])];
      for (const Node& pn : d.nodes()) {
        sv[size_t(pn.output)] = Tensor::empty(d.value(pn.output).shape, DType::F32);
        execute_node<float>(d, pn, sv);
        round_to_f16(sv[size_t(pn.output)]);
      }
      const Tensor& r = sv[size_t(d.outputs().at(0))];
      Tensor& out = values[size_t(nd.output)];
      for (int64_t i = 0; i < r.numel(); ++i) out.ptr<float>()[i] = r.ptr<float>()[i];
    }
  }
};

// The model with every weight rounded to fp16 (what the package stores).
Gpt2Model f16_weights(const Gpt2Model& m) {
  Gpt2Model r = m;
  Gpt2Weights& w = r.weights;
  auto h = [](Tensor& t) { t = t.to(DType::F16); };
  h(w.wte);
  h(w.wpe);
  for (Gpt2Layer& l : w.layers)
    for (Tensor* t : {&l.ln_1_w, &l.ln_1_b, &l.attn_w, &l.attn_b, &l.attn_proj_w, &l.attn_proj_b, &l.ln_2_w, &l.ln_2_b,
                      &l.fc_w, &l.fc_b, &l.fc_proj_w, &l.fc_proj_b})
      h(*t);
  h(w.ln_f_w);
  h(w.ln_f_b);
  if (w.tied) w.lm_head = w.wte;
  else h(w.lm_head);
  w.dtype = DType::F16;
  return r;
}

// max |a - b| / max |b| over equally long row-major [rows, V] arrays.
double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    scale = std::max(scale, std::abs(b[i]));
    err = std::max(err, std::abs(a[i] - b[i]));
  }
  return err / scale;
}

std::vector<double> rows_of(const Tensor& t, int64_t nrows) {
  std::vector<double> r(size_t(nrows * t.dim(1)));
  for (size_t i = 0; i < r.size(); ++i) r[i] = load_as_double(t, int64_t(i));
  return r;
}

rd::Value ints(std::vector<int64_t> shape, std::vector<int32_t> v) {
  rd::Value x;
  x.type = {rd::kInt32, std::move(shape)};
  x.i = std::move(v);
  return x;
}

rd::Value halfs(std::vector<int64_t> shape, std::vector<float> v) {
  rd::Value x;
  x.type = {rd::kFp16, std::move(shape)};
  x.f = std::move(v);
  return x;
}

// The documented mask: key j is [cache slot j < N, then new token j - N]; query t (position
// pos0 + t) sees cache slots below pos0 and new tokens up to itself.
rd::Value mask(int64_t T, int64_t N, int64_t pos0) {
  std::vector<float> m(size_t(T * (N + T)), coreml::kMaskedValue);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < N + T; ++j)
      if ((j < N && j < pos0) || (j >= N && j - N <= t)) m[size_t(t * (N + T) + j)] = 0.0f;
  return halfs({1, 1, T, N + T}, m);
}

// Logits of a run, [T, V] row-major, from the chunks logits_i (1, Vi, 1, T).
std::vector<double> reader_logits(const std::map<std::string, rd::Value>& out, int64_t T, int64_t rows) {
  std::vector<const rd::Value*> chunks;
  for (int i = 0; out.count("logits_" + std::to_string(i)); ++i) chunks.push_back(&out.at("logits_" + std::to_string(i)));
  int64_t V = 0;
  for (const rd::Value* c : chunks) V += c->type.shape[1];
  std::vector<double> r(size_t(rows * V));
  int64_t off = 0;
  for (const rd::Value* c : chunks) {
    const int64_t n = c->type.shape[1];
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t j = 0; j < n; ++j) r[size_t(t * V + off + j)] = c->f[size_t(j * T + t)];
    off += n;
  }
  return r;
}

std::vector<int32_t> random_ids(uint64_t seed, size_t n, int32_t V) {
  Rng rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = int32_t(rng.below(uint64_t(V)));
  return ids;
}

uint64_t test_seed() {
  const char* s = std::getenv("STRAND_SEED");
  return s ? std::strtoull(s, nullptr, 10) : 20240611ull;
}

// A random GPT-2 directory (HF layout) written to `dir` and loaded back.
Gpt2Model random_model_dir(const fs::path& dir, int vocab, const std::string& act, bool tied, uint64_t seed) {
  Gpt2Config cfg;
  cfg.n_layer = 2;
  cfg.n_embd = 32;
  cfg.n_head = 2;
  cfg.n_positions = 16;
  cfg.vocab_size = vocab;
  cfg.n_inner = 64;
  cfg.activation_function = act;
  cfg.tie_word_embeddings = tied;
  cfg.validate("test");
  fs::create_directories(dir);
  save_gpt2_dir(dir.string(), cfg, random_gpt2_weights(cfg, seed, DType::F32));
  return Gpt2Model::load(dir.string());
}

struct Errors {
  double reader = 0, f16 = 0;
};

// Prefill `prompt` (padded to S) then decode `steps` tokens, through the packages (read back by
// the reader) and through strand's engine (float64 reference and the fp16 emulation).
Errors prefill_then_decode(const Gpt2Model& model, const std::vector<int32_t>& prompt, int64_t S, int64_t N,
                           const std::vector<int32_t>& steps, const ScratchDir& dir) {
  const Gpt2Config& cfg = model.config;
  const int64_t C = cfg.n_embd, L = cfg.n_layer, P0 = int64_t(prompt.size());
  coreml::ExportOptions po;
  po.seq = S;
  coreml::export_gpt2_coreml(model, (dir / "prefill.mlpackage").string(), po);
  const rd::Package pre = rd::Package::load((dir / "prefill.mlpackage").string());

  Gpt2Runner r64(model, {make_reference_backend()});
  KvCache c64 = r64.new_cache();
  const Gpt2Model m16 = f16_weights(model);
  Gpt2Runner r16(m16, {std::make_shared<F16Emulation>()});
  KvCache c16 = r16.new_cache();
  const Tensor want = r64.forward(prompt, c64, true);
  const Tensor emu = r16.forward(prompt, c16, true);

  std::vector<int32_t> ids(prompt);
  ids.resize(size_t(S), 0);  // padding after the prompt: masked from every real token
  std::vector<int32_t> pos(static_cast<size_t>(S));
  for (int64_t i = 0; i < S; ++i) pos[size_t(i)] = int32_t(i);
  std::map<std::string, rd::Value> in = {{"input_ids", ints({1, S}, ids)},
                                         {"position_ids", ints({1, S}, pos)},
                                         {"attn_mask", mask(S, 0, 0)}};
  const auto out = pre.run(in);
  Errors e;
  e.reader = rel_error(reader_logits(out, S, P0), rows_of(want, P0));
  e.f16 = rel_error(rows_of(emu, P0), rows_of(want, P0));

  // The keys and values the package returns are the engine's cache rows (same fp16 rule).
  for (int64_t l = 0; l < L; ++l)
    for (int kv = 0; kv < 2; ++kv) {
      std::vector<double> got, ref, emu16;
      const Tensor& c_ref = kv ? c64.v[size_t(l)] : c64.k[size_t(l)];
      const Tensor& c_emu = kv ? c16.v[size_t(l)] : c16.k[size_t(l)];
      const rd::Value& o = out.at((kv ? "new_v_" : "new_k_") + std::to_string(l));
      for (int64_t t = 0; t < P0; ++t)
        for (int64_t c = 0; c < C; ++c) {
          got.push_back(o.f[size_t(c * S + t)]);
          ref.push_back(load_as_double(c_ref, t * C + c));
          emu16.push_back(load_as_double(c_emu, t * C + c));
        }
      EXPECT_LE(rel_error(got, ref), 2 * rel_error(emu16, ref)) << "layer " << l << (kv ? " values" : " keys");
    }
  if (steps.empty()) return e;

  coreml::ExportOptions dopt;
  dopt.mode = "decode";
  dopt.seq = N;
  coreml::export_gpt2_coreml(model, (dir / "decode.mlpackage").string(), dopt);
  const rd::Package dec = rd::Package::load((dir / "decode.mlpackage").string());
  std::vector<std::vector<float>> kc(size_t(L), std::vector<float>(size_t(C * N), 0.0f)), vc = kc;
  auto store = [&](const std::map<std::string, rd::Value>& o, int64_t T, int64_t t, int64_t slot) {
    for (int64_t l = 0; l < L; ++l)
      for (int64_t c = 0; c < C; ++c) {
        kc[size_t(l)][size_t(c * N + slot)] = o.at("new_k_" + std::to_string(l)).f[size_t(c * T + t)];
        vc[size_t(l)][size_t(c * N + slot)] = o.at("new_v_" + std::to_string(l)).f[size_t(c * T + t)];
      }
  };
  for (int64_t t = 0; t < S; ++t) store(out, S, t, t);  // padded slots too: masked until overwritten
  for (size_t s = 0; s < steps.size(); ++s) {
    const int64_t p = P0 + int64_t(s);
    std::map<std::string, rd::Value> din = {{"input_ids", ints({1, 1}, {steps[s]})},
                                            {"position_ids", ints({1, 1}, {int32_t(p)})},
                                            {"attn_mask", mask(1, N, p)}};
    for (int64_t l = 0; l < L; ++l) {
      din["k_cache_" + std::to_string(l)] = halfs({1, C, 1, N}, kc[size_t(l)]);
      din["v_cache_" + std::to_string(l)] = halfs({1, C, 1, N}, vc[size_t(l)]);
    }
    const auto dout = dec.run(din);
    store(dout, 1, 0, p);
    const std::vector<int32_t> one = {steps[s]};
    const Tensor w64 = r64.forward(one, c64, false);
    const Tensor w16 = r16.forward(one, c16, false);
    e.reader = std::max(e.reader, rel_error(reader_logits(dout, 1, 1), rows_of(w64, 1)));
    e.f16 = std::max(e.f16, rel_error(rows_of(w16, 1), rows_of(w64, 1)));
  }
  return e;
}

class ExportFixture : public testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(ExportFixture, ReaderLogitsMatchTheEngineForPrefillAndDecode) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + GetParam());
  const uint64_t seed = test_seed();
  SCOPED_TRACE(testing::Message() << GetParam() << ", STRAND_SEED=" << seed);
  ScratchDir dir("coreml");
  const std::vector<int32_t> prompt = random_ids(seed, 5, model.config.vocab_size);
  const std::vector<int32_t> steps = random_ids(seed + 1, 4, model.config.vocab_size);
  const Errors e = prefill_then_decode(model, prompt, 8, 12, steps, dir);
  std::printf("[ %s ] logits error vs float64: reader %.3g, fp16 emulation %.3g\n", GetParam().c_str(), e.reader, e.f16);
  EXPECT_GT(e.reader, 0.0);  // it really ran in fp16
  EXPECT_LE(e.reader, 2 * e.f16);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ExportFixture, testing::Values("tiny-f32", "tiny-f16", "tiny-bf16", "tiny-gelu"));

TEST(CoremlExport, VocabularyAbove16384IsChunkedAndStillMatches) {
  ScratchDir dir("coreml");
  const uint64_t seed = test_seed();
  const Gpt2Model model = random_model_dir(dir / "model", 20000, "gelu_new", false, seed);
  const Errors e = prefill_then_decode(model, random_ids(seed, 4, 20000), 6, 10, random_ids(seed + 2, 3, 20000), dir);
  std::printf("[ vocab 20000 ] logits error vs float64: reader %.3g, fp16 emulation %.3g\n", e.reader, e.f16);
  EXPECT_LE(e.reader, 2 * e.f16);
  const rd::Package p = rd::Package::load((dir / "prefill.mlpackage").string());
  ASSERT_EQ(p.outputs.size(), 2u + 2 * 2);
  EXPECT_EQ(p.outputs[0].name, "logits_0");
  EXPECT_EQ(p.outputs[0].shape, (std::vector<int64_t>{1, 16384, 1, 6}));
  EXPECT_EQ(p.outputs[1].name, "logits_1");
  EXPECT_EQ(p.outputs[1].shape, (std::vector<int64_t>{1, 20000 - 16384, 1, 6}));
  EXPECT_EQ(p.metadata.at("strand.logits_chunks"), "16384,3616");
}

TEST(CoremlExport, OtherActivationsMatch) {
  const uint64_t seed = test_seed();
  for (const char* act : {"relu", "silu", "quick_gelu", "gelu_pytorch_tanh"}) {
    SCOPED_TRACE(act);
    ScratchDir dir("coreml");
    const Gpt2Model model = random_model_dir(dir / "model", 61, act, true, seed);
    const Errors e = prefill_then_decode(model, random_ids(seed, 6, 61), 6, 8, {}, dir);
    EXPECT_LE(e.reader, 2 * e.f16) << "fp16 emulation error " << e.f16;
  }
}

TEST(CoremlExport, ColumnMajorWeightsExportTheSameBlob) {
  // The coreml tier exports the weights the runner holds, which strand stores column-major:
  // the package must not depend on the storage layout.
  ScratchDir dir("coreml");
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  Gpt2Model cm = model;
  cm.weights = cast_gpt2_weights(model.weights, DType::F32, MatrixLayout::ColMajor);
  ASSERT_TRUE(cm.weights.layers[0].fc_w.col_major());
  const coreml::ExportResult a = coreml::export_gpt2_coreml(model, (dir / "rows.mlpackage").string(), {});
  const coreml::ExportResult b = coreml::export_gpt2_coreml(cm, (dir / "lines.mlpackage").string(), {});
  const std::string wa = cli_test::read_file(dir / "rows.mlpackage/Data/com.apple.CoreML/weights/weight.bin");
  const std::string wb = cli_test::read_file(dir / "lines.mlpackage/Data/com.apple.CoreML/weights/weight.bin");
  ASSERT_FALSE(wa.empty());
  EXPECT_TRUE(wa == wb);
  EXPECT_EQ(a.content_hash, b.content_hash);
}

TEST(CoremlExport, WeightBlobLayout) {
  ScratchDir dir("coreml");
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f16");
  const coreml::ExportResult r = coreml::export_gpt2_coreml(model, (dir / "m.mlpackage").string(), {});
  const std::string blob = cli_test::read_file(dir / "m.mlpackage/Data/com.apple.CoreML/weights/weight.bin");
  auto u32 = [&](size_t at) { uint32_t v; std::memcpy(&v, blob.data() + at, 4); return v; };
  auto u64 = [&](size_t at) { uint64_t v; std::memcpy(&v, blob.data() + at, 8); return v; };
  ASSERT_GE(blob.size(), 64u);
  EXPECT_EQ(u32(0), r.blobs);  // count
  EXPECT_EQ(u32(4), 2u);       // version
  size_t at = 64, n = 0;
  uint64_t data_bytes = 0;
  while (at < blob.size()) {
    ASSERT_EQ(at % 64, 0u) << "metadata alignment";
    EXPECT_EQ(u32(at), 0xDEADBEEFu);
    EXPECT_EQ(u32(at + 4), 1u);  // fp16
    const uint64_t size = u64(at + 8), off = u64(at + 16);
    EXPECT_EQ(off, at + 64);
    EXPECT_EQ(off % 64, 0u) << "data alignment";
    ASSERT_LE(off + size, blob.size());
    data_bytes += size;
    ++n;
    at = size_t((off + size + 63) / 64 * 64);
  }
  EXPECT_EQ(n, r.blobs);
  // Every fp16 weight const of 16 values or more is a blob; their bytes add up.
  const rd::Package p = rd::Package::load((dir / "m.mlpackage").string());
  uint64_t const_bytes = 0;
  size_t in_blob = 0;
  for (const rd::Op& op : p.ops)
    if (op.in_blob) {
      ++in_blob;
      const_bytes += uint64_t(op.val.numel()) * 2;
    }
  EXPECT_EQ(in_blob, n);
  EXPECT_EQ(const_bytes, data_bytes);
}

TEST(CoremlExport, EveryTensorExistsWithItsShapeAndDtype) {
  ScratchDir dir("coreml");
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  for (const char* mode : {"prefill", "decode"}) {
    SCOPED_TRACE(mode);
    coreml::ExportOptions o;
    o.mode = mode;
    o.seq = 9;
    const coreml::ExportResult r = coreml::export_gpt2_coreml(model, (dir / "m.mlpackage").string(), o);
    // load() checks definitions before use, identifiers and that the description matches the
    // function; run() checks the declared type of every op's output against what it computes.
    const rd::Package p = rd::Package::load((dir / "m.mlpackage").string());
    EXPECT_NO_THROW(p.run(p.dummy_inputs()));
    EXPECT_EQ(p.ops.size(), r.program.fn.ops.size());
    EXPECT_EQ(p.spec_version, 7);
    EXPECT_EQ(p.opset, "CoreML6");
    const int64_t T = std::string(mode) == "decode" ? 1 : 9, K = std::string(mode) == "decode" ? 10 : 9;
    ASSERT_GE(p.inputs.size(), 3u);
    EXPECT_EQ(p.inputs[0].name, "input_ids");
    EXPECT_EQ(p.inputs[0].shape, (std::vector<int64_t>{1, T}));
    EXPECT_EQ(p.inputs[0].array_dtype, 131104);  // INT32
    EXPECT_EQ(p.inputs[2].name, "attn_mask");
    EXPECT_EQ(p.inputs[2].shape, (std::vector<int64_t>{1, 1, T, K}));
    EXPECT_EQ(p.inputs[2].array_dtype, 65552);  // FLOAT16
    EXPECT_EQ(p.inputs.size(), std::string(mode) == "decode" ? 3u + 4u : 3u);
    for (const rd::Feature& f : p.outputs) EXPECT_EQ(f.array_dtype, 65552) << f.name;
    EXPECT_EQ(p.outputs[0].shape, (std::vector<int64_t>{1, 300, 1, T}));
    // Metadata: strand's version, the source model and the shapes.
    EXPECT_EQ(p.metadata.at("strand.version"), STRAND_VERSION);
    EXPECT_EQ(p.metadata.at("strand.source_model"), kFixtures + "tiny-f32");
    EXPECT_EQ(p.metadata.at("strand.mode"), mode);
    EXPECT_EQ(p.metadata.at("strand.n_layer"), "2");
    EXPECT_EQ(p.metadata.at("strand.n_embd"), "48");
    EXPECT_EQ(p.metadata.at("strand.tokens"), std::to_string(T));
    EXPECT_NE(p.author.find("strand"), std::string::npos);
  }
}

TEST(CoremlExport, ReaderRejectsDamagedPackages) {
  ScratchDir dir("coreml");
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-gelu");
  const fs::path pkg = dir / "m.mlpackage";
  coreml::export_gpt2_coreml(model, pkg.string(), {});
  const fs::path wfile = pkg / "Data/com.apple.CoreML/weights/weight.bin";
  const fs::path mfile = pkg / "Data/com.apple.CoreML/model.mlmodel";
  const std::string blob = cli_test::read_file(wfile), spec = cli_test::read_file(mfile);
  std::string bad = blob;
  bad[64] ^= 1;  // first blob's sentinel
  cli_test::write_file(wfile, bad);
  EXPECT_THROW(rd::Package::load(pkg.string()), rd::ReaderError);
  cli_test::write_file(wfile, blob);
  cli_test::write_file(mfile, spec.substr(0, spec.size() / 2));
  EXPECT_ANY_THROW(rd::Package::load(pkg.string()));
  cli_test::write_file(mfile, spec);
  EXPECT_NO_THROW(rd::Package::load(pkg.string()));
}

TEST(CoremlExport, DeterministicAndRejectsBadRequests) {
  ScratchDir dir("coreml");
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-gelu");
  const auto a = coreml::export_gpt2_coreml(model, (dir / "a.mlpackage").string(), {});
  const auto b = coreml::export_gpt2_coreml(model, (dir / "b.mlpackage").string(), {});
  EXPECT_EQ(a.content_hash, b.content_hash);
  EXPECT_EQ(cli_test::read_file(dir / "a.mlpackage/Manifest.json"), cli_test::read_file(dir / "b.mlpackage/Manifest.json"));
  coreml::ExportOptions o;
  o.seq = model.config.n_positions + 1;
  EXPECT_THROW(coreml::export_gpt2_coreml(model, (dir / "c.mlpackage").string(), o), Error);
  o.seq = 4;
  o.mode = "train";
  EXPECT_THROW(coreml::export_gpt2_coreml(model, (dir / "c.mlpackage").string(), o), Error);
  EXPECT_FALSE(fs::exists(dir / "c.mlpackage"));
  cli_test::write_file(dir / "file", "x");
  EXPECT_THROW(coreml::export_gpt2_coreml(model, (dir / "file").string(), {}), Error);
  EXPECT_EQ(cli_test::read_file(dir / "file"), "x");
}

TEST(AneRules, TensorConstraints) {
  using coreml::MilDType;
  EXPECT_TRUE(coreml::ane_check_tensor("x", {MilDType::F16, {1, 768, 1, 64}}, false).ok);
  const Verdict f32 = coreml::ane_check_tensor("x", {MilDType::F32, {1, 768, 1, 64}}, false);
  EXPECT_FALSE(f32.ok);
  EXPECT_NE(f32.reason.find("fp16"), std::string::npos);
  const Verdict big = coreml::ane_check_tensor("x", {MilDType::F16, {1, 50257, 1, 64}}, false);
  EXPECT_FALSE(big.ok);
  EXPECT_NE(big.reason.find("16384"), std::string::npos);
  EXPECT_FALSE(coreml::ane_check_tensor("x", {MilDType::F16, {1, -1, 1, 64}}, false).ok);  // dynamic
  EXPECT_FALSE(coreml::ane_check_tensor("x", {MilDType::F16, {1, 2, 3, 4, 5, 6}}, false).ok);  // rank 6
  std::string why;
  EXPECT_FALSE(coreml::ane_op_supported("gather", &why));
  EXPECT_TRUE(coreml::ane_op_supported("conv", &why));
  EXPECT_FALSE(coreml::ane_op_supported("while_loop", &why));
}

TEST(AneRules, PlacementExplainsEveryOp) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  coreml::WeightBlob dry("");
  const coreml::Gpt2Program p = coreml::build_gpt2_program(model, {}, dry);
  const coreml::AneReport r = coreml::analyze_ane(p.fn);
  ASSERT_EQ(r.ops.size(), p.fn.ops.size());
  int gathers = 0;
  for (size_t i = 0; i < p.fn.ops.size(); ++i) {
    EXPECT_FALSE(r.ops[i].reason.empty()) << p.fn.ops[i].name;
    if (p.fn.ops[i].type == "gather") {
      ++gathers;
      EXPECT_FALSE(r.ops[i].ane);
      EXPECT_NE(r.ops[i].reason.find("gather"), std::string::npos);
    } else if (r.ops[i].compute) {
      EXPECT_TRUE(r.ops[i].ane) << p.fn.ops[i].name << ": " << r.ops[i].reason;
    }
  }
  EXPECT_EQ(gathers, 2);
  EXPECT_EQ(r.compute_ops - r.ane_ops, 2);
  EXPECT_GT(r.ane_flops, 0.99 * r.total_flops);
  const std::string text = coreml::format_ane_report(r, p.fn, true);
  EXPECT_NE(text.find("embed_tokens"), std::string::npos);
  EXPECT_NE(text.find("ANE share"), std::string::npos);
}

TEST(AneRules, CoremlTierTakesItsPlaceInTheFallbackChain) {
  const Gpt2Model model = Gpt2Model::load(kFixtures + "tiny-f32");
  const ForwardGraph fg = build_forward(model, 3, 0, true);
  const std::vector<std::shared_ptr<Backend>> chain = {make_coreml_backend(), make_naive_backend()};
  const Plan plan = make_plan(fg.graph, chain, false);
  for (size_t n = 0; n < fg.graph.nodes().size(); ++n) {
    const Node& nd = fg.graph.node(NodeId(n));
    SCOPED_TRACE(nd.name);
    if (nd.op == OpKind::GatherRows) {
      EXPECT_EQ(plan.placement[n].tier, 1);  // falls back to the next tier
      EXPECT_NE(plan.placement[n].reason.find("coreml declined (gather"), std::string::npos) << plan.placement[n].reason;
    } else {
      EXPECT_EQ(plan.placement[n].tier, 0) << plan.placement[n].reason;
    }
  }
  EXPECT_THROW(make_plan(fg.graph, chain, true), Error);  // --no-fallback names the gather
  // A graph in f64 is not ANE work.
  Graph g;
  const ValueId x = g.input("x", {4, 8}, DType::F64);
  g.add(OpKind::Softmax, {x}, {}, "sm");
  EXPECT_FALSE(chain[0]->supports(g, g.node(0)).ok);
  if (!coreml_built()) {
    EXPECT_FALSE(chain[0]->probe().ok);
    EXPECT_NE(chain[0]->probe().reason.find("STRAND_WITH_COREML"), std::string::npos);
    EXPECT_THROW(make_chain("coreml"), Error);
    EXPECT_THROW(coreml_compute_plan("x.mlpackage", "all"), Error);
  }
  EXPECT_THROW(set_coreml_compute_units("gpu-only"), Error);
}

TEST(CoremlCli, ExportAndExplain) {
  ScratchDir dir("coreml");
  const std::string pkg = (dir / "t.mlpackage").string();
  const auto ex = cli_test::run_strand({"export", "coreml", "-m", kFixtures + "tiny-f32", "-o", pkg, "--seq", "7",
                                        "--mode", "decode", "--json"});
  ASSERT_EQ(ex.exit_code, 0) << ex.err;
  const nlohmann::json j = nlohmann::json::parse(ex.out);
  EXPECT_EQ(j["mode"], "decode");
  EXPECT_EQ(j["cache_slots"], 7);
  EXPECT_NO_THROW(rd::Package::load(pkg));
  const auto xp = cli_test::run_strand({"explain", "--tier", "ane", "-m", kFixtures + "tiny-f32", "--json"});
  ASSERT_EQ(xp.exit_code, 0) << xp.err;
  const nlohmann::json e = nlohmann::json::parse(xp.out);
  EXPECT_GT(e["program"]["ane_flop_share"].get<double>(), 0.99);
  EXPECT_EQ(e["graph"]["nodes"].size(), e["graph"]["node_count"].get<size_t>());
  const auto human = cli_test::run_strand({"explain", "--tier", "ane", "-m", kFixtures + "tiny-gelu"});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("gather"), std::string::npos);
  const auto bad = cli_test::run_strand({"export", "coreml", "-m", kFixtures + "tiny-f32", "-o", pkg, "--seq", "65"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--seq 65"), std::string::npos) << bad.err;
}

namespace {

// The Apple backend's logic with the reader standing in for Core ML: the planner's coreml
// segment is recognized, exported (host embeddings), run and written back exactly as
// coreml_backend.mm does, minus Core ML's compile/load/predict.
class ReaderTier final : public Backend {
 public:
  explicit ReaderTier(fs::path dir) : dir_(std::move(dir)) {}
  std::string name() const override { return "coreml-reader"; }
  std::string description() const override { return "exported program run by the independent reader"; }
  Verdict probe() const override { return Verdict::yes(); }
  Verdict supports(const Graph& g, const Node& n) const override { return coreml::ane_supports_node(g, n); }
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    const coreml::Segment s = coreml::plan_segment(g, nodes, values);
    auto it = cache_.find(s.key());
    if (it == cache_.end()) {
      const fs::path pkg = dir_ / (s.key() + ".mlpackage");
      coreml::export_gpt2_coreml(s.model, pkg.string(), s.options);
      it = cache_.emplace(s.key(), rd::Package::load(pkg.string())).first;
      ++compiles;
    }
    std::map<std::string, rd::Value> in;
    for (const coreml::HostArray& a : coreml::segment_inputs(s, values)) {
      rd::Value v;
      v.type = {a.is_int ? rd::kInt32 : rd::kFp16, a.shape};
      for (uint16_t h : a.f16) v.f.push_back(f16_to_f32(h));
      v.i = a.i32;
      in[a.name] = v;
    }
    const auto out = it->second.run(in);
    std::map<std::string, coreml::HostArray> host;
    for (const auto& [name, v] : out) {
      coreml::HostArray a{name, v.type.shape, false, {}, {}};
      for (float f : v.f) a.f16.push_back(f32_to_f16(f));
      host[name] = a;
    }
    coreml::segment_outputs(s, values, [&](const std::string& n) -> const coreml::HostArray& { return host.at(n); });
    ++runs;
  }
  int compiles = 0, runs = 0;

 private:
  fs::path dir_;
  std::map<std::string, rd::Package> cache_;
};

}  // namespace

TEST(CoremlTier, PlannedSegmentRunsThroughTheExportedProgram) {
  const uint64_t seed = test_seed();
  for (const char* fixture : {"tiny-f32", "tiny-f16"}) {
    SCOPED_TRACE(fixture);
    ScratchDir dir("coreml");
    const Gpt2Model model = Gpt2Model::load(kFixtures + fixture);
    auto tier = std::make_shared<ReaderTier>(dir.path());
    Gpt2Runner rt(model, {tier, make_naive_backend()});
    Gpt2Runner r64(model, {make_reference_backend()});
    const Gpt2Model m16 = f16_weights(model);
    Gpt2Runner r16(m16, {std::make_shared<F16Emulation>()});
    KvCache ct = rt.new_cache(), c64 = r64.new_cache(), c16 = r16.new_cache();
    double er = 0, e16 = 0;
    auto step = [&](const std::vector<int32_t>& ids, bool all) {
      const Tensor a = rt.forward(ids, ct, all), b = r64.forward(ids, c64, all), c = r16.forward(ids, c16, all);
      const int64_t rows = a.dim(0);
      er = std::max(er, rel_error(rows_of(a, rows), rows_of(b, rows)));
      e16 = std::max(e16, rel_error(rows_of(c, rows), rows_of(b, rows)));
    };
    step(random_ids(seed, 6, 300), true);      // prefill: all logits
    for (int32_t id : random_ids(seed + 3, 3, 300)) step({id}, false);  // decode, one token
    step(random_ids(seed + 4, 2, 300), true);  // two tokens against the cache
    EXPECT_EQ(tier->runs, 5);
    EXPECT_EQ(tier->compiles, 3);  // prefill t6, decode t1 (reused), decode t2
    // The gathers fell back to the naive tier; everything else ran in the program.
    const Plan& plan = rt.last_plan();
    for (size_t n = 0; n < plan.placement.size(); ++n)
      EXPECT_EQ(plan.placement[n].tier, rt.last_graph().node(NodeId(n)).op == OpKind::GatherRows ? 1 : 0);
    std::printf("[ coreml tier via reader, %s ] logits error vs float64: %.3g, fp16 emulation %.3g\n", fixture, er, e16);
    EXPECT_GT(er, 0.0);
    EXPECT_LE(er, 2 * e16);
  }
}
