// KafkaPublisher and KafkaStageLog (Kafka-sink groups) against a real broker.
#include <gtest/gtest.h>

#include <algorithm>

#include "kafka/kafka_harness.hpp"

namespace ps::kafka_test {
namespace {

TEST_F(KafkaTest, CreateTopicsIsIdempotent) {
  auto again = create_topics(opts, 3, 1);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_TRUE(again->empty());
}

// Topics are created with min.insync.replicas (the harness: 1 replica, so 1) and tx.dlq
// with its retention; the pipeline topics keep the broker's retention.
TEST_F(KafkaTest, CreatedTopicsCarryMinInsyncReplicasAndTheDlqRetention) {
  KafkaOptions o = opts;
  o.topic_prefix = random_token("t", 6) + ".";
  TopicSettings s;
  s.dlq_retention_ms = 3'600'000;
  auto created = create_topics(o, 1, 1, s);
  ASSERT_TRUE(created.ok()) << created.error().message;
  ASSERT_EQ(created->size(), 5u);
  auto dlq = topic_configs(o, "tx.dlq");
  ASSERT_TRUE(dlq.ok()) << dlq.error().message;
  EXPECT_EQ(dlq->at("retention.ms"), "3600000");
  EXPECT_EQ(dlq->at("min.insync.replicas"), "1");
  auto initiated = topic_configs(o, "tx.initiated");
  ASSERT_TRUE(initiated.ok()) << initiated.error().message;
  EXPECT_EQ(initiated->at("min.insync.replicas"), "1");
  EXPECT_NE(initiated->at("retention.ms"), "3600000");
  // Again: nothing created, the existing configs left alone (a differing wish is a warning).
  s.dlq_retention_ms = -1;
  auto again = create_topics(o, 1, 1, s);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_TRUE(again->empty());
  EXPECT_EQ(topic_configs(o, "tx.dlq")->at("retention.ms"), "3600000");
}

TEST(TopicSettings, MinInsyncReplicasIsBelowTheReplicationFactor) {
  EXPECT_EQ(*min_insync_for({}, 3), 2);
  EXPECT_EQ(*min_insync_for({}, 5), 2);
  EXPECT_EQ(*min_insync_for({}, 2), 1);
  EXPECT_EQ(*min_insync_for({}, 1), 1);
  EXPECT_EQ(*min_insync_for({3, 0}, 5), 3);
  EXPECT_FALSE(min_insync_for({3, 0}, 3).ok()) << "one broker down would stop every producer";
  EXPECT_FALSE(min_insync_for({2, 0}, 1).ok());
  EXPECT_FALSE(min_insync_for({-1, 0}, 3).ok());
  KafkaOptions none;
  TopicSettings zero;
  zero.dlq_retention_ms = 0;
  EXPECT_FALSE(create_topics(none, 1, 1, zero).ok()) << "retention 0 refused before any broker is asked";
}

TEST_F(KafkaTest, PublishThenPollRoundTripsHeadersKeysAndPerKeyOrder) {
  auto pub = open_publisher();
  std::vector<Event> events;
  for (int i = 0; i < 12; ++i)
    events.push_back(test_event("pay_" + std::to_string(i % 4), event_types::payment_initiated, i));
  ASSERT_TRUE(publish_sync(*pub, events).ok());

  auto log = open_log();
  auto recs = poll_until(*log, "fraud", {"tx.initiated"}, events.size());
  ASSERT_EQ(recs.size(), events.size());
  std::map<std::string, const Event*> by_id;
  for (const auto& e : events) by_id[e.id] = &e;
  std::map<std::string, std::vector<const Record*>> per_key;
  for (const auto& r : recs) {
    EXPECT_EQ(r.topic, "tx.initiated");
    ASSERT_TRUE(by_id.count(r.event.id)) << r.event.id;
    const Event& want = *by_id[r.event.id];
    EXPECT_EQ(r.event.type, want.type);
    EXPECT_EQ(r.event.source, want.source);
    EXPECT_EQ(r.event.time_ms, want.time_ms);
    EXPECT_EQ(r.event.key, want.key);
    EXPECT_EQ(r.event.traceparent, want.traceparent);
    EXPECT_EQ(r.event.data, want.data);
    per_key[r.event.key].push_back(&r);
  }
  // Per key: one partition, published order = offset order = poll order.
  for (const auto& [key, rs] : per_key) {
    ASSERT_EQ(rs.size(), 3u) << key;
    for (size_t i = 1; i < rs.size(); ++i) {
      EXPECT_EQ(rs[i]->partition, rs[0]->partition) << key;
      EXPECT_GT(rs[i]->offset, rs[i - 1]->offset) << key;
      EXPECT_LT(by_id[rs[i - 1]->event.id]->time_ms, by_id[rs[i]->event.id]->time_ms) << key;
    }
  }
  EXPECT_TRUE(publish_sync(*pub, {}).ok()) << "an empty publish completes";
}

TEST_F(KafkaTest, PublishFailureReachesTheCallbackAndTheMetric) {
  auto pub = open_publisher();
  auto& errors = metrics::registry().counter("paystream_kafka_produce_errors_total", "");
  const double before = errors.value();
  Event huge = test_event("pay_big", event_types::payment_initiated, 1);
  huge.data.assign(2'000'000, 'x');  // above message.max.bytes
  auto r = publish_sync(*pub, {test_event("pay_ok", event_types::payment_initiated, 1), huge});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.error().retryable);
  EXPECT_GE(errors.value(), before + 1);
}

TEST_F(KafkaTest, UncommittedRecordsComeBackAndCommitsNeverMoveBackwards) {
  auto pub = open_publisher();
  std::vector<Event> events;
  for (int i = 0; i < 3; ++i) events.push_back(test_event("pay_same", event_types::payment_initiated, i));
  ASSERT_TRUE(publish_sync(*pub, events).ok());
  auto log = open_log();
  auto recs = poll_until(*log, "g", {"tx.initiated"}, 3);
  ASSERT_EQ(recs.size(), 3u);
  // Not committed: the next poll returns the same records again.
  auto again = log->poll("g", {"tx.initiated"}, 100, 5s);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 3u);
  EXPECT_EQ((*again)[0].offset, recs[0].offset);

