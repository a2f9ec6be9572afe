// The metrics endpoint on a real loopback port, read with cpp-httplib's client.
#include "server/metrics/metrics_server.h"

#include <atomic>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace memserve {
namespace metrics {
namespace {

using ::testing::HasSubstr;

TEST(MetricsServerTest, ServesMetricsHealthAndReadiness) {
  Registry registry;
  Counter* c = *registry.AddCounter("memserve:test_total", "t", {{"model_name", "demo"}});
  c->Increment(3);
  std::atomic<Readiness> readiness{Readiness::kLoading};
  MetricsServerOptions options;
  options.listen = "127.0.0.1:0";
  options.registry = &registry;
  options.readiness = [&readiness] { return readiness.load(); };
  absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);

  httplib::Client client("127.0.0.1", (*server)->port());
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->get_header_value("Content-Type"), HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(metrics->body, HasSubstr("memserve:test_total{model_name=\"demo\"} 3\n"));

  auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);

  auto loading = client.Get("/readyz");
  ASSERT_TRUE(loading);
  EXPECT_EQ(loading->status, 503);
  EXPECT_EQ(loading->body, "loading\n");
  readiness = Readiness::kReady;
  auto ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  readiness = Readiness::kDraining;
  auto draining = client.Get("/readyz");
  ASSERT_TRUE(draining);
  EXPECT_EQ(draining->status, 503);
  EXPECT_EQ(draining->body, "draining\n");

  auto missing = client.Get("/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

TEST(MetricsServerTest, PortInUseIsUnavailableNamingTheFlag) {
  Registry registry;
  MetricsServerOptions options;
  options.listen = "127.0.0.1:0";
  options.registry = &registry;
  auto first = MetricsServer::Start(options);
  ASSERT_TRUE(first.ok()) << first.status();
  options.listen = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = MetricsServer::Start(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("--metrics_listen"));
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(options.listen));
}

TEST(MetricsServerTest, MalformedAddressIsInvalidArgument) {
  Registry registry;
  for (const char* bad : {"127.0.0.1", ":9090", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:x",
                          "[::1:9090", "a b:9090"}) {
    MetricsServerOptions options;
    options.listen = bad;
    options.registry = &registry;
    auto server = MetricsServer::Start(options);
    ASSERT_FALSE(server.ok()) << bad;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(server.status().message()), HasSubstr("--metrics_listen")) << bad;
  }
}

TEST(ParseHostPortTest, AcceptsHostsAndIpv6) {
  auto v4 = ParseHostPort("127.0.0.1:9090", "--f");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->first, "127.0.0.1");
  EXPECT_EQ(v4->second, 9090);
  auto v6 = ParseHostPort("[::1]:0", "--f");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "::1");
  EXPECT_EQ(v6->second, 0);
  EXPECT_TRUE(ParseHostPort("localhost:1", "--f").ok());
}

}  // namespace
}  // namespace metrics
}  // namespace memserve
