// strand/devices/gpu.h — `strand devices` for tiers with memory of their own (a GPU): what the
// device is and its own ceilings, measured on it, in place of the host's FP32 and memory figures.
#pragma once

#include "devices/machine.h"

namespace strand {

// Fills tp for the usable tier tp.tier whose memory is its own: `device` (the GPU in words, how
// its figures were measured), measured_gflops (its bf16 tensor-core rate), measured_bandwidth_gbs
// (its device copy bandwidth), threads (its multiprocessors). quick: small sizes.
void measure_device_tier(bool quick, TierPeak& tp);

}  // namespace strand
