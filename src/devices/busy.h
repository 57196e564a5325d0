// strand/devices/busy.h — was the machine busy while strand measured it?
//
// A peak or a bound measured while other processes ran (a build, another benchmark, a noisy
// neighbour on a virtual machine) reads low, and a figure cached from such a moment would be
// used as the machine's by every later run. Two signs are read:
//   other processes' CPU time: /proc/stat's busy time (steal included) less this process's own
//       (/proc/self/stat), as a share of all CPU time, over the measurement;
//   spread: the slowest of the repeats over the fastest (a quiet machine repeats itself).
// A measurement with either sign above its threshold is shown as taken on a busy machine and
// is not cached as the machine's figure.
#pragma once

#include <string>

namespace strand {

class BusyMeter {
 public:
  BusyMeter();  // starts the interval
  // The share, in [0, 1], of the machine's CPU time that other processes used since the start;
  // -1 where /proc/stat cannot be read.
  double others_share() const;

 private:
  double total0_ = 0, busy0_ = 0, self0_ = 0;
  bool ok_ = false;
};

// Thresholds: other processes above 15% of the CPU time, or repeats spread by more than 2x.
constexpr double kBusyOthersShare = 0.15;
constexpr double kBusySpread = 2.0;

struct BusyVerdict {
  bool busy = false;
  std::string why;  // "other processes used 45% of the CPU time; repeats spread 1.8x", or ""
};
// others_share < 0: unknown (not counted); spread <= 0: unknown.
BusyVerdict judge_busy(double others_share, double spread);

}  // namespace strand
