// Shared helpers for the Kafka adapter tests. They need a real broker: PAYSTREAM_KAFKA_BROKERS
// (scripts/test.sh / deploy/local/stack export it); without it every test fails. Each test
// uses its own topic prefix (and so its own topics and group ids) on the shared broker.
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "adapters/kafka/kafka.hpp"
#include "common/metrics.hpp"
#include "domain/event.hpp"
#include "domain/ids.hpp"

namespace ps::kafka_test {
using namespace std::chrono_literals;

inline Event test_event(const std::string& key, std::string_view type, int seq) {
  Event e;
  e.id = make_event_id(key + "#" + std::to_string(seq), type);
  e.type = std::string(type);
  e.source = "/paystream/test";
  e.time_ms = 1'700'000'000'123 + seq;
  e.key = key;
  e.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  e.data = "{\"schema_version\":1,\"seq\":" + std::to_string(seq) + "}";
  return e;
}

class KafkaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* brokers = std::getenv("PAYSTREAM_KAFKA_BROKERS");
    if (!brokers || !*brokers)
      GTEST_FAIL() << "PAYSTREAM_KAFKA_BROKERS is not set: start a broker (deploy/local/stack up) and export it";
    opts.brokers = brokers;
    opts.topic_prefix = random_token("t", 6) + ".";
    opts.client_id = "paystream-test";
    opts.request_timeout_ms = 10000;
    opts.transaction_timeout_ms = 15000;
    opts.session_timeout_ms = 6000;  // the broker's minimum
    opts.statistics_interval_ms = 200;
    auto created = create_topics(opts, 3, 1);
    ASSERT_TRUE(created.ok()) << created.error().message;
    ASSERT_EQ(created->size(), 5u);
  }

  std::unique_ptr<KafkaStageLog> open_log(std::set<std::string> db_groups = {}, PositionSink* sink = nullptr,
                                          KafkaOptions o = {}) {
    KafkaStageLogOptions lo;
    lo.kafka = o.brokers.empty() ? opts : o;
    lo.database_groups = std::move(db_groups);
    lo.sink = sink;
    auto log = KafkaStageLog::open(lo);
    EXPECT_TRUE(log.ok()) << (log ? "" : log.error().message);
    return log ? std::move(log.value()) : nullptr;
  }

  std::unique_ptr<KafkaPublisher> open_publisher() {
    auto p = KafkaPublisher::open(opts);
    EXPECT_TRUE(p.ok()) << (p ? "" : p.error().message);
    return p ? std::move(p.value()) : nullptr;
  }

  static Result<void> publish_sync(KafkaPublisher& pub, std::vector<Event> events) {
    auto done = std::make_shared<std::promise<Result<void>>>();
    auto fut = done->get_future();
    pub.publish(std::move(events), [done](Result<void> r) { done->set_value(std::move(r)); });
    if (fut.wait_for(30s) != std::future_status::ready) return Error::timeout("publish callback never ran");
    return fut.get();
  }

  // Polls until at least `n` records are returned by one poll (records not committed come
  // back on every poll, so a later poll returns a superset) or `timeout` passes.
  static std::vector<Record> poll_until(KafkaStageLog& log, const std::string& group,
                                        const std::vector<std::string>& topics, size_t n,
                                        std::chrono::milliseconds timeout = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<Record> last;
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = log.poll(group, topics, 1000, 500ms);
      EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
      if (!r) return last;
      last = std::move(r.value());
      if (last.size() >= n) return last;
    }
    return last;
  }

  // What a fresh read_committed group sees on `topic`: polls until it has seen `until`
  // records or `window` passes (so emptiness checks use the whole window).
  std::vector<Record> observe(const std::string& topic, std::chrono::milliseconds window, size_t until = 1) {
    auto log = open_log();
    const std::string group = "observer-" + random_token("", 4);
    std::vector<Record> seen;
    const auto deadline = std::chrono::steady_clock::now() + window;
    while (std::chrono::steady_clock::now() < deadline && seen.size() < until) {
      auto r = log->poll(group, {topic}, 1000, 300ms);
      EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
      if (!r) break;
      if (r->size() > seen.size()) seen = std::move(r.value());
    }
    log->close();
    return seen;
  }

  static metrics::Gauge& lag_gauge(const std::string& group, const std::string& topic, int32_t partition) {
    return metrics::registry().gauge("paystream_kafka_consumer_lag", "",
                                     {{"group", group}, {"topic", topic}, {"partition", std::to_string(partition)}});
  }
  static double lag(const std::string& group, const std::string& topic, int32_t partition) {
    return lag_gauge(group, topic, partition).value();
  }

  KafkaOptions opts;
};

// UNIT-LEVEL TEST DOUBLE, not the real sink: a PositionSink backed by a std::map, used
// only to test the Kafka stage log's database-group mechanics (assignment seeks, rewind
// after a failed apply, positions never moving backwards). The PostgreSQL sink is tested
// by the integration harness.
class MapPositionSink final : public PositionSink {
 public:
  Result<void> apply(const std::string& group, const std::vector<Record>& consumed, const Effects& effects) override {
    std::lock_guard l(mu_);
    if (fail_next_) {
      fail_next_ = false;
      return Error::unavailable("db_unavailable", "injected apply failure");
    }
    for (const auto& r : consumed) {
      auto& pos = positions_[group][{r.topic, r.partition}];
      pos = std::max(pos, r.offset + 1);
    }
    ++applies_;
    merchant_events_ += effects.merchant_events.size();
    return {};
  }
  Result<std::map<TopicPartition, int64_t>> positions(const std::string& group) override {
    std::lock_guard l(mu_);
    return positions_[group];
  }
  void fail_next() {
    std::lock_guard l(mu_);
    fail_next_ = true;
  }
  void set(const std::string& group, const TopicPartition& tp, int64_t next) {
    std::lock_guard l(mu_);
    positions_[group][tp] = next;
  }
  int applies() {
    std::lock_guard l(mu_);
    return applies_;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::map<TopicPartition, int64_t>> positions_;
  bool fail_next_ = false;
  int applies_ = 0;
  size_t merchant_events_ = 0;
};

}  // namespace ps::kafka_test