  ASSERT_TRUE(log->commit("g", {recs[0], recs[1]}, {}).ok());
  auto rest = log->poll("g", {"tx.initiated"}, 100, 5s);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->size(), 1u);
  EXPECT_EQ((*rest)[0].offset, recs[2].offset);

  ASSERT_TRUE(log->commit("g", {recs[2]}, {}).ok());
  ASSERT_TRUE(log->commit("g", {recs[0]}, {}).ok()) << "a late, older commit is accepted and ignored";
  auto none = log->poll("g", {"tx.initiated"}, 100, 1s);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  log->close();

  // The committed position (not the late commit) is what a new instance starts from.
  auto log2 = open_log();
  ASSERT_TRUE(publish_sync(*pub, {test_event("pay_same", event_types::payment_initiated, 3)}).ok());
  auto after = poll_until(*log2, "g", {"tx.initiated"}, 1);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_GT(after[0].offset, recs[2].offset);
}

// A group polled for different topic sets (its consumer stays subscribed to all of them):
// each poll returns records of the requested topics only, and records of the others that
// the consumer fetched meanwhile are neither returned nor lost.
TEST_F(KafkaTest, PollReturnsOnlyTheRequestedTopicsAndLosesNoOtherRecords) {
  auto pub = open_publisher();
  std::vector<Event> initiated, settled;
  for (int i = 0; i < 3; ++i) initiated.push_back(test_event("pay_i", event_types::payment_initiated, i));
  for (int i = 0; i < 2; ++i) settled.push_back(test_event("pay_s", event_types::payment_succeeded, i));
  ASSERT_TRUE(publish_sync(*pub, initiated).ok());
  ASSERT_TRUE(publish_sync(*pub, settled).ok());
  auto only = [](const std::vector<Record>& rs, const std::string& topic) {
    return std::all_of(rs.begin(), rs.end(), [&](const Record& r) { return r.topic == topic; });
  };

  auto log = open_log();
  auto first = poll_until(*log, "g", {"tx.initiated"}, 3);
  ASSERT_EQ(first.size(), 3u);
  EXPECT_TRUE(only(first, "tx.initiated"));
  // The uncommitted tx.initiated records are rewound (and fetched again) by this poll, but
  // it asked for tx.settled only.
  for (int round = 0; round < 3; ++round) {
    auto s = poll_until(*log, "g", {"tx.settled"}, 2, 10s);
    ASSERT_EQ(s.size(), 2u) << "round " << round;
    EXPECT_TRUE(only(s, "tx.settled")) << "round " << round;
  }
  // Nothing of tx.initiated was lost meanwhile: still uncommitted, all three come back.
  auto again = poll_until(*log, "g", {"tx.initiated"}, 3);
  ASSERT_EQ(again.size(), 3u);
  EXPECT_TRUE(only(again, "tx.initiated"));
  EXPECT_EQ(again[0].offset, first[0].offset);

  // Committing records polled before a poll of other topics works and moves the position.
  ASSERT_TRUE(log->commit("g", {first[0], first[1]}, {}).ok());
  auto none = log->poll("g", {"tx.failed"}, 100, 1s);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty()) << "no tx.failed records, and none of the other topics";
  auto both = poll_until(*log, "g", {"tx.initiated", "tx.settled"}, 3);
  ASSERT_EQ(both.size(), 3u);
  size_t n_initiated = 0;
  for (const auto& r : both)
    if (r.topic == "tx.initiated") {
      ++n_initiated;
      EXPECT_EQ(r.offset, first[2].offset);
    }
  EXPECT_EQ(n_initiated, 1u);
  log->close();
}

