// Thin RAII wrappers over the sqlite3 C API: a connection (Db) with a prepared-statement
// cache, and a borrowed cached statement (Query) that resets itself when it goes out of
// scope. Errors are ps::Result values (code "sqlite_error", "sqlite_constraint" or
// "sqlite_busy"), never exceptions, except Db::open at start-up.
// Thread-safety: none. A Db and its statements belong to one thread at a time (the
// SqliteStore writer thread, or whoever borrowed a read connection from the pool).
// Durability: whatever the connection's PRAGMAs say (see Db::configure).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace ps::sqlite {

// An SQLite error as a ps::Error (kind internal; busy/locked are retryable "unavailable").
Error make_error(sqlite3* db, int rc, std::string_view what);
bool is_constraint(const Error& e);

class Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* s) : db_(db), s_(s) {}
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  sqlite3_stmt* raw() const { return s_; }
  sqlite3* db() const { return db_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_;
};

// A cached statement borrowed for one use. Bind parameters are 1-based; columns 0-based.
class Query {
 public:
  explicit Query(Stmt* s) : s_(s) {}
  ~Query();
  Query(Query&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  Query& operator=(Query&&) = delete;

  Query& bind(int i, int64_t v);
  Query& bind(int i, int v) { return bind(i, int64_t(v)); }
  Query& bind(int i, double v);
  Query& bind(int i, std::string_view v);
  Query& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  Query& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Query& bind_null(int i);
  template <class... A>
  Query& bind_all(const A&... a) {
    int i = 0;
    (bind(++i, a), ...);
    return *this;
  }

  // true: a row is available; false: done. Errors carry sqlite's message.
  Result<bool> step();
  // Steps to completion (for statements that return no rows, or whose rows are ignored).
  Result<void> exec();

  int64_t i64(int col) const;
  double f64(int col) const;
  std::string text(int col) const;
  bool is_null(int col) const;

 private:
  Stmt* s_;
};

class Db {
 public:
  // Opens (creating if needed, mode 0600: its -wal/-shm files get the same) the database
  // file. Throws std::runtime_error on failure (start-up only).
  static std::unique_ptr<Db> open(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // WAL, synchronous FULL/NORMAL, busy_timeout, foreign keys, statement journals in
  // memory, a page cache of cache_kib KiB.
  Result<void> configure(bool sync_full, int busy_timeout_ms, int cache_kib = 8 * 1024);
  Result<void> exec(std::string_view sql);  // one or more statements, no parameters
  // The cached prepared statement for `sql` (prepared on first use).
  Result<Query> query(const std::string& sql);
  int64_t changes() const;
  int64_t last_insert_rowid() const;
  bool autocommit() const;  // true when no transaction is open
  sqlite3* raw() const { return db_; }

 private:
  explicit Db(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::map<std::string, std::unique_ptr<Stmt>, std::less<>> cache_;
};

}  // namespace ps::sqlite
