// machine_info(): CPU model, cores, SIMD, frequency, caches, OS, compiler, library versions.
// Linux reads /proc/cpuinfo and sysfs; x86 also asks cpuid; macOS asks sysctl.
#include "devices/machine.h"

#include "core/cpu_features.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "backends/blas/blas.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define STRAND_X86 1
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#include <sys/types.h>
#endif
#if defined(STRAND_HAVE_ONEDNN) && __has_include("backends/onednn/onednn.h")
#include "backends/onednn/onednn.h"
#define STRAND_ONEDNN_WRAPPER 1
#endif

namespace strand {

namespace {

std::string trim(std::string s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string read_first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  if (f) std::getline(f, line);
  return trim(line);
}

// "32K", "1024K", "32M" (sysfs cache sizes) -> bytes.
size_t parse_size(const std::string& s) {
  if (s.empty()) return 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str()) return 0;
  size_t mul = 1;
  if (*end == 'K' || *end == 'k') mul = 1024;
  if (*end == 'M' || *end == 'm') mul = 1024 * 1024;
  if (*end == 'G' || *end == 'g') mul = size_t(1024) * 1024 * 1024;
  return size_t(v) * mul;
}

// The first processor block of /proc/cpuinfo as key -> value.
std::map<std::string, std::string> cpuinfo_first_block() {
  std::map<std::string, std::string> kv;
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  bool seen = false;
  while (std::getline(f, line)) {
    if (trim(line).empty()) {
      if (seen) break;
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trim(line.substr(0, colon));
    if (!kv.count(key)) kv[key] = trim(line.substr(colon + 1));
    seen = true;
  }
  return kv;
}

std::set<std::string> split_words(const std::string& s) {
  std::set<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.insert(w);
  return out;
}

#ifdef STRAND_X86
struct X86Id {
  std::string vendor, brand;
  int family = 0, model = 0;
  double leaf16_base_mhz = 0, leaf16_max_mhz = 0;
};

X86Id x86_cpuid() {
  X86Id id;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return id;
  const unsigned max_leaf = a;
  char v[13] = {};
  std::memcpy(v, &b, 4);
  std::memcpy(v + 4, &d, 4);
  std::memcpy(v + 8, &c, 4);
  id.vendor = v;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    const int base_family = int((a >> 8) & 0xf), ext_family = int((a >> 20) & 0xff);
    const int base_model = int((a >> 4) & 0xf), ext_model = int((a >> 16) & 0xf);
    id.family = base_family == 0xf ? base_family + ext_family : base_family;
    id.model = (base_family == 0xf || base_family == 0x6) ? (ext_model << 4) + base_model : base_model;
  }
  if (max_leaf >= 0x16 && __get_cpuid(0x16, &a, &b, &c, &d)) {
    id.leaf16_base_mhz = double(a & 0xffff);
    id.leaf16_max_mhz = double(b & 0xffff);
  }
  unsigned ext = 0;
  if (__get_cpuid(0x80000000, &ext, &b, &c, &d) && ext >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid(0x80000002 + i, &a, &b, &c, &d);
      std::memcpy(brand + 16 * i, &a, 4);
      std::memcpy(brand + 16 * i + 4, &b, 4);
      std::memcpy(brand + 16 * i + 8, &c, 4);
      std::memcpy(brand + 16 * i + 12, &d, 4);
    }
    id.brand = trim(brand);
  }
  return id;
}
#endif

#ifdef __APPLE__
std::string sysctl_string(const char* name) {
  char buf[256] = {};
  size_t len = sizeof buf - 1;
  if (sysctlbyname(name, buf, &len, nullptr, 0) != 0) return {};
  return trim(buf);
}
long long sysctl_int(const char* name) {
  long long v = 0;
  size_t len = sizeof v;
  if (sysctlbyname(name, &v, &len, nullptr, 0) != 0) return 0;
  if (len == 4) {
    int32_t i = 0;
    std::memcpy(&i, &v, 4);
    return i;
  }
  return v;
}
#endif

