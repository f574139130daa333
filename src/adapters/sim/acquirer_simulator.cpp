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
  rdb_ = db_;
  if (opts_.db_path != ":memory:") {
    if (sqlite3_open_v2(opts_.db_path.c_str(), &rdb_, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, nullptr) !=
        SQLITE_OK) {
      std::string m = rdb_ ? sqlite3_errmsg(rdb_) : "out of memory";
      sqlite3_close(rdb_);
      sqlite3_close(db_);
      throw std::runtime_error("acquirer simulator: cannot open " + opts_.db_path + " for reading: " + m);
    }
    sqlite3_busy_timeout(rdb_, 5000);
  }
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
  if (committer_.joinable()) committer_.join();  // commits what is gathered first
  std::lock_guard lk(mu_);
  for (auto& [k, st] : rstmts_) sqlite3_finalize(st);
  for (auto& [k, st] : wstmts_) sqlite3_finalize(st);
  rstmts_.clear();
  wstmts_.clear();
  if (rdb_ != db_) sqlite3_close(rdb_);
  sqlite3_close(db_);
  db_ = rdb_ = nullptr;
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
      for (;;) {
        if (auto pv = pending_voids_.find(req.payment_id); pv != pending_voids_.end()) {
          auto g = pv->second;
          if (wait_committed(lk, g)) return voided_result();
          continue;  // that void failed: look again
        }
        auto v = committed_void(req.payment_id);
        if (!v) return v.error();
        if (*v) return voided_result();
        break;
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
  for (;;) {
    std::optional<AcquirerResult> stored;
    if (auto pc = pending_charges_.find(req.payment_id); pc != pending_charges_.end()) {
      auto [result, g] = pc->second;
      if (!wait_committed(lk, g)) continue;  // that charge failed and stored nothing: look again
      stored = std::move(result);
    } else {
      auto c = committed_charge(req.payment_id);
      if (!c) return c.error();
      stored = std::move(*c);
    }
    if (stored) {  // a repeated charge: the stored result, one more call
      Write w;
      w.kind = Write::Kind::charge_call;
      w.id = req.payment_id;
      auto g = add_write(std::move(w));
      if (!g) return g.error();
      if (auto c = wait_committed(lk, *g); !c) return c.error();
      return *stored;
    }
    // Voided by a lookup before this charge got here: declined, nothing stored.
    if (auto pv = pending_voids_.find(req.payment_id); pv != pending_voids_.end()) {
      auto g = pv->second;
      if (wait_committed(lk, g)) return voided_result();
      continue;
    }
    auto v = committed_void(req.payment_id);
    if (!v) return v.error();
    if (*v) return voided_result();
    break;
  }
  if (req.source == "tok_transient" && !transient_seen_.count(req.payment_id)) {
    if (transient_seen_.size() >= kMaxTransientSeen) transient_seen_.clear();
    transient_seen_.insert(req.payment_id);
    return Error::unavailable("acquirer_transient", "simulated transient acquirer failure (first call)");
  }
  AcquirerResult r = decide(req.source);
  r.acquirer_ref = deterministic_id("ch_", req.payment_id);
  Write w;
  w.kind = Write::Kind::charge;
  w.id = req.payment_id;
  w.amount_minor = req.amount_minor;
  w.currency = req.currency;
  w.source = req.source;
  w.approved = r.approved;
  w.decline_code = r.decline_code;
  auto g = add_write(std::move(w));
  if (!g) return g.error();
  pending_charges_[req.payment_id] = {r, *g};
  if (auto c = wait_committed(lk, *g); !c) return c.error();
  return r;
}

