// Dead letters on tx.dlq: written by the publisher and by stage commits, read back by
// KafkaDlqReader with every field, and republished to their original topic.
#include <gtest/gtest.h>

#include "kafka/kafka_harness.hpp"

namespace ps::kafka_test {
namespace {

TEST_F(KafkaTest, DeadLettersRoundTripThroughTheReader) {
  auto pub = open_publisher();
  auto reader_r = KafkaDlqReader::open(opts);
  ASSERT_TRUE(reader_r.ok()) << reader_r.error().message;
  auto& reader = *reader_r.value();

  auto empty = reader.list(10);
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_TRUE(empty->empty());

  // 1. A stage dead-letters a record it consumed (transactional commit).
  Event bad = test_event("pay_dl", event_types::payment_validated, 0);
  ASSERT_TRUE(publish_sync(*pub, {bad}).ok());
  auto log = open_log();
  auto recs = poll_until(*log, "processor", {"tx.validated"}, 1);
  ASSERT_EQ(recs.size(), 1u);
  Effects fx;
  fx.dead_letters.push_back(DeadLetter{recs[0], "event_undecodable: not JSON", 3});
  ASSERT_TRUE(log->commit("processor", recs, fx).ok());

  // 2. The notifier's kind: published directly, newer.
  std::this_thread::sleep_for(20ms);
  DeadLetter webhook;
  webhook.original.topic = "tx.settled";
  webhook.original.event = test_event("pay_wh", event_types::payment_succeeded, 0);
  webhook.error = "webhook delivery to we_1 failed: http_status_500";
  webhook.attempts = 8;
  auto done = std::make_shared<std::promise<Result<void>>>();
  pub->publish_dead_letter(webhook, [done](Result<void> r) { done->set_value(std::move(r)); });
  auto fut = done->get_future();
  ASSERT_EQ(fut.wait_for(30s), std::future_status::ready);
  ASSERT_TRUE(fut.get().ok());

  auto list = reader.list(10);
  ASSERT_TRUE(list.ok()) << list.error().message;
  ASSERT_EQ(list->size(), 2u);
  const KafkaDlqEntry& newest = (*list)[0];
  const KafkaDlqEntry& stage = (*list)[1];
  EXPECT_EQ(newest.letter.error, webhook.error);
  EXPECT_EQ(newest.letter.attempts, 8);
  EXPECT_EQ(newest.letter.original.topic, "tx.settled");
  EXPECT_EQ(newest.letter.original.event.id, webhook.original.event.id);

  EXPECT_EQ(stage.letter.original.topic, "tx.validated");
  EXPECT_EQ(stage.letter.original.partition, recs[0].partition);
  EXPECT_EQ(stage.letter.original.offset, recs[0].offset);
  EXPECT_EQ(stage.letter.original.event.id, bad.id);
  EXPECT_EQ(stage.letter.original.event.type, bad.type);
  EXPECT_EQ(stage.letter.original.event.source, bad.source);
  EXPECT_EQ(stage.letter.original.event.time_ms, bad.time_ms);
  EXPECT_EQ(stage.letter.original.event.key, bad.key);
  EXPECT_EQ(stage.letter.original.event.traceparent, bad.traceparent);
  EXPECT_EQ(stage.letter.original.event.data, bad.data);
  EXPECT_EQ(stage.letter.error, "event_undecodable: not JSON");
  EXPECT_EQ(stage.letter.attempts, 3);
  EXPECT_GT(stage.created_ms, 1'700'000'000'000);
  EXPECT_LE(stage.created_ms, newest.created_ms);

  auto one = reader.list(1);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].position, newest.position);

  auto shown = reader.get(stage.position);
  ASSERT_TRUE(shown.ok()) << shown.error().message;
  ASSERT_TRUE(shown->has_value());
  EXPECT_EQ((*shown)->letter.error, stage.letter.error);
  EXPECT_EQ((*shown)->letter.original.event.data, bad.data);
  for (int64_t missing : {stage.position + 1000, int64_t(7) * kDlqPartitionStride, int64_t(-1)}) {
    auto m = reader.get(missing);
    ASSERT_TRUE(m.ok()) << m.error().message;
    EXPECT_FALSE(m->has_value()) << missing;
  }

  // The dead-letter event is an ordinary record for a consumer of tx.dlq.
  auto dlq_recs = poll_until(*log, "alerts", {"tx.dlq"}, 2);
  ASSERT_EQ(dlq_recs.size(), 2u);
  for (const auto& r : dlq_recs) EXPECT_EQ(r.event.type, "paystream.dead_letter");

  // Republish: the original event is back on its topic, as it was.
  ASSERT_TRUE(reader.republish(stage.letter).ok());
  auto replayed = poll_until(*log, "processor", {"tx.validated"}, 1);
  ASSERT_EQ(replayed.size(), 1u);
  EXPECT_GT(replayed[0].offset, recs[0].offset);
  EXPECT_EQ(replayed[0].event.id, bad.id);
  EXPECT_EQ(replayed[0].event.data, bad.data);
  EXPECT_EQ(replayed[0].event.traceparent, bad.traceparent);

  DeadLetter nowhere = stage.letter;
  nowhere.original.topic = "tx.dlq";
  auto refused = reader.republish(nowhere);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, "dead_letter_not_replayable");
}

}  // namespace
}  // namespace ps::kafka_test
