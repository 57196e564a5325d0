// strand explain — not written yet: says so and exits non-zero.
#include "apps/commands.h"
#include "core/error.h"

namespace strand::cli {

Command add_explain(CLI::App& parent) {
  Command c;
  c.app = parent.add_subcommand("explain", "(not built yet)");
  c.run = [] () -> int { fail("'explain' is not implemented in this build yet"); };
  return c;
}

}  // namespace strand::cli
