// The Prometheus text exposition format, version 0.0.4 (Content-Type
// "text/plain; version=0.0.4"): families of samples, each opened by "# HELP" and "# TYPE".
//
//   # HELP spigot_packets_dropped_total ESP packets dropped, by reason.
//   # TYPE spigot_packets_dropped_total counter
//   spigot_packets_dropped_total{reason="unknown_spi"} 3
//
// Contract: a family's samples follow its header, and a name is opened at most once per
// exposition (a second Family() with the same name is ignored and its samples are added to the
// first only if it is still the open one). Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label
// names [a-zA-Z_][a-zA-Z0-9_]*: an invalid one is a programming error (it crashes in debug
// builds and is dropped otherwise). Label values and HELP text are escaped (backslash, double
// quote in label values, newline).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "spigot/engine/histogram.h"

namespace spigot::control {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  enum class Type { kCounter, kGauge, kHistogram, kSummary, kUntyped };

  // Opens a family: writes its "# HELP" and "# TYPE" lines.
  void Family(std::string_view name, Type type, std::string_view help);
  // One sample of the open family; `suffix` is "", "_bucket", "_sum" or "_count".
  void Sample(const Labels& labels, double value, std::string_view suffix = "");
  // The open family's histogram: one cumulative `_bucket` per bound, `le="+Inf"` (the count),
  // `_sum` and `_count`, each with `labels` (and `le`).
  void Histogram(const Labels& labels, const std::vector<double>& bounds,
                 const std::vector<std::uint64_t>& per_bucket, double sum);
  void Histogram(const Labels& labels, const engine::Histogram& h) {
    Histogram(labels, h.bounds(), h.counts(), h.sum());
  }

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }
  // Samples dropped for an invalid name or label name (none in a correct program).
  std::size_t invalid() const { return invalid_; }

  // The pieces, exposed for tests.
  static bool ValidName(std::string_view name);
  static bool ValidLabelName(std::string_view name);
  static std::string EscapeLabelValue(std::string_view v);
  static std::string EscapeHelp(std::string_view v);
  // A sample value: integers exactly, others in the shortest form that reads back the same;
  // "NaN", "+Inf", "-Inf".
  static std::string FormatValue(double v);

 private:
  std::string out_;
  std::string open_;  // the open family's name; empty: none (samples are dropped)
  std::vector<std::string> opened_;
  std::size_t invalid_ = 0;
};

}  // namespace spigot::control
