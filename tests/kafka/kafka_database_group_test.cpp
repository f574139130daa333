// Database-sink groups of KafkaStageLog, UNIT-LEVEL: the position sink here is
// MapPositionSink (a std::map test double, see kafka_harness.hpp), so these tests cover the
// Kafka side only — seeking to stored positions on assignment, publishing effects before
// apply, rewinding after a failed apply. The real PostgreSQL sink is exercised by the
// integration harness.
#include <gtest/gtest.h>

#include "kafka/kafka_harness.hpp"

namespace ps::kafka_test {
namespace {

TEST_F(KafkaTest, DatabaseGroupRewindsOnFailedApplyAndStoresPositionsInTheSink) {
  auto pub = open_publisher();
  std::vector<Event> events;
  for (int i = 0; i < 3; ++i) events.push_back(test_event("pay_db", event_types::payment_succeeded, i));
  ASSERT_TRUE(publish_sync(*pub, events).ok());

  MapPositionSink sink;
  auto log = open_log({"ledger"}, &sink);
  auto recs = poll_until(*log, "ledger", {"tx.settled", "tx.failed"}, 3);
  ASSERT_EQ(recs.size(), 3u);
  const TopicPartition tp{"tx.settled", recs[0].partition};

  Effects fx;
  fx.produce.push_back(test_event("pay_db", event_types::payment_validated, 9));  // to tx.validated
  sink.fail_next();
  auto c = log->commit("ledger", recs, fx);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.error().retryable);
  EXPECT_TRUE(sink.positions("ledger")->empty());
  auto again = log->poll("ledger", {"tx.settled", "tx.failed"}, 100, 5s);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 3u) << "rewound to the first uncommitted record";
  EXPECT_EQ((*again)[0].offset, recs[0].offset);

  auto c2 = log->commit("ledger", *again, fx);
  ASSERT_TRUE(c2.ok()) << c2.error().message;
  EXPECT_EQ(sink.positions("ledger")->at(tp), recs[2].offset + 1);
  // The effect went to Kafka before apply, once per attempt (consumers deduplicate by id).
  auto validated = observe("tx.validated", 15s, 2);
  ASSERT_EQ(validated.size(), 2u);
  EXPECT_EQ(validated[0].event.id, fx.produce[0].id);
  EXPECT_EQ(validated[1].event.id, fx.produce[0].id);

  auto none = log->poll("ledger", {"tx.settled", "tx.failed"}, 100, 1s);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  log->close();

  // A new instance starts from the sink's positions.
  auto log2 = open_log({"ledger"}, &sink);
  auto after = log2->poll("ledger", {"tx.settled", "tx.failed"}, 100, 4s);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->empty()) << "everything up to the stored position was consumed";
}

TEST_F(KafkaTest, DatabaseGroupStartsAtStoredPositionsOrTheBeginning) {
  auto pub = open_publisher();
  std::vector<Event> events;
  for (int i = 0; i < 4; ++i) events.push_back(test_event("pay_pos", event_types::payment_failed, i));
  ASSERT_TRUE(publish_sync(*pub, events).ok());
  // Where did they land? A throwaway Kafka group reads them all.
  auto probe = open_log();
  auto all = poll_until(*probe, "probe", {"tx.failed"}, 4);
  ASSERT_EQ(all.size(), 4u);
  probe->close();

  MapPositionSink sink;
  sink.set("notifier", {"tx.failed", all[0].partition}, all[2].offset);
  auto log = open_log({"notifier"}, &sink);
  auto recs = poll_until(*log, "notifier", {"tx.failed"}, 2);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].event.id, events[2].id);
  EXPECT_EQ(recs[1].event.id, events[3].id);

  // A late, older commit never moves the sink backwards (the sink's rule) and the next
  // poll still starts after what is stored.
  ASSERT_TRUE(log->commit("notifier", recs, {}).ok());
  EXPECT_EQ(sink.positions("notifier")->at({"tx.failed", all[0].partition}), all[3].offset + 1);

  // Another database group without stored positions starts at the beginning.
  auto log_b = open_log({"notifier-b"}, &sink);
  auto from_start = poll_until(*log_b, "notifier-b", {"tx.failed"}, 4);
  ASSERT_EQ(from_start.size(), 4u);
  EXPECT_EQ(from_start[0].event.id, events[0].id);
}

}  // namespace
}  // namespace ps::kafka_test
