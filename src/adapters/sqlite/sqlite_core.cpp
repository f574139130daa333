#include "adapters/sqlite/sqlite_core.hpp"

#include <algorithm>
#include <future>

#include "adapters/sqlite/schema.hpp"
#include "adapters/sqlite/sqlite_db.hpp"
#include "adapters/sqlite/sqlite_rows.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/thread_name.hpp"
#include "domain/pipeline_backlog.hpp"

namespace ps::sqlite {
namespace {

constexpr int kBusyTimeoutMs = 5000;
constexpr int kCheckpointBusyTimeoutMs = 20;
constexpr int kWriterCacheKib = 128 * 1024;  // writer page cache (readers: 8 MiB each)
constexpr auto kReaderWait = std::chrono::seconds(5);

struct StoreMetrics {
  metrics::Histogram& tx_seconds;
  metrics::Histogram& batch_size;
  metrics::Gauge& queue_depth;
  metrics::Counter& commits;
  static StoreMetrics& get() {
    static StoreMetrics m{
        metrics::registry().histogram("paystream_store_tx_seconds",
                                      "Duration of one group-committed store transaction"),
        metrics::registry().histogram("paystream_store_batch_size", "Write jobs per store transaction", {},
                                      {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}),
        metrics::registry().gauge("paystream_store_queue_depth", "Write jobs waiting for the store writer"),
        metrics::registry().counter("paystream_store_commits_total", "Store transactions committed")};
    return m;
  }
};

}  // namespace

// ---------- read connection pool ----------

Core::ReadLease::ReadLease(Core* c, std::unique_ptr<Db> db) : c_(c), db_(std::move(db)) {}
Core::ReadLease::ReadLease(ReadLease&& o) noexcept : c_(o.c_), db_(std::move(o.db_)) {}
Core::ReadLease::~ReadLease() {
  if (db_) c_->release_reader(std::move(db_));
}


Result<Core::ReadLease> Core::lease_reader() {
  std::unique_lock lk(pool_mu_);
  for (;;) {
    if (!idle_readers_.empty()) {
      auto db = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return ReadLease(this, std::move(db));
    }
    if (open_readers_ < std::max<size_t>(1, opts_.max_readers)) break;
    if (!pool_cv_.wait_for(lk, kReaderWait, [&] { return !idle_readers_.empty(); }))
      return Error::unavailable("store_overloaded", "no read connection free within 5 s");
  }
  ++open_readers_;
  lk.unlock();
  try {
    auto db = Db::open(opts_.path);
    auto r = db->configure(opts_.sync_full, kBusyTimeoutMs);
    if (r) r = db->exec("PRAGMA query_only=ON");
    if (!r) throw std::runtime_error(r.error().message);
    return ReadLease(this, std::move(db));
  } catch (const std::exception& e) {
    std::lock_guard g(pool_mu_);
    --open_readers_;
    pool_cv_.notify_one();
    return Error::internal(std::string("cannot open read connection: ") + e.what());
  }
}

void Core::release_reader(std::unique_ptr<Db> db) {
  std::lock_guard g(pool_mu_);
  if (!db->autocommit()) (void)db->exec("ROLLBACK");
  idle_readers_.push_back(std::move(db));
  pool_cv_.notify_one();
}

// ---------- lifecycle and the writer ----------

Result<std::unique_ptr<Core>> Core::open(SqliteOptions opts, const Clock& clock) {
  try {
    auto db = Db::open(opts.path);
    if (auto r = db->configure(opts.sync_full, kBusyTimeoutMs, kWriterCacheKib); !r) return r.error();
    // The checkpointer needs a second connection to the same file.
    if (opts.path.empty() || opts.path == ":memory:") opts.checkpoint_interval_ms = 0;
    if (opts.checkpoint_interval_ms > 0) {
      if (auto r = db->exec("PRAGMA wal_autocheckpoint=0"); !r) return r.error();
      // After a RESTART checkpoint the WAL file is cut back to this size.
      if (auto r = db->exec("PRAGMA journal_size_limit=" + std::to_string(int64_t(opts.wal_restart_pages) * 4096)); !r)
        return r.error();
    }
    if (auto r = sqlite::migrate(*db); !r) return r.error();
    if (opts.max_batch == 0) opts.max_batch = 1;
    if (opts.max_queue == 0) opts.max_queue = 1;
    StoreMetrics::get();
    return std::unique_ptr<Core>(new Core(std::move(opts), clock, std::move(db)));
  } catch (const std::exception& e) {
    return Error::internal(e.what());
  }
}

Core::Core(SqliteOptions opts, const Clock& clock, std::unique_ptr<Db> writer)
    : opts_(std::move(opts)), clock_(clock), writer_db_(std::move(writer)) {
  writer_ = std::thread([this] {
    name_this_thread("ps-sql-writer");
    writer_loop();
  });
  writer_id_.store(writer_.get_id());
  if (opts_.checkpoint_interval_ms > 0) {
    try {
      checkpoint_db_ = Db::open(opts_.path);
      // A short busy timeout: a RESTART checkpoint holds the WAL write lock while it waits,
      // so it must give up quickly (and retry later) rather than stall the writer.
      if (auto r = checkpoint_db_->configure(opts_.sync_full, kCheckpointBusyTimeoutMs, 1024); !r)
        throw std::runtime_error(r.error().message);
      checkpointer_ = std::thread([this] {
        name_this_thread("ps-sql-ckpt");
        checkpoint_loop();
      });
    } catch (const std::exception& e) {
      // Without the thread, fall back to SQLite's automatic checkpoints in the writer.
      log::warn("checkpointer unavailable; checkpointing in the writer", {{"error", e.what()}});
      checkpoint_db_.reset();
      if (auto r = run_sync([](Db& db, JobCtx&) { return db.exec("PRAGMA wal_autocheckpoint=1000"); }); !r)
        log::error("cannot re-enable automatic checkpoints; the WAL will grow", {{"error", r.error().message}});
    }
  }
}

// PASSIVE checkpoints never block the writer or readers; they copy what no reader still
// needs. Under continuous writes the WAL is never fully copied at the instant a write
// transaction starts, so SQLite would never rewind it: past wal_restart_pages a RESTART
// checkpoint waits (busy handler) for the writer's current transaction, copies the rest,
// and the next commit starts the WAL from the beginning.
void Core::checkpoint_loop() {
  static metrics::Gauge& wal_pages =
      metrics::registry().gauge("paystream_store_wal_pages", "Pages in the SQLite WAL after the last checkpoint");
  static metrics::Counter& restarts =
      metrics::registry().counter("paystream_store_wal_restarts_total", "RESTART checkpoints (WAL rewound)");
  static metrics::Counter& failures =
      metrics::registry().counter("paystream_store_checkpoint_errors_total", "Checkpoints that failed");
  struct Outcome {
    bool ok = false;
    bool busy = false;     // could not finish (a reader or the writer held on)
    int64_t log = 0;       // pages in the WAL
    int64_t copied = 0;    // pages copied into the database file
  };
  auto checkpoint = [&](const char* sql) {
    Outcome o;
    auto q = checkpoint_db_->query(sql);
    if (!q) return o;
    auto row = q->step();
    if (!row || !*row) return o;
    o.busy = q->i64(0) != 0;
    o.log = q->i64(1);
    o.copied = q->i64(2);
    o.ok = o.log >= 0;
    return o;
  };
  int64_t restarted_log = -1;  // WAL size at the last RESTART (unchanged until the next write)
  std::unique_lock lk(ck_mu_);
  while (!ck_stopping_) {
    ck_cv_.wait_for(lk, std::chrono::milliseconds(opts_.checkpoint_interval_ms), [&] { return ck_stopping_; });
    if (ck_stopping_) break;
    lk.unlock();
    Outcome o = checkpoint("PRAGMA wal_checkpoint(PASSIVE)");
    // RESTART only when everything is already copied (no reader pins an old snapshot),
    // the WAL is big, and it changed since the last RESTART (an idle WAL is not rewound
    // again and again).
    if (o.ok && !o.busy && o.copied == o.log && o.log > opts_.wal_restart_pages && o.log != restarted_log) {
      Outcome r = checkpoint("PRAGMA wal_checkpoint(RESTART)");
      if (r.ok && !r.busy) {
        restarts.inc();
        restarted_log = r.log;
      }
    }
    if (!o.ok) failures.inc(); else wal_pages.set(double(o.log));
    lk.lock();
  }
}

Core::~Core() {
  {
    std::lock_guard g(ck_mu_);
    ck_stopping_ = true;
  }
  ck_cv_.notify_all();
  if (checkpointer_.joinable()) checkpointer_.join();
  checkpoint_db_.reset();
  {
    std::lock_guard g(q_mu_);
    stopping_ = true;
  }
  q_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  {
    std::lock_guard g(ev_mu_);
    ++ev_version_;
  }
  ev_cv_.notify_all();
  std::lock_guard g(pool_mu_);
  idle_readers_.clear();
}

void Core::set_terminal_listener(std::function<void(const std::vector<std::string>&)> fn) {
  std::lock_guard g(listener_mu_);
  terminal_listener_ = std::move(fn);
}

void Core::submit(Job job, bool urgent) {
  std::unique_lock lk(q_mu_);
  if (stopping_) {
    lk.unlock();
    job.done(Error::unavailable("store_closed", "the store is shutting down"));
    return;
  }
  if (urgent) {
    urgent_.push_back(std::move(job));
  } else if (queue_.size() >= opts_.max_queue) {
    rejected_.push_back(std::move(job));  // its callback runs on the writer thread
  } else {
    queue_.push_back(std::move(job));
    StoreMetrics::get().queue_depth.set(double(queue_.size()));
  }
  lk.unlock();
  q_cv_.notify_one();
}

Result<void> Core::run_sync(std::function<Result<void>(Db&, JobCtx&)> body, bool durable) {
  if (std::this_thread::get_id() == writer_id_.load())
    return Error::internal("synchronous store write called on the store writer thread");
  auto p = std::make_shared<std::promise<Result<void>>>();
  auto f = p->get_future();
  submit(Job{std::move(body), [p](Result<void> r) { p->set_value(std::move(r)); }, durable}, /*urgent=*/true);
  return f.get();
}

void Core::writer_loop() {
  for (;;) {
    std::vector<Job> batch;
    std::vector<Job> rejected;
    {
      std::unique_lock lk(q_mu_);
      q_cv_.wait(lk, [&] { return stopping_ || !queue_.empty() || !urgent_.empty() || !rejected_.empty(); });
      rejected.swap(rejected_);
      if (queue_.empty() && urgent_.empty() && rejected.empty() && stopping_) break;
      batch.reserve(std::min(opts_.max_batch, queue_.size() + urgent_.size()));
      // Stage commits first, but never the whole batch while payments wait: a quarter of
      // it (at least one job) stays for the intake queue.
      const size_t reserve = queue_.empty() ? 0 : std::max<size_t>(1, opts_.max_batch / 4);
      const size_t urgent_room = opts_.max_batch > reserve ? opts_.max_batch - reserve : 1;
      while (!urgent_.empty() && batch.size() < urgent_room) {
        batch.push_back(std::move(urgent_.front()));
        urgent_.pop_front();
      }
      while (!queue_.empty() && batch.size() < opts_.max_batch) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      StoreMetrics::get().queue_depth.set(double(queue_.size()));
    }
    for (auto& j : rejected) {
      try {
        j.done(Error::unavailable("store_overloaded", "the store write queue is full"));
      } catch (...) {
      }
    }
    if (!batch.empty()) run_batch(batch);
  }
}

void Core::run_batch(std::vector<Job>& batch) {
  auto& m = StoreMetrics::get();
  auto t0 = std::chrono::steady_clock::now();
  Db& db = *writer_db_;
  std::vector<Result<void>> results;
  results.reserve(batch.size());
  JobCtx batch_ctx;
  std::optional<Error> abort_err;

  // fsync only when a job needs it (a projection batch alone is durable in the log).
  if (opts_.sync_full) {
    const bool want = std::any_of(batch.begin(), batch.end(), [](const Job& j) { return j.durable; });
    if (want != synced_) {
      if (auto s = db.exec(want ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"); s) synced_ = want;
      else log::warn("cannot switch synchronous", {{"error", s.error().message}});
    }
  }
  if (auto b = db.exec("BEGIN IMMEDIATE"); !b) abort_err = b.error();
  for (auto& job : batch) {
    if (abort_err) {
      results.emplace_back(*abort_err);
      continue;
    }
    if (auto sp = db.exec("SAVEPOINT job"); !sp) {
      abort_err = sp.error();
      results.emplace_back(*abort_err);
      continue;
    }
    JobCtx ctx;
    Result<void> r;
    try {
      r = job.body(db, ctx);
    } catch (const std::exception& e) {
      r = Error::internal(std::string("store job threw: ") + e.what());
    }
    if (db.autocommit()) {  // SQLite rolled the whole transaction back (I/O error, full disk)
      abort_err = r ? Error::internal("transaction rolled back by sqlite") : r.error();
      results.push_back(r ? Result<void>(*abort_err) : r);
      continue;
    }
    if (r) {
      if (auto rel = db.exec("RELEASE job"); !rel) {
        abort_err = rel.error();
        results.emplace_back(*abort_err);
        continue;
      }
      batch_ctx.terminal_ids.insert(batch_ctx.terminal_ids.end(), ctx.terminal_ids.begin(),
                                    ctx.terminal_ids.end());
      batch_ctx.events.insert(batch_ctx.events.end(), ctx.events.begin(), ctx.events.end());
      batch_ctx.positions.insert(batch_ctx.positions.end(), ctx.positions.begin(), ctx.positions.end());
    } else {
      auto rb = db.exec("ROLLBACK TO job");
      if (rb) rb = db.exec("RELEASE job");
      if (!rb) abort_err = rb.error();
    }
    results.push_back(std::move(r));
  }
  if (!abort_err) {
    if (auto c = db.exec("COMMIT"); !c) abort_err = c.error();
  }
  if (abort_err) {
    if (!db.autocommit()) (void)db.exec("ROLLBACK");
    log::error("store transaction failed", {{"error", abort_err->message}, {"jobs", std::to_string(batch.size())}});
    for (auto& r : results)
      if (r) r = *abort_err;
    batch_ctx = JobCtx{};
  } else {
    m.commits.inc();
  }
  m.tx_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  m.batch_size.observe(double(batch.size()));

  if (PipelineBacklog* backlog = backlog_.load()) {
    // The transaction's change at once (see PipelineBacklog::apply).
    PipelineBacklog::Change change{batch_ctx.positions, batch_ctx.events};
    backlog->apply(change, clock_.now_ms());
  }
  if (!batch_ctx.events.empty()) {
    {
      std::lock_guard g(ev_mu_);
      ++ev_version_;
    }
    ev_cv_.notify_all();
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    try {
      batch[i].done(std::move(results[i]));
    } catch (const std::exception& e) {
      log::error("store callback threw", {{"error", e.what()}});
    }
  }
  if (!batch_ctx.terminal_ids.empty()) {
    std::function<void(const std::vector<std::string>&)> fn;
    {
      std::lock_guard g(listener_mu_);
      fn = terminal_listener_;
    }
    if (fn) {
      try {
        fn(batch_ctx.terminal_ids);
      } catch (const std::exception& e) {
        log::error("terminal listener threw", {{"error", e.what()}});
      }
    }
  }
}


Result<void> Core::attach_backlog(PipelineBacklog& backlog) {
  {
    PS_LEASE_FROM(*this, db);
    for (const auto& [group, topic] : backlog.tracked()) {
      PS_QUERY(q, db,
               "SELECT offset, created_ms FROM events WHERE topic = ?1 AND offset > "
               "COALESCE((SELECT position FROM consumer_positions WHERE group_id = ?2 AND topic = ?1), 0) "
               "ORDER BY offset");
      q.bind_all(topic, group);
      for (;;) {
        PS_STEP(row, q);
        if (!row) break;
        backlog.appended(topic, q.i64(0), q.i64(1));
      }
    }
  }
  backlog_.store(&backlog);
  return {};
}

uint64_t Core::events_version() {
  std::lock_guard g(ev_mu_);
  return ev_version_;
}

bool Core::wait_for_events(uint64_t version, std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lk(ev_mu_);
  return ev_cv_.wait_until(lk, deadline, [&] { return ev_version_ != version; });
}

}  // namespace ps::sqlite
