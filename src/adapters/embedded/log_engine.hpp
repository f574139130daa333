// LogEngine: the embedded shape's log-first engine (`paystream serve --engine log`;
// docs/DECISIONS.md "Embedded engine").
//
// The acknowledgement path is one segment log (adapters/log): every write the pipeline
// depends on — a payment, a refund, a replaced response, a stage's commit, a dead-letter
// replay — is one compact record (engine_record.hpp), group-committed and fsync'd before
// it is answered (a 202 is durable, SPEC §2.1).
// Stages exchange records in memory (EventBus): a durable record's events go to the bus
// on the log's writer thread, in log order; a stage's effects and its consumed positions
// are one record, so they are durable together or not at all. The log is read from disk
// only at start.
// The store (SQLite) is a projection: a projection thread applies durable records to it
// in transactions of up to projection_batch records, each storing the log position it
// reached (SqliteProjection). Until then the records live in memory too (the overlay):
// an idempotency key, a payment and a refund are answered from there; lists wait for the
// projection (at most projection_wait). Stage outcomes (a payment's terminal status, its
// ledger entry, a webhook delivery) are visible in the store once projected.
// Uniqueness per (merchant, key) for ever: one admission thread takes every payment and
// refund, checks the overlay, then the store, and claims the key in the overlay before
// the append; an entry leaves the overlay only after the store committed its rows.
// Refund admission there too: the shared rule (admit_refund) on the store's rows plus the
// refunds admitted but not projected; effects not yet projected only ever add room
// (settlements, released reservations), so the store's rows are a safe lower bound.
// Recovery: the store's stage positions are loaded, the retained log is read once: its
// events refill the bus (what the groups have not consumed) and the records past the
// projected position are projected before the engine serves. Segments are removed once
// both the projection and every registered group are past them.
// Backlog (intake admission): the stages' backlog on the bus plus the records the store
// does not hold yet.
// Stepped mode (LogEngineOptions::stepped; the deterministic simulation, tests/sim): no
// threads of its own, nor the log's. Admission, log writes, projection and housekeeping
// run when step_*() runs them, on the caller's thread, so one thread decides every
// interleaving; a call that waits for the log (a stage's commit, a dead-letter replay)
// writes it then, and await_projection() projects. crash() drops what is in memory, as a
// killed process would. Stepped: from one thread only.
// Thread-safety: every method from any thread; callbacks run on the log's writer thread,
// the store's writer thread or the admission thread, and must not block.
#pragma once
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
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "adapters/embedded/event_bus.hpp"
#include "adapters/log/segment_log.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "domain/pipeline_backlog.hpp"
#include "ports/backlog.hpp"
#include "ports/clock.hpp"
#include "ports/event_log.hpp"
#include "ports/stores.hpp"

namespace ps {

struct LogEngineOptions {
  wal::LogOptions log;                              // log.dir: the segments
  std::vector<EventBus::Subscription> groups;       // the stages: bus retention, log removal
  PipelineBacklog* backlog = nullptr;               // fed with the bus (intake admission); may be null
  size_t projection_batch = 2048;                   // records per projection transaction
  std::chrono::milliseconds projection_wait{2000};  // list reads wait this long at most
  std::chrono::milliseconds housekeeping{200};      // replay requests, segment removal
  bool stepped = false;                             // no threads (see above); sets log.stepped
};

class LogEngine final : public IntakeStore, public BacklogProbe {
 public:
  // Opens the log, refills the bus, projects the records past the store's position, and
  // starts the admission, projection and housekeeping threads.
  static Result<std::unique_ptr<LogEngine>> open(LogEngineOptions opts, wal::LogFs& fs, SqliteStore& store,
                                                 const Clock& clock);
  ~LogEngine() override;  // answers what is queued, projects what is durable, stops
  LogEngine(const LogEngine&) = delete;
  LogEngine& operator=(const LogEngine&) = delete;

