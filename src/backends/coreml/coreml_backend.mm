// The Core ML tier on Apple platforms (built with -DSTRAND_WITH_COREML=ON; Objective-C++ with ARC).
//
// The planner gives this tier the nodes the ANE rules accept: for a GPT-2 forward graph that is
// embed .. lm_head (the embedding gathers fall back to the next tier). run() recognizes that
// segment (src/export/coreml/segment.h), exports it once per shape as an ML Program in the ANE's
// layout, compiles it once per content hash into a cache directory, loads it with the chosen
// compute units and predicts. Every NSError becomes a strand::Error naming what failed. If
// compiling, loading or predicting fails, the tier disables itself (probe() and supports() then
// say why, so later plans skip it) and runs the segment node by node on the next tiers of the
// chain: ANE -> GPU -> BLAS -> CPU is a runtime fallback, not only a planning one.
#import <CoreML/CoreML.h>
#import <Foundation/Foundation.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "backends/coreml/coreml.h"
#include "backends/registry.h"
#include "core/error.h"
#include "export/coreml/ane_rules.h"
#include "export/coreml/segment.h"

namespace fs = std::filesystem;

namespace strand {

namespace {

std::string& units_storage() {
  static std::string u = [] {
    const char* e = std::getenv("STRAND_COREML_UNITS");
    return std::string(e && *e ? e : "all");
  }();
  return u;
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

// Every NSError, with its domain, code and underlying error, as one line.
std::string ns_error(NSError* e, const std::string& what) {
  if (!e) return what + ": Core ML gave no reason";
  std::string s = fmt::format("{}: {} ({} {})", what, e.localizedDescription.UTF8String ?: "",
                              e.domain.UTF8String ?: "", (long)e.code);
  NSError* under = e.userInfo[NSUnderlyingErrorKey];
  if (under) s += fmt::format("; {}", under.localizedDescription.UTF8String ?: "");
  if (e.localizedFailureReason) s += fmt::format("; {}", e.localizedFailureReason.UTF8String);
  return one_line(s);
}

MLComputeUnits parse_units(const std::string& u) {
  if (u == "all") return MLComputeUnitsAll;
  if (u == "cpu") return MLComputeUnitsCPUOnly;
  if (u == "cpu+gpu") return MLComputeUnitsCPUAndGPU;
  if (u == "cpu+ane") {
    if (@available(macOS 13.0, iOS 16.0, *)) return MLComputeUnitsCPUAndNeuralEngine;
    fail("--compute-units cpu+ane needs macOS 13 or later");
  }
  fail("--compute-units {}: must be all, cpu+ane, cpu+gpu or cpu", u);
}

fs::path cache_dir() {
  fs::path d;
  if (const char* e = std::getenv("STRAND_COREML_CACHE"); e && *e) d = e;
  else if (const char* h = std::getenv("HOME"); h && *h) d = fs::path(h) / "Library" / "Caches" / "strand" / "coreml";
  else d = fs::temp_directory_path() / "strand-coreml";
  std::error_code ec;
  fs::create_directories(d, ec);
  if (ec) fail("coreml: cannot create the model cache {}: {}", d.string(), ec.message());
  return d;
}

// The compiled model for a package, compiled at most once per content hash.
fs::path compiled_model(const std::string& package, uint64_t hash) {
  const fs::path dst = cache_dir() / fmt::format("{:016x}.mlmodelc", hash);
  std::error_code ec;
  if (fs::exists(dst / "model.mil", ec) || fs::exists(dst / "coremldata.bin", ec)) return dst;
  NSError* err = nil;
  NSURL* src = [NSURL fileURLWithPath:[NSString stringWithUTF8String:package.c_str()]];
  NSURL* tmp = [MLModel compileModelAtURL:src error:&err];
  if (!tmp) fail("{}", ns_error(err, "Core ML could not compile " + package));
  const fs::path staging = fs::path(dst.string() + fmt::format(".tmp-{}", ::getpid()));
  fs::remove_all(staging, ec);
  fs::rename(tmp.path.UTF8String, staging, ec);
  if (ec) {  // another volume: copy
    ec.clear();
    fs::copy(tmp.path.UTF8String, staging, fs::copy_options::recursive, ec);
    std::error_code ignore;
    fs::remove_all(tmp.path.UTF8String, ignore);
  }
  if (ec) fail("coreml: cannot store the compiled model in {}: {}", dst.string(), ec.message());
  fs::rename(staging, dst, ec);  // loses harmlessly to a concurrent process that stored it first
  std::error_code ignore;
  fs::remove_all(staging, ignore);
  if (!fs::exists(dst, ignore)) fail("coreml: cannot store the compiled model in {}", dst.string());
  return dst;
}

MLModel* load_model(const fs::path& compiled, const std::string& units) {
  MLModelConfiguration* cfg = [[MLModelConfiguration alloc] init];
  cfg.computeUnits = parse_units(units);
  NSError* err = nil;
  NSURL* url = [NSURL fileURLWithPath:[NSString stringWithUTF8String:compiled.c_str()]];
  MLModel* m = [MLModel modelWithContentsOfURL:url configuration:cfg error:&err];
  if (!m) fail("{}", ns_error(err, "Core ML could not load " + compiled.string()));
  return m;
}

// Row-major index -> element offset through the array's strides.
int64_t strided_offset(int64_t i, const std::vector<int64_t>& shape, NSArray<NSNumber*>* strides) {
  int64_t off = 0;
  for (int d = int(shape.size()) - 1; d >= 0; --d) {
    const int64_t n = shape[size_t(d)];
    off += (i % n) * strides[NSUInteger(d)].longLongValue;
    i /= n;
  }
  return off;
}

MLMultiArray* to_multiarray(const coreml::HostArray& a) {
  NSMutableArray<NSNumber*>* shape = [NSMutableArray array];
  for (int64_t d : a.shape) [shape addObject:@((long long)d)];
  NSError* err = nil;
  MLMultiArray* m = [[MLMultiArray alloc] initWithShape:shape
                                               dataType:(a.is_int ? MLMultiArrayDataTypeInt32 : MLMultiArrayDataTypeFloat16)
                                                  error:&err];
  if (!m) fail("{}", ns_error(err, "coreml: cannot allocate input " + a.name));
  const int64_t n = int64_t(a.is_int ? a.i32.size() : a.f16.size());
  NSArray<NSNumber*>* strides = m.strides;
  const std::vector<int64_t> shape_v = a.shape;
  const bool is_int = a.is_int;
  const int32_t* i32 = a.i32.data();
  const uint16_t* f16 = a.f16.data();
  [m getMutableBytesWithHandler:^(void* bytes, NSInteger size, NSArray<NSNumber*>* st) {
    (void)size;
    (void)st;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t off = strided_offset(i, shape_v, strides);
      if (is_int) static_cast<int32_t*>(bytes)[off] = i32[i];
      else static_cast<uint16_t*>(bytes)[off] = f16[i];
    }
  }];
  return m;
}

coreml::HostArray from_multiarray(const std::string& name, MLMultiArray* m) {
  if (!m) fail("coreml: the prediction has no output {}", name);
  coreml::HostArray a;
  a.name = name;
  for (NSNumber* d in m.shape) a.shape.push_back(d.longLongValue);
  const int64_t n = int64_t(m.count);
  a.f16.resize(size_t(n));
  NSArray<NSNumber*>* strides = m.strides;
  const MLMultiArrayDataType dt = m.dataType;
  if (dt != MLMultiArrayDataTypeFloat16 && dt != MLMultiArrayDataTypeFloat32)
    fail("coreml: output {} has data type {}, expected fp16 or fp32", name, (long)dt);
  const std::vector<int64_t> shape_v = a.shape;
  uint16_t* dst = a.f16.data();
  [m getBytesWithHandler:^(const void* bytes, NSInteger size) {
    (void)size;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t off = strided_offset(i, shape_v, strides);
      dst[i] = dt == MLMultiArrayDataTypeFloat16 ? static_cast<const uint16_t*>(bytes)[off]
                                                 : f32_to_f16(static_cast<const float*>(bytes)[off]);
    }
  }];
  return a;
}

struct Loaded {
  MLModel* model = nil;  // __strong under ARC
  std::vector<std::string> outputs;
};

class CoremlBackend final : public Backend {
 public:
  std::string name() const override { return "coreml"; }
  std::string description() const override {
    return "Core ML: the Apple Neural Engine (fp16, fixed shapes) with Core ML's GPU/CPU behind it";
  }
  Verdict probe() const override {
    if (@available(macOS 13.0, iOS 16.0, *)) {
      if (!failed_.empty()) return Verdict::no("disabled after a Core ML failure: " + failed_);
      return Verdict::yes(fmt::format("Core ML, compute units {}", coreml_compute_units()));
    }
    return Verdict::no("needs macOS 13 or later (fp16 model inputs and outputs)");
  }
  Verdict supports(const Graph& g, const Node& n) const override {
    if (!failed_.empty()) return Verdict::no("Core ML failed: " + failed_);
    return coreml::ane_supports_node(g, n);
  }

  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    try {
      run_coreml(g, nodes, values);
    } catch (const Error& e) {
      failed_ = e.what();
      std::fprintf(stderr, "strand: coreml: %s; falling back along the chain\n", failed_.c_str());
      run_on_next_tiers(g, nodes, values);
    }
  }

