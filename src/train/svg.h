// strand/train/svg.h — a training run's loss curve as a standalone SVG file.
//
// Train loss per step (thin), its moving average (thick), validation loss at each evaluation
// (dots), and a dashed line at the uniform-guessing loss ln(vocabulary). Axes with ticks;
// no scripts, no external resources: any browser or image viewer shows it.
#pragma once

#include <string>
#include <vector>

#include "train/trainer.h"

namespace strand {

std::string loss_svg(const std::vector<StepLog>& history, const std::string& title, double uniform_loss);
void write_loss_svg(const std::string& path, const std::vector<StepLog>& history, const std::string& title,
                    double uniform_loss);

}  // namespace strand
