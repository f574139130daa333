// KafkaStageLog with event dedup: the real PgEventDedup (PAYSTREAM_POSTGRES_URL, a fresh
// schema per test) and a real broker. Two publishes of one event put two copies in Kafka
// (what the gateway's outbox relay can do); a stage must see one.
#include <gtest/gtest.h>

#include "adapters/postgres/pg_conn.hpp"
#include "adapters/postgres/pg_store.hpp"
#include "kafka/kafka_harness.hpp"

namespace ps::kafka_test {
namespace {

class KafkaDedupTest : public KafkaTest {
 protected:
  void SetUp() override {
    KafkaTest::SetUp();
    if (HasFatalFailure()) return;
    const char* u = std::getenv("PAYSTREAM_POSTGRES_URL");
    if (!u || !*u) GTEST_FAIL() << "PAYSTREAM_POSTGRES_URL is not set (scripts/test.sh starts PostgreSQL and exports it)";
    url = u;
    schema = "pst_" + random_token("", 6);
    auto v = pg_migrate(url, schema);
    ASSERT_TRUE(v.ok()) << v.error().message;
    PgOptions o;
    o.url = url;
    o.schema = schema;
    auto d = PgEventDedup::open(o);
    ASSERT_TRUE(d.ok()) << d.error().message;
    dedup = std::move(d.value());
  }
  void TearDown() override {
    dedup.reset();
    if (schema.empty()) return;
    auto c = pg::Conn::connect(pg::ConnOptions{url, "", 3000, 10000});
    if (c) (void)(*c)->exec_script("DROP SCHEMA IF EXISTS " + (*c)->quote_ident(schema) + " CASCADE");
  }

  std::unique_ptr<KafkaStageLog> open_dedup_log(std::set<std::string> db_groups = {}, PositionSink* sink = nullptr) {
    KafkaStageLogOptions lo;
    lo.kafka = opts;
    lo.database_groups = std::move(db_groups);
    lo.sink = sink;
    lo.dedup = dedup.get();
    auto log = KafkaStageLog::open(lo);
    EXPECT_TRUE(log.ok()) << (log ? "" : log.error().message);
    return log ? std::move(log.value()) : nullptr;
  }

  // Publishes `e` twice (two separate publishes: two copies at two offsets).
  void publish_twice(const Event& e) {
    auto pub = open_publisher();
    ASSERT_TRUE(publish_sync(*pub, {e}).ok());
    ASSERT_TRUE(publish_sync(*pub, {e}).ok());
  }

  // Polls `window` long; every poll must return at most what is expected, fails otherwise.
  static size_t max_seen(KafkaStageLog& log, const std::string& group, std::chrono::milliseconds window) {
    size_t most = 0;
    const auto deadline = std::chrono::steady_clock::now() + window;
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = log.poll(group, {"tx.initiated"}, 100, 300ms);
      EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
      if (!r) break;
      most = std::max(most, r->size());
    }
    return most;
  }

  static metrics::Counter& dropped(const std::string& group) {
    return metrics::registry().counter("paystream_kafka_duplicates_dropped_total", "", {{"group", group}});
  }

  std::string url, schema;
  std::unique_ptr<PgEventDedup> dedup;
};

TEST_F(KafkaDedupTest, SecondCopyIsWithheldAndCommittedWithTheFirst) {
  const Event e = test_event("pay_dup", event_types::payment_initiated, 0);
  publish_twice(e);
  const double before = dropped("fraud").value();
  auto log = open_dedup_log();
  auto recs = poll_until(*log, "fraud", {"tx.initiated"}, 1);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].event.id, e.id);
  EXPECT_GE(dropped("fraud").value(), before + 1);
  // Not committed yet: the first copy comes back (redelivery at the same position), the
  // second never does.
  auto again = log->poll("fraud", {"tx.initiated"}, 100, 5s);
  ASSERT_TRUE(again.ok()) << again.error().message;
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].offset, recs[0].offset);

  ASSERT_TRUE(log->commit("fraud", *again, {}).ok());
  EXPECT_EQ(max_seen(*log, "fraud", 2s), 0u);
  log->close();
  // The committed position is past both copies: a group member WITHOUT dedup sees nothing.
  auto plain = open_log();
  EXPECT_EQ(max_seen(*plain, "fraud", 8s), 0u);
}

TEST_F(KafkaDedupTest, PollOfOnlyDuplicatesCommitsThemItself) {
  // Kafka-sink group and database-sink group alike.
  const Event e = test_event("pay_only", event_types::payment_initiated, 0);
  publish_twice(e);
  MapPositionSink sink;
  auto log = open_dedup_log({"ledger"}, &sink);
  for (const std::string group : {"fraud", "ledger"}) {
    auto first = poll_until(*log, group, {"tx.initiated"}, 1);
    ASSERT_EQ(first.size(), 1u) << group;
    ASSERT_TRUE(log->commit(group, first, {}).ok()) << group;
    // Only the second copy is left: each poll returns nothing, and the first such poll
    // commits it (else every poll would fetch it again).
    EXPECT_EQ(max_seen(*log, group, 3s), 0u) << group;
    if (group == "ledger") {
      auto pos = sink.positions("ledger");
      ASSERT_TRUE(pos.ok());
      const TopicPartition tp{first[0].topic, first[0].partition};
      EXPECT_EQ((*pos)[tp], first[0].offset + 2) << "past both copies";
    }
  }
  log->close();
  auto plain = open_log({"ledger"}, &sink);
  EXPECT_EQ(max_seen(*plain, "fraud", 8s), 0u);
  EXPECT_EQ(max_seen(*plain, "ledger", 3s), 0u);
}

TEST_F(KafkaDedupTest, ReplayedDeadLetterIsNotTakenForACopy) {
  const Event e = test_event("pay_replay", event_types::payment_initiated, 0);
  auto pub = open_publisher();
  ASSERT_TRUE(publish_sync(*pub, {e}).ok());
  auto log = open_dedup_log();
  auto first = poll_until(*log, "fraud", {"tx.initiated"}, 1);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(log->commit("fraud", first, {}).ok());
  // The operator replays the dead-lettered original: same ce_id, new position.
  auto reader = KafkaDlqReader::open(opts);
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  ASSERT_TRUE((*reader)->republish(DeadLetter{first[0], "test", 1}).ok());
  auto replayed = poll_until(*log, "fraud", {"tx.initiated"}, 1);
  ASSERT_EQ(replayed.size(), 1u) << "the replay is processed";
  EXPECT_EQ(replayed[0].event.id, e.id);
  EXPECT_GT(replayed[0].offset, first[0].offset);
  ASSERT_TRUE(log->commit("fraud", replayed, {}).ok());
}

}  // namespace
}  // namespace ps::kafka_test
