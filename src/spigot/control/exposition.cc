#include "spigot/control/exposition.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>

namespace spigot::control {
namespace {

const char* TypeName(Exposition::Type t) {
  switch (t) {
    case Exposition::Type::kCounter: return "counter";
    case Exposition::Type::kGauge: return "gauge";
    case Exposition::Type::kHistogram: return "histogram";
    case Exposition::Type::kSummary: return "summary";
    case Exposition::Type::kUntyped: return "untyped";
  }
  return "untyped";
}

bool NameChar(char c, bool first, bool colon) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (alpha || (colon && c == ':')) return true;
  return !first && c >= '0' && c <= '9';
}

}  // namespace

bool Exposition::ValidName(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!NameChar(name[i], i == 0, true)) return false;
  }
  return true;
}

bool Exposition::ValidLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;  // "__" is Prometheus' own
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!NameChar(name[i], i == 0, false)) return false;
  }
  return true;
}

std::string Exposition::EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string Exposition::EscapeHelp(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string Exposition::FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  // Integers up to 2^53 exactly, without an exponent; everything else shortest round-trip.
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    const auto r = std::to_chars(buf, buf + sizeof(buf), static_cast<long long>(v));
    return std::string(buf, r.ptr);
  }
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

void Exposition::Family(std::string_view name, Type type, std::string_view help) {
  if (!ValidName(name)) {
    assert(false && "invalid metric name");
    ++invalid_;
    open_.clear();
    return;
  }
  if (std::find(opened_.begin(), opened_.end(), name) != opened_.end()) {
    // Already written: its samples may only follow while it is still the open family.
    if (open_ != name) open_.clear();
    return;
  }
  opened_.emplace_back(name);
  open_ = std::string(name);
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += EscapeHelp(help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += TypeName(type);
  out_ += '\n';
}

void Exposition::Sample(const Labels& labels, double value, std::string_view suffix) {
  if (open_.empty()) {
    ++invalid_;
    return;
  }
  for (const auto& [k, v] : labels) {
    if (!ValidLabelName(k)) {
      assert(false && "invalid label name");
      ++invalid_;
      return;
    }
  }
  out_ += open_;
  out_ += suffix;
  if (!labels.empty()) {
    out_ += '{';
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (i != 0) out_ += ',';
      out_ += labels[i].first;
      out_ += "=\"";
      out_ += EscapeLabelValue(labels[i].second);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += FormatValue(value);
  out_ += '\n';
}

void Exposition::Histogram(const Labels& labels, const std::vector<double>& bounds,
                           const std::vector<std::uint64_t>& per_bucket, double sum) {
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (i < per_bucket.size()) cumulative += per_bucket[i];
    Labels with_le = labels;
    with_le.emplace_back("le", FormatValue(bounds[i]));
    Sample(with_le, static_cast<double>(cumulative), "_bucket");
  }
  for (std::size_t i = bounds.size(); i < per_bucket.size(); ++i) cumulative += per_bucket[i];
  Labels inf = labels;
  inf.emplace_back("le", "+Inf");
  Sample(inf, static_cast<double>(cumulative), "_bucket");
  Sample(labels, sum, "_sum");
  Sample(labels, static_cast<double>(cumulative), "_count");
}

}  // namespace spigot::control