Result<AcquirerResult> AcquirerSimulator::refund(const AcquirerRefundRequest& req,
                                                 std::chrono::milliseconds timeout) {
  if (!wait_latency(timeout))
    return Error::timeout("acquirer did not answer within " + std::to_string(timeout.count()) + " ms");
  if (random_failure()) return Error::unavailable("acquirer_transient", "simulated transient acquirer failure");

  std::unique_lock lk(mu_);
  if (!db_) return Error::unavailable("acquirer_closed", "acquirer simulator is shutting down");
  // A decision rests on committed rows only: wait out anything pending for this payment
  // or refund (one refund of a payment at a time; refunds are rare).
  commit_cv_.wait(lk, [&] {
    auto n = pending_refunds_of_payment_.find(req.payment_id);
    return !pending_charges_.count(req.payment_id) && !pending_refunds_.count(req.refund_id) &&
           (n == pending_refunds_of_payment_.end() || n->second == 0);
  });
  AcquirerResult r;
  r.acquirer_ref = deterministic_id("rf_", req.refund_id);
  bool stored = false;
  {
    Borrowed sel(stmt(rdb_, rstmts_, kSelectRefund));
    if (!sel.ok()) return db_error(rdb_, "prepare select refund");
    sel.bind(1, req.refund_id);
    int rc = sel.step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_error(rdb_, "select refund");
    stored = rc == SQLITE_ROW;
  }
  if (stored) {  // a repeated refund: approved again, one more call
    Write w;
    w.kind = Write::Kind::refund_call;
    w.id = req.refund_id;
    auto g = add_write(std::move(w));
    if (!g) return g.error();
    if (auto c = wait_committed(lk, *g); !c) return c.error();
    r.approved = true;
    return r;
  }
  int64_t charged = 0;
  {
    Borrowed sel(stmt(rdb_, rstmts_, kSelectApprovedCharge));
    if (!sel.ok()) return db_error(rdb_, "prepare select charge");
    sel.bind(1, req.payment_id);
    int rc = sel.step();
    if (rc == SQLITE_DONE) {
      r.approved = false;
      r.decline_code = "charge_not_found";
      return r;
    }
    if (rc != SQLITE_ROW) return db_error(rdb_, "select charge");
    charged = sel.i64(0);
  }
  int64_t refunded = 0;
  {
    Borrowed sum(stmt(rdb_, rstmts_, kSumRefunds));
    if (!sum.ok() || sum.bind(1, req.payment_id).step() != SQLITE_ROW) return db_error(rdb_, "sum refunds");
    refunded = sum.i64(0);
  }
  if (req.amount_minor <= 0 || req.amount_minor > charged - refunded) {
    r.approved = false;
    r.decline_code = "amount_exceeds_charge";
    return r;
  }
  Write w;
  w.kind = Write::Kind::refund;
  w.id = req.refund_id;
  w.payment_id = req.payment_id;
  w.amount_minor = req.amount_minor;
  auto g = add_write(std::move(w));
  if (!g) return g.error();
  pending_refunds_[req.refund_id] = {req.payment_id, *g};
  ++pending_refunds_of_payment_[req.payment_id];
  if (auto c = wait_committed(lk, *g); !c) return c.error();
  r.approved = true;
  return r;
}

Result<std::optional<AcquirerResult>> AcquirerSimulator::lookup_charge(const std::string& payment_id,
                                                                       std::chrono::milliseconds timeout) {
  if (!wait_latency(timeout))
    return Error::timeout("acquirer did not answer within " + std::to_string(timeout.count()) + " ms");
  std::unique_lock lk(mu_);
  if (!db_) return Error::unavailable("acquirer_closed", "acquirer simulator is shutting down");
  // Under mu_ a charge of this id cannot be added between the reads and the void below.
  for (;;) {
    if (auto pc = pending_charges_.find(payment_id); pc != pending_charges_.end()) {
      auto [result, g] = pc->second;
      if (wait_committed(lk, g)) return std::optional<AcquirerResult>(std::move(result));
      continue;
    }
    auto c = committed_charge(payment_id);
    if (!c) return c.error();
    if (*c) return c;  // charged: its recorded result
    if (auto pv = pending_voids_.find(payment_id); pv != pending_voids_.end()) {
      auto g = pv->second;
      if (wait_committed(lk, g)) return std::optional<AcquirerResult>();
      continue;
    }
    auto v = committed_void(payment_id);
    if (!v) return v.error();
    if (*v) return std::optional<AcquirerResult>();  // voided before: the same definitive answer
    break;
  }
  Write w;
  w.kind = Write::Kind::void_;
  w.id = payment_id;
  auto g = add_write(std::move(w));
  if (!g) return g.error();
  pending_voids_[payment_id] = *g;
  if (auto c = wait_committed(lk, *g); !c) return c.error();  // the void is durable before the answer
  return std::optional<AcquirerResult>();
}

