// strand/apps/cli.h — the whole command line as one function.
//
// main() only calls run(); tests and the command-line fuzz target call it in-process. It
// parses argv, runs the command, prints results on stdout and errors as one line on stderr,
// and returns the exit code: 0 success, 1 a problem the user can fix, 2 a strand bug.
#pragma once

namespace strand::cli {

int run(int argc, char** argv);

}  // namespace strand::cli
