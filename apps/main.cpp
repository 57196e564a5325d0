// strand — the executable: everything happens in strand::cli::run (apps/cli.cpp).
#include "apps/cli.h"

int main(int argc, char** argv) { return strand::cli::run(argc, argv); }
