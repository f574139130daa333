// sqlite::Core: the embedded store's engine room, shared by the parts that implement its
// ports (sqlite_store.hpp has the design: group commit, urgent and intake queues, reads,
// durability, checkpoints). It owns the write connection and the one writer thread that
// group-commits jobs (each in its own savepoint, one COMMIT and one fsync per batch,
// callbacks after the commit), a bounded pool of read connections, the checkpointer, and
// what runs after a commit: waking pollers, the terminal listener, the pipeline backlog.
// Thread-safety: every method may be called from any thread; run_sync is refused on the
// writer thread (a job's callback must not wait for the writer).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "ports/clock.hpp"

namespace ps {

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

namespace sqlite {

class Db;

// What a job contributes to its transaction (merged into the batch only if the job's
// savepoint is released).
struct JobCtx {
  std::vector<std::string> terminal_ids;  // payments that became terminal
  std::vector<std::pair<std::string, int64_t>> events;                  // (topic, offset) appended: wake pollers
  std::vector<std::tuple<std::string, std::string, int64_t>> positions; // (group, topic, position)
};

struct Job {
  std::function<Result<void>(Db&, JobCtx&)> body;
  std::function<void(Result<void>)> done;  // called after the commit (or on rejection)
  // false: the write is durable elsewhere already (the engine log's projection), so its
  // transaction need not fsync; a batch with any durable job commits with
  // synchronous=FULL (when sync_full), which also syncs every earlier WAL frame.
  bool durable = true;
};

class Core {
 public:
  // A read connection borrowed from the pool; returned when the lease goes.
  class ReadLease {
   public:
    ReadLease(Core* c, std::unique_ptr<Db> db);
    ReadLease(ReadLease&& o) noexcept;
    ReadLease& operator=(ReadLease&&) = delete;
    ~ReadLease();
    Db& db() { return *db_; }

   private:
    Core* c_;
    std::unique_ptr<Db> db_;
  };

  // Opens or creates the database and migrates the schema (idempotent). Never throws.
  static Result<std::unique_ptr<Core>> open(SqliteOptions opts, const Clock& clock);
  ~Core();  // finishes queued writes, then stops the writer
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  // Queues a write job (urgent: synchronous writes, first in every batch; others are
  // refused with "store_overloaded" past max_queue).
  void submit(Job job, bool urgent = false);
  // Submits an urgent job and waits for it; refused on the writer thread itself.
  Result<void> run_sync(std::function<Result<void>(Db&, JobCtx&)> body, bool durable = true);
  Result<ReadLease> lease_reader();
  const Clock& clock() const { return clock_; }

  void set_terminal_listener(std::function<void(const std::vector<std::string>&)> fn);
  // See SqliteStore::attach_backlog.
  Result<void> attach_backlog(PipelineBacklog& backlog);
  // Bumped after each commit that appended events; wait_for_events waits until it moves
  // past `version` or the deadline passes (false then).
  uint64_t events_version();
  bool wait_for_events(uint64_t version, std::chrono::steady_clock::time_point deadline);

 private:
  Core(SqliteOptions opts, const Clock& clock, std::unique_ptr<Db> writer);
  void writer_loop();
  void checkpoint_loop();
  void run_batch(std::vector<Job>& batch);
  void release_reader(std::unique_ptr<Db> db);
  bool synced_ = true;  // the writer connection's synchronous setting is FULL (writer-owned)

  SqliteOptions opts_;
  const Clock& clock_;
  std::unique_ptr<Db> writer_db_;

  std::mutex q_mu_;
  std::condition_variable q_cv_;
  std::deque<Job> queue_;
  std::deque<Job> urgent_;     // synchronous writes (stage commits...): first in every batch
  std::vector<Job> rejected_;  // overflowed jobs whose callbacks the writer runs
  bool stopping_ = false;
  std::thread writer_;
  std::atomic<std::thread::id> writer_id_{};
  std::unique_ptr<Db> checkpoint_db_;
  std::thread checkpointer_;
  std::mutex ck_mu_;
  std::condition_variable ck_cv_;
  bool ck_stopping_ = false;

  std::atomic<PipelineBacklog*> backlog_{nullptr};
  std::mutex listener_mu_;
  std::function<void(const std::vector<std::string>&)> terminal_listener_;

  std::mutex ev_mu_;
  std::condition_variable ev_cv_;
  uint64_t ev_version_ = 0;

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<Db>> idle_readers_;
  size_t open_readers_ = 0;
};

}  // namespace sqlite
}  // namespace ps