TEST_F(KafkaTest, TransactionalCommitProducesAndMovesThePositionTogether) {
  auto pub = open_publisher();
  ASSERT_TRUE(publish_sync(*pub, {test_event("pay_a", event_types::payment_initiated, 0),
                                  test_event("pay_b", event_types::payment_initiated, 0)})
                  .ok());
  auto log = open_log();
  auto recs = poll_until(*log, "fraud", {"tx.initiated"}, 2);
  ASSERT_EQ(recs.size(), 2u);
  Effects fx;
  for (const auto& r : recs) fx.produce.push_back(test_event(r.event.key, event_types::payment_validated, 1));
  DeadLetter letter{recs[0], "test: dead-lettered in a transaction", 1};
  fx.dead_letters.push_back(letter);
  auto c = log->commit("fraud", recs, fx);
  ASSERT_TRUE(c.ok()) << c.error().message;

  auto none = log->poll("fraud", {"tx.initiated"}, 100, 1s);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto validated = observe("tx.validated", 15s, 2);
  EXPECT_EQ(validated.size(), 2u);
  for (const auto& r : validated) EXPECT_EQ(r.event.type, "payment.validated");
  auto dlq = observe("tx.dlq", 15s, 1);
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(dlq[0].event.type, "paystream.dead_letter");
  EXPECT_EQ(dlq[0].event.key, recs[0].event.key);
}

