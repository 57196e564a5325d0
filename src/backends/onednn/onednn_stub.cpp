// strand/backends/onednn/onednn_stub.cpp — linked when oneDNN was not found at build time.
#include "backends/onednn/onednn.h"
#include "core/error.h"

namespace strand {

bool onednn_available(std::string* why) {
  if (why) *why = "oneDNN was not found when strand was built (install libdnnl-dev and rebuild)";
  return false;
}

std::string onednn_version() { return "not built"; }

void onednn_sgemm(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, bool) {
  fail("onednn: not built into this strand (oneDNN was not found at build time)");
}

bool onednn_set_threads(int) { return false; }

struct OnednnBf16Matmul::Impl {};

OnednnBf16Matmul::OnednnBf16Matmul(int64_t, int64_t, int64_t, const float*, bool) {
  fail("onednn: not built into this strand (oneDNN was not found at build time)");
}
OnednnBf16Matmul::~OnednnBf16Matmul() = default;
void OnednnBf16Matmul::run(const float*, float*) { fail("onednn: not built into this strand"); }
std::string OnednnBf16Matmul::implementation() const { return "not built"; }

}  // namespace strand
