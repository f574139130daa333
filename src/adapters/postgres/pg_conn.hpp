// Internal to the PostgreSQL adapter: one libpq connection (Conn), owned results (Res),
// text-format parameters (Params), a pipelined batch of statements, and the bounded
// connection pool. Free of libpq includes (the handles are forward-declared).
//
// Errors: every failure is a ps::Error. Connection loss, admin shutdown, too many
// connections, serialization failures and deadlocks are Error::unavailable (retryable,
// code "db_unavailable"); statement_timeout is Error::timeout; unique, check and foreign
// key violations are Error::conflict with code "unique_violation" / "check_violation" /
// "foreign_key_violation"; anything else is Error::internal.
// Timeouts: connect_timeout at connect, statement_timeout on the server for every
// statement, TCP keepalives and tcp_user_timeout so a dead peer cannot block a call for
// ever.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/postgres/pg_tls.hpp"
#include "common/result.hpp"

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

namespace ps::pg {

// An owned PGresult with typed accessors (text format).
class Res {
 public:
  Res() = default;
  explicit Res(PGresult* r) : r_(r) {}
  Res(Res&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Res& operator=(Res&& o) noexcept;
  Res(const Res&) = delete;
  Res& operator=(const Res&) = delete;
  ~Res();
  int rows() const;
  bool null(int row, int col) const;
  std::string text(int row, int col) const;  // "" for NULL
  int64_t i64(int row, int col) const;       // 0 for NULL
  double f64(int row, int col) const;
  bool boolean(int row, int col) const;      // 't'
  int64_t affected() const;                  // rows touched by INSERT/UPDATE/DELETE

 private:
  PGresult* r_ = nullptr;
};

// Parameters of one statement, all sent as text ($1, $2, ...).
class Params {
 public:
  Params() = default;
  template <class... Ts>
  explicit Params(const Ts&... xs) { (add(xs), ...); }
  Params& add(std::string_view s) { vals_.emplace_back(s); nulls_.push_back(false); return *this; }
  Params& add(const std::string& s) { return add(std::string_view(s)); }
  Params& add(const char* s) { return add(std::string_view(s)); }
  Params& add(int64_t v) { return add(std::string_view(std::to_string(v))); }
  Params& add(int v) { return add(int64_t(v)); }
  Params& add(size_t v) { return add(int64_t(v)); }
  Params& add(double v);
  Params& add(bool v) { return add(std::string_view(v ? "t" : "f")); }
  Params& add_null() { vals_.emplace_back(); nulls_.push_back(true); return *this; }
  size_t size() const { return vals_.size(); }
  std::vector<const char*> pointers() const;

 private:
  std::vector<std::string> vals_;
  std::vector<bool> nulls_;
};

// Array literals for $n::text[] / $n::bigint[] parameters.
std::string text_array(const std::vector<std::string>& xs);
std::string int_array(const std::vector<int64_t>& xs);

struct Stmt {
  std::string sql;
  Params params;
};

// What a pipeline returned: results of the statements that succeeded, in order; if one
// failed, its index and error (the statements after it were skipped by the server).
struct PipelineResult {
  std::vector<Res> results;
  std::optional<Error> error;
  size_t failed_at = 0;
};

struct ConnOptions {
  std::string url;              // libpq conninfo or postgresql:// URL
  std::string schema;           // empty: the server's default search_path
  int connect_timeout_ms = 3000;
  int statement_timeout_ms = 5000;
  PgTls tls = {};               // overrides the URL's sslmode / sslrootcert when set
};

class Conn {
 public:
  // Connects and sets statement_timeout and search_path. Error::unavailable on failure.
  static Result<std::unique_ptr<Conn>> connect(const ConnOptions& opts);
  ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // One statement with parameters (extended protocol: a single statement only).
  Result<Res> exec(const std::string& sql, const Params& params = {});
  // One or more statements without parameters (simple protocol).
  Result<void> exec_script(const std::string& sql);
  // Sends every statement in one round trip (libpq pipeline mode) and reads the results.
  // Connection-level failures are reported like a failed statement at `failed_at`.
  PipelineResult pipeline(const std::vector<Stmt>& stmts);

  bool healthy() const;          // PQstatus == CONNECTION_OK
  bool idle() const;             // not inside a transaction block
  bool in_failed_tx() const;     // inside a transaction block that had an error
  Result<void> reset();          // PQreset and the session settings again
  int backend_pid() const;
  int socket() const;
  PGconn* raw() { return c_; }
  std::string quote_ident(std::string_view s) const;

 private:
  Conn(PGconn* c, ConnOptions opts) : c_(c), opts_(std::move(opts)) {}
  Result<void> setup();
  Error error_of(PGresult* r, std::string_view what) const;
  PGconn* c_;
  ConnOptions opts_;
  bool poisoned_ = false;  // a pipeline broke half-way: never reuse
};

// The error a failed result (or a lost connection, r == nullptr) maps to.
Error classify(PGconn* c, PGresult* r, std::string_view what);
// True for a deadlock (SQLSTATE 40P01) or serialization failure (40001) reported by
// classify(): the transaction was rolled back and running it again may succeed.
bool is_retryable_transaction_error(const Error& e);

struct PoolOptions {
  ConnOptions conn;
  size_t size = 8;
  int wait_timeout_ms = 2000;
};

// A bounded pool: at most `size` connections, opened lazily (or all at once by prefill());
// acquire() waits at most
// wait_timeout_ms for a free one (then Error::unavailable "db_pool_exhausted"). A leased
// connection found broken (PQstatus) is reset before it is handed out; one returned in a
// transaction is rolled back, or closed if that fails.
class Pool {
 public:
  explicit Pool(PoolOptions opts);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  class Lease {
   public:
    Lease(Pool* p, std::unique_ptr<Conn> c) : p_(p), c_(std::move(c)) {}
    Lease(Lease&& o) noexcept : p_(o.p_), c_(std::move(o.c_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (c_) p_->release(std::move(c_));
    }
    Conn& operator*() { return *c_; }
    Conn* operator->() { return c_.get(); }

   private:
    Pool* p_;
    std::unique_ptr<Conn> c_;
  };

  Result<Lease> acquire();
  // Opens every connection now (start-up, before readiness), so the first burst of
  // traffic does not pay for opening them (a PostgreSQL backend each).
  Result<void> prefill();
  size_t open_connections() const;
  size_t in_use() const;

 private:
  void release(std::unique_ptr<Conn> c);
  PoolOptions opts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Conn>> idle_;
  size_t open_ = 0;    // connections that exist (idle, leased or being opened)
  size_t leased_ = 0;
};

}  // namespace ps::pg
