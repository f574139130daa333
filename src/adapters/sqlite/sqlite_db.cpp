#include "adapters/sqlite/sqlite_db.hpp"

#include <sqlite3.h>

#include <stdexcept>

#include "common/files.hpp"

namespace ps::sqlite {

Error make_error(sqlite3* db, int rc, std::string_view what) {
  std::string msg = std::string(what) + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  int primary = rc & 0xff;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
    return Error{ErrorKind::unavailable, "sqlite_busy", std::move(msg), {}, true};
  if (primary == SQLITE_CONSTRAINT)
    return Error{ErrorKind::internal, "sqlite_constraint", std::move(msg), {}, false};
  return Error{ErrorKind::internal, "sqlite_error", std::move(msg), {}, true};
}

bool is_constraint(const Error& e) { return e.code == "sqlite_constraint"; }

Stmt::~Stmt() { sqlite3_finalize(s_); }

Query::~Query() {
  if (s_) {
    sqlite3_reset(s_->raw());
    sqlite3_clear_bindings(s_->raw());
  }
}

Query& Query::bind(int i, int64_t v) {
  sqlite3_bind_int64(s_->raw(), i, v);
  return *this;
}
Query& Query::bind(int i, double v) {
  sqlite3_bind_double(s_->raw(), i, v);
  return *this;
}
Query& Query::bind(int i, std::string_view v) {
  sqlite3_bind_text64(s_->raw(), i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  return *this;
}
Query& Query::bind_null(int i) {
  sqlite3_bind_null(s_->raw(), i);
  return *this;
}

Result<bool> Query::step() {
  int rc = sqlite3_step(s_->raw());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return make_error(s_->db(), rc, std::string("step [") + sqlite3_sql(s_->raw()) + "]");
}

Result<void> Query::exec() {
  for (;;) {
    auto r = step();
    if (!r) return r.error();
    if (!*r) return {};
  }
}

int64_t Query::i64(int col) const { return sqlite3_column_int64(s_->raw(), col); }
double Query::f64(int col) const { return sqlite3_column_double(s_->raw(), col); }
std::string Query::text(int col) const {
  const unsigned char* p = sqlite3_column_text(s_->raw(), col);
  int n = sqlite3_column_bytes(s_->raw(), col);
  return p ? std::string(reinterpret_cast<const char*>(p), size_t(n)) : std::string();
}
bool Query::is_null(int col) const { return sqlite3_column_type(s_->raw(), col) == SQLITE_NULL; }

std::unique_ptr<Db> Db::open(const std::string& path) {
  // A new database file is created 0600; SQLite gives its -wal/-shm files the same mode.
  if (auto c = files::create_private(path); !c)
    throw std::runtime_error("cannot open sqlite database " + path + ": " + c.error().message);
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    throw std::runtime_error("cannot open sqlite database " + path + ": " + msg);
  }
  sqlite3_extended_result_codes(db, 1);
  return std::unique_ptr<Db>(new Db(db));
}

Db::~Db() {
  cache_.clear();  // finalize statements before closing
  sqlite3_close_v2(db_);
}

Result<void> Db::configure(bool sync_full, int busy_timeout_ms, int cache_kib) {
  sqlite3_busy_timeout(db_, busy_timeout_ms);
  auto r = exec("PRAGMA journal_mode=WAL");
  if (!r) return r;
  r = exec(sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
  if (!r) return r;
  // Statement journals of the per-job savepoints stay in memory: on disk they were
  // rewritten for every job of a group commit (most of the bytes written per payment).
  r = exec("PRAGMA temp_store=MEMORY");
  if (!r) return r;
  // A page cache big enough that a group commit's dirty pages never spill into the WAL
  // before COMMIT (a spilled page is written again at commit).
  r = exec("PRAGMA cache_size=-" + std::to_string(cache_kib));
  if (!r) return r;
  return exec("PRAGMA foreign_keys=ON");
}

Result<void> Db::exec(std::string_view sql) {
  std::string s(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    Error e = make_error(nullptr, rc, "exec [" + s.substr(0, 80) + "]");
    e.message += " (" + msg + ")";
    return e;
  }
  return {};
}

Result<Query> Db::query(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql.c_str(), int(sql.size()), SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) return make_error(db_, rc, "prepare [" + sql + "]");
    it = cache_.emplace(sql, std::make_unique<Stmt>(db_, s)).first;
  }
  sqlite3_reset(it->second->raw());
  return Query(it->second.get());
}

int64_t Db::changes() const { return sqlite3_changes64(db_); }
int64_t Db::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
bool Db::autocommit() const { return sqlite3_get_autocommit(db_) != 0; }

}  // namespace ps::sqlite
