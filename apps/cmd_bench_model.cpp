// strand model — not written yet: says so and exits non-zero.
#include "apps/commands.h"
#include "core/error.h"

namespace strand::cli {

Command add_bench_model(CLI::App& parent) {
  Command c;
  c.app = parent.add_subcommand("model", "(not built yet)");
  c.run = [] () -> int { fail("'model' is not implemented in this build yet"); };
  return c;
}

}  // namespace strand::cli
