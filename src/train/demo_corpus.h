// strand/train/demo_corpus.h — the text `strand demo` trains on, built into the binary.
//
// strand's own documentation and C++ sources (README.md, docs/*.md, src/**/*.h and *.cpp),
// embedded at build time by cmake/embed_corpus.cmake, so the demo needs no download and no
// file next to the binary. Documents are in a fixed order (sorted by path).
#pragma once

#include <string_view>
#include <vector>

namespace strand {

struct CorpusFile {
  std::string_view path;  // relative to the source tree: "docs/architecture.md"
  std::string_view text;
};

const std::vector<CorpusFile>& demo_corpus();

}  // namespace strand
