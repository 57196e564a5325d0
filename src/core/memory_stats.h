// strand/core/memory_stats.h — how much memory this process holds, for load reports and tests.
//
// peak_rss_bytes() is the high-water mark of the resident set (VmHWM on Linux, ru_maxrss
// elsewhere): mapped file pages count while they are resident, so a load that keeps a whole
// checkpoint mapped shows it. reset_peak_rss() starts a new high-water mark from the current
// resident set (Linux: /proc/self/clear_refs), so that one step can be measured on its own.
#pragma once

#include <cstdint>

namespace strand {

uint64_t peak_rss_bytes();     // 0 when the system does not say
uint64_t current_rss_bytes();  // VmRSS (Linux; 0 elsewhere)
bool reset_peak_rss();         // false where the system cannot

}  // namespace strand
