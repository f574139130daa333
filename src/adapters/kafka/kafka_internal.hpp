// Private to the Kafka adapter (src/adapters/kafka/*.cpp only): librdkafka handles, client
// configuration, the CloudEvents <-> Kafka message mapping and the publisher core that the
// stage log, the dead-letter reader and produce_raw reuse.
#pragma once
#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "adapters/kafka/kafka.hpp"

namespace ps::kafka {

using Headers = std::vector<std::pair<std::string, std::string>>;

// ---------- Message mapping (kafka_codec.cpp; no librdkafka calls) ----------

// Header names (CloudEvents 1.0 Kafka protocol binding, binary content mode).
inline constexpr std::string_view kCeId = "ce_id";
inline constexpr std::string_view kCeType = "ce_type";
inline constexpr std::string_view kCeSource = "ce_source";
inline constexpr std::string_view kCeTime = "ce_time";
inline constexpr std::string_view kCeSpecVersion = "ce_specversion";
inline constexpr std::string_view kContentType = "content-type";
inline constexpr std::string_view kTraceparent = "traceparent";
// Dead-letter headers (tx.dlq), alongside the ce_* of the dead-letter event.
inline constexpr std::string_view kOrigTopic = "ps_original_topic";
inline constexpr std::string_view kOrigPartition = "ps_original_partition";
inline constexpr std::string_view kOrigOffset = "ps_original_offset";
inline constexpr std::string_view kError = "ps_error";
inline constexpr std::string_view kAttempts = "ps_attempts";
// On an event appended again by a dead-letter replay: "<topic>/<partition>/<offset>" of the
// dead-lettered original, so event dedup tells the replay from a duplicate copy.
inline constexpr std::string_view kReplayOf = "ps_replay_of";

// A message to produce. `topic` is the full (prefixed) broker topic name.
struct OutMessage {
  std::string topic;
  std::string key;
  std::string value;
  Headers headers;
};

// A consumed message, copied out of librdkafka. `topic` is the broker topic name.
struct InMessage {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  int64_t timestamp_ms = -1;  // -1: the message carries none
  std::string key;
  std::string value;
  Headers headers;            // in message order; a repeated name: the last one wins
};

// RFC 3339 in UTC with milliseconds, e.g. "2025-01-02T03:04:05.678Z".
std::string format_rfc3339_ms(int64_t ms);
// Accepts "YYYY-MM-DDTHH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM)"; nullopt if anything is off.
std::optional<int64_t> parse_rfc3339_ms(std::string_view s);

std::string prefixed(const KafkaOptions& o, std::string_view topic);
// The topic name without the prefix (unchanged if it does not start with it).
std::string unprefixed(const std::string& prefix, const std::string& topic);

// The event on topic_for(e.type), key = payment id, value = data, ce_* headers.
OutMessage event_message(const KafkaOptions& o, const Event& e);
// The same, to an explicit unprefixed topic (dead-letter replay).
OutMessage event_message_to(const KafkaOptions& o, std::string_view topic, const Event& e);
// A dead letter on tx.dlq: value = event_envelope_json(original event), ps_* headers and the
// ce_* headers of a deterministic paystream.dead_letter event.
OutMessage dead_letter_message(const KafkaOptions& o, const DeadLetter& d, int64_t now_ms);
std::string dead_letter_event_id(const DeadLetter& d);

// Never fails: what cannot be read stays empty (type "" when ce_type is absent or the
// message does not claim CloudEvents 1.0), so the stage dead-letters it.
Event event_from_message(const InMessage& m);
Record record_from_message(const InMessage& m, const std::string& prefix);
// The id event dedup knows the message by: ce_id, plus the ps_replay_of marker if present.
std::string dedup_id(const InMessage& m);
// nullopt if the message is not a paystream.dead_letter event.
std::optional<KafkaDlqEntry> dlq_entry_from_message(const InMessage& m);

// ---------- librdkafka plumbing (kafka_client.cpp) ----------

struct RkDeleter {
  void operator()(rd_kafka_t* rk) const;
};
using RkPtr = std::unique_ptr<rd_kafka_t, RkDeleter>;

// Callbacks every client gets: librdkafka logs go to ps::log, errors are logged and a
// fatal error sets `fatal`. The conf opaque of every client points to a ClientHooks.
struct ClientHooks {
  virtual ~ClientHooks() = default;
  std::string what;                 // for logs: "publisher", "consumer fraud", ...
  std::atomic<bool> fatal{false};
};

using Props = std::map<std::string, std::string>;

// Builds a client: base properties (bootstrap.servers, client.id, timeouts), then `defaults`,
// then KafkaOptions::extra (the operator's raw properties), then `required` (what
// correctness depends on, which extra cannot override). `hooks` must outlive the client.
// `setup` may register further callbacks on the conf.
Result<RkPtr> make_client(rd_kafka_type_t type, const KafkaOptions& o, const Props& defaults,
                          const Props& required, ClientHooks* hooks,
                          const std::function<void(rd_kafka_conf_t*)>& setup = {});

// Properties of the idempotent producer (acks=all, bounded delivery time).
Props idempotent_producer_props(const KafkaOptions& o);

Error kafka_error(rd_kafka_resp_err_t err, const std::string& what);
// Does not destroy `e`.
Error kafka_error(const rd_kafka_error_t* e, const std::string& what);

// Enqueues one message (copied). `opaque` comes back in the delivery report.
rd_kafka_resp_err_t produce(rd_kafka_t* rk, const OutMessage& m, void* opaque);
InMessage in_message(const rd_kafka_message_t* m);

// Number of partitions of `topic` (full name), from broker metadata.
Result<int> partition_count(rd_kafka_t* rk, const std::string& topic, int timeout_ms);

// paystream_kafka_produce_errors_total (messages that could not be produced).
void count_produce_errors(double n = 1.0);

}  // namespace ps::kafka

