// The Prometheus text exposition of server/metrics/registry.h.
#include "server/metrics/registry.h"

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.pb.h"
#include "gtest/gtest.h"
#include "server/metrics/grpc_metrics.h"

namespace kcnet::server::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(RegistryTest, CounterWithLabelsIsExposedWithHelpAndType) {
  Registry registry;
  CounterFamily& requests =
      registry.AddCounter("kcnet_test_requests_total", "Requests.", {"route", "code"});
  requests.WithLabels({"connect", "200"})->Increment(3);
  requests.WithLabels({"static", "404"})->Increment();
  requests.WithLabels({"connect", "200"})->Increment();
  EXPECT_EQ(registry.Expose(),
            "# HELP kcnet_test_requests_total Requests.\n"
            "# TYPE kcnet_test_requests_total counter\n"
            "kcnet_test_requests_total{route=\"connect\",code=\"200\"} 4\n"
            "kcnet_test_requests_total{route=\"static\",code=\"404\"} 1\n");
}

TEST(RegistryTest, LabelValuesAndHelpAreEscaped) {
  Registry registry;
  registry.AddGauge("kcnet_test_gauge", "Help with \\ and\na newline.", {"name"})
      .WithLabels({"a \"quoted\" \\ value\nover two lines, Hà Nội"})
      ->Set(1.5);
  EXPECT_EQ(registry.Expose(),
            "# HELP kcnet_test_gauge Help with \\\\ and\\na newline.\n"
            "# TYPE kcnet_test_gauge gauge\n"
            "kcnet_test_gauge{name=\"a \\\"quoted\\\" \\\\ value\\nover two lines, Hà Nội\"} "
            "1.5\n");
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("\\\"\n"), "\\\\\\\"\\n");
}

TEST(RegistryTest, HistogramHasCumulativeBucketsInfSumAndCount) {
  Registry registry;
  Histogram* latency =
      registry.AddHistogram("kcnet_test_seconds", "Latency.", {"method"}, {0.1, 0.5, 1})
          .WithLabels({"Get"});
  for (double v : {0.05, 0.1, 0.3, 0.7, 2.0, 3.0}) latency->Observe(v);
  EXPECT_EQ(registry.Expose(),
            "# HELP kcnet_test_seconds Latency.\n"
            "# TYPE kcnet_test_seconds histogram\n"
            "kcnet_test_seconds_bucket{method=\"Get\",le=\"0.1\"} 2\n"  // le: 0.1 is in
            "kcnet_test_seconds_bucket{method=\"Get\",le=\"0.5\"} 3\n"
            "kcnet_test_seconds_bucket{method=\"Get\",le=\"1\"} 4\n"
            "kcnet_test_seconds_bucket{method=\"Get\",le=\"+Inf\"} 6\n"
            "kcnet_test_seconds_sum{method=\"Get\"} 6.15\n"
            "kcnet_test_seconds_count{method=\"Get\"} 6\n");
}

TEST(RegistryTest, FamiliesWithoutLabelsAreExposedAtZeroFromTheStart) {
  Registry registry;
  registry.AddCounter("kcnet_test_total", "A counter.");
  registry.AddHistogram("kcnet_test_batches", "Batches.", {}, {1, 2});
  registry.AddCallbackGauge("kcnet_test_busy", "Busy.", [] { return 7.0; });
  const std::string text = registry.Expose();
  EXPECT_THAT(text, HasSubstr("\nkcnet_test_total 0\n"));
  EXPECT_THAT(text, HasSubstr("\nkcnet_test_batches_bucket{le=\"+Inf\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("\nkcnet_test_batches_sum 0\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE kcnet_test_busy gauge\nkcnet_test_busy 7\n"));
  // Registration order.
  EXPECT_LT(text.find("kcnet_test_total"), text.find("kcnet_test_batches"));
  EXPECT_LT(text.find("kcnet_test_batches"), text.find("kcnet_test_busy"));
}

TEST(RegistryTest, ValuesAreFormattedForPrometheus) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(0.1 + 0.2), "0.30000000000000004");  // round-trips, not rounded
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatValue(1e20), "1e+20");
}

