// strand devices — not written yet: says so and exits non-zero.
#include "apps/commands.h"
#include "core/error.h"

namespace strand::cli {

Command add_devices(CLI::App& parent) {
  Command c;
  c.app = parent.add_subcommand("devices", "(not built yet)");
  c.run = [] () -> int { fail("'devices' is not implemented in this build yet"); };
  return c;
}

}  // namespace strand::cli