namespace ps {

// The publisher core: one idempotent producer and a thread that serves its delivery
// reports. KafkaPublisher wraps it; the stage log (database-sink groups), the dead-letter
// reader (republish) and produce_raw use it directly.
struct KafkaPublisher::Impl final : kafka::ClientHooks {
  using Callback = EventPublisher::Callback;
  static Result<std::unique_ptr<Impl>> open(const KafkaOptions& o, std::string what);
  ~Impl() override;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // Enqueues every message; `cb` runs once, on the poll thread: ok when all of them are
  // acknowledged (acks=all), else with the first error.
  void send(std::vector<kafka::OutMessage> msgs, Callback cb);
  // send() and wait for the outcome (bounded: delivery timeout plus a margin).
  Result<void> send_sync(std::vector<kafka::OutMessage> msgs);
  // Waits up to `timeout` until no send() is outstanding.
  void flush(std::chrono::milliseconds timeout);

  const KafkaOptions opts;

 private:
  struct Batch;
  explicit Impl(KafkaOptions o);
  Result<kafka::RkPtr> make_producer();
  static void on_delivery(rd_kafka_t* rk, const rd_kafka_message_t* m, void* opaque);
  void fail_batch(Batch* b, const Error& e);  // reports e (once) via the deferred queue
  void release(Batch* b, size_t n);           // n messages of b are done
  void poll_loop();
  void replace_producer();                    // after a fatal error
  void drain_and_destroy(kafka::RkPtr rk, std::set<uint64_t> batches, std::chrono::milliseconds wait);
  void run_deferred();

  std::shared_mutex rk_mu_;  // shared: enqueue/poll; exclusive: replacing the producer
  kafka::RkPtr rk_;
  std::mutex mu_;            // live_, deferred_, Batch::called
  std::condition_variable idle_cv_;
  std::map<uint64_t, Batch*> live_;  // by Batch::seq
  uint64_t next_seq_ = 0;
  std::deque<std::function<void()>> deferred_;  // callbacks to run on the poll thread
  std::atomic<bool> stop_{false};
  std::thread poller_;
};

}  // namespace ps
