// strand gemm — not written yet: says so and exits non-zero.
#include "apps/commands.h"
#include "core/error.h"

namespace strand::cli {

Command add_bench_gemm(CLI::App& parent) {
  Command c;
  c.app = parent.add_subcommand("gemm", "(not built yet)");
  c.run = [] () -> int { fail("'gemm' is not implemented in this build yet"); };
  return c;
}

}  // namespace strand::cli
