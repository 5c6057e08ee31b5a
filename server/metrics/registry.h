// Registry: Prometheus metrics (counters, gauges, histograms, each a family of series told
// apart by label values) and their text exposition, format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/).
//
// Hot paths stay cheap: a series is found once (Family::WithLabels takes the family's
// mutex) and its pointer kept; Counter::Increment, Gauge::Set and Histogram::Observe are
// relaxed atomic operations, no lock. Series are never removed, so pointers stay valid for
// the registry's lifetime.
//
//   Registry registry;
//   CounterFamily& requests = registry.AddCounter("kcnet_http_requests_total",
//                                                 "HTTP bridge requests.", {"route", "code"});
//   Counter* ok = requests.WithLabels({"rpc", "200"});   // once
//   ok->Increment();                                      // per request
//   std::string text = registry.Expose();                 // per scrape
//
// A metric or label name that is not valid Prometheus, a name registered twice, or a
// WithLabels() with the wrong number of values is a programming error: the process aborts
// with a message naming it (names are constants in the code, never user input).
//
// Thread-safety: thread-safe.
#ifndef KCNET_SERVER_METRICS_REGISTRY_H_
#define KCNET_SERVER_METRICS_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kcnet::server::metrics {

// A value that only goes up (resets to 0 when the process restarts).
class Counter {
 public:
  void Increment(uint64_t by = 1) { value_.fetch_add(by, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into buckets by upper bound (le); _sum, _count and the +Inf bucket
// are added by the exposition.
class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, ascending (checked by the family).
  explicit Histogram(const std::vector<double>* bounds);
  void Observe(double value);
  void ObserveDuration(absl::Duration duration) { Observe(absl::ToDoubleSeconds(duration)); }

  // A copy for the exposition: per-bucket counts (not cumulative; the last is +Inf).
  struct Snapshot {
    std::vector<uint64_t> counts;
    double sum = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double>* bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_->size() + 1 (+Inf)
  std::atomic<double> sum_{0};
};

enum class MetricType { kCounter, kGauge, kHistogram };

// The series of one metric name, by label values.
template <typename Series>
class Family {
 public:
  // The series with these label values (one per label name, in order), created at zero
  // the first time. Takes a lock: keep the pointer for hot paths.
  Series* WithLabels(const std::vector<std::string>& values);

 private:
  friend class Registry;
  Family(std::string name, std::string help, MetricType type, std::vector<std::string> labels,
         std::vector<double> bounds = {});
  void Expose(std::string* out) const;

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> labels_;
  const std::vector<double> bounds_;  // histograms only
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Series>> series_ ABSL_GUARDED_BY(mu_);
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Counter names end in _total by convention (not enforced).
  CounterFamily& AddCounter(const std::string& name, const std::string& help,
                            const std::vector<std::string>& labels = {});
  GaugeFamily& AddGauge(const std::string& name, const std::string& help,
                        const std::vector<std::string>& labels = {});
  // `bounds`: ascending upper bounds, without +Inf.
  HistogramFamily& AddHistogram(const std::string& name, const std::string& help,
                                const std::vector<std::string>& labels,
                                const std::vector<double>& bounds);
  // A gauge with no labels read from `read` at each scrape (e.g. a pool's busy count);
  // `read` runs on the scraping thread and must be thread-safe and quick.
  void AddCallbackGauge(const std::string& name, const std::string& help,
                        std::function<double()> read);

  // Every metric in the text format 0.0.4, in registration order; series sorted by label
  // values. Content-Type: text/plain; version=0.0.4; charset=utf-8.
  std::string Expose() const;

 private:
  void Claim(const std::string& name, const std::vector<std::string>& labels, bool histogram);

  mutable absl::Mutex mu_;
  // Families own their series; the exposition walks `order_` (callback gauges live there).
  std::vector<std::unique_ptr<CounterFamily>> counters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<GaugeFamily>> gauges_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<HistogramFamily>> histograms_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void(std::string*)>> order_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
};

// The exposition's pieces, for tests and other formats.
// A sample value: integers without a fraction, others shortest round-trip; +Inf, -Inf, NaN.
std::string FormatValue(double value);
// A label value with \ " and newline escaped (\\ \" \n).
std::string EscapeLabelValue(absl::string_view value);
// HELP text with \ and newline escaped.
std::string EscapeHelp(absl::string_view help);
// Bucket bounds: `count` bounds from `start`, each `factor` times the one before.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Seconds from 1 ms to about 10 s, for latencies.
const std::vector<double>& LatencyBuckets();

}  // namespace kcnet::server::metrics

#endif  // KCNET_SERVER_METRICS_REGISTRY_H_