// The SIMD features worth reporting, in Linux's /proc/cpuinfo spelling, widest last.
const char* const kX86Features[] = {"sse2",        "sse4_2",      "avx",         "avx2",      "fma",
                                    "f16c",        "avx_vnni",    "avx512f",     "avx512dq",  "avx512bw",
                                    "avx512vl",    "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                                    "amx_bf16",    "amx_int8"};

std::vector<std::string> simd_from_flags(const std::set<std::string>& flags, bool arm) {
  std::vector<std::string> out;
  if (arm) {
    // aarch64 Features: asimd = NEON, asimdhp = f16 arithmetic, asimddp = dot product.
    const std::pair<const char*, const char*> arm_map[] = {{"asimd", "neon"},  {"asimdhp", "fp16"}, {"asimddp", "dotprod"},
                                                           {"bf16", "bf16"},   {"i8mm", "i8mm"},    {"sve", "sve"},
                                                           {"sve2", "sve2"},   {"sme", "sme"}};
    for (const auto& [flag, name] : arm_map)
      if (flags.count(flag)) out.push_back(name);
    return out;
  }
  for (const char* f : kX86Features)
    if (flags.count(f)) out.push_back(f);
  return out;
}

std::vector<std::string> simd_from_builtin() {
#if defined(__aarch64__)
  return {"neon"};  // mandatory on aarch64
#else
  return cpu_features().names();  // CPUID + XCR0 (core/cpu_features.h)
#endif
}

// Physical cores: distinct (package, core) pairs among online CPUs in sysfs.
int physical_cores_sysfs(int logical) {
  std::set<std::pair<std::string, std::string>> cores;
  for (int cpu = 0; cpu < std::max(logical, 1) * 2 && cpu < 4096; ++cpu) {
    const std::string base = fmt::format("/sys/devices/system/cpu/cpu{}/topology/", cpu);
    const std::string core = read_first_line(base + "core_id");
    if (core.empty()) continue;
    cores.insert({read_first_line(base + "physical_package_id"), core});
  }
  return int(cores.size());
}

void caches_sysfs(MachineInfo& m) {
  for (int i = 0; i < 8; ++i) {
    const std::string base = fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/", i);
    const std::string level = read_first_line(base + "level");
    if (level.empty()) continue;
    const std::string type = read_first_line(base + "type");
    const size_t size = parse_size(read_first_line(base + "size"));
    if (level == "1" && type == "Data") m.l1d_bytes = size;
    if (level == "2" && type != "Instruction") m.l2_bytes = size;
    if (level == "3" && type != "Instruction") m.l3_bytes = size;
  }
#if defined(_SC_LEVEL1_DCACHE_SIZE)
  if (!m.l1d_bytes) m.l1d_bytes = size_t(std::max(0L, sysconf(_SC_LEVEL1_DCACHE_SIZE)));
  if (!m.l2_bytes) m.l2_bytes = size_t(std::max(0L, sysconf(_SC_LEVEL2_CACHE_SIZE)));
  if (!m.l3_bytes) m.l3_bytes = size_t(std::max(0L, sysconf(_SC_LEVEL3_CACHE_SIZE)));
#endif
}

std::string guess_uarch(const MachineInfo& m) {
  if (m.vendor == "AuthenticAMD" || m.vendor == "HygonGenuine") {
    if (m.cpu_family == 0x1a) return "Zen 5";
    if (m.cpu_family == 0x19) return m.has("avx512f") ? "Zen 4" : "Zen 3";
    if (m.cpu_family == 0x17) return m.cpu_model_id >= 0x30 ? "Zen 2" : "Zen / Zen+";
    return "";
  }
  if (m.vendor == "GenuineIntel" && m.cpu_family == 6) {
    switch (m.cpu_model_id) {
      case 0x55: return "Skylake-SP / Cascade Lake";
      case 0x6a: case 0x6c: return "Ice Lake server";
      case 0x8f: return "Sapphire Rapids";
      case 0xcf: return "Emerald Rapids";
      case 0xad: case 0xae: return "Granite Rapids";
      case 0x4f: case 0x56: return "Broadwell";
      case 0x3f: return "Haswell server";
      case 0x8c: case 0x8d: return "Tiger Lake";
      case 0x97: case 0x9a: return "Alder Lake";
      case 0xb7: case 0xba: case 0xbf: return "Raptor Lake";
      default: return "";
    }
  }
  return "";
}

std::string compiler_string() {
#if defined(__clang__)
  return fmt::format("Clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  return fmt::format("GCC {}.{}.{}", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#else
  return "unknown compiler";
#endif
}

std::string os_string() {
  std::string s;
  struct utsname u {};
  if (::uname(&u) == 0) s = fmt::format("{} {} {}", u.sysname, u.release, u.machine);
  std::ifstream f("/etc/os-release");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("PRETTY_NAME=", 0) == 0) {
      std::string v = line.substr(12);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      s += (s.empty() ? "" : ", ") + v;
    }
#ifdef __APPLE__
  const std::string prod = sysctl_string("kern.osproductversion");
  if (!prod.empty()) s += ", macOS " + prod;
#endif
  return s;
}

// "... CPU @ 2.60GHz" -> 2.6
double ghz_from_brand(const std::string& brand) {
  const size_t at = brand.find('@');
  if (at == std::string::npos) return 0;
  const double v = std::atof(brand.c_str() + at + 1);
  const std::string rest = lower(brand.substr(at));
  if (rest.find("ghz") != std::string::npos) return v;
  if (rest.find("mhz") != std::string::npos) return v / 1000.0;
  return 0;
}

}  // namespace

