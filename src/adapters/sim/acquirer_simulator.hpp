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
// Group commit: a call's row change joins the group gathering in memory; a committer
// thread writes and commits each group in one transaction, outside the simulator's lock,
// while the next group gathers; a call returns only after its group committed (a returned
// charge is committed), and a failed group fails every call in it. Reads see committed
// rows (a second connection) plus what is gathering or committing, and wait for that
// group before they answer from it. Checkpoints run on a third connection and thread
// (wal_autocheckpoint off).
// Thread-safety: thread-safe (one mutex around the reads and the pending rows; commits and
// sleeps happen outside it).
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
#include <unordered_map>
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
  // One row change, applied by the committer.
  struct Write {
    enum class Kind { charge, charge_call, refund, refund_call, void_ } kind = Kind::charge;
    std::string id;          // payment id (charge, charge_call, void_) or refund id
    std::string payment_id;  // refunds
    int64_t amount_minor = 0;
    std::string currency, source, decline_code;
    bool approved = false;
  };
  // The writes gathered while the previous group committed; committed together.
  struct Group {
    std::vector<Write> writes;
    bool done = false;
    bool ok = true;
    std::string error;
  };
  // Under mu_: adds `w` to the gathering group (woken committer) and returns that group.
  Result<std::shared_ptr<Group>> add_write(Write w);
  // Waits (releasing `lk`) until `g` is committed or failed; its outcome.
  Result<void> wait_committed(std::unique_lock<std::mutex>& lk, const std::shared_ptr<Group>& g);
  // Waits (releasing `lk`) until nothing is gathering or committing.
  void wait_idle(std::unique_lock<std::mutex>& lk);
  // Committed rows, on the read connection (mu_ held).
  Result<std::optional<AcquirerResult>> committed_charge(const std::string& payment_id);
  Result<bool> committed_void(const std::string& payment_id);
  void committer_loop();
  void checkpoint_loop();
  Result<void> apply(const Write& w);                      // committer: one write on db_
  sqlite3_stmt* stmt(sqlite3* db, std::vector<std::pair<const char*, sqlite3_stmt*>>& cache, const char* sql);

  const AcquirerSimOptions opts_;
  std::mutex mu_;
  sqlite3* db_ = nullptr;    // the committer's (writes); also reads for ":memory:"
  sqlite3* rdb_ = nullptr;   // reads of committed rows (mu_ held); == db_ for ":memory:"
  std::mt19937_64 rng_;
  std::unordered_set<std::string> transient_seen_;  // bounded: cleared past 100k entries
  std::vector<std::pair<const char*, sqlite3_stmt*>> rstmts_;  // on rdb_ (mu_ held)
  std::vector<std::pair<const char*, sqlite3_stmt*>> wstmts_;  // on db_ (committer)

  // Group commit (under mu_): writes gather while the previous group commits, outside
  // mu_, on the committer thread; what is gathering or committing is also in these maps,
  // so a read sees it and waits for its group before answering from it.
  std::condition_variable commit_cv_;  // committer: writes gathered; callers: a commit ended
  std::shared_ptr<Group> gathering_;
  std::shared_ptr<Group> committing_;
  std::unordered_map<std::string, std::pair<AcquirerResult, std::shared_ptr<Group>>> pending_charges_;
  std::unordered_map<std::string, std::shared_ptr<Group>> pending_voids_;
  std::unordered_map<std::string, std::pair<std::string, std::shared_ptr<Group>>> pending_refunds_;  // id -> payment
  std::unordered_map<std::string, int> pending_refunds_of_payment_;
  bool stopping_ = false;
  std::thread committer_;
  // WAL checkpoints on their own connection and thread (PASSIVE every 50 ms), so a commit
  // never copies the WAL into the database file.
  sqlite3* checkpoint_db_ = nullptr;
  std::mutex ck_mu_;
  std::condition_variable ck_cv_;
  bool ck_stop_ = false;
  std::thread checkpointer_;
};

}  // namespace ps
