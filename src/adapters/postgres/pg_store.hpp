// PostgreSQL adapter (libpq): the durable store of the distributed shape. This header is
// free of libpq includes.
//
// PgStore implements every durable-store port plus PositionSink. It is assembled from parts
// that each read on their own, over one pg::Core (the pool, the intake writer, the
// publisher's completions, the outbox deleter, the relay and listener threads:
// pg_core.hpp, internal):
//   PgIntake     (pg_intake.hpp)     IntakeStore: group-committed intake with the outbox
//   PgQueries    (pg_queries.hpp)    PaymentQueries, MerchantStore, EndpointStore, EventQueries
//   PgDeliveries (pg_deliveries.hpp) DeliveryStore: claimed webhook deliveries
//   PgSink       (pg_sink.hpp)       PositionSink, dead-letter replay bookkeeping
// and PgStore itself (pg_store.cpp): lifecycle, the outbox relay (the outbox: pg_intake.hpp),
// the terminal listener, reconciliation (totals). Row decoders and statement helpers they
// share: pg_rows.hpp (internal). Each part's header has its share of the contract; for the
// whole store:
// * Unique constraints make duplicates impossible at the database level: payments and
//   refunds UNIQUE(merchant_id, idempotency_key); journal entries UNIQUE(payment_id) for
//   settlements and UNIQUE(refund_id) for reversals; CHECK amount_refunded <= amount.
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

#include "adapters/postgres/pg_deliveries.hpp"
#include "adapters/postgres/pg_intake.hpp"
#include "adapters/postgres/pg_queries.hpp"
#include "adapters/postgres/pg_sink.hpp"
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

namespace pg {
struct Core;
}  // namespace pg

namespace detail {
// Holds the core so it is built before, and stopped after, the parts that use it.
struct PgCoreHolder {
  explicit PgCoreHolder(std::unique_ptr<pg::Core> c);
  ~PgCoreHolder();
  std::unique_ptr<pg::Core> core;
};
}  // namespace detail

class PgStore final : private detail::PgCoreHolder,
                      public PgIntake,
                      public PgQueries,
                      public PgDeliveries,
                      public PgSink {
 public:
  static Result<std::unique_ptr<PgStore>> open(const PgOptions& opts, const Clock& clock,
                                               EventPublisher& publisher);
  ~PgStore() override;
  PgStore(const PgStore&) = delete;
  PgStore& operator=(const PgStore&) = delete;

  // The ports: PgIntake, PgQueries, PgDeliveries, PgSink (with mark_dead_letter_replayed,
  // unmark_dead_letter_replayed, dead_letter_replayed, merchant_of_event).

  // Prefer: wait support: called (on a listener thread) with ids of payments that became
  // terminal, from LISTEN/NOTIFY (requires listen_terminal). Set before traffic starts.
  void set_terminal_listener(std::function<void(const std::vector<std::string>&)> fn);
  // Write-through hook for the payment status cache: called after a commit with every
  // payment whose row changed (accepted, terminal, refunded). Set before traffic starts.
  void set_payment_change_listener(std::function<void(const std::vector<Payment>&)> fn);

  // Re-publishes outbox rows older than relay_after_ms; returns how many were published.
  Result<size_t> relay_outbox_once();

  // Reconciliation and tests: plain counts over the ledger.
  struct Totals {
    int64_t payments = 0, processing = 0, succeeded = 0, failed = 0;
    int64_t settlements = 0, unbalanced_entries = 0, outbox_pending = 0;
    int64_t balance_drift = 0;   // (account, currency) whose maintained balance is not Σ its postings
  };
  Result<Totals> totals();

 private:
  explicit PgStore(std::unique_ptr<pg::Core> core);
  void start();  // the core's threads, with the intake writer, relay and listener loops
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
