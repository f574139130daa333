// SqliteStore: the embedded shape's event log and durable store, in one SQLite file.
//
// Writes: one writer thread owns the write connection and group-commits. Every write is
// a job in a bounded queue (max_queue; full -> Error::unavailable "store_overloaded").
// Synchronous writes (stage commits, admin writes; few, from internal threads) go to a
// separate queue that each batch takes first: work in progress is finished before new
// payments are taken in, so the pipeline keeps up with intake under load.
// The writer takes up to max_batch jobs, opens BEGIN IMMEDIATE, runs each job in its own
// SAVEPOINT (a failing job rolls back only itself and gets its own error), COMMITs once
// (one fsync with synchronous=FULL) and only then runs the jobs' callbacks, wakes pollers
// and calls the terminal listener. Asynchronous methods (accept_payment, accept_refund,
// update_idempotent_response) call back on the writer thread; synchronous write methods
// submit a job and wait for it. Callbacks and the terminal listener run on the writer
// thread: they must not block and must not call synchronous write methods (refused with
// Error::internal to avoid a self-deadlock).
// Reads: a bounded pool of read connections (WAL), so reads never wait for the writer.
// Durability: a write that reported success is committed (WAL, synchronous=FULL unless
// sync_full=false). Schema migrations are versioned with PRAGMA user_version.
// Checkpoints: a checkpointer thread copies the WAL into the database file (see
// SqliteOptions), so a commit never pays for a checkpoint.
//
// Event log: table `events`; offset = AUTOINCREMENT rowid, one partition per topic
// (Record.partition = 0). (topic, id, replay) is unique; stages always produce with
// replay = 0, so re-producing an event id to a topic is ignored (effectively-once).
// Dead letters are rows of topic tx.dlq (type paystream.dead_letter, data = JSON
// {"topic","partition","offset","error","attempts","event":{...}} with event.data kept as
// a string). Their id is deterministic: from (original topic, offset, event id) for stage
// dead letters, from (delivery id, n-th dead-lettering) for webhook deliveries.
// Replay design: replay_dead_letter appends a copy of the original event to its original
// topic with the SAME id and replay = 1 + the highest replay generation of (topic, id),
// i.e. a fresh offset at the end of the topic; every group consuming the topic sees the
// event once more, exactly once per replay. The event copied is the one in the log under
// (topic, id) if there is one (a webhook dead letter carries the webhook body, not the
// pipeline payload), else the letter's copy. The letter is marked in dead_letter_replays; a second
// replay of the same letter is refused (conflict "already_replayed"). Events a stage
// produces in reaction carry their usual deterministic ids (replay 0): if that stage had
// already produced them they are ignored as duplicates; deliveries that had failed are
// reset to pending (see commit()).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/result.hpp"
#include "ports/clock.hpp"
#include "ports/event_log.hpp"
#include "ports/stores.hpp"

