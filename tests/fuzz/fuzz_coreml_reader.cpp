// Fuzz target: the Core ML package reader of the tests (tests/coreml_reader), which proves
// strand's export. The input is
//   Manifest.json <separator> Data/com.apple.CoreML/model.mlmodel <separator> .../weights/weight.bin
// A package that loads is run once on zero inputs. The reader answers a bad package with
// ReaderError; anything else is a finding. Values are capped at kMaxElements so that the
// interpreter's work stays small.
#include <cstdint>

#include "coreml_reader/reader.h"
#include "fuzz_util.h"

using namespace strand;

namespace {

constexpr int64_t kMaxElements = 1 << 15;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  coreml_reader::max_value_elements = kMaxElements;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = fuzz::sections(data, size, 3);
  const fuzz::fs::path pkg = fuzz::scratch_dir() / "m.mlpackage";
  const fuzz::fs::path core = pkg / "Data/com.apple.CoreML";
  fuzz::fs::create_directories(core / "weights");
  fuzz::write_file(pkg / "Manifest.json", parts[0]);
  fuzz::write_file(core / "model.mlmodel", parts.size() > 1 ? parts[1] : std::string());
  if (parts.size() > 2)
    fuzz::write_file(core / "weights/weight.bin", parts[2]);
  else
    fuzz::fs::remove(core / "weights/weight.bin");
  try {
    const coreml_reader::Package p = coreml_reader::Package::load(pkg.string());
    p.run(p.dummy_inputs());
  } catch (const coreml_reader::ReaderError&) {
  } catch (const std::exception& e) {
    fuzz::finding(std::string("the reader threw something other than ReaderError: ") + e.what());
  }
  return 0;
}