TEST_F(KafkaTest, FailedTransactionIsAbortedRewoundAndInvisible) {
  auto pub = open_publisher();
  ASSERT_TRUE(publish_sync(*pub, {test_event("pay_x", event_types::payment_initiated, 0)}).ok());
  // The client accepts big messages, the broker (message.max.bytes ~1 MB) refuses them, so
  // the transaction fails at commit time with an abortable error after the small event
  // has been written to the log.
  KafkaOptions big = opts;
  big.extra["message.max.bytes"] = "4000000";
  auto log = open_log({}, nullptr, big);
  auto recs = poll_until(*log, "fraud", {"tx.initiated"}, 1);
  ASSERT_EQ(recs.size(), 1u);
  auto& aborted = metrics::registry().counter("paystream_kafka_transactions_total", "",
                                              {{"group", "fraud"}, {"outcome", "aborted"}});
  const double aborted_before = aborted.value();

  Effects fx;
  fx.produce.push_back(test_event("pay_x", event_types::payment_validated, 1));
  Event huge = test_event("pay_x", event_types::payment_failed, 1);
  huge.data.assign(2'000'000, 'x');
  fx.produce.push_back(huge);
  auto c = log->commit("fraud", recs, fx);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.error().retryable);
  EXPECT_EQ(aborted.value(), aborted_before + 1);

  // Rewound: the same record is polled again.
  auto again = poll_until(*log, "fraud", {"tx.initiated"}, 1, 15s);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].offset, recs[0].offset);
  EXPECT_EQ(again[0].event.id, recs[0].event.id);

  // The producer recovers: the same batch with sane effects commits.
  Effects ok_fx;
  ok_fx.produce.push_back(test_event("pay_x", event_types::payment_validated, 1));
  auto c2 = log->commit("fraud", again, ok_fx);
  ASSERT_TRUE(c2.ok()) << c2.error().message;
  // A read_committed consumer sees exactly one event: the committed one (the aborted copy
  // of it, written to the log before the abort, would be a second).
  auto validated = observe("tx.validated", 6s, 2);
  ASSERT_EQ(validated.size(), 1u);
  EXPECT_EQ(validated[0].event.id, ok_fx.produce[0].id);
  auto none = log->poll("fraud", {"tx.initiated"}, 100, 1s);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(KafkaTest, FencedTransactionalProducerIsRecreated) {
  // Two instances with the same transactional.id: the second fences the first, whose next
  // commit fails (fatal for that producer) and whose commit after that works again with a
  // new producer (which in turn fences the second).
  auto a = open_log();
  auto b = open_log();
  Effects fx;
  fx.produce.push_back(test_event("pay_f", event_types::payment_validated, 1));
  ASSERT_TRUE(a->commit("fraud", {}, fx).ok());
  ASSERT_TRUE(b->commit("fraud", {}, fx).ok());
  auto fenced = a->commit("fraud", {}, fx);
  ASSERT_FALSE(fenced.ok());
  EXPECT_TRUE(fenced.error().retryable);
  auto again = a->commit("fraud", {}, fx);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_FALSE(b->commit("fraud", {}, fx).ok()) << "b is fenced now";
  EXPECT_EQ(observe("tx.validated", 5s, 4).size(), 3u) << "three committed transactions";
}

TEST_F(KafkaTest, CommitOfAPartitionNotAssignedFailsWithoutEffects) {
  auto log = open_log();
  Record foreign;
  foreign.topic = "tx.initiated";
  foreign.partition = 0;
  foreign.offset = 5;
  Effects fx;
  fx.produce.push_back(test_event("pay_q", event_types::payment_validated, 1));
  auto c = log->commit("never-polled", {foreign}, fx);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.error().retryable);
  EXPECT_TRUE(observe("tx.validated", 3s).empty());
  // Producing without consuming (no offsets) works on a fresh group.
  ASSERT_TRUE(log->commit("producer", {}, fx).ok());
  EXPECT_EQ(observe("tx.validated", 15s, 1).size(), 1u);
}

TEST_F(KafkaTest, PositionSurvivesClosingAndReopening) {
  auto pub = open_publisher();
  std::vector<Event> events;
  for (int i = 0; i < 3; ++i) events.push_back(test_event("pay_r", event_types::payment_initiated, i));
  ASSERT_TRUE(publish_sync(*pub, events).ok());
  {
    auto log = open_log();
    auto recs = poll_until(*log, "fraud", {"tx.initiated"}, 3);
    ASSERT_EQ(recs.size(), 3u);
    ASSERT_TRUE(log->commit("fraud", {recs[0], recs[1]}, {}).ok());
    log->close();
  }
  auto log = open_log();
  auto rest = poll_until(*log, "fraud", {"tx.initiated"}, 1);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].event.id, events[2].id);
  // Nothing else arrives later either.
  auto more = log->poll("fraud", {"tx.initiated"}, 100, 2s);
  ASSERT_TRUE(more.ok());
  EXPECT_EQ(more->size(), 1u);
}

