// LoggedIntake: the embedded shape's intake with the segment log as its acknowledgement
// path (`paystream serve --intake-log`; the first step of the log-first engine,
// docs/DECISIONS.md "Embedded engine").
//
// Payments: a new payment is one compact record (intake_record.hpp) appended to the
// segment log (adapters/log): group-committed, fsync'd, and only then answered (202 =
// durable, SPEC §2.1). Its rows (payment, payment.initiated event, idempotency record)
// reach SQLite later, in large transactions off the request path (SqliteProjection),
// each storing the log position it reaches; the stages read tx.initiated from there.
// Until then the payment and its key live in memory (the overlay): a retry, GET
// /v1/payments/{id} and a refund see it at once. A restart replays only the log past the
// projected position (recovery after kill -9: the tail, not the history); segments the
// store holds entirely are removed.
// Uniqueness per (merchant, key) for ever: one admission thread takes every payment and
// refund, checks the overlay, then the store (a read on that thread, never on an HTTP
// thread), and claims the key in the overlay before the append. Entries leave the overlay
// only after the store holds their rows, so a key is always in one of the two.
// Refunds, and every other write, keep the store's own durable path (SqliteIntake);
// their keys are claimed in the overlay while they are in flight.
// Replaced responses (Prefer: wait) of a payment not yet projected are logged too.
// Reads that list payments wait (at most projection_wait) until the projection holds
// every payment acknowledged before the call: a list sees the caller's own writes.
// Backlog: the pipeline's backlog (the inner probe) plus the records not yet projected.
// Thread-safety: every method from any thread; callbacks run on the log's writer thread,
// the store's writer thread or the admission thread, and must not block.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "adapters/log/segment_log.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "ports/backlog.hpp"
#include "ports/clock.hpp"
#include "ports/stores.hpp"

namespace ps {

struct LoggedIntakeOptions {
  wal::LogOptions log;                                   // log.dir: the segments
  size_t projection_batch = 2048;                        // records per projection transaction
  std::chrono::milliseconds projection_wait{2000};       // list reads wait this long at most
  uint64_t release_every = 65536;                        // records projected between segment removals
};

class LoggedIntake final : public IntakeStore, public BacklogProbe {
 public:
  // Opens the log, replays the records past the store's projected position into the
  // store, and starts the admission and projection threads. Fails if the log ends
  // before the store's projected position (a log directory that is not this database's).
  static Result<std::unique_ptr<LoggedIntake>> open(LoggedIntakeOptions opts, wal::LogFs& fs, SqliteStore& store,
                                                    const Clock& clock);
  ~LoggedIntake() override;  // answers what is queued, projects what is durable, stops
  LoggedIntake(const LoggedIntake&) = delete;
  LoggedIntake& operator=(const LoggedIntake&) = delete;

  // IntakeStore
  void accept_payment(AcceptPayment cmd, AcceptCallback cb) override;
  void accept_refund(AcceptRefund cmd, AcceptCallback cb) override;
  void update_idempotent_response(const std::string& merchant_id, const std::string& key, int http_status,
                                  std::string body, std::function<void(Result<void>)> cb) override;
  Result<std::optional<IdempotencyRecord>> find_idempotency(const std::string& merchant_id,
                                                            const std::string& key) override;

  // BacklogProbe: `inner` (the stages' backlog; may be null) plus the unprojected records.
  void set_inner_backlog(const BacklogProbe* inner) { inner_backlog_ = inner; }
  Backlog pipeline_backlog(int64_t now_ms) const override;

  // The overlay's copy of a payment not yet projected (nullopt: ask the store).
  std::optional<Payment> unprojected_payment(const std::string& merchant_id, const std::string& payment_id) const;
  // Waits until the store holds every payment acknowledged before the call.
  Result<void> await_projection();
  uint64_t projected_lsn() const;

 private:
  // A payment or refund waiting for the admission thread.
  struct Admission {
    std::shared_ptr<AcceptPayment> payment;  // one of the two
    std::shared_ptr<AcceptRefund> refund;
    AcceptCallback cb;
  };
  // A key the store may not hold yet.
  struct Entry {
    enum class State { appending, durable, refund } state = State::appending;
    uint64_t lsn = 0;                  // last log record of the key (0 while appending)
    IdempotencyRecord record;          // payments: the stored response
    Payment payment;                   // payments: the payment as accepted
    std::vector<Admission> waiters;    // same key while appending or refund: admitted again after
  };
  LoggedIntake(LoggedIntakeOptions opts, SqliteStore& store, const Clock& clock);
  void admit_loop();
  void admit(Admission& a);
  void on_logged(const std::string& mk, std::shared_ptr<AcceptPayment> cmd, int64_t now_ms, Result<uint64_t> r,
                 const AcceptCallback& cb);
  void on_refund_done(const std::string& mk);
  void answer_later(std::vector<Admission> waiters);
  void project_loop();
  void enqueue(Admission a);

  LoggedIntakeOptions opts_;
  SqliteStore& store_;
  const Clock& clock_;
  const BacklogProbe* inner_backlog_ = nullptr;
  std::unique_ptr<wal::SegmentLog> log_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> keys_;          // merchant '\n' key -> entry
  std::unordered_map<std::string, std::string> payments_;  // payment id -> its keys_ key
  std::deque<ProjectedWrite> to_project_;                // durable, lsn order
  size_t projecting_ = 0;                                 // records in the batch being projected
  int64_t projecting_oldest_ms_ = 0;                      // accepted time of its first record
  size_t refunds_in_flight_ = 0;                          // in the store's path: waited for at stop
  uint64_t released_at_ = 0;
  uint64_t durable_lsn_ = 0;                              // last record acknowledged
  uint64_t projected_lsn_ = 0;
  bool stopping_ = false;
  std::condition_variable project_cv_;
  std::condition_variable projected_cv_;

  std::mutex admit_mu_;
  std::condition_variable admit_cv_;
  std::deque<Admission> admit_q_;
  bool admit_stop_ = false;

  std::thread admitter_;
  std::thread projector_;
};

// PaymentQueries of the store, with the overlay in front: a payment not yet projected is
// answered from memory; a list waits for the projection first.
class LoggedQueries final : public PaymentQueries {
 public:
  LoggedQueries(LoggedIntake& intake, PaymentQueries& store) : intake_(intake), store_(store) {}
  Result<std::optional<Payment>> get_payment(const std::string& merchant_id, const std::string& payment_id) override;
  Result<std::vector<Payment>> list_payments(const std::string& merchant_id, std::optional<PaymentStatus> status,
                                             const Page& page) override;
  Result<std::optional<Refund>> get_refund(const std::string& merchant_id, const std::string& refund_id) override {
    return store_.get_refund(merchant_id, refund_id);
  }
  Result<std::vector<Balance>> balances(const std::string& merchant_id) override {
    return store_.balances(merchant_id);
  }
  Result<std::vector<JournalEntry>> entries_for_payment(const std::string& merchant_id,
                                                        const std::string& payment_id) override {
    return store_.entries_for_payment(merchant_id, payment_id);
  }

 private:
  LoggedIntake& intake_;
  PaymentQueries& store_;
};

}  // namespace ps
