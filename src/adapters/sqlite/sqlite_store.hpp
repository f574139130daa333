// SqliteStore: the embedded shape's event log and durable store, in one SQLite file.
// It is assembled from parts that each read on their own, over one sqlite::Core (the
// writer, the readers, the checkpointer: sqlite_core.hpp):
//   SqliteStageLog   (sqlite_stage_log.hpp)  StageLog, DeadLetterStore
//   SqliteIntake     (sqlite_intake.hpp)     IntakeStore
//   SqliteQueries    (sqlite_queries.hpp)    PaymentQueries, MerchantStore, EndpointStore, EventQueries
//   SqliteDeliveries (sqlite_deliveries.hpp) DeliveryStore
//   SqliteProjection (sqlite_projection.hpp) where the intake log lands (projection())
// Row decoders and write helpers they share: sqlite_rows.hpp (internal).
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
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "adapters/sqlite/sqlite_core.hpp"
#include "adapters/sqlite/sqlite_deliveries.hpp"
#include "adapters/sqlite/sqlite_intake.hpp"
#include "adapters/sqlite/sqlite_projection.hpp"
#include "adapters/sqlite/sqlite_queries.hpp"
#include "adapters/sqlite/sqlite_stage_log.hpp"

namespace ps {

namespace detail {
// Holds the core so it is built before, and stopped after, the parts that use it.
struct SqliteCoreHolder {
  explicit SqliteCoreHolder(std::unique_ptr<sqlite::Core> c) : core(std::move(c)) {}
  std::unique_ptr<sqlite::Core> core;
};
}  // namespace detail

class SqliteStore final : private detail::SqliteCoreHolder,
                          public SqliteStageLog,
                          public SqliteIntake,
                          public SqliteQueries,
                          public SqliteDeliveries {
 public:
  // Opens or creates the database and migrates the schema (idempotent). Never throws.
  static Result<std::unique_ptr<SqliteStore>> open(SqliteOptions opts, const Clock& clock);
  ~SqliteStore();  // finishes queued writes, then stops the writer
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // Called on the writer thread after each commit with ids of payments that became
  // terminal in it. Set before traffic starts.
  void set_terminal_listener(std::function<void(const std::vector<std::string>&)> fn);
  // Feeds `backlog` (which must outlive the store) with every event appended to and every
  // position committed on its tracked topics, after loading the records already waiting.
  // Call before traffic starts.
  Result<void> attach_backlog(PipelineBacklog& backlog);
  // Where the log engine (--engine log) projects its records: see sqlite_projection.hpp.
  SqliteProjection& projection() { return projection_; }

 private:
  explicit SqliteStore(std::unique_ptr<sqlite::Core> core);
  SqliteProjection projection_;
};

}  // namespace ps
