// PostgreSQL adapter (libpq): the durable store of the distributed shape. This header is
// free of libpq includes.
//
// PgStore implements every durable-store port plus PositionSink:
// * Intake: accept_payment/accept_refund commit payment (or refund), idempotency record and
//   an outbox row with the event in one transaction (group-committed: many requests share
//   one transaction, each under a savepoint; the row's age is stamped at commit), then hand
//   the events to the EventPublisher. The caller's callback runs once the publisher answered
//   (ok or not) or publish_wait_ms passed, whichever is first. The outbox row is deleted
//   (off the callback thread) once the publish succeeded; the relay (relay_interval_ms > 0)
//   re-publishes rows older than relay_after_ms that no publish of this process has in
//   flight, claiming them by moving their age in one short statement (SKIP LOCKED), so
//   several gateways may relay and no row lock is held while waiting for the bus.
//   Refunds lock the payment row (SELECT ... FOR UPDATE) so concurrent refunds never exceed
//   what was captured.
// * Unique constraints make duplicates impossible at the database level: payments and
//   refunds UNIQUE(merchant_id, idempotency_key); journal entries UNIQUE(payment_id) for
//   settlements and UNIQUE(refund_id) for reversals; CHECK amount_refunded <= amount.
// * DeliveryStore: due_deliveries claims its rows for 60 s (FOR UPDATE SKIP LOCKED), so
//   several notifier replicas never send the same delivery; record_attempt only updates a
//   row still pending (a stale attempt is a no-op) and, with a dead letter, writes the
//   letter to the outbox in the same transaction (published to tx.dlq, relay as fallback).
// * PositionSink: outcomes, merchant events and deliveries plus consumer positions
//   (table consumer_positions(group, topic, partition, next_offset)) in one transaction;
//   after commit, payments that changed are passed to the payment-change listener and their
//   ids announced with NOTIFY paystream_terminal (terminal ones).
// * Deadlocks and serialization failures (SQLSTATE 40P01/40001) roll back an intake batch
//   or an apply; the transaction is run again (at most 3 times, short jittered backoff)
//   before the error reaches the callers. Metric paystream_db_tx_retries_total{transaction}.
// Pool: bounded connections (pool_size); metrics paystream_db_pool_size, _in_use,
//   paystream_db_pool_wait_seconds (histogram), paystream_db_tx_seconds.
// Schema: created by migrate() (versioned, idempotent; table schema_migrations); the
//   store refuses to open on a database whose version is older than the binary's.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "adapters/postgres/pg_tls.hpp"
#include "common/result.hpp"
#include "ports/clock.hpp"
#include "ports/event_log.hpp"
#include "ports/event_publisher.hpp"
#include "ports/position_sink.hpp"
#include "ports/stores.hpp"