 private:
  void run_coreml(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) {
    @autoreleasepool {
      const coreml::Segment s = coreml::plan_segment(g, nodes, values);
      const std::string key = s.key() + "-" + coreml_compute_units();
      auto it = models_.find(key);
      if (it == models_.end()) {
        const fs::path pkg = cache_dir() / fmt::format("export-{}-{}.mlpackage", s.key(), ::getpid());
        const coreml::ExportResult r = coreml::export_gpt2_coreml(s.model, pkg.string(), s.options);
        Loaded l;
        try {
          l.model = load_model(compiled_model(pkg.string(), r.content_hash), coreml_compute_units());
        } catch (...) {
          std::error_code ec;
          fs::remove_all(pkg, ec);
          throw;
        }
        std::error_code ec;
        fs::remove_all(pkg, ec);  // the compiled model is what is kept
        for (const auto& v : r.program.fn.outputs) l.outputs.push_back(v.name);
        it = models_.emplace(key, std::move(l)).first;
      }
      NSMutableDictionary<NSString*, MLFeatureValue*>* feats = [NSMutableDictionary dictionary];
      for (const coreml::HostArray& a : coreml::segment_inputs(s, values))
        feats[[NSString stringWithUTF8String:a.name.c_str()]] = [MLFeatureValue featureValueWithMultiArray:to_multiarray(a)];
      NSError* err = nil;
      MLDictionaryFeatureProvider* in = [[MLDictionaryFeatureProvider alloc] initWithDictionary:feats error:&err];
      if (!in) fail("{}", ns_error(err, "coreml: cannot pass the inputs"));
      id<MLFeatureProvider> out = [it->second.model predictionFromFeatures:in error:&err];
      if (!out) fail("{}", ns_error(err, "Core ML prediction failed"));
      std::map<std::string, coreml::HostArray> host;
      for (const std::string& name : it->second.outputs) {
        MLFeatureValue* v = [out featureValueForName:[NSString stringWithUTF8String:name.c_str()]];
        host[name] = from_multiarray(name, v ? v.multiArrayValue : nil);
      }
      coreml::segment_outputs(s, values, [&](const std::string& n) -> const coreml::HostArray& {
        const auto h = host.find(n);
        if (h == host.end()) fail("coreml: the prediction has no output {}", n);
        return h->second;
      });
    }
  }

