#include "core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace strand {

namespace {

std::atomic<ProgressMode> g_mode{ProgressMode::Auto};

std::string seconds_words(double s) {
  if (s < 60) return fmt::format("{:.1f} s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", int(s) / 60, int(s) % 60);
  return fmt::format("{}h{:02}m", int(s) / 3600, (int(s) / 60) % 60);
}

// Work shorter than this prints nothing: 0.5 s, or STRAND_PROGRESS_AFTER seconds (tests set 0
// to see the line of short work).
double quiet_seconds() {
  static const double s = [] {
    const char* v = std::getenv("STRAND_PROGRESS_AFTER");
    char* end = nullptr;
    const double x = v && *v ? std::strtod(v, &end) : -1;
    return v && *v && end && *end == '\0' && x >= 0 ? x : 0.5;
  }();
  return s;
}

}  // namespace

void set_progress_mode(ProgressMode m) { g_mode = m; }
ProgressMode progress_mode() { return g_mode; }

bool progress_enabled() {
  switch (g_mode.load()) {
    case ProgressMode::On: return true;
    case ProgressMode::Off: return false;
    case ProgressMode::Auto: return ::isatty(STDERR_FILENO) == 1;
  }
  return false;
}

Progress::Progress(std::string label, double total, std::string unit, double scale)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), scale_(scale > 0 ? scale : 1.0) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
  enabled_ = progress_enabled();
  tty_ = ::isatty(STDERR_FILENO) == 1;
}

Progress::~Progress() { finish(); }

void Progress::set(double done) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lk(mu_);
  done_ = done;
  draw(false);
}

void Progress::add(double delta) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lk(mu_);
  done_ += delta;
  draw(false);
}

void Progress::set_note(std::string note) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lk(mu_);
  note_ = std::move(note);
}

void Progress::finish() {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lk(mu_);
  if (finished_) return;
  finished_ = true;
  if (drawn_) draw(true);
}

void Progress::draw(bool final) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  if (!final) {
    if (elapsed < quiet_seconds()) return;
    const double since = std::chrono::duration<double>(now - last_draw_).count();
    if (drawn_ && since < (tty_ ? 0.1 : 2.0)) return;
  }
  last_draw_ = now;
  std::string line = label_;
  const double shown = done_ / scale_;
  const int prec = scale_ > 1 ? 0 : (shown < 10 && shown != double(int64_t(shown)) ? 1 : 0);
  if (total_ > 0)
    line += fmt::format("  {:.{}f} / {:.{}f}{}{}", shown, prec, total_ / scale_, prec, unit_.empty() ? "" : " ", unit_);
  else if (done_ > 0)
    line += fmt::format("  {:.{}f}{}{}", shown, prec, unit_.empty() ? "" : " ", unit_);
  if (total_ > 0) line += fmt::format("  {:3.0f}%", 100.0 * std::min(1.0, done_ / total_));
  if (elapsed > 0 && done_ > 0 && !final)
    line += fmt::format("  {:.3g} {}/s", shown / elapsed, unit_.empty() ? "items" : unit_);
  if (!final && total_ > 0 && done_ > 0 && done_ < total_)
    line += "  ETA " + seconds_words(elapsed * (total_ - done_) / done_);
  if (final) line += "  done in " + seconds_words(elapsed);
  if (!note_.empty()) line += "  " + note_;
  if (tty_) {
    // Redraw in place; the final line stays only for work that took a while.
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    if (final) std::fputs("\n", stderr);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace strand
