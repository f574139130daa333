#include "adapters/sim/acquirer_simulator.hpp"

#include <sqlite3.h>

#include <stdexcept>
#include <thread>

#include "common/files.hpp"
#include "common/thread_name.hpp"
#include "domain/ids.hpp"

namespace ps {
namespace {

constexpr size_t kMaxTransientSeen = 100'000;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

// A cached statement borrowed for one use: reset and unbound when it goes out of scope.
class Borrowed {
 public:
  explicit Borrowed(sqlite3_stmt* st) : st_(st) {}
  ~Borrowed() {
    if (st_) {
      sqlite3_reset(st_);
      sqlite3_clear_bindings(st_);
    }
  }
  Borrowed(const Borrowed&) = delete;
  Borrowed& operator=(const Borrowed&) = delete;
  bool ok() const { return st_ != nullptr; }
  Borrowed& bind(int i, const std::string& v) {
    sqlite3_bind_text(st_, i, v.data(), int(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Borrowed& bind(int i, int64_t v) {
    sqlite3_bind_int64(st_, i, v);
    return *this;
  }
  int step() { return sqlite3_step(st_); }
  int64_t i64(int c) const { return sqlite3_column_int64(st_, c); }
  std::string text(int c) const {
    auto* p = sqlite3_column_text(st_, c);
    return p ? std::string(reinterpret_cast<const char*>(p)) : std::string();
  }

 private:
  sqlite3_stmt* st_ = nullptr;
};

// Statements (the cache is keyed by these pointers).
constexpr const char* kSelectCharge = "SELECT approved, decline_code FROM charges WHERE payment_id = ?";
constexpr const char* kCountChargeCall = "UPDATE charges SET calls = calls + 1 WHERE payment_id = ?";
constexpr const char* kInsertCharge =
    "INSERT INTO charges(payment_id, amount_minor, currency, source, approved, decline_code, calls,"
    " created_ms) VALUES(?,?,?,?,?,?,1,?)";
constexpr const char* kSelectRefund = "SELECT 1 FROM refunds WHERE refund_id = ?";
constexpr const char* kCountRefundCall = "UPDATE refunds SET calls = calls + 1 WHERE refund_id = ?";
constexpr const char* kSelectApprovedCharge = "SELECT amount_minor FROM charges WHERE payment_id = ? AND approved = 1";
constexpr const char* kSumRefunds = "SELECT COALESCE(SUM(amount_minor), 0) FROM refunds WHERE payment_id = ?";
constexpr const char* kInsertRefund =
    "INSERT INTO refunds(refund_id, payment_id, amount_minor, calls, created_ms) VALUES(?,?,?,1,?)";
constexpr const char* kSelectVoid = "SELECT 1 FROM voids WHERE payment_id = ?";
constexpr const char* kInsertVoid = "INSERT INTO voids(payment_id, created_ms) VALUES(?,?)";
constexpr const char* kCountVoids = "SELECT COUNT(*) FROM voids";
constexpr const char* kCountCharges = "SELECT COUNT(*) FROM charges";
constexpr const char* kSelectCalls = "SELECT calls FROM charges WHERE payment_id = ?";

Error db_error(sqlite3* db, const char* what) {
  return Error::internal(std::string("acquirer simulator database: ") + what + ": " + sqlite3_errmsg(db));
}

void exec_or_throw(sqlite3* db, const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg ? msg : "unknown";
    sqlite3_free(msg);
    throw std::runtime_error("acquirer simulator: " + m + " in: " + sql);
  }
}

AcquirerResult decide(const std::string& source) {
  AcquirerResult r;
  r.approved = true;
  if (source == "tok_decline") {
    r.approved = false;
    r.decline_code = "card_declined";
  } else if (source == "tok_insufficient_funds") {
    r.approved = false;
    r.decline_code = "insufficient_funds";
  }
  return r;
}

}  // namespace

AcquirerSimulator::AcquirerSimulator(AcquirerSimOptions opts) : opts_(std::move(opts)), rng_(opts_.seed) {
  // A new file is created 0600; SQLite gives its -wal/-shm files the same mode.
  if (auto c = files::create_private(opts_.db_path); !c)
    throw std::runtime_error("acquirer simulator: cannot open " + opts_.db_path + ": " + c.error().message);
  if (sqlite3_open_v2(opts_.db_path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
    std::string m = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("acquirer simulator: cannot open " + opts_.db_path + ": " + m);
  }
  sqlite3_busy_timeout(db_, 5000);
  if (opts_.db_path != ":memory:") exec_or_throw(db_, "PRAGMA journal_mode=WAL");
  exec_or_throw(db_, opts_.sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
  exec_or_throw(db_,
                "CREATE TABLE IF NOT EXISTS charges(payment_id TEXT PRIMARY KEY, amount_minor INTEGER NOT NULL,"
                " currency TEXT NOT NULL, source TEXT NOT NULL, approved INTEGER NOT NULL,"
                " decline_code TEXT NOT NULL, calls INTEGER NOT NULL, created_ms INTEGER NOT NULL)");
  exec_or_throw(db_,
                "CREATE TABLE IF NOT EXISTS refunds(refund_id TEXT PRIMARY KEY, payment_id TEXT NOT NULL,"
                " amount_minor INTEGER NOT NULL, calls INTEGER NOT NULL, created_ms INTEGER NOT NULL)");
  exec_or_throw(db_, "CREATE TABLE IF NOT EXISTS voids(payment_id TEXT PRIMARY KEY, created_ms INTEGER NOT NULL)");
  committer_ = std::thread([this] {
    name_this_thread("ps-acquirer-sim");
    committer_loop();
  });
  if (opts_.db_path != ":memory:" &&
      sqlite3_open_v2(opts_.db_path.c_str(), &checkpoint_db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(checkpoint_db_, 20);
    exec_or_throw(db_, "PRAGMA wal_autocheckpoint=0");
    checkpointer_ = std::thread([this] {
      name_this_thread("ps-acquirer-ckpt");
      checkpoint_loop();
    });
  } else if (checkpoint_db_) {
    sqlite3_close(checkpoint_db_);  // SQLite's automatic checkpoints stay on
    checkpoint_db_ = nullptr;
  }
}

void AcquirerSimulator::checkpoint_loop() {
  std::unique_lock lk(ck_mu_);
  while (!ck_cv_.wait_for(lk, std::chrono::milliseconds(50), [&] { return ck_stop_; })) {
    lk.unlock();
    // PASSIVE: copies what no reader needs, never waits for the writer; the writer then
    // rewinds the WAL at its next transaction once everything was copied.
    (void)sqlite3_wal_checkpoint_v2(checkpoint_db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    lk.lock();
  }
}

AcquirerSimulator::~AcquirerSimulator() {
  {
    std::lock_guard lk(ck_mu_);
    ck_stop_ = true;
  }
  ck_cv_.notify_all();
  if (checkpointer_.joinable()) checkpointer_.join();
  if (checkpoint_db_) sqlite3_close(checkpoint_db_);
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  commit_cv_.notify_all();
  if (committer_.joinable()) committer_.join();  // commits what is open first
  std::lock_guard lk(mu_);
  for (auto& [k, st] : stmts_) sqlite3_finalize(st);
  stmts_.clear();
  sqlite3_close(db_);
  db_ = nullptr;
}

bool AcquirerSimulator::wait_latency(std::chrono::milliseconds timeout) const {
  if (opts_.latency > timeout) {
    std::this_thread::sleep_for(timeout);
    return false;
  }
  if (opts_.latency.count() > 0) std::this_thread::sleep_for(opts_.latency);
  return true;
}

bool AcquirerSimulator::random_failure() {
  if (opts_.failure_rate <= 0) return false;
  std::lock_guard lk(mu_);
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < opts_.failure_rate;
}

namespace {
AcquirerResult voided_result() {
  AcquirerResult r;
  r.approved = false;
  r.decline_code = std::string(kChargeVoidedCode);
  return r;
}
}  // namespace

Result<AcquirerResult> AcquirerSimulator::charge(const ChargeRequest& req, std::chrono::milliseconds timeout) {
  if (req.source == "tok_timeout") {
    {
      // A voided id answers its recorded "not charged" at once (it never records a charge).
      std::unique_lock lk(mu_);
      if (!db_) return Error::unavailable("acquirer_closed", "acquirer simulator is shutting down");
      auto v = voided_locked(req.payment_id);
      if (!v) return v.error();
      if (*v) {
        if (auto w = wait_read_committed(lk); !w) return w.error();
        return voided_result();
      }
    }
    std::this_thread::sleep_for(timeout);
    return Error::timeout("acquirer did not answer within " + std::to_string(timeout.count()) + " ms");
  }
  if (!wait_latency(timeout))
    return Error::timeout("acquirer did not answer within " + std::to_string(timeout.count()) + " ms");
  if (random_failure()) return Error::unavailable("acquirer_transient", "simulated transient acquirer failure");

  std::unique_lock lk(mu_);
  if (!db_) return Error::unavailable("acquirer_closed", "acquirer simulator is shutting down");
  AcquirerResult r;
  r.acquirer_ref = deterministic_id("ch_", req.payment_id);
  {
    Borrowed sel(stmt(kSelectCharge));
    if (!sel.ok()) return db_error(db_, "prepare select charge");
    sel.bind(1, req.payment_id);
    int rc = sel.step();
    if (rc == SQLITE_ROW) {
      r.approved = sel.i64(0) != 0;
      r.decline_code = sel.text(1);
    } else if (rc != SQLITE_DONE) {
      return db_error(db_, "select charge");
    } else {
      r.acquirer_ref.clear();
    }
  }
  if (!r.acquirer_ref.empty()) {  // a repeated charge: the stored result, one more call
    auto gen = join_group();
    if (!gen) return gen.error();
    {
      Borrowed upd(stmt(kCountChargeCall));  // reset before mu_ is released below
      if (!upd.ok() || upd.bind(1, req.payment_id).step() != SQLITE_DONE) return write_error("update calls");
    }
    if (auto w = wait_committed(lk, *gen); !w) return w.error();
    return r;
  }
  {
    // Voided by a lookup before this charge got here: declined, nothing stored.
    auto v = voided_locked(req.payment_id);
    if (!v) return v.error();
    if (*v) {
      if (auto w = wait_read_committed(lk); !w) return w.error();
      return voided_result();
    }
  }
  if (req.source == "tok_transient" && !transient_seen_.count(req.payment_id)) {
    if (transient_seen_.size() >= kMaxTransientSeen) transient_seen_.clear();
    transient_seen_.insert(req.payment_id);
    return Error::unavailable("acquirer_transient", "simulated transient acquirer failure (first call)");
  }
  r = decide(req.source);
  r.acquirer_ref = deterministic_id("ch_", req.payment_id);
  auto gen = join_group();
  if (!gen) return gen.error();
  {
    Borrowed ins(stmt(kInsertCharge));  // reset before mu_ is released below
    if (!ins.ok()) return db_error(db_, "prepare insert charge");
    ins.bind(1, req.payment_id).bind(2, req.amount_minor).bind(3, req.currency).bind(4, req.source)
        .bind(5, int64_t(r.approved ? 1 : 0)).bind(6, r.decline_code).bind(7, now_ms());
    if (ins.step() != SQLITE_DONE) return write_error("insert charge");
  }
  if (auto w = wait_committed(lk, *gen); !w) return w.error();
  return r;
}

Result<AcquirerResult> AcquirerSimulator::refund(const AcquirerRefundRequest& req,
                                                 std::chrono::milliseconds timeout) {
  if (!wait_latency(timeout))
    return Error::timeout("acquirer did not answer within " + std::to_string(timeout.count()) + " ms");
  if (random_failure()) return Error::unavailable("acquirer_transient", "simulated transient acquirer failure");

  std::unique_lock lk(mu_);
  if (!db_) return Error::unavailable("acquirer_closed", "acquirer simulator is shutting down");
  // A decline must rest on committed data only (another caller's open group may fail).
  wait_no_open_group(lk);
  AcquirerResult r;
  r.acquirer_ref = deterministic_id("rf_", req.refund_id);
  bool stored = false;
  {
    Borrowed sel(stmt(kSelectRefund));
    if (!sel.ok()) return db_error(db_, "prepare select refund");
    sel.bind(1, req.refund_id);
    int rc = sel.step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_error(db_, "select refund");
    stored = rc == SQLITE_ROW;
  }
  if (stored) {  // a repeated refund: approved again, one more call
    auto gen = join_group();
    if (!gen) return gen.error();
    {
      Borrowed upd(stmt(kCountRefundCall));
      if (!upd.ok() || upd.bind(1, req.refund_id).step() != SQLITE_DONE) return write_error("update calls");
    }
    if (auto w = wait_committed(lk, *gen); !w) return w.error();
    r.approved = true;
    return r;
  }
  int64_t charged = 0;
  {
    Borrowed sel(stmt(kSelectApprovedCharge));
    if (!sel.ok()) return db_error(db_, "prepare select charge");
    sel.bind(1, req.payment_id);
    int rc = sel.step();
    if (rc == SQLITE_DONE) {
      r.approved = false;
      r.decline_code = "charge_not_found";
      return r;
    }
    if (rc != SQLITE_ROW) return db_error(db_, "select charge");
    charged = sel.i64(0);
  }
  int64_t refunded = 0;
  {
    Borrowed sum(stmt(kSumRefunds));
    if (!sum.ok() || sum.bind(1, req.payment_id).step() != SQLITE_ROW) return db_error(db_, "sum refunds");
    refunded = sum.i64(0);
  }
  if (req.amount_minor <= 0 || req.amount_minor > charged - refunded) {
    r.approved = false;
    r.decline_code = "amount_exceeds_charge";
    return r;
  }
  auto gen = join_group();
  if (!gen) return gen.error();
  {
    Borrowed ins(stmt(kInsertRefund));
    if (!ins.ok()) return db_error(db_, "prepare insert refund");
    ins.bind(1, req.refund_id).bind(2, req.payment_id).bind(3, req.amount_minor).bind(4, now_ms());
    if (ins.step() != SQLITE_DONE) return write_error("insert refund");
  }
  if (auto w = wait_committed(lk, *gen); !w) return w.error();
  r.approved = true;
  return r;
}

Result<std::optional<AcquirerResult>> AcquirerSimulator::lookup_charge(const std::string& payment_id,
                                                                       std::chrono::milliseconds timeout) {
  if (!wait_latency(timeout))
    return Error::timeout("acquirer did not answer within " + std::to_string(timeout.count()) + " ms");
  std::unique_lock lk(mu_);
  if (!db_) return Error::unavailable("acquirer_closed", "acquirer simulator is shutting down");
  // Under mu_ a charge of this id cannot run between the reads and the void below.
  std::optional<AcquirerResult> found;
  {
    Borrowed sel(stmt(kSelectCharge));  // reset before mu_ may be released below
    if (!sel.ok()) return db_error(db_, "prepare select charge");
    sel.bind(1, payment_id);
    int rc = sel.step();
    if (rc == SQLITE_ROW) {
      found.emplace();
      found->approved = sel.i64(0) != 0;
      found->decline_code = sel.text(1);
      found->acquirer_ref = deterministic_id("ch_", payment_id);
    } else if (rc != SQLITE_DONE) {
      return db_error(db_, "select charge");
    }
  }
  if (found) {  // charged: its recorded result, once that is committed
    if (auto w = wait_read_committed(lk); !w) return w.error();
    return found;
  }
  auto v = voided_locked(payment_id);
  if (!v) return v.error();
  if (*v) {  // voided before: the same definitive answer
    if (auto w = wait_read_committed(lk); !w) return w.error();
    return std::optional<AcquirerResult>();
  }
  auto gen = join_group();
  if (!gen) return gen.error();
  {
    Borrowed ins(stmt(kInsertVoid));
    if (!ins.ok()) return db_error(db_, "prepare insert void");
    ins.bind(1, payment_id).bind(2, now_ms());
    if (ins.step() != SQLITE_DONE) return write_error("insert void");
  }
  if (auto w = wait_committed(lk, *gen); !w) return w.error();  // the void is durable before the answer
  return std::optional<AcquirerResult>();
}

Result<bool> AcquirerSimulator::voided_locked(const std::string& payment_id) {
  Borrowed sel(stmt(kSelectVoid));
  if (!sel.ok()) return db_error(db_, "prepare select void");
  sel.bind(1, payment_id);
  int rc = sel.step();
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_error(db_, "select void");
  return rc == SQLITE_ROW;
}

Result<void> AcquirerSimulator::wait_read_committed(std::unique_lock<std::mutex>& lk) {
  if (!open_) return {};  // no open group: what was read is committed
  auto g = open_;
  return wait_committed(lk, g);
}

sqlite3_stmt* AcquirerSimulator::stmt(const char* sql) {
  for (auto& [k, st] : stmts_)
    if (k == sql) return st;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) return nullptr;
  stmts_.emplace_back(sql, st);
  return st;
}

Result<std::shared_ptr<AcquirerSimulator::Group>> AcquirerSimulator::join_group() {
  if (stopping_) return Error::unavailable("acquirer_closed", "acquirer simulator is shutting down");
  if (!open_) {
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
      return db_error(db_, "begin");
    open_ = std::make_shared<Group>();
    commit_cv_.notify_all();
  }
  return open_;
}

Result<void> AcquirerSimulator::wait_committed(std::unique_lock<std::mutex>& lk, const std::shared_ptr<Group>& g) {
  commit_cv_.wait(lk, [&] { return g->done; });
  if (!g->ok) return Error::unavailable("acquirer_unavailable", "acquirer simulator commit failed: " + g->error);
  return {};
}

Error AcquirerSimulator::write_error(const char* what) {
  Error e = db_error(db_, what);
  if (open_ && sqlite3_get_autocommit(db_)) {  // SQLite rolled the whole group back
    open_->ok = false;
    open_->error = e.message;
    open_->done = true;
    open_.reset();
    commit_cv_.notify_all();
  }
  return e;
}

void AcquirerSimulator::wait_no_open_group(std::unique_lock<std::mutex>& lk) {
  while (open_) {
    auto g = open_;
    commit_cv_.wait(lk, [&] { return g->done; });
  }
}

void AcquirerSimulator::committer_loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    commit_cv_.wait(lk, [&] { return stopping_ || open_; });
    if (!open_) break;  // stopping, nothing open
    auto g = std::move(open_);
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      g->ok = false;
      g->error = sqlite3_errmsg(db_);
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
    g->done = true;
    commit_cv_.notify_all();
  }
}

Result<int64_t> AcquirerSimulator::charge_count() {
  std::lock_guard lk(mu_);
  Borrowed sel(stmt(kCountCharges));
  if (!sel.ok() || sel.step() != SQLITE_ROW) return db_error(db_, "count charges");
  return sel.i64(0);
}

Result<int64_t> AcquirerSimulator::void_count() {
  std::lock_guard lk(mu_);
  Borrowed sel(stmt(kCountVoids));
  if (!sel.ok() || sel.step() != SQLITE_ROW) return db_error(db_, "count voids");
  return sel.i64(0);
}

Result<int64_t> AcquirerSimulator::calls_for(const std::string& payment_id) {
  std::lock_guard lk(mu_);
  Borrowed sel(stmt(kSelectCalls));
  if (!sel.ok()) return db_error(db_, "prepare calls");
  sel.bind(1, payment_id);
  int rc = sel.step();
  if (rc == SQLITE_DONE) return int64_t{0};
  if (rc != SQLITE_ROW) return db_error(db_, "calls");
  return sel.i64(0);
}

}  // namespace ps
