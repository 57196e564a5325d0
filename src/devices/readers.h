// strand/devices/readers.h — the ways strand can read memory, raced for the memory bound.
//
// The memory bound of a tier is the best read bandwidth any of these readers reaches: a kernel
// that streams weights faster than every reader would be "above 100% of memory", which means
// the bound was too low, not that the kernel beat the memory. So the set tries what a fast
// kernel does: several streams at once, software prefetch, the widest vector loads the CPU
// has, and non-temporal loads.
//
// A reader consumes `n` 64-bit words from `p` (`p` 64-byte aligned, n a multiple of 64) and
// returns a value that depends on every word, so that no load can be dropped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace strand {

struct MemoryReader {
  const char* name;  // "scalar-12-streams", "avx512-4-streams", ...
  const char* what;  // one line: how it reads
  uint64_t (*read)(const uint64_t* p, size_t n);
};

// Every reader this CPU can run (portable ones first, then AVX2, then AVX-512).
const std::vector<MemoryReader>& memory_readers();

// The readers of one ISA file (readers_avx2.cpp, readers_avx512.cpp); empty where not built.
std::vector<MemoryReader> memory_readers_avx2();
std::vector<MemoryReader> memory_readers_avx512();

}  // namespace strand