  // The fallback: each node on the first later tier of the chain that is usable and takes it.
  void run_on_next_tiers(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) {
    if (next_.empty())
      for (auto& b : all_backends())
        if (b->name() != name() && b->host_memory() && b->probe().ok) next_.push_back(b);
    for (NodeId id : nodes) {
      const Node& nd = g.node(id);
      std::shared_ptr<Backend> tier;
      for (auto& b : next_)
        if (b->supports(g, nd).ok) {
          tier = b;
          break;
        }
      if (!tier) fail("coreml failed ({}) and no later tier can run node {}", failed_, nd.name);
      const NodeId one[] = {id};
      tier->run(g, std::span<const NodeId>(one, 1), values);
    }
  }

  std::string failed_;
  std::map<std::string, Loaded> models_;
  std::vector<std::shared_ptr<Backend>> next_;
};

API_AVAILABLE(macos(14.0), ios(17.0)) const char* device_name(id<MLComputeDeviceProtocol> d) {
  if ([(id)d isKindOfClass:[MLNeuralEngineComputeDevice class]]) return "ANE";
  if ([(id)d isKindOfClass:[MLGPUComputeDevice class]]) return "GPU";
  if ([(id)d isKindOfClass:[MLCPUComputeDevice class]]) return "CPU";
  return "?";
}

}  // namespace

