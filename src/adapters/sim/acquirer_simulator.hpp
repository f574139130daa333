// AcquirerSimulator: the built-in, deterministic acquirer (an external system stand-in).
//
// Test sources (ChargeRequest::source):
//   tok_approve             approves
//   tok_decline             declined, decline_code "card_declined"
//   tok_insufficient_funds  declined, decline_code "insufficient_funds"
//   tok_timeout             never answers in time: sleeps the full timeout (real time) and
//                           returns Error::timeout; records no charge (so a lookup_charge
//                           afterwards voids the id: definitively not charged)
//   tok_transient           the first call for a payment id fails retryably
//                           (Error::unavailable "acquirer_transient"); later calls approve
//   tok_fraud               approves if it ever gets here (the fraud blocklist stops it first)
//   anything else           approves
// Options: `latency` is slept (real time) before every answer; if it exceeds the call's
// timeout the call sleeps the timeout and returns Error::timeout. `failure_rate` makes a
// seeded fraction of calls fail retryably ("acquirer_transient") before any effect.
// Lookups (lookup_charge, the Acquirer port's contract): the stored charge result if there
// is one; otherwise the payment id is voided (a row in `voids`, committed before the answer)
// and the answer is nullopt; a charge of a voided id is declined with kChargeVoidedCode
// (also tok_timeout's, at once) and stores nothing. Lookups sleep the configured latency
// like every call, but `failure_rate` does not apply to them (it models refused charges).
// Refunds: approved when the payment has an approved charge and the refunds of it stay
// within the charged amount; otherwise declined "charge_not_found" /
// "amount_exceeds_charge". Only approved refunds are stored.
//
// Durability and idempotency: its own SQLite file (WAL unless ":memory:",
// synchronous=FULL unless sync_full=false), tables
//   charges(payment_id TEXT PRIMARY KEY, amount_minor, currency, source, approved,
//           decline_code, calls, created_ms)
//   refunds(refund_id TEXT PRIMARY KEY, payment_id, amount_minor, calls, created_ms)
//   voids(payment_id TEXT PRIMARY KEY, created_ms)   ids a lookup found not charged
// A repeated charge (same payment_id) or refund (same refund_id) returns the stored result,
// increments `calls` and moves money once — also across a restart on the same file.
// Group commit: concurrent calls write into one open transaction; a committer thread
// commits it and only then do those calls return (a returned charge is committed), so
// the simulator costs one commit per group of concurrent calls, not one per call.
// Checkpoints run on a second connection and thread (wal_autocheckpoint off), outside
// the commits.
// Thread-safety: thread-safe (one mutex around the database; sleeps happen outside it).
// Construction throws std::runtime_error if the database cannot be opened (start-up only).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/result.hpp"
#include "ports/external.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace ps {

struct AcquirerSimOptions {
  std::string db_path = ":memory:";
  std::chrono::milliseconds latency{0};
  double failure_rate = 0;   // 0..1
  uint64_t seed = 42;
  bool sync_full = true;  // synchronous=FULL (one fsync per group commit), else NORMAL
};

class AcquirerSimulator final : public Acquirer {
 public:
  explicit AcquirerSimulator(AcquirerSimOptions opts = {});
  ~AcquirerSimulator() override;
  AcquirerSimulator(const AcquirerSimulator&) = delete;
  AcquirerSimulator& operator=(const AcquirerSimulator&) = delete;

  Result<AcquirerResult> charge(const ChargeRequest& req, std::chrono::milliseconds timeout) override;
  Result<AcquirerResult> refund(const AcquirerRefundRequest& req, std::chrono::milliseconds timeout) override;
  Result<std::optional<AcquirerResult>> lookup_charge(const std::string& payment_id,
                                                      std::chrono::milliseconds timeout) override;

  Result<int64_t> charge_count();              // rows in `charges`
  Result<int64_t> void_count();                // rows in `voids`
  Result<int64_t> calls_for(const std::string& payment_id);  // `calls` of one charge (0 if none)

 private:
  // Sleeps the configured latency; false (after sleeping `timeout`) if it exceeds timeout.
  bool wait_latency(std::chrono::milliseconds timeout) const;
  bool random_failure();
  // One group transaction: its outcome, read by every caller that wrote in it.
  struct Group {
    bool done = false;
    bool ok = true;
    std::string error;
  };
  // Called with mu_ held before a write: opens the group transaction if needed and
  // returns the group whose commit makes the write durable (refused while stopping).
  Result<std::shared_ptr<Group>> join_group();
  // Waits (releasing `lk`) until `g` is committed or failed; its outcome.
  Result<void> wait_committed(std::unique_lock<std::mutex>& lk, const std::shared_ptr<Group>& g);
  // After a failed write: if SQLite rolled the whole transaction back, the open group
  // failed (its callers are told). Returns the error for this call.
  Error write_error(const char* what);
  // Waits (releasing `lk`) until no group is open, so reads see only committed data.
  void wait_no_open_group(std::unique_lock<std::mutex>& lk);
  // After a read under mu_ that found a row: the row is committed, or in the open group;
  // waits (releasing `lk`) for that group's commit. An error if it failed (row gone).
  Result<void> wait_read_committed(std::unique_lock<std::mutex>& lk);
  // Under mu_: whether `payment_id` is voided (committed or in the open group).
  Result<bool> voided_locked(const std::string& payment_id);
  void committer_loop();
  void checkpoint_loop();
  sqlite3_stmt* stmt(const char* sql);  // cached prepared statement (mu_ held)

  const AcquirerSimOptions opts_;
  std::mutex mu_;
  sqlite3* db_ = nullptr;
  std::mt19937_64 rng_;
  std::unordered_set<std::string> transient_seen_;  // bounded: cleared past 100k entries
  std::vector<std::pair<const char*, sqlite3_stmt*>> stmts_;

  // Group commit state (under mu_).
  std::condition_variable commit_cv_;  // committer: a transaction is open; callers: a commit ended
  std::shared_ptr<Group> open_;  // the open transaction's group; null when none is open
  bool stopping_ = false;
  std::thread committer_;
  // WAL checkpoints on their own connection and thread (PASSIVE every 50 ms), so a commit
  // never copies the WAL into the database while every caller waits on mu_.
  sqlite3* checkpoint_db_ = nullptr;
  std::mutex ck_mu_;
  std::condition_variable ck_cv_;
  bool ck_stop_ = false;
  std::thread checkpointer_;
};

}  // namespace ps