bool MachineInfo::has(const std::string& feature) const {
  return std::find(simd.begin(), simd.end(), feature) != simd.end();
}

int copies_beyond_l3(double bytes_per_copy, double l3_bytes) {
  if (bytes_per_copy <= 0) return 1;
  return int(std::clamp(std::ceil(2.0 * l3_bytes / bytes_per_copy), 1.0, 128.0));
}

int default_thread_count() {
  // The rule the cpu tier's ThreadPool follows, so that OpenBLAS and strand agree.
  if (const char* s = std::getenv("STRAND_THREADS"); s && *s) {
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (end && *end == '\0' && v > 0) return int(std::min<long>(v, 256));
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? int(std::min<unsigned>(hw, 256)) : 1;
}

MachineInfo machine_info() {
  MachineInfo m;
  struct utsname u {};
  if (::uname(&u) == 0) m.arch = u.machine;
  const bool arm = m.arch == "aarch64" || m.arch == "arm64";
  const auto info = cpuinfo_first_block();
  auto get = [&](const char* k) {
    const auto it = info.find(k);
    return it == info.end() ? std::string() : it->second;
  };

  m.cpu_model = get("model name");
#ifdef STRAND_X86
  const X86Id id = x86_cpuid();
  m.vendor = id.vendor;
  m.cpu_family = id.family;
  m.cpu_model_id = id.model;
  if (m.cpu_model.empty()) m.cpu_model = id.brand;
#endif
#ifdef __APPLE__
  if (m.cpu_model.empty()) m.cpu_model = sysctl_string("machdep.cpu.brand_string");
  if (m.cpu_model.find("Apple") != std::string::npos) m.vendor = "Apple";
#endif
  if (m.cpu_model.empty() && arm) {
    const std::string impl = get("CPU implementer"), part = get("CPU part");
    if (!impl.empty()) m.cpu_model = fmt::format("ARM implementer {} part {}", impl, part);
  }
  if (m.cpu_model.empty()) m.cpu_model = "unknown CPU";

  // SIMD: the kernel's flags (they account for OS support of the wide registers).
  const std::string flags = arm ? get("Features") : get("flags");
  m.simd = flags.empty() ? simd_from_builtin() : simd_from_flags(split_words(flags), arm);
#ifdef __APPLE__
  if (arm && m.simd.empty()) m.simd = {"neon"};
  if (sysctl_int("hw.optional.arm.FEAT_FP16") > 0) m.simd.push_back("fp16");
  if (sysctl_int("hw.optional.arm.FEAT_DotProd") > 0) m.simd.push_back("dotprod");
  if (sysctl_int("hw.optional.arm.FEAT_BF16") > 0) m.simd.push_back("bf16");
  if (sysctl_int("hw.optional.arm.FEAT_I8MM") > 0) m.simd.push_back("i8mm");
#endif

  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  m.logical_cpus = online > 0 ? int(online) : std::max(1, int(std::thread::hardware_concurrency()));
  m.physical_cores = physical_cores_sysfs(m.logical_cpus);
#ifdef __APPLE__
  if (m.physical_cores <= 0) m.physical_cores = int(sysctl_int("hw.physicalcpu"));
#endif
  if (m.physical_cores <= 0) {
    const int per_socket = std::atoi(get("cpu cores").c_str());
    m.physical_cores = per_socket > 0 ? per_socket : m.logical_cpus;
  }
  m.physical_cores = std::clamp(m.physical_cores, 1, m.logical_cpus);

  // Frequency: cpufreq when the kernel exposes it, else cpuid leaf 0x16, the brand string, or
  // the "cpu MHz" line (under a hypervisor usually the nominal TSC rate).
  const std::string cf = "/sys/devices/system/cpu/cpu0/cpufreq/";
  if (const double base = std::atof(read_first_line(cf + "base_frequency").c_str()); base > 0) {
    m.base_ghz = base / 1e6;
    m.ghz_source = "cpufreq";
  }
  if (const double mx = std::atof(read_first_line(cf + "cpuinfo_max_freq").c_str()); mx > 0) {
    m.max_ghz = mx / 1e6;
    m.ghz_source = "cpufreq";
  }
#ifdef STRAND_X86
  if (m.base_ghz == 0 && m.max_ghz == 0 && id.leaf16_base_mhz > 0) {
    m.base_ghz = id.leaf16_base_mhz / 1000.0;
    m.max_ghz = id.leaf16_max_mhz / 1000.0;
    m.ghz_source = "cpuid leaf 0x16";
  }
#endif
  if (m.base_ghz == 0 && m.max_ghz == 0) {
    if (const double g = ghz_from_brand(m.cpu_model); g > 0) {
      m.base_ghz = g;
      m.ghz_source = "CPU name";
    }
  }
#ifdef __APPLE__
  if (m.base_ghz == 0 && m.max_ghz == 0) {
    if (const long long hz = sysctl_int("hw.cpufrequency_max"); hz > 0) {
      m.max_ghz = double(hz) / 1e9;
      m.ghz_source = "sysctl";
    }
  }
#endif
  if (m.base_ghz == 0 && m.max_ghz == 0) {
    if (const double mhz = std::atof(get("cpu MHz").c_str()); mhz > 0) {
      m.base_ghz = mhz / 1000.0;
      m.ghz_source = "/proc/cpuinfo cpu MHz; no cpufreq, so max unknown";
    }
  }

  caches_sysfs(m);
#ifdef __APPLE__
  if (!m.l1d_bytes) m.l1d_bytes = size_t(sysctl_int("hw.l1dcachesize"));
  if (!m.l2_bytes) m.l2_bytes = size_t(sysctl_int("hw.l2cachesize"));
  if (!m.l3_bytes) m.l3_bytes = size_t(sysctl_int("hw.l3cachesize"));
#endif

  m.uarch = guess_uarch(m);
  m.os = os_string();
  m.compiler = compiler_string();

  const BlasLibraryInfo bl = blas_library_info();
  if (bl.built) {
    m.openblas_version = bl.version;
    m.openblas_corename = bl.corename;
    m.openblas_config = bl.config;
    m.openblas_note = openblas_kernel_note(bl.corename, m);
  }
#ifdef STRAND_ONEDNN_WRAPPER
  m.onednn_version = std::string(onednn_version());
#endif
  return m;
}

std::string machine_summary_line() {
  const MachineInfo m = machine_info();
  std::string simd;
  // The widest few features are what a reader wants in a header.
  for (const char* f : {"avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "avx2", "fma", "f16c",
                        "neon", "fp16", "dotprod", "bf16", "sve"})
    if (m.has(f)) {
      if (!simd.empty()) simd += ' ';
      simd += f;
    }
  const double ghz = m.max_ghz > 0 ? m.max_ghz : m.base_ghz;
  std::string s = fmt::format("{}{}, {} cores / {} threads", m.cpu_model, m.uarch.empty() ? "" : " (" + m.uarch + ")",
                              m.physical_cores, m.logical_cpus);
  if (ghz > 0) s += fmt::format(", {:.2f} GHz", ghz);
  if (!simd.empty()) s += ", " + simd;
  if (m.l3_bytes) s += fmt::format(", L3 {} MiB", m.l3_bytes >> 20);
  if (!m.openblas_version.empty()) s += fmt::format("; OpenBLAS {} ({})", m.openblas_version, m.openblas_corename);
  if (!m.onednn_version.empty()) s += "; oneDNN " + m.onednn_version;
  s += "; " + m.compiler;
  return s;
}

double fp32_flops_per_cycle(const MachineInfo& m, std::string* why) {
  double f = 0;
  std::string w;
  const bool amd = m.vendor == "AuthenticAMD" || m.vendor == "HygonGenuine";
  const bool x86 = m.arch == "x86_64" || m.arch == "i686" || m.arch == "i386" || m.arch == "amd64" ||
                   (m.arch.empty() && (amd || m.vendor == "GenuineIntel"));
  const bool arm = m.arch == "aarch64" || m.arch == "arm64";
  if (x86) {
    if (amd && m.cpu_family == 0x1a && m.has("avx512f")) {
      f = 64, w = "Zen 5: two 512-bit FMA pipes: 2 × 16 lanes × 2 FLOP = 64 (mobile Zen 5 double-pumps them: half)";
    } else if (amd && m.cpu_family == 0x19 && m.has("avx512f")) {
      f = 32, w = "Zen 4: AVX-512 is double-pumped on two 256-bit FMA pipes: 2 × 8 lanes × 2 FLOP = 32";
    } else if (amd && m.cpu_family == 0x17 && m.cpu_model_id < 0x30) {
      f = 16, w = "Zen 1: 256-bit ops split over two 128-bit FMA pipes: 2 × 4 lanes × 2 FLOP = 16";
    } else if (m.has("avx512f")) {
      f = 64, w = "AVX-512: two 512-bit FMA units: 2 × 16 lanes × 2 FLOP = 64 (parts with one FMA unit reach half)";
    } else if (m.has("avx2") && m.has("fma")) {
      f = 32, w = "AVX2+FMA: two 256-bit FMA units: 2 × 8 lanes × 2 FLOP = 32";
    } else if (m.has("avx")) {
      f = 16, w = "AVX without FMA: one 256-bit add and one 256-bit multiply per cycle: 8 + 8 = 16";
    } else {
      f = 8, w = "SSE: one 128-bit add and one 128-bit multiply per cycle: 4 + 4 = 8";
    }
  } else if (arm) {
    if (m.vendor == "Apple" || m.cpu_model.find("Apple") != std::string::npos)
      f = 32, w = "Apple performance cores: four 128-bit FMA pipes: 4 × 4 lanes × 2 FLOP = 32";
    else
      f = 16, w = "NEON: two 128-bit FMA pipes: 2 × 4 lanes × 2 FLOP = 16 (wider cores reach more)";
  } else {
    f = 2, w = "unknown architecture: one scalar FMA per cycle assumed: 2";
  }
  if (why) *why = w;
  return f;
}

std::string openblas_kernel_note(const std::string& corename, const MachineInfo& m) {
  if (corename.empty()) return {};
  const std::string c = lower(corename);
  // What each OpenBLAS x86 target uses: 3 = AVX-512, 2 = AVX2+FMA, 1 = AVX, 0 = SSE only.
  static const std::map<std::string, int> level = {
      {"skylakex", 3},    {"cooperlake", 3}, {"sapphirerapids", 3}, {"zen4", 3},      {"zen5", 3},
      {"haswell", 2},     {"zen", 2},        {"skylake", 2},        {"excavator", 2}, {"broadwell", 2},
      {"sandybridge", 1}, {"bulldozer", 1},  {"piledriver", 1},     {"steamroller", 1},
      {"prescott", 0},    {"core2", 0},      {"penryn", 0},         {"dunnington", 0}, {"nehalem", 0},
      {"atom", 0},        {"katmai", 0},     {"coppermine", 0},     {"northwood", 0}, {"banias", 0},
      {"opteron", 0},     {"opteron_sse3", 0}, {"barcelona", 0},    {"bobcat", 0},    {"nano", 0},
      {"generic", 0},     {"athlon", 0}};
  const auto it = level.find(c);
  if (it == level.end()) return {};
  const int have = m.has("avx512f") ? 3 : (m.has("avx2") && m.has("fma")) ? 2 : m.has("avx") ? 1 : 0;
  if (it->second >= have) return {};
  static const char* const isa[] = {"SSE", "AVX", "AVX2", "AVX-512"};
  static const char* const suggest[] = {"", "SandyBridge", "Haswell", "SkylakeX"};
  if (it->second <= 1)
    return fmt::format("OpenBLAS picked the generic {} kernel on this {} CPU; expect low GFLOP/s; "
                       "OPENBLAS_CORETYPE={} may help",
                       corename, isa[have], suggest[have]);
  const bool zen4 = (m.vendor == "AuthenticAMD" || m.vendor == "HygonGenuine") && m.cpu_family == 0x19;
  if (zen4)
    return fmt::format("OpenBLAS runs its AVX2 {} kernel on this AVX-512 CPU; Zen 4 executes 512-bit FMAs as two "
                       "256-bit halves, so little is lost; OPENBLAS_CORETYPE=SkylakeX may help slightly",
                       corename);
  return fmt::format("OpenBLAS runs its AVX2 {} kernel on this AVX-512 CPU; expect about half the GFLOP/s; "
                     "OPENBLAS_CORETYPE=SkylakeX may help",
                     corename);
}

}  // namespace strand
