// The Kafka codec (adapters/kafka/kafka_codec.cpp): a consumed message — CloudEvents
// binary mode, ce_* headers and the value — to an Event, a Record and a dead-letter entry,
// and the RFC 3339 times of ce_time. The input is split by FuzzedDataProvider into the
// message's topic, partition, offset, timestamp, key, headers (names drawn mostly from the
// ones the codec reads) and value.
// Asserts: no crash/UB/exception; the event carries ce_id (the last of a repeated name),
// the key and the value as given; an event produced by event_message() decodes back to the
// same event; parse_rfc3339_ms of format_rfc3339_ms(t) is t.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "adapters/kafka/kafka_internal.hpp"
#include "domain/event.hpp"

namespace k = ps::kafka;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_kafka_codec: invariant broken: %s\n", what);
    std::abort();
  }
}

const char* const kNames[] = {"ce_id",           "ce_type",         "ce_source",          "ce_time",
                              "ce_specversion",  "content-type",    "traceparent",        "ps_original_topic",
                              "ps_original_partition", "ps_original_offset", "ps_error",  "ps_attempts",
                              "ps_replay_of"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  k::InMessage m;
  m.topic = in.ConsumeRandomLengthString(64);
  m.partition = in.ConsumeIntegral<int32_t>();
  m.offset = in.ConsumeIntegral<int64_t>();
  m.timestamp_ms = in.ConsumeIntegral<int64_t>();
  m.key = in.ConsumeRandomLengthString(64);
  size_t n = in.ConsumeIntegralInRange<size_t>(0, 16);
  for (size_t i = 0; i < n && in.remaining_bytes() > 0; ++i) {
    std::string name = in.ConsumeBool() ? std::string(in.PickValueInArray(kNames)) : in.ConsumeRandomLengthString(32);
    m.headers.emplace_back(std::move(name), in.ConsumeRandomLengthString(128));
  }
  m.value = in.ConsumeRemainingBytesAsString();

  ps::Event e = k::event_from_message(m);
  check(e.key == m.key && e.data == m.value, "key and value are carried as given");
  std::string last_id;
  for (const auto& [name, value] : m.headers)
    if (name == k::kCeId) last_id = value;
  check(e.id == last_id, "ce_id: the last header of that name");
  ps::Record r = k::record_from_message(m, "pfx.");
  check(r.partition == m.partition && r.offset == m.offset, "position is carried");
  (void)k::dedup_id(m);
  if (auto d = k::dlq_entry_from_message(m)) check(e.type == ps::event_types::dead_letter, "only dead letters");

  // What the publisher writes for this event decodes back to it.
  if (e.time_ms >= 0 && e.time_ms < 253402300800000) {  // years 0000..9999
    ps::KafkaOptions o;
    o.topic_prefix = "pfx.";
    k::OutMessage out = k::event_message(o, e);
    k::InMessage back;
    back.topic = out.topic;
    back.key = out.key;
    back.value = out.value;
    back.headers = out.headers;
    ps::Event again = k::event_from_message(back);
    check(again.id == e.id && again.type == e.type && again.source == e.source && again.time_ms == e.time_ms &&
              again.traceparent == e.traceparent && again.data == e.data,
          "event_message decodes back to the event");
    check(k::parse_rfc3339_ms(k::format_rfc3339_ms(e.time_ms)) == e.time_ms, "RFC 3339 round trip");
  }
  for (const auto& [name, value] : m.headers)
    if (auto t = k::parse_rfc3339_ms(value); t && *t >= 0 && *t < 253402300800000)
      check(k::parse_rfc3339_ms(k::format_rfc3339_ms(*t)) == *t, "RFC 3339 round trip of a parsed time");
  return 0;
}
