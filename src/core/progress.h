// strand/core/progress.h — one progress line on stderr for long work.
//
// Loading, converting, scoring, probing, validating, benchmarking and training say how far
// they are, how fast they go and how long is left:
//   loading model.safetensors   812 / 1350 MB   60%   215 MB/s   ETA 2.5 s
// Shown only when stderr is a terminal (redrawn in place, at most 10 times a second), or
// when asked for with --progress (then a plain line at most every 2 s, for logs); --quiet
// (ProgressMode::Off) silences it. Never on stdout, so --json output stays one value. Work that
// ends within half a second (STRAND_PROGRESS_AFTER seconds, when set) prints nothing at all.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

namespace strand {

enum class ProgressMode { Auto, On, Off };
void set_progress_mode(ProgressMode m);  // the CLI sets it from --progress / --quiet
ProgressMode progress_mode();
bool progress_enabled();  // Auto: stderr is a terminal

class Progress {
 public:
  // `total` units of work (0: unknown, no percentage or ETA); `unit` names them ("MB",
  // "tokens", "steps"); `scale` divides raw counts for display (1e6 for bytes shown in MB).
  Progress(std::string label, double total, std::string unit = {}, double scale = 1.0);
  ~Progress();  // finish()
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void set(double done);   // absolute progress (thread-safe)
  void add(double delta);  // relative
  void set_note(std::string note);  // extra words at the end of the line ("loss 3.21")
  // Ends the line: a terminal's line is erased (or, after long work, left with the total time).
  void finish();

 private:
  void draw(bool final);
  std::string label_, unit_, note_;
  double total_ = 0, scale_ = 1, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool enabled_ = false, tty_ = false, drawn_ = false, finished_ = false;
  std::mutex mu_;
};

}  // namespace strand