Result<std::optional<AcquirerResult>> AcquirerSimulator::committed_charge(const std::string& payment_id) {
  Borrowed sel(stmt(rdb_, rstmts_, kSelectCharge));
  if (!sel.ok()) return db_error(rdb_, "prepare select charge");
  sel.bind(1, payment_id);
  int rc = sel.step();
  if (rc == SQLITE_DONE) return std::optional<AcquirerResult>();
  if (rc != SQLITE_ROW) return db_error(rdb_, "select charge");
  AcquirerResult r;
  r.approved = sel.i64(0) != 0;
  r.decline_code = sel.text(1);
  r.acquirer_ref = deterministic_id("ch_", payment_id);
  return std::optional<AcquirerResult>(std::move(r));
}

Result<bool> AcquirerSimulator::committed_void(const std::string& payment_id) {
  Borrowed sel(stmt(rdb_, rstmts_, kSelectVoid));
  if (!sel.ok()) return db_error(rdb_, "prepare select void");
  sel.bind(1, payment_id);
  int rc = sel.step();
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_error(rdb_, "select void");
  return rc == SQLITE_ROW;
}

sqlite3_stmt* AcquirerSimulator::stmt(sqlite3* db, std::vector<std::pair<const char*, sqlite3_stmt*>>& cache,
                                      const char* sql) {
  for (auto& [k, st] : cache)
    if (k == sql) return st;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) return nullptr;
  cache.emplace_back(sql, st);
  return st;
}

Result<std::shared_ptr<AcquirerSimulator::Group>> AcquirerSimulator::add_write(Write w) {
  if (stopping_) return Error::unavailable("acquirer_closed", "acquirer simulator is shutting down");
  if (!gathering_) {
    gathering_ = std::make_shared<Group>();
    commit_cv_.notify_all();
  }
  gathering_->writes.push_back(std::move(w));
  return gathering_;
}

Result<void> AcquirerSimulator::wait_committed(std::unique_lock<std::mutex>& lk, const std::shared_ptr<Group>& g) {
  commit_cv_.wait(lk, [&] { return g->done; });
  if (!g->ok) return Error::unavailable("acquirer_unavailable", "acquirer simulator commit failed: " + g->error);
  return {};
}

void AcquirerSimulator::wait_idle(std::unique_lock<std::mutex>& lk) {
  commit_cv_.wait(lk, [&] { return !gathering_ && !committing_; });
}

