#include "core/cpu_features.h"

#include <cerrno>
#include <cstdint>
#include <cstring>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define STRAND_CPUID_X86 1
#include <cpuid.h>
#endif

namespace strand {

namespace {

#if STRAND_CPUID_X86
struct Regs {
  uint32_t a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(uint32_t leaf, uint32_t sub) {
  Regs r;
  if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) r = {};
  return r;
}

// XCR0 through XGETBV (only valid when CPUID says the OS set CR4.OSXSAVE).
uint64_t xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

bool bit(uint32_t v, int i) { return (v >> i) & 1u; }
#endif

CpuFeatures read_features() {
  CpuFeatures f;
#if STRAND_CPUID_X86
  f.x86 = true;
  uint32_t max_leaf = 0, ebx = 0, ecx = 0, edx = 0;
  __get_cpuid(0, &max_leaf, &ebx, &ecx, &edx);
  const Regs l1 = cpuid(1, 0);
  f.sse2 = bit(l1.d, 26);
  f.sse4_2 = bit(l1.c, 20);
  f.fma = bit(l1.c, 12);
  f.avx = bit(l1.c, 28);
  f.f16c = bit(l1.c, 29);
  const bool osxsave = bit(l1.c, 27);
  const uint64_t x = osxsave ? xcr0() : 0;
  f.os_avx = (x & 0x6) == 0x6;                    // SSE and AVX (YMM) state
  f.os_avx512 = f.os_avx && (x & 0xe0) == 0xe0;   // opmask, ZMM_Hi256, Hi16_ZMM
  f.os_amx = (x & (3ull << 17)) == (3ull << 17);  // XTILECFG, XTILEDATA
  if (max_leaf >= 7) {
    const Regs l7 = cpuid(7, 0);
    f.avx2 = bit(l7.b, 5);
    f.avx512f = bit(l7.b, 16);
    f.avx512dq = bit(l7.b, 17);
    f.avx512bw = bit(l7.b, 30);
    f.avx512vl = bit(l7.b, 31);
    f.avx512_vnni = bit(l7.c, 11);
    f.avx512_fp16 = bit(l7.d, 23);
    f.amx_bf16 = bit(l7.d, 22);
    f.amx_tile = bit(l7.d, 24);
    f.amx_int8 = bit(l7.d, 25);
    if (l7.a >= 1) f.avx512_bf16 = bit(cpuid(7, 1).a, 5);
  }
  if (!f.os_avx) f.avx = f.avx2 = f.fma = f.f16c = false;
  if (!f.os_avx512) f.avx512f = f.avx512dq = f.avx512bw = f.avx512vl = f.avx512_vnni = f.avx512_bf16 = f.avx512_fp16 = false;
#endif
  return f;
}

}  // namespace

std::vector<std::string> CpuFeatures::names() const {
  std::vector<std::string> v;
  auto add = [&](bool on, const char* n) {
    if (on) v.emplace_back(n);
  };
  add(sse2, "sse2");
  add(sse4_2, "sse4_2");
  add(avx, "avx");
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512dq, "avx512dq");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512_vnni, "avx512_vnni");
  add(avx512_bf16, "avx512_bf16");
  add(avx512_fp16, "avx512_fp16");
  add(amx_tile && os_amx, "amx_tile");
  add(amx_bf16 && os_amx, "amx_bf16");
  add(amx_int8 && os_amx, "amx_int8");
  return v;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = read_features();
  return f;
}

namespace {

struct Permission {
  bool granted = false;
  std::string why;
};

Permission request_amx() {
  Permission p;
  const CpuFeatures& f = cpu_features();
  if (!f.amx_tile) {
    p.why = "the CPU has no AMX-TILE";
    return p;
  }
  if (!f.os_amx) {
    p.why = "the OS does not enable the tile state (XCR0 bits 17-18 clear)";
    return p;
  }
#if defined(__linux__) && defined(__x86_64__) && defined(SYS_arch_prctl)
  constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  unsigned long bitmask = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &bitmask) == 0 && (bitmask & (1ul << kXfeatureXtiledata))) {
    p.granted = true;
    return p;
  }
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    const int e = errno;
    p.why = std::string("Linux refused the tile state (arch_prctl ARCH_REQ_XCOMP_PERM: ") + std::strerror(e) +
            (e == EINVAL ? "; the kernel predates 5.16 or has AMX disabled)" : ")");
    return p;
  }
  p.granted = true;
#else
  p.why = "the tile-state permission request is implemented for Linux on x86-64 only";
#endif
  return p;
}

}  // namespace

bool amx_request_permission(std::string* why) {
  static const Permission p = request_amx();
  if (why) *why = p.why;
  return p.granted;
}

}  // namespace strand
