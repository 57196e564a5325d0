// strand/core/error.h — the one error type strand throws.
//
// Every failure a user can cause (bad file, bad argument, unsupported shape) becomes a
// strand::Error whose message is one line naming the thing and the problem. The CLI
// catches it at the top, prints it, and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace strand {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Throw a strand::Error with an fmt-formatted message.
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace strand
