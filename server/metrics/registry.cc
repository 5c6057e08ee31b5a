#include "server/metrics/registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kcnet::server::metrics {
namespace {

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "kcnet metrics: %s\n", message.c_str());
  std::abort();
}

bool ValidName(absl::string_view name, bool label) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0) && !(c == ':' && !label)) return false;
  }
  return !(label && name.substr(0, 2) == "__");
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// `{a="x",b="y"}` (with `extra` appended, e.g. le="0.5"); empty when there are no labels.
std::string LabelSet(const std::vector<std::string>& names, const std::vector<std::string>& values,
                     absl::string_view extra = "") {
  std::vector<std::string> pairs;
  for (size_t i = 0; i < names.size(); ++i) {
    pairs.push_back(absl::StrCat(names[i], "=\"", EscapeLabelValue(values[i]), "\""));
  }
  if (!extra.empty()) pairs.emplace_back(extra);
  if (pairs.empty()) return "";
  return absl::StrCat("{", absl::StrJoin(pairs, ","), "}");
}

void Header(absl::string_view name, absl::string_view help, MetricType type, std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", EscapeHelp(help), "\n# TYPE ", name, " ",
                  TypeName(type), "\n");
}

}  // namespace

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::trunc(value) && std::fabs(value) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  char buffer[64];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  for (const char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double>* const buckets = new std::vector<double>{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return *buckets;
}

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // The first bucket whose bound is >= value (le: less or equal); past the last: +Inf.
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(bounds_->begin(), bounds_->end(), value) - bounds_->begin());
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snapshot;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    snapshot.counts.push_back(counts_[i].load(std::memory_order_relaxed));
  }
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

template <typename Series>
Family<Series>::Family(std::string name, std::string help, MetricType type,
                       std::vector<std::string> labels, std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      labels_(std::move(labels)),
      bounds_(std::move(bounds)) {}

template <typename Series>
Series* Family<Series>::WithLabels(const std::vector<std::string>& values) {
  if (values.size() != labels_.size()) {
    Fail(absl::StrCat(name_, ": ", values.size(), " label values for ", labels_.size(), " labels (",
                      absl::StrJoin(labels_, ","), ")"));
  }
  absl::MutexLock lock(&mu_);
  std::unique_ptr<Series>& series = series_[values];
  if (series == nullptr) {
    if constexpr (std::is_same_v<Series, Histogram>) {
      series = std::make_unique<Histogram>(&bounds_);
    } else {
      series = std::make_unique<Series>();
    }
  }
  return series.get();
}

template <typename Series>
void Family<Series>::Expose(std::string* out) const {
  Header(name_, help_, type_, out);
  absl::MutexLock lock(&mu_);
  for (const auto& [values, series] : series_) {
    if constexpr (std::is_same_v<Series, Histogram>) {
      const Histogram::Snapshot snapshot = series->Read();
      // Cumulative buckets; _count is the +Inf bucket, so the two always agree.
      uint64_t cumulative = 0;
      for (size_t i = 0; i < snapshot.counts.size(); ++i) {
        cumulative += snapshot.counts[i];
        const std::string le = i < bounds_.size() ? FormatValue(bounds_[i]) : std::string("+Inf");
        absl::StrAppend(out, name_, "_bucket",
                        LabelSet(labels_, values, absl::StrCat("le=\"", le, "\"")), " ", cumulative,
                        "\n");
      }
      absl::StrAppend(out, name_, "_sum", LabelSet(labels_, values), " ", FormatValue(snapshot.sum),
                      "\n");
      absl::StrAppend(out, name_, "_count", LabelSet(labels_, values), " ", cumulative, "\n");
    } else {
      absl::StrAppend(out, name_, LabelSet(labels_, values), " ",
                      FormatValue(static_cast<double>(series->value())), "\n");
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

void Registry::Claim(const std::string& name, const std::vector<std::string>& labels,
                     bool histogram) {
  if (!ValidName(name, /*label=*/false)) Fail(absl::StrCat("invalid metric name '", name, "'"));
  for (const std::string& label : labels) {
    if (!ValidName(label, /*label=*/true) || (histogram && label == "le")) {
      Fail(absl::StrCat(name, ": invalid label name '", label, "'"));
    }
  }
  if (std::find(names_.begin(), names_.end(), name) != names_.end()) {
    Fail(absl::StrCat("metric '", name, "' registered twice"));
  }
  names_.push_back(name);
}

CounterFamily& Registry::AddCounter(const std::string& name, const std::string& help,
                                    const std::vector<std::string>& labels) {
  absl::MutexLock lock(&mu_);
  Claim(name, labels, false);
  counters_.push_back(
      std::unique_ptr<CounterFamily>(new CounterFamily(name, help, MetricType::kCounter, labels)));
  CounterFamily* family = counters_.back().get();
  order_.push_back([family](std::string* out) { family->Expose(out); });
  // A family without labels has its one series from the start (exposed at 0).
  if (labels.empty()) family->WithLabels({});
  return *family;
}

GaugeFamily& Registry::AddGauge(const std::string& name, const std::string& help,
                                const std::vector<std::string>& labels) {
  absl::MutexLock lock(&mu_);
  Claim(name, labels, false);
  gauges_.push_back(
      std::unique_ptr<GaugeFamily>(new GaugeFamily(name, help, MetricType::kGauge, labels)));
  GaugeFamily* family = gauges_.back().get();
  order_.push_back([family](std::string* out) { family->Expose(out); });
  if (labels.empty()) family->WithLabels({});
  return *family;
}

HistogramFamily& Registry::AddHistogram(const std::string& name, const std::string& help,
                                        const std::vector<std::string>& labels,
                                        const std::vector<double>& bounds) {
  absl::MutexLock lock(&mu_);
  Claim(name, labels, true);
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
      Fail(absl::StrCat(name, ": bucket bounds must be finite and strictly ascending"));
    }
  }
  histograms_.push_back(std::unique_ptr<HistogramFamily>(
      new HistogramFamily(name, help, MetricType::kHistogram, labels, bounds)));
  HistogramFamily* family = histograms_.back().get();
  order_.push_back([family](std::string* out) { family->Expose(out); });
  if (labels.empty()) family->WithLabels({});
  return *family;
}

void Registry::AddCallbackGauge(const std::string& name, const std::string& help,
                                std::function<double()> read) {
  absl::MutexLock lock(&mu_);
  Claim(name, {}, false);
  order_.push_back([name, help, read = std::move(read)](std::string* out) {
    Header(name, help, MetricType::kGauge, out);
    absl::StrAppend(out, name, " ", FormatValue(read()), "\n");
  });
}

std::string Registry::Expose() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const std::function<void(std::string*)>& expose : order_) expose(&out);
  return out;
}

}  // namespace kcnet::server::metrics
