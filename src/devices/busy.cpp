// BusyMeter and judge_busy (devices/busy.h).
#include "devices/busy.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <fmt/format.h>

namespace strand {

namespace {

// /proc/stat's first line: total and busy jiffies of all CPUs (busy counts steal: time the
// hypervisor gave to someone else).
bool read_proc_stat(double* total, double* busy) {
  std::ifstream f("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  if (!(f >> cpu >> user >> nice >> sys >> idle >> iowait >> irq >> softirq) || cpu != "cpu") return false;
  f >> steal;  // absent on very old kernels
  *total = user + nice + sys + idle + iowait + irq + softirq + steal;
  *busy = *total - idle - iowait;
  return true;
}

// This process's user + system time in jiffies (/proc/self/stat fields 14 and 15).
double self_jiffies() {
  std::ifstream f("/proc/self/stat");
  std::string line;
  std::getline(f, line);
  const size_t close = line.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return 0;
  std::istringstream in(line.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::atof(field.c_str());
    if (i == 15) stime = std::atof(field.c_str());
  }
  return utime + stime;
}

}  // namespace

BusyMeter::BusyMeter() {
  ok_ = read_proc_stat(&total0_, &busy0_);
  self0_ = self_jiffies();
}

double BusyMeter::others_share() const {
  double total = 0, busy = 0;
  if (!ok_ || !read_proc_stat(&total, &busy)) return -1;
  const double dt = total - total0_;
  if (dt <= 0) return -1;  // too short to tell (jiffies are 10 ms)
  const double others = (busy - busy0_) - (self_jiffies() - self0_);
  return std::clamp(others / dt, 0.0, 1.0);
}

BusyVerdict judge_busy(double others_share, double spread) {
  BusyVerdict v;
  std::string why;
  if (others_share >= 0 && others_share > kBusyOthersShare)
    why = fmt::format("other processes used {:.0f}% of the CPU time", 100 * others_share);
  if (spread > kBusySpread)
    why += fmt::format("{}repeats spread {:.2f}x", why.empty() ? "" : "; ", spread);
  v.busy = !why.empty();
  v.why = why;
  return v;
}

}  // namespace strand
