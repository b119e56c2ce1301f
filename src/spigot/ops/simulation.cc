#include "spigot/ops/simulation.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <random>

#include "spigot/ops/format.h"

namespace spigot::ops {
namespace {

// Uniform in (0, 1) from one 32-bit draw: never 0, so its logarithm is finite.
double Uniform(std::mt19937& rng) { return (double(rng()) + 0.5) / 4294967296.0; }

double Exponential(std::mt19937& rng, double rate) { return -std::log(Uniform(rng)) / rate; }

std::string Escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

std::string Clock(double seconds) {
  const int minutes = int(std::lround(seconds / 60));
  char buf[16];
  std::snprintf(buf, sizeof buf, "%02d:%02d", minutes / 60, minutes % 60);
  return buf;
}

// 1, 10, 100, 1k, 10k, 100k, 1M, ...
std::string PowerOfTenLabel(int exponent) {
  static constexpr const char* kSuffix[] = {"", "k", "M", "G"};
  const int group = std::min(exponent / 3, 3);
  std::string s = "1";
  for (int i = 0; i < exponent - 3 * group; ++i) s += '0';
  return s + kSuffix[group];
}

}  // namespace

std::vector<SimStorm> DailyStorms(const StormSpec& storm) {
  std::vector<SimStorm> storms;
  for (double hour : kStormStartHours)
    storms.push_back({hour * 3600, storm.tunnels, storm.seconds});
  return storms;
}

SimulationInput SimulationFor(const PlanResult& plan) {
  SimulationInput in;
  in.arrival_per_second = plan.with_jitter.per_second();
  if (plan.input.storm) in.storms = DailyStorms(*plan.input.storm);
  in.workers = plan.input.workers;
  in.service_per_second = plan.input.capacity_per_second / plan.input.workers;
  in.max_queue = plan.input.max_queue;
  return in;
}

double ExpectedEvents(const SimulationInput& in) {
  double arrivals = in.arrival_per_second * in.duration_seconds;
  for (const SimStorm& s : in.storms) arrivals += double(s.tunnels);
  // Each admitted arrival completes once; refused ones cost an event too.
  return 2 * arrivals;
}

SimulationResult Simulate(const SimulationInput& in) {
  assert(in.workers >= 1 && in.service_per_second > 0 && in.sample_seconds > 0);
  SimulationResult r;
  const auto intervals =
      static_cast<std::size_t>(std::ceil(in.duration_seconds / in.sample_seconds));
  r.peak_depth.assign(intervals, 0);
  r.overflows_by_interval.assign(intervals, 0);
  std::mt19937 rng(in.seed);
  const std::uint64_t c = in.workers;
  const std::uint64_t capacity = in.max_queue + c;  // K: in service plus waiting

  // Times at which the arrival rate changes, and the end.
  std::vector<double> changes = {in.duration_seconds};
  for (const SimStorm& s : in.storms) {
    changes.push_back(s.start_seconds);
    changes.push_back(s.start_seconds + s.seconds);
  }
  std::sort(changes.begin(), changes.end());
  const auto arrival_rate = [&](double t) {
    double rate = in.arrival_per_second;
    for (const SimStorm& s : in.storms) {
      if (t >= s.start_seconds && t < s.start_seconds + s.seconds)
        rate += double(s.tunnels) / s.seconds;
    }
    return rate;
  };
  const auto interval_of = [&](double t) {
    return std::min(static_cast<std::size_t>(t / in.sample_seconds), intervals - 1);
  };

  double t = 0;
  std::uint64_t n = 0;      // in the system
  std::uint64_t depth = 0;  // waiting: max(0, n - c)
  std::size_t marked = 0;   // intervals before this one hold their final peak
  std::size_t next_change = 0;
  while (t < in.duration_seconds) {
    while (changes[next_change] <= t) ++next_change;  // changes.back() == duration > t
    const double boundary = changes[next_change];
    const double lambda = arrival_rate(t);
    const double total = lambda + double(std::min(n, c)) * in.service_per_second;
    const double dt = total > 0 ? Exponential(rng, total) : boundary - t;
    if (t + dt >= boundary) {
      t = boundary;  // the rate changes here: redraw (memoryless)
      continue;
    }
    t += dt;
    // The depth held since the last event covers every interval up to this one.
    const std::size_t now = interval_of(t);
    for (; marked < now; ++marked) r.peak_depth[marked] = std::max(r.peak_depth[marked], depth);
    if (Uniform(rng) * total < lambda) {
      ++r.arrivals;
      if (n < capacity) {
        ++n;
        ++r.admitted;
      } else {
        ++r.overflows;
        ++r.overflows_by_interval[now];
      }
    } else {
      --n;
      ++r.completed;
    }
    depth = n > c ? n - c : 0;
    r.peak_depth[now] = std::max(r.peak_depth[now], depth);
    if (depth > r.peak) {
      r.peak = depth;
      r.peak_at_seconds = t;
    }
  }
  for (; marked < intervals; ++marked) r.peak_depth[marked] = std::max(r.peak_depth[marked], depth);
  return r;
}

std::string RenderSvg(const SimulationInput& in, const SimulationResult& result,
                      const std::string& subtitle) {
  constexpr double kWidth = 960, kHeight = 520;
  constexpr double kLeft = 90, kRight = 30, kTop = 90, kBottom = 70;
  constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;
  // Log scale, log10(1 + depth), so that 0 sits on the axis and a storm of a thousand shows
  // beside a max_queue of 65536. The top decade holds the larger of the peak and max_queue.
  const double top_value = double(std::max<std::uint64_t>({result.peak, in.max_queue, 10}));
  const int decades = int(std::ceil(std::log10(1 + top_value) + 0.15));
  const double y_max = decades;
  const auto x_of = [&](double seconds) { return kLeft + kPlotW * seconds / in.duration_seconds; };
  const auto y_of = [&](double depth) {
    return kTop + kPlotH * (1 - std::log10(1 + depth) / y_max);
  };
  const auto num = [](double v) { return Fixed(v, 1); };

  std::string s;
  s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(kWidth) + "\" height=\"" +
       num(kHeight) + "\" viewBox=\"0 0 " + num(kWidth) + " " + num(kHeight) +
       "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + num(kLeft) +
       "\" y=\"28\" font-size=\"17\" font-weight=\"bold\">"
       "Negotiation queue depth over a simulated day</text>\n";
  s += "<text x=\"" + num(kLeft) + "\" y=\"48\" fill=\"#444\">" + Escape(subtitle) + "</text>\n";
  std::string summary = "peak " + std::to_string(result.peak) + " waiting";
  if (result.peak > 0) summary += " at " + Clock(result.peak_at_seconds);
  summary += ", " + std::to_string(result.arrivals) + " negotiations, " +
             std::to_string(result.overflows) + " refused by overflow; seed " +
             std::to_string(in.seed);
  s += "<text x=\"" + num(kLeft) + "\" y=\"66\" fill=\"" +
       (result.overflows > 0 ? "#c00000" : "#444") + "\">" + Escape(summary) + "</text>\n";

  // Storm windows, at least 3 px wide so that a 1-second storm is visible.
  for (const SimStorm& st : in.storms) {
    const double x0 = x_of(st.start_seconds);
    const double w = std::max(3.0, x_of(st.start_seconds + st.seconds) - x0);
    s += "<rect x=\"" + num(x0) + "\" y=\"" + num(kTop) + "\" width=\"" + num(w) + "\" height=\"" +
         num(kPlotH) + "\" fill=\"#f5b041\" fill-opacity=\"0.35\"/>\n";
    s += "<text x=\"" + num(x0 + w + 3) + "\" y=\"" + num(kTop + kPlotH - 6) +
         "\" fill=\"#a05a00\">storm " + std::to_string(st.tunnels) + "/" +
         Fixed(st.seconds, st.seconds == std::floor(st.seconds) ? 0 : 1) + "s at " +
         Clock(st.start_seconds) + "</text>\n";
  }

  // Grid and axes.
  s += "<g stroke=\"#ddd\" stroke-width=\"1\">\n";
  for (int h = 0; h <= 24; h += 2) {
    const double x = x_of(h * 3600.0 * in.duration_seconds / kDaySeconds);
    s += "<line x1=\"" + num(x) + "\" y1=\"" + num(kTop) + "\" x2=\"" + num(x) + "\" y2=\"" +
         num(kTop + kPlotH) + "\"/>\n";
  }
  for (int e = 0; e <= decades; ++e) {
    const double y = y_of(std::pow(10.0, e));
    s += "<line x1=\"" + num(kLeft) + "\" y1=\"" + num(y) + "\" x2=\"" + num(kLeft + kPlotW) +
         "\" y2=\"" + num(y) + "\"/>\n";
  }
  s += "</g>\n";
  s += "<g stroke=\"black\" stroke-width=\"1.2\">\n";
  s += "<line x1=\"" + num(kLeft) + "\" y1=\"" + num(kTop + kPlotH) + "\" x2=\"" +
       num(kLeft + kPlotW) + "\" y2=\"" + num(kTop + kPlotH) + "\"/>\n";
  s += "<line x1=\"" + num(kLeft) + "\" y1=\"" + num(kTop) + "\" x2=\"" + num(kLeft) + "\" y2=\"" +
       num(kTop + kPlotH) + "\"/>\n";
  s += "</g>\n";
  s += "<g text-anchor=\"middle\">\n";
  for (int h = 0; h <= 24; h += 2) {
    const double seconds = h * 3600.0 * in.duration_seconds / kDaySeconds;
    s += "<text x=\"" + num(x_of(seconds)) + "\" y=\"" + num(kTop + kPlotH + 18) + "\">" +
         Clock(seconds) + "</text>\n";
  }
  s += "<text x=\"" + num(kLeft + kPlotW / 2) + "\" y=\"" + num(kHeight - 22) +
       "\">time of day (hours)</text>\n";
  s += "</g>\n";
  s += "<g text-anchor=\"end\">\n";
  s += "<text x=\"" + num(kLeft - 8) + "\" y=\"" + num(y_of(0) + 4) + "\">0</text>\n";
  for (int e = 0; e <= decades; ++e) {
    s += "<text x=\"" + num(kLeft - 8) + "\" y=\"" + num(y_of(std::pow(10.0, e)) + 4) + "\">" +
         PowerOfTenLabel(e) + "</text>\n";
  }
  s += "</g>\n";
  s += "<text transform=\"translate(22 " + num(kTop + kPlotH / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">negotiations waiting (log scale)</text>\n";

  // The overflow line.
  const double y_limit = y_of(double(in.max_queue));
  s += "<line x1=\"" + num(kLeft) + "\" y1=\"" + num(y_limit) + "\" x2=\"" + num(kLeft + kPlotW) +
       "\" y2=\"" + num(y_limit) +
       "\" stroke=\"#d00000\" stroke-width=\"2\" stroke-dasharray=\"8 4\"/>\n";
  s += "<text x=\"" + num(kLeft + kPlotW - 4) + "\" y=\"" + num(y_limit - 6) +
       "\" text-anchor=\"end\" fill=\"#d00000\" font-weight=\"bold\">max_queue " +
       std::to_string(in.max_queue) + ": arrivals above this line overflow</text>\n";

  // The depth: one point per sample interval, at its middle.
  s += "<polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"1.5\" stroke-linejoin=\"round\" "
       "points=\"";
  for (std::size_t i = 0; i < result.peak_depth.size(); ++i) {
    const double t = std::min((double(i) + 0.5) * in.sample_seconds, in.duration_seconds);
    s += num(x_of(t)) + "," + num(y_of(double(result.peak_depth[i]))) + " ";
  }
  s += "\"/>\n";
  // Minutes that refused arrivals, on the overflow line.
  s += "<g fill=\"#d00000\">\n";
  for (std::size_t i = 0; i < result.overflows_by_interval.size(); ++i) {
    if (result.overflows_by_interval[i] == 0) continue;
    const double t = std::min((double(i) + 0.5) * in.sample_seconds, in.duration_seconds);
    s += "<circle cx=\"" + num(x_of(t)) + "\" cy=\"" + num(y_limit) + "\" r=\"4\"/>\n";
  }
  s += "</g>\n";
  // Legend.
  const double ly = kTop - 12;
  s += "<line x1=\"" + num(kLeft + kPlotW - 250) + "\" y1=\"" + num(ly - 4) + "\" x2=\"" +
       num(kLeft + kPlotW - 225) + "\" y2=\"" + num(ly - 4) +
       "\" stroke=\"#1f5fbf\" stroke-width=\"2\"/>\n";
  s += "<text x=\"" + num(kLeft + kPlotW - 220) + "\" y=\"" + num(ly) +
       "\">most negotiations waiting, per minute</text>\n";
  if (result.overflows > 0) {
    s += "<circle cx=\"" + num(kLeft + kPlotW - 440) + "\" cy=\"" + num(ly - 4) +
         "\" r=\"4\" fill=\"#d00000\"/>\n";
    s += "<text x=\"" + num(kLeft + kPlotW - 432) + "\" y=\"" + num(ly) +
         "\" fill=\"#d00000\">a minute with overflows</text>\n";
  }
  s += "</svg>\n";
  return s;
}

}  // namespace spigot::ops
