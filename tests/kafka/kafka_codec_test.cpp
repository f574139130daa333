// Event <-> Kafka message mapping (CloudEvents binary mode) and the tx.dlq layout; no broker.
#include <gtest/gtest.h>

#include "adapters/kafka/kafka_internal.hpp"
#include "kafka/kafka_harness.hpp"

namespace ps::kafka_test {
namespace {

std::string header(const kafka::Headers& h, const std::string& name) {
  for (const auto& [k, v] : h)
    if (k == name) return v;
  return "<absent>";
}

kafka::InMessage as_consumed(const kafka::OutMessage& m, int32_t partition, int64_t offset) {
  return kafka::InMessage{m.topic, partition, offset, 1'700'000'999'000, m.key, m.value, m.headers};
}

TEST(KafkaCodec, Rfc3339RoundTripsWithMilliseconds) {
  EXPECT_EQ(kafka::format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(kafka::format_rfc3339_ms(1'700'000'000'123), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(kafka::format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
  for (int64_t ms : {int64_t(0), int64_t(1'700'000'000'123), int64_t(951'782'400'001), int64_t(4'102'444'799'999)})
    EXPECT_EQ(kafka::parse_rfc3339_ms(kafka::format_rfc3339_ms(ms)), ms);
  EXPECT_EQ(kafka::parse_rfc3339_ms("2023-11-14T23:13:20.5+01:00"), 1'700'000'000'500);
  EXPECT_EQ(kafka::parse_rfc3339_ms("2023-11-14T22:13:20Z"), 1'700'000'000'000);
  EXPECT_EQ(kafka::parse_rfc3339_ms("2023-11-14t22:13:20.123456z"), 1'700'000'000'123);
  for (const char* bad : {"", "yesterday", "2023-11-14 22:13:20Z", "2023-11-14T22:13:20", "2023-13-01T00:00:00Z",
                          "2023-11-14T22:13:20.Z", "2023-11-14T22:13:20Zjunk", "2023-11-14T22:13:20+0100"})
    EXPECT_FALSE(kafka::parse_rfc3339_ms(bad).has_value()) << bad;
}

TEST(KafkaCodec, EventMapsToCloudEventsBinaryMode) {
  KafkaOptions o;
  o.topic_prefix = "pfx.";
  Event e = test_event("pay_1", event_types::payment_validated, 7);
  auto m = kafka::event_message(o, e);
  EXPECT_EQ(m.topic, "pfx.tx.validated");
  EXPECT_EQ(m.key, "pay_1");
  EXPECT_EQ(m.value, e.data);
  EXPECT_EQ(header(m.headers, "ce_id"), e.id);
  EXPECT_EQ(header(m.headers, "ce_type"), "payment.validated");
  EXPECT_EQ(header(m.headers, "ce_source"), "/paystream/test");
  EXPECT_EQ(header(m.headers, "ce_time"), "2023-11-14T22:13:20.130Z");
  EXPECT_EQ(header(m.headers, "ce_specversion"), "1.0");
  EXPECT_EQ(header(m.headers, "content-type"), "application/json");
  EXPECT_EQ(header(m.headers, "traceparent"), e.traceparent);

  Record r = kafka::record_from_message(as_consumed(m, 2, 41), o.topic_prefix);
  EXPECT_EQ(r.topic, "tx.validated");
  EXPECT_EQ(r.partition, 2);
  EXPECT_EQ(r.offset, 41);
  EXPECT_EQ(r.event.id, e.id);
  EXPECT_EQ(r.event.type, e.type);
  EXPECT_EQ(r.event.source, e.source);
  EXPECT_EQ(r.event.time_ms, e.time_ms);
  EXPECT_EQ(r.event.key, e.key);
  EXPECT_EQ(r.event.traceparent, e.traceparent);
  EXPECT_EQ(r.event.data, e.data);
}

TEST(KafkaCodec, UnreadableHeadersGiveWhatCouldBeRead) {
  kafka::InMessage raw{"pfx.tx.initiated", 0, 3, -1, "k", "not json", {}};
  Record r = kafka::record_from_message(raw, "pfx.");
  EXPECT_EQ(r.topic, "tx.initiated");
  EXPECT_EQ(r.event.type, "");
  EXPECT_EQ(r.event.id, "");
  EXPECT_EQ(r.event.key, "k");
  EXPECT_EQ(r.event.data, "not json");

  raw.headers = {{"ce_id", "evt_1"}, {"ce_type", "payment.initiated"}, {"ce_time", "garbage"}};
  r = kafka::record_from_message(raw, "pfx.");
  EXPECT_EQ(r.event.id, "evt_1");
  EXPECT_EQ(r.event.type, "payment.initiated");
  EXPECT_EQ(r.event.time_ms, 0);

  raw.headers.emplace_back("ce_specversion", "0.3");  // another CloudEvents version: not ours
  EXPECT_EQ(kafka::record_from_message(raw, "pfx.").event.type, "");

  // A repeated header: the last one wins.
  raw.headers = {{"ce_type", "a"}, {"ce_type", "payment.failed"}};
  EXPECT_EQ(kafka::record_from_message(raw, "pfx.").event.type, "payment.failed");
  // A topic without the prefix is left as it is.
  raw.topic = "other.topic";
  EXPECT_EQ(kafka::record_from_message(raw, "pfx.").topic, "other.topic");
}

TEST(KafkaCodec, DeadLetterMessageRoundTrips) {
  KafkaOptions o;
  o.topic_prefix = "pfx.";
  DeadLetter d;
  d.original.topic = "tx.validated";
  d.original.partition = 2;
  d.original.offset = 1234;
  d.original.event = test_event("pay_9", event_types::payment_validated, 1);
  d.error = "event_undecodable: not JSON";
  d.attempts = 3;
  auto m = kafka::dead_letter_message(o, d, 1'700'000'555'000);
  EXPECT_EQ(m.topic, "pfx.tx.dlq");
  EXPECT_EQ(m.key, "pay_9");
  EXPECT_EQ(m.value, event_envelope_json(d.original.event));
  EXPECT_EQ(header(m.headers, "ce_type"), "paystream.dead_letter");
  EXPECT_EQ(header(m.headers, "ce_id"), kafka::dead_letter_event_id(d));
  EXPECT_EQ(header(m.headers, "ps_original_topic"), "tx.validated");
  EXPECT_EQ(header(m.headers, "ps_original_partition"), "2");
  EXPECT_EQ(header(m.headers, "ps_original_offset"), "1234");
  EXPECT_EQ(header(m.headers, "ps_error"), d.error);
  EXPECT_EQ(header(m.headers, "ps_attempts"), "3");
  EXPECT_EQ(header(m.headers, "traceparent"), d.original.event.traceparent);
  // Deterministic: the same letter twice has one id; another error is another letter.
  EXPECT_EQ(kafka::dead_letter_message(o, d, 1).headers, kafka::dead_letter_message(o, d, 1).headers);
  DeadLetter other = d;
  other.error = "something else";
  EXPECT_NE(kafka::dead_letter_event_id(other), kafka::dead_letter_event_id(d));

  auto entry = kafka::dlq_entry_from_message(as_consumed(m, 1, 77));
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->position, 1 * kDlqPartitionStride + 77);
  EXPECT_EQ(entry->created_ms, 1'700'000'999'000);
  EXPECT_EQ(entry->letter.original.topic, "tx.validated");
  EXPECT_EQ(entry->letter.original.partition, 2);
  EXPECT_EQ(entry->letter.original.offset, 1234);
  EXPECT_EQ(entry->letter.original.event.id, d.original.event.id);
  EXPECT_EQ(entry->letter.original.event.data, d.original.event.data);
  EXPECT_EQ(entry->letter.original.event.traceparent, d.original.event.traceparent);
  EXPECT_EQ(entry->letter.error, d.error);
  EXPECT_EQ(entry->letter.attempts, 3);

  // An ordinary event that landed on tx.dlq is not a dead letter.
  auto plain = kafka::event_message(o, test_event("pay_9", "unknown.type", 1));
  EXPECT_EQ(plain.topic, "pfx.tx.dlq");
  EXPECT_FALSE(kafka::dlq_entry_from_message(as_consumed(plain, 0, 1)).has_value());
}

// A position partition * stride + offset must exist: no signed overflow (UBSan), no alias
// of another letter (found by fuzz_kafka_codec).
TEST(KafkaCodec, DeadLetterOutsideThePositionRangeIsNotListed) {
  KafkaOptions o;
  DeadLetter d;
  d.original.topic = "tx.validated";
  d.original.event = test_event("pay_9", event_types::payment_validated, 1);
  auto m = kafka::dead_letter_message(o, d, 1);
  EXPECT_FALSE(kafka::dlq_entry_from_message(as_consumed(m, -2147483647, 0)).has_value());
  EXPECT_FALSE(kafka::dlq_entry_from_message(as_consumed(m, 2147483647, 0)).has_value());
  EXPECT_FALSE(kafka::dlq_entry_from_message(as_consumed(m, 0, -1)).has_value());
  EXPECT_FALSE(kafka::dlq_entry_from_message(as_consumed(m, 0, kDlqPartitionStride)).has_value());
  EXPECT_FALSE(kafka::dlq_entry_from_message(as_consumed(m, 9'223'372, 36'854'775'808)).has_value());
  auto last = kafka::dlq_entry_from_message(as_consumed(m, 9'223'372, 36'854'775'807));
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->position, INT64_MAX);
}

}  // namespace
}  // namespace ps::kafka_test