  // IntakeStore
  void accept_payment(AcceptPayment cmd, AcceptCallback cb) override;
  void accept_refund(AcceptRefund cmd, AcceptCallback cb) override;
  void update_idempotent_response(const std::string& merchant_id, const std::string& key, int http_status,
                                  std::string body, std::function<void(Result<void>)> cb) override;
  Result<std::optional<IdempotencyRecord>> find_idempotency(const std::string& merchant_id,
                                                            const std::string& key) override;
  // BacklogProbe: the stages' backlog plus the unprojected records.
  Backlog pipeline_backlog(int64_t now_ms) const override;

  // The stage log (EngineStageLog) and dead letters (EngineDeadLetters).
  Result<std::vector<Record>> poll(const std::string& group, const std::vector<std::string>& topics, size_t max,
                                   std::chrono::milliseconds wait);
  Result<void> commit(const std::string& group, const std::vector<Record>& consumed, Effects effects);
  Result<void> replay_dead_letter(int64_t dlq_offset);

  // The overlay's copy of a payment / refund the store may not hold yet (nullopt: ask it).
  std::optional<Payment> unprojected_payment(const std::string& merchant_id, const std::string& payment_id) const;
  std::optional<Refund> unprojected_refund(const std::string& merchant_id, const std::string& refund_id) const;
  // Waits until the store holds every record durable before the call.
  Result<void> await_projection();
  uint64_t projected_lsn() const;
  // Stepped mode only. Each returns how much it did.
  size_t step_admission();   // admits the payments and refunds queued (their appends queue)
  size_t step_log();         // writes the queued appends: group commits, then the callbacks
  size_t step_projection();  // projects every durable record, one transaction per batch
  void step_housekeeping();  // segment removal and dead-letter replay requests (also the thread's pass)
  // A simulated kill -9: the queued admissions are dropped unanswered, and the destructor
  // neither admits nor projects (the log's queued appends still fail or, if the file
  // system allows, are written: the caller crashes the file system first).
  void crash();
  const EventBus& bus() const { return bus_; }
  SqliteStore& store() { return store_; }

  // Offsets of a record's events: its lsn << 16 | index (at most kMaxEventsPerRecord).
  static constexpr int kOffsetShift = 16;
  static constexpr size_t kMaxEventsPerRecord = size_t(1) << kOffsetShift;

 private:
  // A payment or refund waiting for the admission thread.
  struct Admission {
    std::shared_ptr<AcceptPayment> payment;  // one of the two
    std::shared_ptr<AcceptRefund> refund;
    AcceptCallback cb;
  };
  // A key the store may not hold yet.
  struct Entry {
    enum class State { appending, durable } state = State::appending;
    uint64_t lsn = 0;                  // last log record of the key (0 while appending)
    IdempotencyRecord record;          // the stored response
    std::string payment_id;            // payments
    std::string refund_id;             // refunds
    std::vector<Admission> waiters;    // same key while appending: admitted again after
    int replacing = 0;                 // logged response replacements not yet durable: keep the entry
  };
  using Done = std::function<void(Result<uint64_t>)>;

  LogEngine(LogEngineOptions opts, SqliteStore& store, const Clock& clock);
  void admit_loop();
  void admit(Admission& a);
  void admit_refund_cmd(Admission& a, const std::string& mk);
  // Appends `w` to the log; once durable, on the log's writer thread: `overlay` (the
  // overlay's update, and the answer to an asynchronous caller), then the record to the
  // bus and the projection queue, then `answer` (a stage waits for it: its next poll must
  // see its own commit). Either may be null; on failure both get the error.
  void log_write(std::shared_ptr<ProjectedWrite> w, Done overlay, Done answer = nullptr);
  void on_durable(ProjectedWrite& w, uint64_t lsn);
  void feed_bus(const ProjectedWrite& w);
  void forget_key(const std::string& mk, std::vector<Admission>& waiters);
  void project_loop();
  // One projection transaction of the durable records (false: none, or the engine stops
  // with it unprojected). `wait`: until there is one or the engine stops.
  bool project_batch(bool wait);
  void housekeeping_loop();
  void release_log();
  void enqueue(Admission a);

