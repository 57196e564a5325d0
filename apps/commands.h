// strand CLI — how command files plug into main.cpp.
//
// Each apps/cmd_*.cpp adds its subcommand(s) to a parent CLI::App and returns the function to
// call when that subcommand was parsed. main.cpp owns error printing and exit codes: a command
// throws strand::Error for anything the user can fix.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace strand::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// `strand bench gemm` (apps/cmd_bench_gemm.cpp) and `strand bench model` (apps/cmd_bench_model.cpp).
Command add_bench_gemm(CLI::App& bench);
Command add_bench_model(CLI::App& bench);
Command add_bench_train(CLI::App& bench);  // apps/cmd_bench_train.cpp
// `strand devices` (apps/cmd_devices.cpp).
Command add_devices(CLI::App& app);
// `strand validate` (apps/cmd_validate.cpp).
Command add_validate(CLI::App& app);

// `strand export coreml` (apps/cmd_export.cpp) and `strand explain` (apps/cmd_explain.cpp).
Command add_export(CLI::App& app);
Command add_explain(CLI::App& app);

// `strand train` (apps/cmd_train.cpp) and `strand demo` (apps/cmd_demo.cpp).
Command add_train(CLI::App& app);
Command add_demo(CLI::App& app);
// A seed given as text: an integer from 0 to 2^64 - 1, else strand::Error naming `option`
// ("--seed 18446744073709551616: must be an integer from 0 to 18446744073709551615").
uint64_t parse_seed(const std::string& text, const std::string& option);
// `s` cut at every `sep`, empty pieces kept ("a,,b" -> a, "", b; "" -> one empty piece).
std::vector<std::string> split_on(const std::string& s, char sep);
// The tier chains of a bench's --backend, separated by ';' (each chain's tiers by ','); an empty
// chain is strand::Error naming the option's text.
std::vector<std::string> parse_chain_list(const std::string& spec);
// A bench's --threads: comma-separated counts from 1 to 256, else strand::Error naming the item.
std::vector<int> parse_thread_list(const std::string& spec);
// A fresh seed from the system's random device (what a run uses when none is given).
uint64_t random_seed();
// --json output is one value on stdout and nothing else: a progress line on stderr only when
// --progress asked for it explicitly.
void json_silences_progress(bool json);

}  // namespace strand::cli
