// Event log port: the event bus as a pipeline stage sees it.
//
// Delivery: at-least-once. poll() returns records after the group's committed position;
// a record is redelivered until a commit() covering it succeeds.
// Ordering: records with the same key (payment id) are returned in the order they were
// appended (embedded: one partition per topic; Kafka: key-hashed partitions).
// Atomicity: commit() makes the effects and the new position durable together, or
// neither (embedded: one SQLite transaction; Kafka: a transaction with the offsets;
// database sinks: the offsets stored in the same database transaction).
// Thread-safety: implementations are thread-safe; one group is polled by one thread.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "domain/event.hpp"
#include "domain/model.hpp"

namespace ps {

struct Record {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  Event event;
};

// A record that could not be processed: goes to tx.dlq with where it came from.
struct DeadLetter {
  Record original;
  std::string error;
  int attempts = 0;
};

// A dead letter made by the webhook dispatcher (a delivery that gave up): its event is
// the merchant event with the webhook body as data, not a pipeline event.
inline bool is_webhook_dead_letter(const DeadLetter& d) {
  return d.original.event.source == "/paystream/notifier";
}

// Terminal outcome of a payment, applied by the ledger stage. Idempotent: applying it
// to a payment that is already terminal changes nothing.
struct PaymentOutcome {
  Payment payment;                          // status succeeded/failed, failure_code
  std::optional<JournalEntry> settlement;   // present iff succeeded
};
// Terminal outcome of a refund. Idempotent likewise; a succeeded refund adds to the
// payment's amount_refunded (never above its amount).
struct RefundOutcome {
  Refund refund;
  std::optional<JournalEntry> reversal;     // present iff succeeded
};

// What a stage wants made durable together with its consumed position.
struct Effects {
  std::vector<Event> produce;                     // appended to topic_for(event.type)
  std::vector<PaymentOutcome> payment_outcomes;   // ledger stage
  std::vector<RefundOutcome> refund_outcomes;     // ledger stage
  std::vector<MerchantEvent> merchant_events;     // notifier: the /v1/events record (dedup by id)
  std::vector<WebhookDelivery> deliveries;        // notifier: scheduled attempts (dedup by id)
  std::vector<DeadLetter> dead_letters;           // any stage: to tx.dlq
  bool empty() const {
    return produce.empty() && payment_outcomes.empty() && refund_outcomes.empty() &&
           merchant_events.empty() && deliveries.empty() && dead_letters.empty();
  }
};

class StageLog {
 public:
  virtual ~StageLog() = default;
  // Up to `max` records after `group`'s committed position on `topics`, waiting up to
  // `wait` for at least one. An empty vector means nothing new.
  virtual Result<std::vector<Record>> poll(const std::string& group,
                                           const std::vector<std::string>& topics, size_t max,
                                           std::chrono::milliseconds wait) = 0;
  // Atomically applies `effects` and moves `group`'s position past every record in
  // `consumed`. On error nothing changed and the records will be polled again.
  virtual Result<void> commit(const std::string& group, const std::vector<Record>& consumed,
                              Effects effects) = 0;
};

// Dead-letter inspection and replay (paystream dlq list|show|replay).
struct DeadLetterView {
  int64_t offset = 0;            // position in tx.dlq
  DeadLetter letter;
  int64_t created_ms = 0;
  bool replayed = false;
};
class DeadLetterStore {
 public:
  virtual ~DeadLetterStore() = default;
  virtual Result<std::vector<DeadLetterView>> list_dead_letters(size_t limit) = 0;
  virtual Result<std::optional<DeadLetterView>> get_dead_letter(int64_t offset) = 0;
  // Appends the original event again to its original topic and marks the letter replayed.
  // Replaying a letter twice is refused (conflict, "already_replayed").
  virtual Result<void> replay_dead_letter(int64_t offset) = 0;
};

}  // namespace ps
