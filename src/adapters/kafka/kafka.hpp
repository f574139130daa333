// Kafka adapters (librdkafka). This header is deliberately free of librdkafka includes.
//
// KafkaPublisher — EventPublisher: idempotent producer, acks=all, CloudEvents binary mode
//   (headers ce_id, ce_type, ce_source, ce_time (RFC 3339), ce_specversion "1.0",
//   content-type "application/json", traceparent; key = payment id; value = data JSON).
// KafkaStageLog — StageLog over consumer groups (partition.assignment.strategy
//   cooperative-sticky, isolation.level read_committed, enable.auto.commit=false).
//   Two kinds of group:
//   * Kafka-sink groups (fraud, processor): commit() runs one Kafka transaction that
//     produces effects.produce and effects.dead_letters and sends the consumed offsets
//     (send_offsets_to_transaction), then commits it. transactional.id =
//     "<prefix>paystream-<group>-<instance_id>", so a restarted instance fences and aborts
//     its predecessor's open transaction at once.
//   * Database-sink groups (listed in database_groups; ledger, notifier): commit() first
//     publishes effects.produce/dead_letters (idempotent producer, acks=all, waited for),
//     then calls PositionSink::apply (effects + offsets in one DB transaction). On partition
//     assignment the consumer seeks to PositionSink::positions(). Offsets are also
//     committed to Kafka asynchronously afterwards, for lag monitoring only.
//   On any commit error the consumer is rewound to the first uncommitted offset of each
//   partition in the batch, so the records are polled again (port contract).
//   Duplicates (KafkaStageLogOptions::dedup set): every poll asks EventDedup::first_copies
//   for the records it is about to return and withholds the copies that are not first;
//   they count as consumed (the next commit covering their partition moves past them; a
//   poll whose records were all withheld commits them itself) and never reach the stage.
//   A replayed dead letter (header ps_replay_of) is deduplicated under its own id, so a
//   replay is not mistaken for a copy of the event it replays.
//   Metric paystream_kafka_duplicates_dropped_total{group}.
//   Uncertain transaction outcome (a commit that failed without a clean abort): the
//   transactional producer is re-created (init_transactions completes or aborts the open
//   transaction at the coordinator) and the group's committed offsets are read back from
//   the broker before anything is handed out again.
//   Records whose headers or value cannot be read become Records with an empty or raw
//   Event (type "" / data = raw bytes) so the stage dead-letters them.
//   Metrics: paystream_kafka_consumer_lag{group,topic,partition} (from librdkafka
//   statistics), paystream_kafka_produce_errors_total, paystream_kafka_transactions_total{group,outcome}.
// Topic names: every topic name is prefixed with KafkaOptions::topic_prefix (empty in
//   production; tests use a unique prefix per test so they share one broker).
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "ports/event_dedup.hpp"
#include "ports/event_log.hpp"
#include "ports/event_publisher.hpp"
#include "ports/position_sink.hpp"

