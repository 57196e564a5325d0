// strand/core/cpu_features.h — what this CPU can run, read from CPUID and the OS.
//
// One reading, the same on GCC and clang (no __builtin_cpu_supports, whose feature strings
// differ between compilers): CPUID says what the core implements, XGETBV (XCR0) says which
// register states the OS saves and restores. A feature counts only when both agree: AVX-512
// on a core whose OS does not save the ZMM state is not usable. AMX additionally needs a
// per-process permission on Linux (see amx_request_permission()).
#pragma once

#include <string>
#include <vector>

namespace strand {

struct CpuFeatures {
  bool x86 = false;  // false on every other architecture: all flags below are then false
  bool sse2 = false, sse4_2 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512dq = false, avx512bw = false, avx512vl = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx512_fp16 = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;  // the CPU implements AMX ...
  bool os_avx = false, os_avx512 = false, os_amx = false;     // ... and the OS enabled the state

  // The AVX2 kernel set: AVX2 + FMA + F16C with the OS saving YMM.
  bool has_avx2_set() const { return avx2 && fma && f16c && os_avx; }
  // The AVX-512 kernel set: F/BW/VL/DQ (+ the AVX2 set) with the OS saving ZMM.
  bool has_avx512_set() const { return has_avx2_set() && avx512f && avx512bw && avx512vl && avx512dq && os_avx512; }
  // Names of the usable features in /proc/cpuinfo's spelling ("avx512_bf16", "amx_tile").
  std::vector<std::string> names() const;
};

// Read once, then cached.
const CpuFeatures& cpu_features();

// Linux keeps the AMX tile data state off for a process until it asks for it:
// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) (Linux 5.16+). Asks once (the answer is
// cached; the permission holds for every thread of the process) and returns whether it was
// granted; if not, *why (when given) says what the kernel answered. Call only when CPUID and
// XCR0 report AMX (amx_tile && os_amx): elsewhere it returns false with the reason.
bool amx_request_permission(std::string* why = nullptr);

}  // namespace strand
