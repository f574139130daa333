// SqliteProjection: where the embedded engine's log (adapters/embedded/log_engine.hpp)
// lands in the store. The log is the acknowledgement path: a write is durable once its log
// record is fsync'd, and its rows reach SQLite later, in large transactions, off the
// request path. Each transaction stores the log position it reaches (table
// log_projection) with the rows it wrote, so after a crash the log is replayed from
// exactly the first record the store does not hold, and a record is never applied twice.
// Pipeline events stay out of the store (the engine's bus holds them; the events table
// keeps tx.dlq); the stages' positions are stored, for recovery.
// Also the reads the engine needs to decide on new records (refund admission, replays).
// Thread-safety: any thread; project() runs as one job of the store's writer (sqlite_core.hpp).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "adapters/sqlite/sqlite_core.hpp"
#include "common/result.hpp"
#include "ports/event_log.hpp"
#include "ports/stores.hpp"

namespace ps {

// One logged write, as the projection applies it.
struct ProjectedWrite {
  enum class Kind : uint8_t { payment = 1, response = 2, refund = 3, stage_commit = 4, replay = 5 };
  Kind kind = Kind::payment;
  uint64_t lsn = 0;
  int64_t now_ms = 0;                    // the clock when it was logged
  // payment: a payment accepted (its payment.initiated event goes to the bus only)
  std::optional<AcceptPayment> payment;
  // response: a replaced idempotent response (Prefer: wait turned the 202 into a 201)
  std::string merchant_id;
  std::string key;
  int http_status = 0;
  std::string body;
  // refund: an admitted refund (amount and currency resolved), its event, its record
  Refund refund;
  Event refund_event;
  IdempotencyRecord refund_record;
  // stage_commit: a stage's effects and the positions it consumed up to
  std::string group;
  std::map<std::string, int64_t> positions;
  Effects effects;
  // replay: dead letter dlq_offset was replayed: replay_event appended to replay_topic on
  // the bus at new_offset, or (new_offset 0) a webhook letter, redelivered in the store
  int64_t dlq_offset = 0;
  int64_t new_offset = 0;
  std::string replay_topic;
  Event replay_event;
};

// What refund admission (domain/ledger_rules.hpp admit_refund) reads from the store.
struct RefundBasis {
  Payment payment;
  int64_t processing_for_payment = 0;
  int64_t available = 0;
  int64_t processing_for_merchant = 0;
  uint64_t projected_lsn = 0;   // the log position the snapshot holds (log_projection)
  int64_t payment_fee = 0;      // the fee its settlement charged (0 before it is settled)
};

class SqliteProjection {
 public:
  explicit SqliteProjection(sqlite::Core& core) : core_(core) {}

  // The last log position the store holds (0: none).
  Result<uint64_t> projected_lsn();
  // In one transaction: applies `writes` (ascending lsn) and stores the last lsn as the
  // projected position. Writes at or below the stored position are skipped, so a batch
  // replayed after a crash is applied once. On error nothing changed.
  Result<void> project(const std::vector<ProjectedWrite>& writes);

  // The payment and its maintained rows, one snapshot; nullopt: not the merchant's.
  Result<std::optional<RefundBasis>> refund_basis(const std::string& merchant_id, const std::string& payment_id);
  // Every stored (group, topic) -> position.
  Result<std::map<std::pair<std::string, std::string>, int64_t>> positions();
  // The merchant of a stored merchant event (webhook letters are redelivered to it).
  Result<std::optional<std::string>> merchant_of_event(const std::string& event_id);
  // Stage events of the SQLite engine (table events, not tx.dlq) that `group` has not
  // consumed, summed over the subscriptions: a data dir switched to the log engine must
  // have none (the log engine's stages never read them).
  Result<int64_t> unconsumed_store_events(const std::vector<std::pair<std::string, std::vector<std::string>>>& groups);
  // Dead letters `paystream dlq replay` asked the running engine to replay (oldest first),
  // and forgetting one once it is handled.
  Result<std::vector<int64_t>> replay_requests();
  Result<void> drop_replay_request(int64_t dlq_offset);
  // Queues a replay request (the CLI, while or before the engine runs).
  Result<void> request_replay(int64_t dlq_offset, int64_t now_ms);

 private:
  sqlite::Core& core_;
};

}  // namespace ps
