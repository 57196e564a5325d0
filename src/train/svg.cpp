#include "train/svg.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"

namespace strand {

namespace {

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

// A "nice" tick step for a range: 1, 2 or 5 times a power of ten.
double tick_step(double range, int ticks) {
  const double raw = range / std::max(1, ticks);
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

}  // namespace

std::string loss_svg(const std::vector<StepLog>& h, const std::string& title, double uniform) {
  const double W = 720, H = 420, L = 60, R = 20, T = 40, B = 50;  // canvas and margins
  double lo = uniform, hi = uniform;
  int64_t last = 1;
  for (const StepLog& e : h) {
    lo = std::min(lo, e.loss);
    hi = std::max(hi, e.loss);
    if (std::isfinite(e.val_loss)) lo = std::min(lo, e.val_loss), hi = std::max(hi, e.val_loss);
    last = std::max(last, e.step);
  }
  lo = std::max(0.0, std::floor(lo * 2) / 2);
  hi = std::ceil(hi * 2) / 2 + 0.25;
  auto x = [&](double step) { return L + (W - L - R) * (step / double(last)); };
  auto y = [&](double loss) { return T + (H - T - B) * (1 - (loss - lo) / (hi - lo)); };
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"22\" font-size=\"15\">{3}</text>\n",
      W, H, L, escape(title));
  // Axes and ticks.
  s += fmt::format("<path d=\"M{0},{1} V{2} H{3}\" stroke=\"black\" fill=\"none\"/>\n", L, T, H - B, W - R);
  const double ys = tick_step(hi - lo, 6);
  for (double v = std::ceil(lo / ys) * ys; v <= hi + 1e-9; v += ys)
    s += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#ddd\"/><text x=\"{3}\" y=\"{4:.1f}\" "
                     "text-anchor=\"end\">{5:g}</text>\n",
                     L, W - R, y(v), L - 6, y(v) + 4, v);
  const double xs = tick_step(double(last), 8);
  for (double v = 0; v <= double(last) + 1e-9; v += xs)
    s += fmt::format("<text x=\"{0:.1f}\" y=\"{1}\" text-anchor=\"middle\">{2:g}</text>\n", x(v), H - B + 18, v);
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2, H - 12);
  s += fmt::format("<text x=\"16\" y=\"{0}\" transform=\"rotate(-90 16 {0})\" text-anchor=\"middle\">loss (nats/token)</text>\n",
                   (T + H - B) / 2);
  // Uniform guessing.
  s += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#999\" stroke-dasharray=\"6 4\"/>"
                   "<text x=\"{1}\" y=\"{3:.1f}\" text-anchor=\"end\" fill=\"#666\">uniform guessing {4:.2f}</text>\n",
                   L, W - R, y(uniform), y(uniform) - 5, uniform);
  // Train loss, raw and a moving average.
  if (!h.empty()) {
    std::string raw, avg;
    const size_t win = std::max<size_t>(1, h.size() / 25);
    double sum = 0;
    for (size_t i = 0; i < h.size(); ++i) {
      raw += fmt::format("{}{:.1f},{:.1f}", i ? " L" : "M", x(double(h[i].step)), y(h[i].loss));
      sum += h[i].loss;
      if (i >= win) sum -= h[i - win].loss;
      const double mean = sum / double(std::min(i + 1, win));
      avg += fmt::format("{}{:.1f},{:.1f}", i ? " L" : "M", x(double(h[i].step)), y(mean));
    }
    s += fmt::format("<path d=\"{}\" stroke=\"#9ecae1\" stroke-width=\"1\" fill=\"none\"/>\n", raw);
    s += fmt::format("<path d=\"{}\" stroke=\"#08519c\" stroke-width=\"2.5\" fill=\"none\"/>\n", avg);
  }
  for (const StepLog& e : h)
    if (std::isfinite(e.val_loss))
      s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4\" fill=\"#e6550d\"/>\n", x(double(e.step)), y(e.val_loss));
  // Legend.
  s += fmt::format(
      "<g transform=\"translate({},{})\"><line x1=\"0\" x2=\"20\" y1=\"0\" y2=\"0\" stroke=\"#08519c\" stroke-width=\"2.5\"/>"
      "<text x=\"26\" y=\"4\">train loss (moving average)</text><circle cx=\"10\" cy=\"18\" r=\"4\" fill=\"#e6550d\"/>"
      "<text x=\"26\" y=\"22\">validation loss</text></g>\n</svg>\n",
      W - R - 220, T + 10);
  return s;
}

void write_loss_svg(const std::string& path, const std::vector<StepLog>& h, const std::string& title, double uniform) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail("{}: cannot create", path);
  f << loss_svg(h, title, uniform);
  if (!f.flush()) fail("{}: cannot write", path);
}

}  // namespace strand