TEST(RegistryTest, ConcurrentIncrementsAreAllCounted) {
  Registry registry;
  Counter* counter = registry.AddCounter("kcnet_test_total", "A counter.").WithLabels({});
  Histogram* histogram =
      registry.AddHistogram("kcnet_test_hist", "A histogram.", {}, {0.5}).WithLabels({});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([counter, histogram] {
      for (int i = 0; i < 10000; ++i) {
        counter->Increment();
        histogram->Observe(i % 2 == 0 ? 0.25 : 1.0);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(counter->value(), 40000u);
  const std::string text = registry.Expose();
  EXPECT_THAT(text, HasSubstr("kcnet_test_hist_bucket{le=\"0.5\"} 20000\n"));
  EXPECT_THAT(text, HasSubstr("kcnet_test_hist_count 40000\n"));
  EXPECT_THAT(text, HasSubstr("kcnet_test_hist_sum 25000\n"));
}

TEST(RegistryTest, GrpcMetricsPreRegisterEveryCodeOfEveryMethod) {
  (void)grpc::health::v1::HealthCheckRequest::descriptor();  // links health.proto
  Registry registry;
  GrpcServerMetrics grpc(&registry, {"grpc.health.v1.Health", "no.such.Service"});
  {
    GrpcServerMetrics::Call call(&grpc, "/grpc.health.v1.Health/Check");
    call.Received();
    call.Sent();
    call.Handled(grpc::StatusCode::NOT_FOUND);
  }
  { GrpcServerMetrics::Call dropped(&grpc, "/made.up.Service/Method"); }  // never handled
  const std::string text = registry.Expose();
  const std::string check =
      "grpc_type=\"unary\",grpc_service=\"grpc.health.v1.Health\","
      "grpc_method=\"Check\"";
  EXPECT_THAT(text, HasSubstr("grpc_server_started_total{" + check + "} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("grpc_server_handled_total{" + check + ",grpc_code=\"NotFound\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{" + check + ",grpc_code=\"OK\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{" + check +
                              ",grpc_code=\"Unauthenticated\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("grpc_server_msg_received_total{" + check + "} 1\n"));
  EXPECT_THAT(text, HasSubstr("grpc_server_msg_sent_total{" + check + "} 1\n"));
  EXPECT_THAT(text, HasSubstr("grpc_server_handling_seconds_count{" + check + "} 1\n"));
  // Watch is a server stream.
  EXPECT_THAT(text, HasSubstr("grpc_server_started_total{grpc_type=\"server_stream\","
                              "grpc_service=\"grpc.health.v1.Health\",grpc_method=\"Watch\"} 0\n"));
  // A method outside the services is counted as unknown, and a call never handled as
  // Canceled; an unknown service adds nothing.
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{grpc_type=\"unary\",grpc_service="
                              "\"unknown\",grpc_method=\"unknown\",grpc_code=\"Canceled\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("made.up")));
  EXPECT_THAT(text, Not(HasSubstr("no.such")));
}

TEST(RegistryDeathTest, BadNamesAndLabelCountsAbort) {
  Registry registry;
  EXPECT_DEATH(registry.AddCounter("9starts_with_digit", "x"), "invalid metric name");
  EXPECT_DEATH(registry.AddGauge("kcnet_ok", "x", {"__reserved"}), "invalid label name");
  EXPECT_DEATH(registry.AddHistogram("kcnet_h", "x", {"le"}, {1}), "invalid label name");
  EXPECT_DEATH(registry.AddHistogram("kcnet_h", "x", {}, {2, 1}), "strictly ascending");
  registry.AddCounter("kcnet_twice_total", "x", {"a"});
  EXPECT_DEATH(registry.AddCounter("kcnet_twice_total", "x"), "registered twice");
  CounterFamily& family = registry.AddCounter("kcnet_labels_total", "x", {"a", "b"});
  EXPECT_DEATH(family.WithLabels({"only one"}), "1 label values for 2 labels");
}

}  // namespace
}  // namespace kcnet::server::metrics