namespace ps {

namespace sqlite {
class Db;
}
class PipelineBacklog;

struct SqliteOptions {
  std::string path;           // database file; created if missing
  bool sync_full = true;      // synchronous=FULL (else NORMAL: may lose the last commits on power loss)
  size_t max_batch = 512;     // jobs per transaction
  size_t max_queue = 100000;  // queued write jobs before "store_overloaded"
  size_t max_readers = 16;    // read connections in the pool
  // WAL checkpoints run on their own thread and connection, off the writer's path:
  // PASSIVE every checkpoint_interval_ms; RESTART (the next commit rewinds the WAL) once
  // the WAL holds more than wal_restart_pages pages. 0 = SQLite's automatic checkpoints
  // in the writer's commits instead.
  int checkpoint_interval_ms = 25;
  int wal_restart_pages = 16384;  // 64 MiB at 4 KiB pages
};

class SqliteStore final : public StageLog,
                          public DeadLetterStore,
                          public IntakeStore,
                          public PaymentQueries,
                          public MerchantStore,
                          public EndpointStore,
                          public EventQueries,
                          public DeliveryStore {
 public:
  // Opens or creates the database and migrates the schema (idempotent). Never throws.
  static Result<std::unique_ptr<SqliteStore>> open(SqliteOptions opts, const Clock& clock);
  ~SqliteStore() override;  // finishes queued writes, then stops the writer
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // Called on the writer thread after each commit with ids of payments that became
  // terminal in it. Set before traffic starts.
  void set_terminal_listener(std::function<void(const std::vector<std::string>&)> fn);
  // Number of events appended to `topic` (replays included).
  Result<int64_t> count_events(const std::string& topic);
  // Feeds `backlog` (which must outlive the store) with every event appended to and every
  // position committed on its tracked topics, after loading the records already waiting.
  // Call before traffic starts.
  Result<void> attach_backlog(PipelineBacklog& backlog);

  // StageLog
  Result<std::vector<Record>> poll(const std::string& group, const std::vector<std::string>& topics,
                                   size_t max, std::chrono::milliseconds wait) override;
  Result<void> commit(const std::string& group, const std::vector<Record>& consumed,
                      Effects effects) override;
  // DeadLetterStore (list: newest first, limit capped at 1000)
  Result<std::vector<DeadLetterView>> list_dead_letters(size_t limit) override;
  Result<std::optional<DeadLetterView>> get_dead_letter(int64_t offset) override;
  Result<void> replay_dead_letter(int64_t offset) override;
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
  // MerchantStore (duplicate id or key hash: conflict "merchant_exists")
  Result<void> create_merchant(const Merchant& m) override;
  Result<std::optional<Merchant>> find_merchant_by_key_hash(const std::string& key_hash) override;
  Result<std::vector<Merchant>> all_merchants() override;
  // EndpointStore (delete is a soft delete; its pending deliveries become failed
  // with last_error "endpoint_deleted")
  Result<void> create_endpoint(const WebhookEndpoint& e) override;
  Result<std::vector<WebhookEndpoint>> list_endpoints(const std::string& merchant_id) override;
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
  // Delivery ids are deterministic_id("wd_", event_id, endpoint_id), as the notifier makes them.
  Result<bool> redeliver(const std::string& merchant_id, const std::string& event_id, int64_t now_ms) override;

  // Per-transaction state a job contributes to (merged into the batch only if the job's
  // savepoint is released). Public only so the implementation's helpers can name it.
  struct JobCtx {
    bool appended = false;                  // events were appended (wake pollers)
    std::vector<std::string> terminal_ids;  // payments that became terminal
    std::vector<std::pair<std::string, int64_t>> events;                  // (topic, offset) appended
    std::vector<std::tuple<std::string, std::string, int64_t>> positions; // (group, topic, position)
  };

 private:
  struct Job {
    std::function<Result<void>(sqlite::Db&, JobCtx&)> body;
    std::function<void(Result<void>)> done;  // called after the commit (or on rejection)
  };
  class ReadLease;

  SqliteStore(SqliteOptions opts, const Clock& clock, std::unique_ptr<sqlite::Db> writer);
  void submit(Job job, bool urgent = false);
  Result<void> run_sync(std::function<Result<void>(sqlite::Db&, JobCtx&)> body);
  void writer_loop();
  void checkpoint_loop();
  void run_batch(std::vector<Job>& batch);
  Result<ReadLease> lease_reader();
  void release_reader(std::unique_ptr<sqlite::Db> db);

  SqliteOptions opts_;
  const Clock& clock_;
  std::unique_ptr<sqlite::Db> writer_db_;

  std::mutex q_mu_;
  std::condition_variable q_cv_;
  std::deque<Job> queue_;
  std::deque<Job> urgent_;     // synchronous writes (stage commits...): first in every batch
  std::vector<Job> rejected_;  // overflowed jobs whose callbacks the writer runs
  bool stopping_ = false;
  std::thread writer_;
  std::atomic<std::thread::id> writer_id_{};
  std::unique_ptr<sqlite::Db> checkpoint_db_;
  std::thread checkpointer_;
  std::mutex ck_mu_;
  std::condition_variable ck_cv_;
  bool ck_stopping_ = false;

  std::atomic<PipelineBacklog*> backlog_{nullptr};
  std::mutex listener_mu_;
  std::function<void(const std::vector<std::string>&)> terminal_listener_;

  std::mutex ev_mu_;
  std::condition_variable ev_cv_;
  uint64_t ev_version_ = 0;  // bumped after each commit that appended events

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<sqlite::Db>> idle_readers_;
  size_t open_readers_ = 0;
};

}  // namespace ps