  LogEngineOptions opts_;
  SqliteStore& store_;
  const Clock& clock_;
  EventBus bus_;
  std::unique_ptr<wal::SegmentLog> log_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> keys_;             // merchant '\n' key -> entry
  std::unordered_map<std::string, Payment> payments_;       // payment id -> payment (unprojected)
  std::unordered_map<std::string, Refund> refunds_;         // refund id -> refund (unprojected)
  // Refunds admitted and not projected: counted on top of a store snapshot only if the
  // snapshot does not hold them (lsn 0 while appending, or past the snapshot's position).
  struct Reservation {
    std::string payment_id, merchant_id, currency;
    int64_t amount_minor = 0;
    uint64_t lsn = 0;
  };
  std::unordered_map<std::string, Reservation> reservations_;  // refund id ->
  std::set<int64_t> replays_;                               // dead letters replayed, not projected
  std::deque<ProjectedWrite> to_project_;                   // durable, lsn order
  size_t projecting_ = 0;                                   // records in the batch being projected
  int64_t projecting_oldest_ms_ = 0;
  uint64_t durable_lsn_ = 0;
  uint64_t projected_lsn_ = 0;
  bool stopping_ = false;
  bool crashed_ = false;                                    // stepped: crash() was called
  std::condition_variable project_cv_;
  std::condition_variable projected_cv_;

  std::mutex admit_mu_;
  std::condition_variable admit_cv_;
  std::deque<Admission> admit_q_;
  bool admit_stop_ = false;

  std::mutex hk_mu_;
  std::condition_variable hk_cv_;
  bool hk_stop_ = false;

  std::thread admitter_;
  std::thread projector_;
  std::thread housekeeper_;
};

// The engine's ports for the wiring: the stage log, dead letters, and the store's payment
// queries with the overlay in front.
class EngineStageLog final : public StageLog {
 public:
  explicit EngineStageLog(LogEngine& e) : e_(e) {}
  Result<std::vector<Record>> poll(const std::string& group, const std::vector<std::string>& topics, size_t max,
                                   std::chrono::milliseconds wait) override {
    return e_.poll(group, topics, max, wait);
  }
  Result<void> commit(const std::string& group, const std::vector<Record>& consumed, Effects effects) override {
    return e_.commit(group, consumed, std::move(effects));
  }

 private:
  LogEngine& e_;
};

class EngineDeadLetters final : public DeadLetterStore {
 public:
  explicit EngineDeadLetters(LogEngine& e) : e_(e) {}
  Result<std::vector<DeadLetterView>> list_dead_letters(size_t limit) override;
  Result<std::optional<DeadLetterView>> get_dead_letter(int64_t offset) override;
  Result<void> replay_dead_letter(int64_t offset) override { return e_.replay_dead_letter(offset); }

 private:
  LogEngine& e_;
};

class EngineQueries final : public PaymentQueries {
 public:
  explicit EngineQueries(LogEngine& e) : e_(e) {}
  Result<std::optional<Payment>> get_payment(const std::string& merchant_id, const std::string& payment_id) override;
  Result<std::vector<Payment>> list_payments(const std::string& merchant_id, std::optional<PaymentStatus> status,
                                             const Page& page) override;
  Result<std::optional<Refund>> get_refund(const std::string& merchant_id, const std::string& refund_id) override;
  Result<std::vector<Balance>> balances(const std::string& merchant_id) override;
  Result<std::vector<JournalEntry>> entries_for_payment(const std::string& merchant_id,
                                                        const std::string& payment_id) override;

 private:
  LogEngine& e_;
};

}  // namespace ps