std::unique_ptr<Backend> make_coreml_backend() { return std::make_unique<CoremlBackend>(); }

bool coreml_built() { return true; }

void set_coreml_compute_units(const std::string& units) {
  if (units != "all" && units != "cpu+ane" && units != "cpu+gpu" && units != "cpu")
    fail("--compute-units {}: must be all, cpu+ane, cpu+gpu or cpu", units);
  units_storage() = units;
}

std::string coreml_compute_units() { return units_storage(); }

std::string coreml_compute_plan(const std::string& package_path, const std::string& units) {
  if (@available(macOS 14.4, iOS 17.4, *)) {
    @autoreleasepool {
      NSError* err = nil;
      NSURL* compiled =
          [MLModel compileModelAtURL:[NSURL fileURLWithPath:[NSString stringWithUTF8String:package_path.c_str()]]
                               error:&err];
      if (!compiled) fail("{}", ns_error(err, "Core ML could not compile " + package_path));
      MLModelConfiguration* cfg = [[MLModelConfiguration alloc] init];
      cfg.computeUnits = parse_units(units);
      __block MLComputePlan* plan = nil;
      __block NSError* perr = nil;
      dispatch_semaphore_t done = dispatch_semaphore_create(0);
      [MLComputePlan loadContentsOfURL:compiled
                         configuration:cfg
                     completionHandler:^(MLComputePlan* p, NSError* e) {
                       plan = p;
                       perr = e;
                       dispatch_semaphore_signal(done);
                     }];
      dispatch_semaphore_wait(done, DISPATCH_TIME_FOREVER);
      [[NSFileManager defaultManager] removeItemAtURL:compiled error:nil];
      if (!plan) fail("{}", ns_error(perr, "Core ML could not make a compute plan"));
      MLModelStructureProgram* program = plan.modelStructure.program;
      if (!program) fail("Core ML's compute plan has no ML Program");
      MLModelStructureProgramFunction* fn = program.functions[@"main"];
      if (!fn) fail("Core ML's compute plan has no main function");
      std::string s = fmt::format("{:<30} {:<12} {:<6} {:<14} {}\n", "op (first output)", "type", "device",
                                  "supported on", "estimated cost");
      std::map<std::string, int> count;
      for (MLModelStructureProgramOperation* op in fn.block.operations) {
        const std::string type = op.operatorName.UTF8String ?: "";
        if (type == "const") continue;
        MLComputePlanDeviceUsage* use = [plan computeDeviceUsageForMLProgramOperation:op];
        MLComputePlanCost* cost = [plan estimatedCostOfMLProgramOperation:op];
        std::string supported;
        if (use)
          for (id<MLComputeDeviceProtocol> d in use.supportedComputeDevices)
            supported += (supported.empty() ? "" : ",") + std::string(device_name(d));
        const std::string dev = use ? device_name(use.preferredComputeDevice) : "-";
        ++count[dev];
        const std::string out = op.outputs.count ? (op.outputs.firstObject.name.UTF8String ?: "") : "";
        s += fmt::format("{:<30} {:<12} {:<6} {:<14} {}\n", out, type, dev, supported.empty() ? "-" : supported,
                         cost ? fmt::format("{:.4f}", cost.weight) : std::string("-"));
      }
      s += "ops per preferred device:";
      for (const auto& [dev, n] : count) s += fmt::format(" {} {}", dev, n);
      return s + fmt::format(" (compute units {})\n", units);
    }
  }
  fail("Core ML's compute plan needs macOS 14.4 or later");
}

}  // namespace strand
