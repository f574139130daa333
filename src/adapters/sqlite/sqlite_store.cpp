#include "adapters/sqlite/sqlite_store.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <future>
#include <map>

#include "adapters/sqlite/schema.hpp"
#include "adapters/sqlite/sqlite_db.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "domain/ids.hpp"
#include "domain/ledger_rules.hpp"
#include "domain/money.hpp"
#include "domain/pipeline_backlog.hpp"
#include "domain/store_codec.hpp"

namespace ps {
namespace json = boost::json;
using sqlite::Db;
using sqlite::Query;

#define PS_TRY(expr)                   \
  do {                                 \
    auto ps_try_r_ = (expr);           \
    if (!ps_try_r_) return ps_try_r_.error(); \
  } while (0)

#define PS_QUERY(var, db, sql)          \
  auto var##_res = (db).query(sql);     \
  if (!var##_res) return var##_res.error(); \
  Query& var = *var##_res

#define PS_STEP(row, q)                 \
  auto row##_res = (q).step();          \
  if (!row##_res) return row##_res.error(); \
  bool row = *row##_res

namespace {

constexpr int kBusyTimeoutMs = 5000;
constexpr int kCheckpointBusyTimeoutMs = 20;
constexpr int kWriterCacheKib = 128 * 1024;  // writer page cache (readers: 8 MiB each)
constexpr auto kReaderWait = std::chrono::seconds(5);
constexpr size_t kMaxPollRecords = 10000;
constexpr size_t kMaxListRows = 1000;

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

// Encoding helpers: domain/store_codec.hpp (shared with the PostgreSQL store).

// ---------- row decoders ----------

const char* const kPaymentCols =
    "id, merchant_id, idempotency_key, amount_minor, currency, source, description, metadata, "
    "status, failure_code, amount_refunded_minor, created_ms, updated_ms";
Payment read_payment(const Query& q) {
  Payment p;
  p.id = q.text(0);
  p.merchant_id = q.text(1);
  p.idempotency_key = q.text(2);
  p.amount_minor = q.i64(3);
  p.currency = q.text(4);
  p.source = q.text(5);
  p.description = q.text(6);
  p.metadata = metadata_from_json(q.text(7));
  p.status = parse_payment_status(q.text(8)).value_or(PaymentStatus::processing);
  p.failure_code = q.text(9);
  p.amount_refunded_minor = q.i64(10);
  p.created_ms = q.i64(11);
  p.updated_ms = q.i64(12);
  return p;
}

const char* const kRefundCols =
    "id, payment_id, merchant_id, idempotency_key, amount_minor, currency, status, failure_code, "
    "created_ms, updated_ms";
Refund read_refund(const Query& q) {
  Refund r;
  r.id = q.text(0);
  r.payment_id = q.text(1);
  r.merchant_id = q.text(2);
  r.idempotency_key = q.text(3);
  r.amount_minor = q.i64(4);
  r.currency = q.text(5);
  r.status = parse_refund_status(q.text(6)).value_or(RefundStatus::processing);
  r.failure_code = q.text(7);
  r.created_ms = q.i64(8);
  r.updated_ms = q.i64(9);
  return r;
}

const char* const kMerchantCols = "id, name, api_key_hash, rate_limit_per_s, rate_limit_burst, created_ms";
Merchant read_merchant(const Query& q) {
  Merchant m;
  m.id = q.text(0);
  m.name = q.text(1);
  m.api_key_hash = q.text(2);
  m.rate_limit_per_s = q.f64(3);
  m.rate_limit_burst = q.i64(4);
  m.created_ms = q.i64(5);
  return m;
}

const char* const kEndpointCols = "id, merchant_id, url, secret, enabled_events, created_ms";
WebhookEndpoint read_endpoint(const Query& q, int b = 0) {
  WebhookEndpoint e;
  e.id = q.text(b + 0);
  e.merchant_id = q.text(b + 1);
  e.url = q.text(b + 2);
  e.secret = q.text(b + 3);
  e.enabled_events = strings_from_json(q.text(b + 4));
  e.created_ms = q.i64(b + 5);
  return e;
}

const char* const kMerchantEventCols = "id, merchant_id, type, data_json, created_ms";
MerchantEvent read_merchant_event(const Query& q, int b = 0) {
  MerchantEvent m;
  m.id = q.text(b + 0);
  m.merchant_id = q.text(b + 1);
  m.type = q.text(b + 2);
  m.data_json = q.text(b + 3);
  m.created_ms = q.i64(b + 4);
  return m;
}

DeliveryStatus parse_delivery_status(const std::string& s) {
  if (s == "succeeded") return DeliveryStatus::succeeded;
  if (s == "failed") return DeliveryStatus::failed;
  return DeliveryStatus::pending;
}
WebhookDelivery read_delivery(const Query& q, int b = 0) {
  WebhookDelivery d;
  d.id = q.text(b + 0);
  d.event_id = q.text(b + 1);
  d.endpoint_id = q.text(b + 2);
  d.merchant_id = q.text(b + 3);
  d.status = parse_delivery_status(q.text(b + 4));
  d.attempts = int(q.i64(b + 5));
  d.next_attempt_ms = q.i64(b + 6);
  d.last_http_status = int(q.i64(b + 7));
  d.last_error = q.text(b + 8);
  return d;
}

const char* const kEventCols = "offset, topic, partition, key, id, type, source, time_ms, traceparent, data";
Record read_record(const Query& q) {
  Record r;
  r.offset = q.i64(0);
  r.topic = q.text(1);
  r.partition = int32_t(q.i64(2));
  r.event.key = q.text(3);
  r.event.id = q.text(4);
  r.event.type = q.text(5);
  r.event.source = q.text(6);
  r.event.time_ms = q.i64(7);
  r.event.traceparent = q.text(8);
  r.event.data = q.text(9);
  return r;
}


// ---------- write helpers (run on the writer connection inside a job) ----------

// Appends `e` to `topic` with replay generation `replay`; false if (topic, id, replay)
// already existed. An appended event is noted in `ctx` (for the pipeline backlog).
Result<bool> append_event(Db& db, std::string_view topic, const Event& e, int64_t replay, int64_t now_ms,
                          SqliteStore::JobCtx& ctx, int64_t* offset_out = nullptr) {
  PS_QUERY(q, db,
           "INSERT INTO events(topic, partition, key, id, type, source, time_ms, traceparent, data, replay, "
           "created_ms) VALUES(?1, 0, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
           "ON CONFLICT(topic, id, replay) DO NOTHING");
  q.bind_all(topic, e.key, e.id, e.type, e.source, e.time_ms, e.traceparent, e.data, replay, now_ms);
  PS_TRY(q.exec());
  bool inserted = db.changes() > 0;
  if (inserted) {
    const int64_t offset = db.last_insert_rowid();
    if (offset_out) *offset_out = offset;
    ctx.appended = true;
    ctx.events.emplace_back(std::string(topic), offset);
  }
  return inserted;
}

Result<void> append_dead_letter(Db& db, const DeadLetter& d, const std::string& id, int64_t now_ms,
                                SqliteStore::JobCtx& ctx) {
  Event e;
  e.id = id;
  e.type = std::string(event_types::dead_letter);
  e.source = "/paystream/store";
  e.time_ms = now_ms;
  e.key = d.original.event.key;
  e.traceparent = d.original.event.traceparent;
  e.data = encode_dead_letter(d);
  auto r = append_event(db, topics::dlq, e, 0, now_ms, ctx);
  if (!r) return r.error();
  if (*r) {
    ctx.appended = true;
    log::warn("dead letter stored", {{"dead_letter_id", id},
                                     {"topic", d.original.topic},
                                     {"offset", std::to_string(d.original.offset)},
                                     {"error", d.error},
                                     {"payment_id", d.original.event.key}});
  }
  return {};
}

std::string stage_dead_letter_id(const DeadLetter& d) {
  return deterministic_id("dlq_", d.original.topic + "#" + std::to_string(d.original.offset),
                          d.original.event.id);
}


Result<void> insert_entry(Db& db, const JournalEntry& e) {
  assert_balanced(e, "sqlite store");
  {
    PS_QUERY(q, db,
             "INSERT INTO journal_entries(id, kind, merchant_id, payment_id, refund_id, created_ms) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    q.bind_all(e.id, to_string(e.kind), e.merchant_id, e.payment_id);
    if (e.refund_id.empty()) q.bind_null(5); else q.bind(5, e.refund_id);
    q.bind(6, e.created_ms);
    PS_TRY(q.exec());
  }
  for (const auto& p : e.postings) {
    {
      PS_QUERY(q, db, "INSERT INTO postings(entry_id, account, currency, amount_minor) VALUES(?1, ?2, ?3, ?4)");
      q.bind_all(e.id, p.account, p.currency, p.amount_minor);
      PS_TRY(q.exec());
    }
    PS_QUERY(q, db,
             "INSERT INTO account_balances(account, currency, amount_minor) VALUES(?1, ?2, ?3) "
             "ON CONFLICT(account, currency) DO UPDATE SET amount_minor = amount_minor + excluded.amount_minor");
    q.bind_all(p.account, p.currency, p.amount_minor);
    PS_TRY(q.exec());
  }
  return {};
}

// Refunds still processing, reserved on their payment and per merchant and currency
// (added at intake, released when the refund is terminal). `delta` may be negative.
Result<void> reserve_refund(Db& db, const std::string& payment_id, const std::string& merchant_id,
                            const std::string& currency, int64_t delta) {
  {
    PS_QUERY(q, db, "UPDATE payments SET amount_refunding_minor = amount_refunding_minor + ?1 WHERE id = ?2");
    q.bind_all(delta, payment_id);
    PS_TRY(q.exec());
  }
  PS_QUERY(q, db,
           "INSERT INTO refund_reservations(merchant_id, currency, amount_minor) VALUES(?1, ?2, ?3) "
           "ON CONFLICT(merchant_id, currency) DO UPDATE SET amount_minor = amount_minor + excluded.amount_minor");
  q.bind_all(merchant_id, currency, delta);
  return q.exec();
}

Result<std::optional<IdempotencyRecord>> read_idempotency(Db& db, const std::string& merchant_id,
                                                          const std::string& key) {
  PS_QUERY(q, db,
           "SELECT fingerprint, http_status, response_body, resource_id, created_ms FROM idempotency "
           "WHERE merchant_id = ?1 AND key = ?2");
  q.bind_all(merchant_id, key);
  PS_STEP(row, q);
  if (!row) return std::optional<IdempotencyRecord>();
  IdempotencyRecord r;
  r.merchant_id = merchant_id;
  r.key = key;
  r.fingerprint = q.text(0);
  r.http_status = int(q.i64(1));
  r.response_body = q.text(2);
  r.resource_id = q.text(3);
  r.created_ms = q.i64(4);
  return std::optional<IdempotencyRecord>(std::move(r));
}

Result<void> insert_idempotency(Db& db, const IdempotencyRecord& r) {
  PS_QUERY(q, db,
           "INSERT INTO idempotency(merchant_id, key, fingerprint, http_status, response_body, resource_id, "
           "created_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  q.bind_all(r.merchant_id, r.key, r.fingerprint, int64_t(r.http_status), r.response_body, r.resource_id,
             r.created_ms);
  return q.exec();
}

Result<int64_t> scalar_i64(Query& q) {
  PS_STEP(row, q);
  return row ? q.i64(0) : int64_t(0);
}

Result<void> upsert_delivery_if_failed(Db& db, const WebhookDelivery& d) {
  PS_QUERY(q, db,
           "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
           "next_attempt_ms, last_http_status, last_error) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
           "ON CONFLICT(id) DO UPDATE SET status = 'pending', attempts = 0, "
           "next_attempt_ms = excluded.next_attempt_ms, last_http_status = 0, last_error = '' "
           "WHERE webhook_deliveries.status = 'failed'");
  q.bind_all(d.id, d.event_id, d.endpoint_id, d.merchant_id, to_string(d.status), int64_t(d.attempts),
             d.next_attempt_ms, int64_t(d.last_http_status), d.last_error);
  return q.exec();
}

// A read transaction on a leased connection: one snapshot for several statements.
class ReadTx {
 public:
  explicit ReadTx(Db& db) : db_(db) { ok_ = bool(db_.exec("BEGIN")); }
  ~ReadTx() {
    if (ok_) (void)db_.exec("COMMIT");
  }
  bool ok() const { return ok_; }

 private:
  Db& db_;
  bool ok_ = false;
};

int clamp_limit(int limit) { return std::clamp(limit, 1, int(kMaxListRows)); }

}  // namespace

// ---------- read connection pool ----------

class SqliteStore::ReadLease {
 public:
  ReadLease(SqliteStore* s, std::unique_ptr<Db> db) : s_(s), db_(std::move(db)) {}
  ReadLease(ReadLease&& o) noexcept : s_(o.s_), db_(std::move(o.db_)) {}
  ReadLease& operator=(ReadLease&&) = delete;
  ~ReadLease() {
    if (db_) s_->release_reader(std::move(db_));
  }
  Db& db() { return *db_; }

 private:
  SqliteStore* s_;
  std::unique_ptr<Db> db_;
};

#define PS_LEASE(var)                     \
  auto var##_lease = lease_reader();      \
  if (!var##_lease) return var##_lease.error(); \
  Db& var = var##_lease->db()

Result<SqliteStore::ReadLease> SqliteStore::lease_reader() {
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

void SqliteStore::release_reader(std::unique_ptr<Db> db) {
  std::lock_guard g(pool_mu_);
  if (!db->autocommit()) (void)db->exec("ROLLBACK");
  idle_readers_.push_back(std::move(db));
  pool_cv_.notify_one();
}

// ---------- lifecycle and the writer ----------

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(SqliteOptions opts, const Clock& clock) {
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
    return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(opts), clock, std::move(db)));
  } catch (const std::exception& e) {
    return Error::internal(e.what());
  }
}

SqliteStore::SqliteStore(SqliteOptions opts, const Clock& clock, std::unique_ptr<Db> writer)
    : opts_(std::move(opts)), clock_(clock), writer_db_(std::move(writer)) {
  writer_ = std::thread([this] { writer_loop(); });
  writer_id_.store(writer_.get_id());
  if (opts_.checkpoint_interval_ms > 0) {
    try {
      checkpoint_db_ = Db::open(opts_.path);
      // A short busy timeout: a RESTART checkpoint holds the WAL write lock while it waits,
      // so it must give up quickly (and retry later) rather than stall the writer.
      if (auto r = checkpoint_db_->configure(opts_.sync_full, kCheckpointBusyTimeoutMs, 1024); !r)
        throw std::runtime_error(r.error().message);
      checkpointer_ = std::thread([this] { checkpoint_loop(); });
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
void SqliteStore::checkpoint_loop() {
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

SqliteStore::~SqliteStore() {
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

void SqliteStore::set_terminal_listener(std::function<void(const std::vector<std::string>&)> fn) {
  std::lock_guard g(listener_mu_);
  terminal_listener_ = std::move(fn);
}

void SqliteStore::submit(Job job, bool urgent) {
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

Result<void> SqliteStore::run_sync(std::function<Result<void>(Db&, JobCtx&)> body) {
  if (std::this_thread::get_id() == writer_id_.load())
    return Error::internal("synchronous store write called on the store writer thread");
  auto p = std::make_shared<std::promise<Result<void>>>();
  auto f = p->get_future();
  submit(Job{std::move(body), [p](Result<void> r) { p->set_value(std::move(r)); }}, /*urgent=*/true);
  return f.get();
}

void SqliteStore::writer_loop() {
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

void SqliteStore::run_batch(std::vector<Job>& batch) {
  auto& m = StoreMetrics::get();
  auto t0 = std::chrono::steady_clock::now();
  Db& db = *writer_db_;
  std::vector<Result<void>> results;
  results.reserve(batch.size());
  JobCtx batch_ctx;
  std::optional<Error> abort_err;

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
      batch_ctx.appended |= ctx.appended;
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
    const int64_t now = clock_.now_ms();
    for (const auto& [topic, offset] : batch_ctx.events) backlog->appended(topic, offset, now);
    for (const auto& [group, topic, position] : batch_ctx.positions) backlog->consumed(group, topic, position);
  }
  if (batch_ctx.appended) {
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

// ---------- StageLog ----------

Result<std::vector<Record>> SqliteStore::poll(const std::string& group, const std::vector<std::string>& topics,
                                              size_t max, std::chrono::milliseconds wait) {
  std::vector<Record> out;
  if (topics.empty() || max == 0) return out;
  max = std::min(max, kMaxPollRecords);
  auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    uint64_t version;
    {
      std::lock_guard g(ev_mu_);
      version = ev_version_;
    }
    {
      PS_LEASE(db);
      for (const auto& topic : topics) {
        int64_t position = 0;
        {
          PS_QUERY(q, db, "SELECT position FROM consumer_positions WHERE group_id = ?1 AND topic = ?2");
          q.bind_all(group, topic);
          auto p = scalar_i64(q);
          if (!p) return p.error();
          position = *p;
        }
        PS_QUERY(q, db,
                 std::string("SELECT ") + kEventCols +
                     " FROM events WHERE topic = ?1 AND offset > ?2 ORDER BY offset LIMIT ?3");
        q.bind_all(topic, position, int64_t(max));
        for (;;) {
          PS_STEP(row, q);
          if (!row) break;
          out.push_back(read_record(q));
        }
      }
    }
    if (!out.empty()) {
      std::sort(out.begin(), out.end(), [](const Record& a, const Record& b) { return a.offset < b.offset; });
      if (out.size() > max) out.resize(max);
      return out;
    }
    std::unique_lock lk(ev_mu_);
    if (!ev_cv_.wait_until(lk, deadline, [&] { return ev_version_ != version; })) return out;
  }
}

Result<void> SqliteStore::commit(const std::string& group, const std::vector<Record>& consumed, Effects effects) {
  auto fx = std::make_shared<Effects>(std::move(effects));
  std::map<std::string, int64_t> positions;
  for (const auto& r : consumed) {
    auto& p = positions[r.topic];
    p = std::max(p, r.offset);
  }
  const int64_t now = clock_.now_ms();
  return run_sync([group, positions, fx, now](Db& db, JobCtx& ctx) -> Result<void> {
    for (const auto& e : fx->produce) {
      auto r = append_event(db, topic_for(e.type), e, 0, now, ctx);
      if (!r) return r.error();
      ctx.appended |= *r;
    }
    for (const auto& po : fx->payment_outcomes) {
      const Payment& p = po.payment;
      PS_TRY(check_outcome(po));
      {
        PS_QUERY(q, db,
                 "UPDATE payments SET status = ?1, failure_code = ?2, updated_ms = ?3 "
                 "WHERE id = ?4 AND status = 'processing'");
        q.bind_all(to_string(p.status), p.failure_code, p.updated_ms ? p.updated_ms : now, p.id);
        PS_TRY(q.exec());
      }
      if (db.changes() == 0) continue;  // already terminal (or unknown): idempotent no-op
      if (po.settlement) PS_TRY(insert_entry(db, *po.settlement));
      ctx.terminal_ids.push_back(p.id);
    }
    for (const auto& ro : fx->refund_outcomes) {
      const Refund& r = ro.refund;
      PS_TRY(check_outcome(ro));
      std::string payment_id, merchant_id, currency;
      int64_t amount = 0;
      bool changed = false;
      {
        PS_QUERY(q, db,
                 "UPDATE refunds SET status = ?1, failure_code = ?2, updated_ms = ?3 "
                 "WHERE id = ?4 AND status = 'processing' RETURNING payment_id, amount_minor, merchant_id, currency");
        q.bind_all(to_string(r.status), r.failure_code, r.updated_ms ? r.updated_ms : now, r.id);
        PS_STEP(row, q);
        if (row) {
          changed = true;
          payment_id = q.text(0);
          amount = q.i64(1);
          merchant_id = q.text(2);
          currency = q.text(3);
          PS_TRY(q.exec());
        }
      }
      if (!changed) continue;
      // Terminal either way: the reservation is released (a succeeded refund's amount
      // moves to amount_refunded and its reversal posting below).
      PS_TRY(reserve_refund(db, payment_id, merchant_id, currency, -amount));
      if (!ro.reversal) continue;
      PS_TRY(insert_entry(db, *ro.reversal));
      PS_QUERY(q, db, "UPDATE payments SET amount_refunded_minor = amount_refunded_minor + ?1, updated_ms = ?2 WHERE id = ?3");
      q.bind_all(amount, r.updated_ms ? r.updated_ms : now, payment_id);
      PS_TRY(q.exec());
    }
    for (const auto& me : fx->merchant_events) {
      PS_QUERY(q, db,
               "INSERT INTO merchant_events(id, merchant_id, type, data_json, created_ms) "
               "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO NOTHING");
      q.bind_all(me.id, me.merchant_id, me.type, me.data_json, me.created_ms);
      PS_TRY(q.exec());
    }
    for (const auto& d : fx->deliveries) PS_TRY(upsert_delivery_if_failed(db, d));
    for (const auto& dl : fx->dead_letters) PS_TRY(append_dead_letter(db, dl, stage_dead_letter_id(dl), now, ctx));
    for (const auto& [topic, offset] : positions) {
      PS_QUERY(q, db,
               "INSERT INTO consumer_positions(group_id, topic, position) VALUES(?1, ?2, ?3) "
               "ON CONFLICT(group_id, topic) DO UPDATE SET position = max(position, excluded.position)");
      q.bind_all(group, topic, offset);
      PS_TRY(q.exec());
      ctx.positions.emplace_back(group, topic, offset);
    }
    return {};
  });
}

Result<int64_t> SqliteStore::count_events(const std::string& topic) {
  PS_LEASE(db);
  PS_QUERY(q, db, "SELECT COUNT(*) FROM events WHERE topic = ?1");
  q.bind(1, topic);
  return scalar_i64(q);
}

Result<void> SqliteStore::attach_backlog(PipelineBacklog& backlog) {
  {
    PS_LEASE(db);
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

// ---------- DeadLetterStore ----------

namespace {
const char* const kDlqSelect =
    "SELECT e.offset, e.data, e.created_ms, r.dlq_offset IS NOT NULL FROM events e "
    "LEFT JOIN dead_letter_replays r ON r.dlq_offset = e.offset "
    "WHERE e.topic = 'tx.dlq' AND e.type = 'paystream.dead_letter' ";
Result<DeadLetterView> read_dlq_view(const Query& q) {
  auto d = decode_dead_letter(q.text(1));
  if (!d) return d.error();
  DeadLetterView v;
  v.offset = q.i64(0);
  v.letter = std::move(d.value());
  v.created_ms = q.i64(2);
  v.replayed = q.i64(3) != 0;
  return v;
}
}  // namespace

Result<std::vector<DeadLetterView>> SqliteStore::list_dead_letters(size_t limit) {
  std::vector<DeadLetterView> out;
  PS_LEASE(db);
  PS_QUERY(q, db, std::string(kDlqSelect) + "ORDER BY e.offset DESC LIMIT ?1");
  q.bind(1, int64_t(std::clamp<size_t>(limit, 1, kMaxListRows)));
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    auto v = read_dlq_view(q);
    if (!v) return v.error();
    out.push_back(std::move(v.value()));
  }
  return out;
}

Result<std::optional<DeadLetterView>> SqliteStore::get_dead_letter(int64_t offset) {
  PS_LEASE(db);
  PS_QUERY(q, db, std::string(kDlqSelect) + "AND e.offset = ?1");
  q.bind(1, offset);
  PS_STEP(row, q);
  if (!row) return std::optional<DeadLetterView>();
  auto v = read_dlq_view(q);
  if (!v) return v.error();
  return std::optional<DeadLetterView>(std::move(v.value()));
}

Result<void> SqliteStore::replay_dead_letter(int64_t offset) {
  const int64_t now = clock_.now_ms();
  return run_sync([offset, now](Db& db, JobCtx& ctx) -> Result<void> {
    std::string data;
    bool replayed = false;
    {
      PS_QUERY(q, db, std::string(kDlqSelect) + "AND e.offset = ?1");
      q.bind(1, offset);
      PS_STEP(row, q);
      if (!row) return Error::not_found("no dead letter at offset " + std::to_string(offset));
      data = q.text(1);
      replayed = q.i64(3) != 0;
    }
    if (replayed)
      return Error::conflict("already_replayed", "dead letter " + std::to_string(offset) + " was already replayed");
    auto d = decode_dead_letter(data);
    if (!d) return d.error();
    const Record& orig = d->original;
    if (orig.topic.empty() || orig.topic == topics::dlq || orig.event.id.empty())
      return Error::unprocessable("dead_letter_not_replayable",
                                  "dead letter " + std::to_string(offset) + " has no original topic or event");
    // Prefer the copy in the log: a webhook dead letter carries the webhook body, not the
    // pipeline payload, and only the logged event is what the stages consume.
    Event event = orig.event;
    {
      PS_QUERY(q, db,
               std::string("SELECT ") + kEventCols + " FROM events WHERE topic = ?1 AND id = ?2 ORDER BY replay LIMIT 1");
      q.bind_all(orig.topic, orig.event.id);
      PS_STEP(row, q);
      if (row) event = read_record(q).event;
    }
    int64_t generation = 0;
    {
      PS_QUERY(q, db, "SELECT COALESCE(MAX(replay) + 1, 0) FROM events WHERE topic = ?1 AND id = ?2");
      q.bind_all(orig.topic, orig.event.id);
      auto g = scalar_i64(q);
      if (!g) return g.error();
      generation = *g;
    }
    int64_t new_offset = 0;
    auto ins = append_event(db, orig.topic, event, generation, now, ctx, &new_offset);
    if (!ins) return ins.error();
    if (!*ins) return Error::internal("replayed event was not appended");
    ctx.appended = true;
    PS_QUERY(q, db, "INSERT INTO dead_letter_replays(dlq_offset, replayed_ms, new_offset) VALUES(?1, ?2, ?3)");
    q.bind_all(offset, now, new_offset);
    PS_TRY(q.exec());
    log::info("dead letter replayed", {{"dlq_offset", std::to_string(offset)},
                                      {"topic", orig.topic},
                                      {"new_offset", std::to_string(new_offset)},
                                      {"payment_id", orig.event.key}});
    return {};
  });
}

// ---------- IntakeStore ----------

void SqliteStore::accept_payment(AcceptPayment cmd, AcceptCallback cb) {
  auto c = std::make_shared<AcceptPayment>(std::move(cmd));
  auto out = std::make_shared<AcceptOutcome>();
  const int64_t now = clock_.now_ms();
  Job job;
  job.body = [c, out, now](Db& db, JobCtx& ctx) -> Result<void> {
    const Payment& p = c->payment;
    auto existing = read_idempotency(db, c->record.merchant_id, c->record.key);
    if (!existing) return existing.error();
    if (*existing) {
      out->created = false;
      out->record = std::move(**existing);
      return {};
    }
    int64_t seq = 0;
    {
      PS_QUERY(q, db, "SELECT COALESCE(MAX(seq), 0) + 1 FROM payments");
      auto s = scalar_i64(q);
      if (!s) return s.error();
      seq = *s;
    }
    {
      PS_QUERY(q, db,
               "INSERT INTO payments(id, seq, merchant_id, idempotency_key, amount_minor, currency, source, "
               "description, metadata, status, failure_code, amount_refunded_minor, created_ms, updated_ms) "
               "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
      q.bind_all(p.id, seq, p.merchant_id, p.idempotency_key, p.amount_minor, p.currency, p.source,
                 p.description, metadata_to_json(p.metadata), to_string(p.status), p.failure_code,
                 p.amount_refunded_minor, p.created_ms, p.updated_ms);
      auto r = q.exec();
      if (!r) {
        if (sqlite::is_constraint(r.error()))
          return Error::conflict("payment_exists", "payment " + p.id + " cannot be stored: " + r.error().message);
        return r.error();
      }
    }
    auto ins = append_event(db, topic_for(c->initiated.type), c->initiated, 0, now, ctx);
    if (!ins) return ins.error();
    ctx.appended |= *ins;
    PS_TRY(insert_idempotency(db, c->record));
    out->created = true;
    out->record = c->record;
    return {};
  };
  job.done = [out, cb = std::move(cb)](Result<void> r) {
    if (!r) cb(r.error());
    else cb(std::move(*out));
  };
  submit(std::move(job));
}

void SqliteStore::accept_refund(AcceptRefund cmd, AcceptCallback cb) {
  auto c = std::make_shared<AcceptRefund>(std::move(cmd));
  auto out = std::make_shared<AcceptOutcome>();
  const int64_t now = clock_.now_ms();
  Job job;
  job.body = [c, out, now](Db& db, JobCtx& ctx) -> Result<void> {
    Refund refund = c->refund;
    auto existing = read_idempotency(db, c->record.merchant_id, c->record.key);
    if (!existing) return existing.error();
    if (*existing) {
      out->created = false;
      out->record = std::move(**existing);
      return {};
    }
    Payment payment;
    {
      PS_QUERY(q, db, std::string("SELECT ") + kPaymentCols + " FROM payments WHERE id = ?1 AND merchant_id = ?2");
      q.bind_all(refund.payment_id, refund.merchant_id);
      PS_STEP(row, q);
      if (!row) return Error::not_found("no payment " + refund.payment_id);
      payment = read_payment(q);
    }
    // Maintained rows (schema v2), one indexed read each: never a sum over history.
    int64_t processing_for_payment = 0;
    {
      PS_QUERY(q, db, "SELECT amount_refunding_minor FROM payments WHERE id = ?1");
      q.bind(1, payment.id);
      auto s = scalar_i64(q);
      if (!s) return s.error();
      processing_for_payment = *s;
    }
    int64_t available = 0;
    {
      PS_QUERY(q, db,
               "SELECT COALESCE((SELECT -amount_minor FROM account_balances WHERE account = ?1 AND currency = ?2), 0)");
      q.bind_all(merchant_available_account(payment.merchant_id), payment.currency);
      auto s = scalar_i64(q);
      if (!s) return s.error();
      available = *s;
    }
    int64_t processing_for_merchant = 0;
    {
      PS_QUERY(q, db,
               "SELECT COALESCE((SELECT amount_minor FROM refund_reservations WHERE merchant_id = ?1 AND currency = ?2), 0)");
      q.bind_all(payment.merchant_id, payment.currency);
      auto s = scalar_i64(q);
      if (!s) return s.error();
      processing_for_merchant = *s;
    }
    auto amount = admit_refund(payment, RefundAdmission{refund.amount_minor, processing_for_payment, available,
                                                        processing_for_merchant});
    if (!amount) return amount.error();
    refund.amount_minor = *amount;
    refund.currency = payment.currency;
    {
      PS_QUERY(q, db,
               "INSERT INTO refunds(id, payment_id, merchant_id, idempotency_key, amount_minor, currency, status, "
               "failure_code, created_ms, updated_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
      q.bind_all(refund.id, refund.payment_id, refund.merchant_id, refund.idempotency_key, refund.amount_minor,
                 refund.currency, to_string(refund.status), refund.failure_code, refund.created_ms,
                 refund.updated_ms);
      auto r = q.exec();
      if (!r) {
        if (sqlite::is_constraint(r.error()))
          return Error::conflict("refund_exists", "refund " + refund.id + " cannot be stored: " + r.error().message);
        return r.error();
      }
    }
    PS_TRY(reserve_refund(db, refund.payment_id, refund.merchant_id, refund.currency, refund.amount_minor));
    const Event& given = c->requested;
    Event ev = make_refund_event(refund, given.type.empty() ? event_types::refund_requested : given.type,
                                 given.source.empty() ? "/paystream/gateway" : given.source,
                                 given.time_ms ? given.time_ms : now, given.traceparent);
    if (!given.id.empty()) ev.id = given.id;
    auto ins = append_event(db, topic_for(ev.type), ev, 0, now, ctx);
    if (!ins) return ins.error();
    ctx.appended |= *ins;
    IdempotencyRecord rec = c->record;
    if (c->render) rec.response_body = c->render(refund);
    if (rec.resource_id.empty()) rec.resource_id = refund.id;
    PS_TRY(insert_idempotency(db, rec));
    out->created = true;
    out->record = std::move(rec);
    return {};
  };
  job.done = [out, cb = std::move(cb)](Result<void> r) {
    if (!r) cb(r.error());
    else cb(std::move(*out));
  };
  submit(std::move(job));
}

void SqliteStore::update_idempotent_response(const std::string& merchant_id, const std::string& key,
                                             int http_status, std::string body,
                                             std::function<void(Result<void>)> cb) {
  Job job;
  job.body = [merchant_id, key, http_status, body = std::move(body)](Db& db, JobCtx&) -> Result<void> {
    PS_QUERY(q, db, "UPDATE idempotency SET http_status = ?1, response_body = ?2 WHERE merchant_id = ?3 AND key = ?4");
    q.bind_all(int64_t(http_status), body, merchant_id, key);
    PS_TRY(q.exec());
    if (db.changes() == 0) return Error::not_found("no idempotency record for that key");
    return {};
  };
  job.done = std::move(cb);
  submit(std::move(job));
}

Result<std::optional<IdempotencyRecord>> SqliteStore::find_idempotency(const std::string& merchant_id,
                                                                       const std::string& key) {
  PS_LEASE(db);
  return read_idempotency(db, merchant_id, key);
}

// ---------- PaymentQueries ----------

Result<std::optional<Payment>> SqliteStore::get_payment(const std::string& merchant_id, const std::string& payment_id) {
  PS_LEASE(db);
  PS_QUERY(q, db, std::string("SELECT ") + kPaymentCols + " FROM payments WHERE id = ?1 AND merchant_id = ?2");
  q.bind_all(payment_id, merchant_id);
  PS_STEP(row, q);
  if (!row) return std::optional<Payment>();
  return std::optional<Payment>(read_payment(q));
}

Result<std::vector<Payment>> SqliteStore::list_payments(const std::string& merchant_id,
                                                        std::optional<PaymentStatus> status, const Page& page) {
  std::vector<Payment> out;
  PS_LEASE(db);
  ReadTx tx(db);
  std::optional<int64_t> cursor_ms;
  if (!page.starting_after.empty()) {
    PS_QUERY(q, db, "SELECT created_ms FROM payments WHERE id = ?1 AND merchant_id = ?2");
    q.bind_all(page.starting_after, merchant_id);
    PS_STEP(row, q);
    if (!row) return Error::invalid("cursor_invalid", "starting_after is not a payment of yours", "starting_after");
    cursor_ms = q.i64(0);
  }
  std::string sql = std::string("SELECT ") + kPaymentCols + " FROM payments WHERE merchant_id = ?1";
  if (status) sql += " AND status = ?2";
  if (cursor_ms) sql += " AND (created_ms < ?3 OR (created_ms = ?3 AND id < ?4))";
  sql += " ORDER BY created_ms DESC, id DESC LIMIT ?5";
  PS_QUERY(q, db, sql);
  q.bind(1, merchant_id);
  if (status) q.bind(2, to_string(*status));
  if (cursor_ms) q.bind(3, *cursor_ms).bind(4, page.starting_after);
  q.bind(5, int64_t(clamp_limit(page.limit)));
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(read_payment(q));
  }
  return out;
}

Result<std::optional<Refund>> SqliteStore::get_refund(const std::string& merchant_id, const std::string& refund_id) {
  PS_LEASE(db);
  PS_QUERY(q, db, std::string("SELECT ") + kRefundCols + " FROM refunds WHERE id = ?1 AND merchant_id = ?2");
  q.bind_all(refund_id, merchant_id);
  PS_STEP(row, q);
  if (!row) return std::optional<Refund>();
  return std::optional<Refund>(read_refund(q));
}

Result<std::vector<Balance>> SqliteStore::balances(const std::string& merchant_id) {
  std::vector<Balance> out;
  PS_LEASE(db);
  PS_QUERY(q, db,
           "SELECT currency, -amount_minor FROM account_balances WHERE account = ?1 ORDER BY currency");
  q.bind(1, merchant_available_account(merchant_id));
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(Balance{q.text(0), q.i64(1)});
  }
  return out;
}

Result<std::vector<JournalEntry>> SqliteStore::entries_for_payment(const std::string& merchant_id,
                                                                   const std::string& payment_id) {
  std::vector<JournalEntry> out;
  PS_LEASE(db);
  ReadTx tx(db);
  {
    PS_QUERY(q, db,
             "SELECT id, kind, merchant_id, payment_id, COALESCE(refund_id, ''), created_ms FROM journal_entries "
             "WHERE payment_id = ?1 AND merchant_id = ?2 "
             "ORDER BY created_ms, CASE kind WHEN 'settlement' THEN 0 ELSE 1 END, id");
    q.bind_all(payment_id, merchant_id);
    for (;;) {
      PS_STEP(row, q);
      if (!row) break;
      JournalEntry e;
      e.id = q.text(0);
      e.kind = q.text(1) == "refund" ? EntryKind::refund : EntryKind::settlement;
      e.merchant_id = q.text(2);
      e.payment_id = q.text(3);
      e.refund_id = q.text(4);
      e.created_ms = q.i64(5);
      out.push_back(std::move(e));
    }
  }
  for (auto& e : out) {
    PS_QUERY(q, db, "SELECT account, currency, amount_minor FROM postings WHERE entry_id = ?1 ORDER BY rowid");
    q.bind(1, e.id);
    for (;;) {
      PS_STEP(row, q);
      if (!row) break;
      e.postings.push_back(Posting{q.text(0), q.text(1), q.i64(2)});
    }
  }
  return out;
}

// ---------- MerchantStore ----------

Result<void> SqliteStore::create_merchant(const Merchant& m) {
  return run_sync([m](Db& db, JobCtx&) -> Result<void> {
    PS_QUERY(q, db,
             "INSERT INTO merchants(id, name, api_key_hash, rate_limit_per_s, rate_limit_burst, created_ms) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    q.bind_all(m.id, m.name, m.api_key_hash, m.rate_limit_per_s, m.rate_limit_burst, m.created_ms);
    auto r = q.exec();
    if (!r && sqlite::is_constraint(r.error()))
      return Error::conflict("merchant_exists", "a merchant with this id or key already exists");
    return r;
  });
}

Result<std::optional<Merchant>> SqliteStore::find_merchant_by_key_hash(const std::string& key_hash) {
  PS_LEASE(db);
  PS_QUERY(q, db, std::string("SELECT ") + kMerchantCols + " FROM merchants WHERE api_key_hash = ?1");
  q.bind(1, key_hash);
  PS_STEP(row, q);
  if (!row) return std::optional<Merchant>();
  return std::optional<Merchant>(read_merchant(q));
}

Result<std::vector<Merchant>> SqliteStore::all_merchants() {
  std::vector<Merchant> out;
  PS_LEASE(db);
  PS_QUERY(q, db, std::string("SELECT ") + kMerchantCols + " FROM merchants ORDER BY created_ms, id");
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(read_merchant(q));
  }
  return out;
}

// ---------- EndpointStore ----------

Result<void> SqliteStore::create_endpoint(const WebhookEndpoint& e) {
  return run_sync([e](Db& db, JobCtx&) -> Result<void> {
    PS_QUERY(q, db,
             "INSERT INTO webhook_endpoints(id, merchant_id, url, secret, enabled_events, created_ms) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    q.bind_all(e.id, e.merchant_id, e.url, e.secret, strings_to_json(e.enabled_events), e.created_ms);
    auto r = q.exec();
    if (!r && sqlite::is_constraint(r.error()))
      return Error::conflict("endpoint_exists", "a webhook endpoint with this id already exists");
    return r;
  });
}

Result<std::vector<WebhookEndpoint>> SqliteStore::list_endpoints(const std::string& merchant_id) {
  std::vector<WebhookEndpoint> out;
  PS_LEASE(db);
  PS_QUERY(q, db,
           std::string("SELECT ") + kEndpointCols +
               " FROM webhook_endpoints WHERE merchant_id = ?1 AND deleted_ms IS NULL ORDER BY created_ms, id");
  q.bind(1, merchant_id);
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(read_endpoint(q));
  }
  return out;
}

Result<std::optional<WebhookEndpoint>> SqliteStore::get_endpoint(const std::string& merchant_id,
                                                                 const std::string& endpoint_id) {
  PS_LEASE(db);
  PS_QUERY(q, db,
           std::string("SELECT ") + kEndpointCols +
               " FROM webhook_endpoints WHERE id = ?1 AND merchant_id = ?2 AND deleted_ms IS NULL");
  q.bind_all(endpoint_id, merchant_id);
  PS_STEP(row, q);
  if (!row) return std::optional<WebhookEndpoint>();
  return std::optional<WebhookEndpoint>(read_endpoint(q));
}

Result<bool> SqliteStore::delete_endpoint(const std::string& merchant_id, const std::string& endpoint_id) {
  auto deleted = std::make_shared<bool>(false);
  const int64_t now = clock_.now_ms();
  auto r = run_sync([=](Db& db, JobCtx&) -> Result<void> {
    {
      PS_QUERY(q, db,
               "UPDATE webhook_endpoints SET deleted_ms = ?1 WHERE id = ?2 AND merchant_id = ?3 AND deleted_ms IS NULL");
      q.bind_all(now, endpoint_id, merchant_id);
      PS_TRY(q.exec());
    }
    *deleted = db.changes() > 0;
    if (!*deleted) return {};
    PS_QUERY(q, db,
             "UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint_deleted' "
             "WHERE endpoint_id = ?1 AND status = 'pending'");
    q.bind(1, endpoint_id);
    return q.exec();
  });
  if (!r) return r.error();
  return *deleted;
}

// ---------- EventQueries ----------

Result<std::vector<MerchantEvent>> SqliteStore::list_events(const std::string& merchant_id, const Page& page) {
  std::vector<MerchantEvent> out;
  PS_LEASE(db);
  ReadTx tx(db);
  std::optional<int64_t> cursor_ms;
  if (!page.starting_after.empty()) {
    PS_QUERY(q, db, "SELECT created_ms FROM merchant_events WHERE id = ?1 AND merchant_id = ?2");
    q.bind_all(page.starting_after, merchant_id);
    PS_STEP(row, q);
    if (!row) return Error::invalid("cursor_invalid", "starting_after is not an event of yours", "starting_after");
    cursor_ms = q.i64(0);
  }
  std::string sql = std::string("SELECT ") + kMerchantEventCols + " FROM merchant_events WHERE merchant_id = ?1";
  if (cursor_ms) sql += " AND (created_ms < ?2 OR (created_ms = ?2 AND id < ?3))";
  sql += " ORDER BY created_ms DESC, id DESC LIMIT ?4";
  PS_QUERY(q, db, sql);
  q.bind(1, merchant_id);
  if (cursor_ms) q.bind(2, *cursor_ms).bind(3, page.starting_after);
  q.bind(4, int64_t(clamp_limit(page.limit)));
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(read_merchant_event(q));
  }
  return out;
}

Result<std::optional<MerchantEvent>> SqliteStore::get_event(const std::string& merchant_id,
                                                            const std::string& event_id) {
  PS_LEASE(db);
  PS_QUERY(q, db,
           std::string("SELECT ") + kMerchantEventCols + " FROM merchant_events WHERE id = ?1 AND merchant_id = ?2");
  q.bind_all(event_id, merchant_id);
  PS_STEP(row, q);
  if (!row) return std::optional<MerchantEvent>();
  return std::optional<MerchantEvent>(read_merchant_event(q));
}

// ---------- DeliveryStore ----------

Result<std::vector<WebhookEndpoint>> SqliteStore::endpoints_for(const std::string& merchant_id) {
  return list_endpoints(merchant_id);
}

Result<std::vector<DueDelivery>> SqliteStore::due_deliveries(int64_t now_ms, size_t max) {
  std::vector<DueDelivery> out;
  if (max == 0) return out;
  PS_LEASE(db);
  PS_QUERY(q, db,
           "SELECT d.id, d.event_id, d.endpoint_id, d.merchant_id, d.status, d.attempts, d.next_attempt_ms, "
           "d.last_http_status, d.last_error, "
           "e.id, e.merchant_id, e.url, e.secret, e.enabled_events, e.created_ms, "
           "m.id, m.merchant_id, m.type, m.data_json, m.created_ms "
           "FROM webhook_deliveries d "
           "JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.deleted_ms IS NULL "
           "JOIN merchant_events m ON m.id = d.event_id "
           "WHERE d.status = 'pending' AND d.next_attempt_ms <= ?1 "
           "ORDER BY d.next_attempt_ms, d.id LIMIT ?2");
  q.bind_all(now_ms, int64_t(std::min(max, kMaxListRows)));
  for (;;) {
    PS_STEP(row, q);
    if (!row) break;
    out.push_back(DueDelivery{read_delivery(q, 0), read_endpoint(q, 9), read_merchant_event(q, 15)});
  }
  return out;
}

Result<void> SqliteStore::record_attempt(const WebhookDelivery& updated, std::optional<DeadLetter> dead_letter) {
  const int64_t now = clock_.now_ms();
  return run_sync([updated, dl = std::move(dead_letter), now](Db& db, JobCtx& ctx) -> Result<void> {
    bool existed = false;
    std::string prev_status;
    int64_t prev_dead_letters = 0;
    {
      PS_QUERY(q, db, "SELECT status, dead_letters FROM webhook_deliveries WHERE id = ?1");
      q.bind(1, updated.id);
      PS_STEP(row, q);
      if (row) {
        existed = true;
        prev_status = q.text(0);
        prev_dead_letters = q.i64(1);
      }
    }
    {
      PS_QUERY(q, db,
               "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
               "next_attempt_ms, last_http_status, last_error) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
               "ON CONFLICT(id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, "
               "next_attempt_ms = excluded.next_attempt_ms, last_http_status = excluded.last_http_status, "
               "last_error = excluded.last_error");
      q.bind_all(updated.id, updated.event_id, updated.endpoint_id, updated.merchant_id, to_string(updated.status),
                 int64_t(updated.attempts), updated.next_attempt_ms, int64_t(updated.last_http_status),
                 updated.last_error);
      PS_TRY(q.exec());
    }
    if (dl && (!existed || prev_status != "failed")) {
      // One letter per time the delivery is given up on; a retried call adds nothing.
      std::string id = deterministic_id("dlq_", "wd:" + updated.id, std::to_string(prev_dead_letters));
      PS_TRY(append_dead_letter(db, *dl, id, now, ctx));
      PS_QUERY(q, db, "UPDATE webhook_deliveries SET dead_letters = dead_letters + 1 WHERE id = ?1");
      q.bind(1, updated.id);
      PS_TRY(q.exec());
    }
    return {};
  });
}

Result<bool> SqliteStore::redeliver(const std::string& merchant_id, const std::string& event_id, int64_t now_ms) {
  auto found = std::make_shared<bool>(false);
  auto r = run_sync([=](Db& db, JobCtx&) -> Result<void> {
    std::string type;
    {
      PS_QUERY(q, db, "SELECT type FROM merchant_events WHERE id = ?1 AND merchant_id = ?2");
      q.bind_all(event_id, merchant_id);
      PS_STEP(row, q);
      if (!row) return {};
      type = q.text(0);
    }
    *found = true;
    std::vector<WebhookEndpoint> endpoints;
    {
      PS_QUERY(q, db,
               std::string("SELECT ") + kEndpointCols +
                   " FROM webhook_endpoints WHERE merchant_id = ?1 AND deleted_ms IS NULL ORDER BY created_ms, id");
      q.bind(1, merchant_id);
      for (;;) {
        PS_STEP(row, q);
        if (!row) break;
        endpoints.push_back(read_endpoint(q));
      }
    }
    for (const auto& e : endpoints) {
      if (!e.wants(type)) continue;
      PS_QUERY(q, db,
               "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
               "next_attempt_ms, last_http_status, last_error) VALUES(?1, ?2, ?3, ?4, 'pending', 0, ?5, 0, '') "
               "ON CONFLICT(id) DO UPDATE SET status = 'pending', attempts = 0, "
               "next_attempt_ms = excluded.next_attempt_ms, last_http_status = 0, last_error = ''");
      q.bind_all(deterministic_id("wd_", event_id, e.id), event_id, e.id, merchant_id, now_ms);
      PS_TRY(q.exec());
    }
    return {};
  });
  if (!r) return r.error();
  return *found;
}

}  // namespace ps