namespace ps {

struct KafkaOptions {
  std::string brokers;                 // "127.0.0.1:9092"
  std::string client_id = "paystream";
  std::string instance_id = "0";       // stable per process instance (transactional ids)
  std::string topic_prefix;            // prepended to every topic name
  int transaction_timeout_ms = 10000;
  int request_timeout_ms = 5000;       // producer delivery / admin timeout
  int session_timeout_ms = 10000;      // consumer group session
  int statistics_interval_ms = 1000;   // consumer lag metric refresh
  std::map<std::string, std::string> extra;  // raw librdkafka properties (config file)
  // Transport security, set on every producer, consumer and admin client after `extra`:
  // security.protocol, ssl.ca.location, ssl.endpoint.identification.algorithm,
  // sasl.mechanisms, sasl.username, sasl.password.
  std::map<std::string, std::string> security;
};

// Checks librdkafka accepts `props` (the `security` properties above): every property is
// set on a configuration and a producer handle is created from it without brokers, so
// nothing connects. It fails as librdkafka would at start-up: an unknown value, a
// mechanism this librdkafka build lacks, a CA file OpenSSL cannot load. Error::invalid with
// code kafka_config_invalid and librdkafka's reason (it names properties, never values).
Result<void> check_client_properties(const std::map<std::string, std::string>& props);

// Start-up check of a TLS or SASL configuration against the brokers: connects and waits up
// to `wait` for the cluster's metadata. Error::invalid with code kafka_access_refused if a
// broker refused the TLS handshake (e.g. its certificate does not verify against the CA)
// or the SASL credentials: a mistake no retry fixes. Ok once the metadata came, and also
// if no broker answered in time (unreachable is not a configuration error; the clients
// keep retrying as they always do).
Result<void> check_broker_access(const KafkaOptions& o, std::chrono::milliseconds wait);

class KafkaPublisher final : public EventPublisher {
 public:
  static Result<std::unique_ptr<KafkaPublisher>> open(const KafkaOptions& opts);
  ~KafkaPublisher() override;
  void publish(std::vector<Event> events, Callback cb) override;
  void publish_dead_letter(DeadLetter letter, Callback cb) override;
  // Waits up to `timeout` for outstanding deliveries (shutdown).
  void flush(std::chrono::milliseconds timeout);
  struct Impl;
 private:
  explicit KafkaPublisher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct KafkaStageLogOptions {
  KafkaOptions kafka;
  std::set<std::string> database_groups;   // groups whose positions live in the PositionSink
  PositionSink* sink = nullptr;            // required when database_groups is not empty
  EventDedup* dedup = nullptr;             // optional: drop non-first copies of events at poll
};

class KafkaStageLog final : public StageLog {
 public:
  static Result<std::unique_ptr<KafkaStageLog>> open(KafkaStageLogOptions opts);
  ~KafkaStageLog() override;
  Result<std::vector<Record>> poll(const std::string& group, const std::vector<std::string>& topics,
                                   size_t max, std::chrono::milliseconds wait) override;
  Result<void> commit(const std::string& group, const std::vector<Record>& consumed,
                      Effects effects) override;
  // Leaves every group cleanly (SIGTERM drain), after the runners have stopped.
  void close();
  struct Impl;
 private:
  explicit KafkaStageLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Dead letters in tx.dlq. A letter's position is partition * kDlqPartitionStride + offset
// (a message on tx.dlq whose partition and offset give no such int64 is not listed).
inline constexpr int64_t kDlqPartitionStride = 1'000'000'000'000LL;
struct KafkaDlqEntry {
  int64_t position = 0;
  DeadLetter letter;
  int64_t created_ms = 0;
};
class KafkaDlqReader {
 public:
  static Result<std::unique_ptr<KafkaDlqReader>> open(const KafkaOptions& opts);
  ~KafkaDlqReader();
  // Reads tx.dlq from the beginning up to its current end; newest first, at most limit.
  Result<std::vector<KafkaDlqEntry>> list(size_t limit);
  Result<std::optional<KafkaDlqEntry>> get(int64_t position);
  // Appends the letter's original event again to its original topic (acks=all).
  Result<void> republish(const DeadLetter& letter);
  struct Impl;
 private:
  explicit KafkaDlqReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Topic configs `create_topics` sets on the topics it creates (docs/DISTRIBUTED.md
// "Topics").
struct TopicSettings {
  // min.insync.replicas of every topic: an acknowledged write (acks=all) is on this many
  // replicas. 0: 2 when the replication factor is 3 or more, else 1 (a value equal to the
  // replication factor would stop every producer when one broker is down; refused).
  int min_insync_replicas = 0;
  // retention.ms of tx.dlq: how long a dead letter can still be replayed (-1: for ever).
  // The pipeline topics keep the broker's default.
  int64_t dlq_retention_ms = 30LL * 24 * 3600 * 1000;
};
// The min.insync.replicas `settings` gives for `replication_factor`, or an error.
Result<int> min_insync_for(const TopicSettings& settings, int replication_factor);

// Creates the pipeline topics (tx.initiated, tx.validated, tx.settled, tx.failed, tx.dlq)
// with `partitions` partitions, `replication_factor` and `settings`; topics that exist
// already are left as they are (idempotent; a config that differs from `settings` is
// logged as a warning: change it with kafka-configs.sh). Returns the names created now.
Result<std::vector<std::string>> create_topics(const KafkaOptions& opts, int partitions,
                                               int replication_factor, const TopicSettings& settings = {});
// The configs of one topic (name without prefix) as the broker reports them.
Result<std::map<std::string, std::string>> topic_configs(const KafkaOptions& opts, const std::string& topic);

// Test support: appends raw bytes with optional headers to a topic (non-transactional).
Result<void> produce_raw(const KafkaOptions& opts, const std::string& topic, const std::string& key,
                         const std::string& value,
                         const std::vector<std::pair<std::string, std::string>>& headers);

}  // namespace ps