TEST_F(KafkaTest, RawMessagesBecomeRecordsWithAnEmptyType) {
  ASSERT_TRUE(produce_raw(opts, "tx.initiated", "pay_raw", "not json at all", {}).ok());
  ASSERT_TRUE(produce_raw(opts, "tx.initiated", "pay_raw", "{}",
                          {{"ce_id", "evt_raw"}, {"ce_specversion", "0.3"}, {"ce_type", "payment.initiated"},
                           {"ce_time", "not a time"}})
                  .ok());
  auto log = open_log();
  auto recs = poll_until(*log, "fraud", {"tx.initiated"}, 2);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].event.type, "");
  EXPECT_EQ(recs[0].event.key, "pay_raw");
  EXPECT_EQ(recs[0].event.data, "not json at all");
  EXPECT_EQ(recs[1].event.type, "");
  EXPECT_EQ(recs[1].event.id, "evt_raw");
  EXPECT_EQ(recs[1].event.time_ms, 0);
  EXPECT_EQ(recs[1].event.data, "{}");
}

TEST_F(KafkaTest, ConsumerLagGaugeFollowsCommits) {
  auto pub = open_publisher();
  std::vector<Event> events;
  for (int i = 0; i < 5; ++i) events.push_back(test_event("pay_lag", event_types::payment_initiated, i));
  ASSERT_TRUE(publish_sync(*pub, events).ok());
  auto log = open_log();
  const std::string group = "lag-" + random_token("", 4);
  auto recs = poll_until(*log, group, {"tx.initiated"}, 5);
  ASSERT_EQ(recs.size(), 5u);
  const int32_t p = recs[0].partition;
  ASSERT_TRUE(log->commit(group, {recs[0]}, {}).ok());

  // Statistics are served by poll(); uncommitted records keep coming back meanwhile.
  auto wait_for_lag = [&](double want) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline && lag(group, "tx.initiated", p) != want)
      EXPECT_TRUE(log->poll(group, {"tx.initiated"}, 100, 200ms).ok());
    return lag(group, "tx.initiated", p);
  };
  EXPECT_EQ(wait_for_lag(4), 4);
  ASSERT_TRUE(log->commit(group, recs, {}).ok());
  EXPECT_EQ(wait_for_lag(0), 0);
}

TEST_F(KafkaTest, ConsumerLagReachesZeroOnATransactionallyWrittenTopic) {
  // The last offset of such a partition is a commit marker, not a record.
  auto log = open_log();
  Effects fx;
  fx.produce.push_back(test_event("pay_t", event_types::payment_validated, 1));
  fx.produce.push_back(test_event("pay_t", event_types::payment_validated, 2));
  ASSERT_TRUE(log->commit("fraud", {}, fx).ok());
  const std::string group = "lagtx-" + random_token("", 4);
  auto recs = poll_until(*log, group, {"tx.validated"}, 2);
  ASSERT_EQ(recs.size(), 2u);
  ASSERT_TRUE(log->commit(group, recs, {}).ok());
  // A sentinel, so that 0 can only come from a statistics update.
  const int32_t p = recs[0].partition;
  lag_gauge(group, "tx.validated", p).set(-5);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  bool seen_zero = false;
  while (std::chrono::steady_clock::now() < deadline && !seen_zero) {
    EXPECT_TRUE(log->poll(group, {"tx.validated"}, 100, 200ms).ok());
    seen_zero = lag(group, "tx.validated", p) == 0;
  }
  EXPECT_TRUE(seen_zero) << "lag stuck at " << lag(group, "tx.validated", recs[0].partition);
}

}  // namespace
}  // namespace ps::kafka_test