Result<void> AcquirerSimulator::apply(const Write& w) {
  switch (w.kind) {
    case Write::Kind::charge: {
      Borrowed ins(stmt(db_, wstmts_, kInsertCharge));
      if (!ins.ok()) return db_error(db_, "prepare insert charge");
      ins.bind(1, w.id).bind(2, w.amount_minor).bind(3, w.currency).bind(4, w.source)
          .bind(5, int64_t(w.approved ? 1 : 0)).bind(6, w.decline_code).bind(7, now_ms());
      if (ins.step() != SQLITE_DONE) return db_error(db_, "insert charge");
      return {};
    }
    case Write::Kind::charge_call: {
      Borrowed upd(stmt(db_, wstmts_, kCountChargeCall));
      if (!upd.ok() || upd.bind(1, w.id).step() != SQLITE_DONE) return db_error(db_, "update calls");
      return {};
    }
    case Write::Kind::refund: {
      Borrowed ins(stmt(db_, wstmts_, kInsertRefund));
      if (!ins.ok()) return db_error(db_, "prepare insert refund");
      ins.bind(1, w.id).bind(2, w.payment_id).bind(3, w.amount_minor).bind(4, now_ms());
      if (ins.step() != SQLITE_DONE) return db_error(db_, "insert refund");
      return {};
    }
    case Write::Kind::refund_call: {
      Borrowed upd(stmt(db_, wstmts_, kCountRefundCall));
      if (!upd.ok() || upd.bind(1, w.id).step() != SQLITE_DONE) return db_error(db_, "update refund calls");
      return {};
    }
    case Write::Kind::void_: {
      Borrowed ins(stmt(db_, wstmts_, kInsertVoid));
      if (!ins.ok()) return db_error(db_, "prepare insert void");
      ins.bind(1, w.id).bind(2, now_ms());
      if (ins.step() != SQLITE_DONE) return db_error(db_, "insert void");
      return {};
    }
  }
  return Error::internal("unknown simulator write");
}

void AcquirerSimulator::committer_loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    commit_cv_.wait(lk, [&] { return stopping_ || gathering_; });
    if (!gathering_) break;  // stopping, nothing gathered
    auto g = std::move(gathering_);
    committing_ = g;
    lk.unlock();
    // Outside mu_: the next group gathers (and reads go on) while this one commits.
    Result<void> r;
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) r = db_error(db_, "begin");
    for (size_t i = 0; r && i < g->writes.size(); ++i) r = apply(g->writes[i]);
    if (r && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) r = db_error(db_, "commit");
    if (!r && !sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    lk.lock();
    if (!r) {
      g->ok = false;
      g->error = r.error().message;
    }
    g->done = true;
    committing_.reset();
    for (const Write& w : g->writes) {  // committed (or gone): the rows answer from here on
      switch (w.kind) {
        case Write::Kind::charge:
          if (auto it = pending_charges_.find(w.id); it != pending_charges_.end() && it->second.second == g)
            pending_charges_.erase(it);
          break;
        case Write::Kind::void_:
          if (auto it = pending_voids_.find(w.id); it != pending_voids_.end() && it->second == g) pending_voids_.erase(it);
          break;
        case Write::Kind::refund:
          if (auto it = pending_refunds_.find(w.id); it != pending_refunds_.end() && it->second.second == g) {
            if (--pending_refunds_of_payment_[w.payment_id] <= 0) pending_refunds_of_payment_.erase(w.payment_id);
            pending_refunds_.erase(it);
          }
          break;
        default:
          break;
      }
    }
    commit_cv_.notify_all();
  }
}

Result<int64_t> AcquirerSimulator::charge_count() {
  std::unique_lock lk(mu_);
  wait_idle(lk);
  Borrowed sel(stmt(rdb_, rstmts_, kCountCharges));
  if (!sel.ok() || sel.step() != SQLITE_ROW) return db_error(rdb_, "count charges");
  return sel.i64(0);
}

Result<int64_t> AcquirerSimulator::void_count() {
  std::unique_lock lk(mu_);
  wait_idle(lk);
  Borrowed sel(stmt(rdb_, rstmts_, kCountVoids));
  if (!sel.ok() || sel.step() != SQLITE_ROW) return db_error(rdb_, "count voids");
  return sel.i64(0);
}

Result<int64_t> AcquirerSimulator::calls_for(const std::string& payment_id) {
  std::unique_lock lk(mu_);
  wait_idle(lk);
  Borrowed sel(stmt(rdb_, rstmts_, kSelectCalls));
  if (!sel.ok()) return db_error(rdb_, "prepare calls");
  sel.bind(1, payment_id);
  int rc = sel.step();
  if (rc == SQLITE_DONE) return int64_t{0};
  if (rc != SQLITE_ROW) return db_error(rdb_, "calls");
  return sel.i64(0);
}

}  // namespace ps
