// strand export — not written yet: says so and exits non-zero.
#include "apps/commands.h"
#include "core/error.h"

namespace strand::cli {

Command add_export(CLI::App& parent) {
  Command c;
  c.app = parent.add_subcommand("export", "(not built yet)");
  c.run = [] () -> int { fail("'export' is not implemented in this build yet"); };
  return c;
}

}  // namespace strand::cli