namespace ps {

struct PgOptions {
  std::string url;                 // libpq conninfo or postgresql:// URL
  std::string schema;              // empty: public; tests use a fresh schema each
  PgTls tls;                       // sslmode / sslrootcert; override the URL's when set
  size_t pool_size = 8;
  int connect_timeout_ms = 3000;
  int statement_timeout_ms = 5000;
  int pool_wait_timeout_ms = 2000; // waiting for a free connection longer fails (unavailable)
  size_t max_batch = 256;          // intake writes per group-committed transaction
  int relay_interval_ms = 0;       // 0: no outbox relay in this process
  int relay_after_ms = 30000;      // must exceed the publisher's own timeout
  bool listen_terminal = false;    // LISTEN paystream_terminal for set_terminal_listener
  // Longest an accept waits for the bus's acknowledgement before its callback runs anyway
  // (the committed outbox row guarantees the event; the relay publishes it if need be).
  // 0: wait for the publisher's answer, however long.
  int publish_wait_ms = 1000;
};

// Applies the schema migrations up to the binary's version. Idempotent; safe to run
// concurrently (advisory lock). Returns the version now in place.
Result<int> pg_migrate(const std::string& url, const std::string& schema = "", const PgTls& tls = {});
int pg_schema_version();  // the version this binary expects

class PgStore final : public IntakeStore,
                      public PaymentQueries,
                      public MerchantStore,
                      public EndpointStore,
                      public EventQueries,
                      public DeliveryStore,
                      public PositionSink {
 public:
  static Result<std::unique_ptr<PgStore>> open(const PgOptions& opts, const Clock& clock,
                                               EventPublisher& publisher);
  ~PgStore() override;

  // IntakeStore
  void accept_payment(AcceptPayment cmd, AcceptCallback cb) override;
  void accept_refund(AcceptRefund cmd, AcceptCallback cb) override;
  void update_idempotent_response(const std::string& merchant_id, const std::string& key,
                                  int http_status, std::string body,
                                  std::function<void(Result<void>)> cb) override;
  Result<std::optional<IdempotencyRecord>> find_idempotency(const std::string& merchant_id,
                                                            const std::string& key) override;
  // PaymentQueries
  Result<std::optional<Payment>> get_payment(const std::string& merchant_id,
                                             const std::string& payment_id) override;
  Result<std::vector<Payment>> list_payments(const std::string& merchant_id,
                                             std::optional<PaymentStatus> status,
                                             const Page& page) override;
  Result<std::optional<Refund>> get_refund(const std::string& merchant_id,
                                           const std::string& refund_id) override;
  Result<std::vector<Balance>> balances(const std::string& merchant_id) override;
  Result<std::vector<JournalEntry>> entries_for_payment(const std::string& merchant_id,
                                                        const std::string& payment_id) override;
  // MerchantStore
  Result<void> create_merchant(const Merchant& m) override;
  Result<std::optional<Merchant>> find_merchant_by_key_hash(const std::string& key_hash) override;
  Result<std::vector<Merchant>> all_merchants() override;
  Result<std::optional<std::vector<Merchant>>> rotate_api_key(const std::string& merchant_id,
                                                                 const std::string& new_key_hash, int64_t now_ms,
                                                                 int64_t old_keys_expire_ms) override;
  // EndpointStore
  Result<void> create_endpoint(const WebhookEndpoint& e) override;
  Result<std::vector<WebhookEndpoint>> list_endpoints(const std::string& merchant_id) override;
  Result<std::optional<WebhookEndpoint>> update_endpoint(const std::string& merchant_id, const std::string& endpoint_id,
                                                         const EndpointUpdate& update) override;
  Result<std::optional<WebhookEndpoint>> get_endpoint(const std::string& merchant_id,
                                                      const std::string& endpoint_id) override;
  Result<bool> delete_endpoint(const std::string& merchant_id, const std::string& endpoint_id) override;
  // EventQueries
  Result<std::vector<MerchantEvent>> list_events(const std::string& merchant_id, const Page& page) override;
  Result<std::optional<MerchantEvent>> get_event(const std::string& merchant_id,
                                                 const std::string& event_id) override;
  // DeliveryStore
  Result<std::vector<WebhookEndpoint>> endpoints_for(const std::string& merchant_id) override;
  Result<std::vector<DueDelivery>> due_deliveries(int64_t now_ms, size_t max) override;
  Result<void> record_attempt(const WebhookDelivery& updated, std::optional<DeadLetter> dead_letter) override;
  Result<bool> redeliver(const std::string& merchant_id, const std::string& event_id, int64_t now_ms) override;
  // PositionSink
  Result<void> apply(const std::string& group, const std::vector<Record>& consumed,
                     const Effects& effects) override;
  Result<std::map<TopicPartition, int64_t>> positions(const std::string& group) override;

  // Prefer: wait support: called (on a listener thread) with ids of payments that became
  // terminal, from LISTEN/NOTIFY (requires listen_terminal). Set before traffic starts.
  void set_terminal_listener(std::function<void(const std::vector<std::string>&)> fn);
  // Write-through hook for the payment status cache: called after a commit with every
  // payment whose row changed (accepted, terminal, refunded). Set before traffic starts.
  void set_payment_change_listener(std::function<void(const std::vector<Payment>&)> fn);

  // Re-publishes outbox rows older than relay_after_ms; returns how many were published.
  Result<size_t> relay_outbox_once();
  // Dead-letter replay bookkeeping: true if `position` was not marked before (now marked).
  Result<bool> mark_dead_letter_replayed(int64_t position, int64_t now_ms);
  Result<void> unmark_dead_letter_replayed(int64_t position);
  Result<bool> dead_letter_replayed(int64_t position);
  // The merchant a merchant event (/v1/events record) belongs to; nullopt if there is no
  // such event. Replaying a webhook dead letter redelivers the event to that merchant.
  Result<std::optional<std::string>> merchant_of_event(const std::string& event_id);

  // Reconciliation and tests: plain counts over the ledger.
  struct Totals {
    int64_t payments = 0, processing = 0, succeeded = 0, failed = 0;
    int64_t settlements = 0, unbalanced_entries = 0, outbox_pending = 0;
    int64_t balance_drift = 0;   // (account, currency) whose maintained balance is not Σ its postings
  };
  Result<Totals> totals();

  struct Impl;
 private:
  explicit PgStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ps

// ---------- PgEventDedup (pg_event_dedup.cpp) ----------
// EventDedup over table event_firsts(group_id, event_id, topic, partition, offset, seen_ms):
// one round trip per call (INSERT ... ON CONFLICT DO NOTHING of the batch, then the stored
// positions read back in the same statement). Its own pool of 2 connections. Entries older
// than 7 days are purged (at most 10000 rows, at most once an hour, from first_copies).
// Requires schema version >= 2 (pg_migrate).
#include "ports/event_dedup.hpp"

namespace ps {

class PgEventDedup final : public EventDedup {
 public:
  static Result<std::unique_ptr<PgEventDedup>> open(const PgOptions& opts);
  ~PgEventDedup() override;
  Result<std::vector<bool>> first_copies(const std::string& group, const std::vector<Record>& records) override;
  // Deletes at most `max_rows` entries seen before `cutoff_ms`; returns how many.
  Result<size_t> purge(int64_t cutoff_ms, size_t max_rows);

  struct Impl;
 private:
  explicit PgEventDedup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ps
