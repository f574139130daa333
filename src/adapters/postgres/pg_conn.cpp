#include "adapters/postgres/pg_conn.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace ps::pg {

// ---------- Res ----------

Res& Res::operator=(Res&& o) noexcept {
  if (this != &o) {
    if (r_) PQclear(r_);
    r_ = o.r_;
    o.r_ = nullptr;
  }
  return *this;
}
Res::~Res() {
  if (r_) PQclear(r_);
}
int Res::rows() const { return r_ ? PQntuples(r_) : 0; }
bool Res::null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
std::string Res::text(int row, int col) const {
  if (null(row, col)) return {};
  return std::string(PQgetvalue(r_, row, col), size_t(PQgetlength(r_, row, col)));
}
int64_t Res::i64(int row, int col) const {
  if (null(row, col)) return 0;
  return std::strtoll(PQgetvalue(r_, row, col), nullptr, 10);
}
double Res::f64(int row, int col) const {
  if (null(row, col)) return 0;
  return std::strtod(PQgetvalue(r_, row, col), nullptr);
}
bool Res::boolean(int row, int col) const { return !null(row, col) && PQgetvalue(r_, row, col)[0] == 't'; }
int64_t Res::affected() const {
  const char* n = r_ ? PQcmdTuples(r_) : "";
  return *n ? std::strtoll(n, nullptr, 10) : 0;
}

// ---------- Params ----------

Params& Params::add(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return add(std::string_view(buf));
}

std::vector<const char*> Params::pointers() const {
  std::vector<const char*> out;
  out.reserve(vals_.size());
  for (size_t i = 0; i < vals_.size(); ++i) out.push_back(nulls_[i] ? nullptr : vals_[i].c_str());
  return out;
}

std::string text_array(const std::vector<std::string>& xs) {
  std::string out = "{";
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i) out += ',';
    out += '"';
    for (char ch : xs[i]) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  out += '}';
  return out;
}

std::string int_array(const std::vector<int64_t>& xs) {
  std::string out = "{";
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(xs[i]);
  }
  out += '}';
  return out;
}

// ---------- errors ----------

Error classify(PGconn* c, PGresult* r, std::string_view what) {
  std::string msg = r ? PQresultErrorMessage(r) : (c ? PQerrorMessage(c) : "no connection");
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  const char* st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  std::string state = st ? st : "";
  std::string text = std::string(what) + ": " + msg + (state.empty() ? "" : " (SQLSTATE " + state + ")");
  bool lost = !c || PQstatus(c) != CONNECTION_OK;
  // No SQLSTATE means libpq itself failed (lost connection, could not send).
  if (lost || state.empty() || state.rfind("08", 0) == 0 || state.rfind("53", 0) == 0 || state == "57P01" ||
      state == "57P02" || state == "57P03" || state == "40001" || state == "40P01" || state == "55P03")
    return Error::unavailable("db_unavailable", text);
  if (state == "57014") return Error::timeout(text);
  if (state == "23505") return Error::conflict("unique_violation", text);
  if (state == "23514") return Error::conflict("check_violation", text);
  if (state == "23503") return Error::conflict("foreign_key_violation", text);
  return Error::internal(text);
}

bool is_retryable_transaction_error(const Error& e) {
  // classify() puts the SQLSTATE at the end of the message; the kind stays unavailable.
  return e.kind == ErrorKind::unavailable && (e.message.find("(SQLSTATE 40P01)") != std::string::npos ||
                                              e.message.find("(SQLSTATE 40001)") != std::string::npos);
}

// ---------- Conn ----------

namespace {
void notice_to_log(void*, const char* message) {
  std::string m = message ? message : "";
  while (!m.empty() && m.back() == '\n') m.pop_back();
  log::warn("postgres notice", {{"message", m}});
}
}  // namespace

Result<std::unique_ptr<Conn>> Conn::connect(const ConnOptions& opts) {
  // libpq counts connect_timeout in whole seconds (and treats 1 as 2).
  std::string connect_timeout = std::to_string(std::max(2, (opts.connect_timeout_ms + 999) / 1000));
  // Keepalives and tcp_user_timeout bound how long a dead peer can block a call.
  // sslmode and sslrootcert come after dbname (the URL, expanded): libpq takes the last
  // non-empty value of a repeated keyword, so a set option overrides the URL and an empty
  // one leaves the URL's (or libpq's default).
  const char* keys[] = {"dbname",           "connect_timeout",  "keepalives", "keepalives_idle",
                        "keepalives_interval", "keepalives_count", "tcp_user_timeout", "sslmode",
                        "sslrootcert",      nullptr};
  const char* vals[] = {opts.url.c_str(), connect_timeout.c_str(), "1", "10", "3", "3", "15000",
                        opts.tls.sslmode.c_str(), opts.tls.sslrootcert.c_str(), nullptr};
  PGconn* c = PQconnectdbParams(keys, vals, /*expand_dbname=*/1);
  if (!c) return Error::unavailable("db_unavailable", "cannot connect to PostgreSQL: out of memory");
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    PQfinish(c);
    return Error::unavailable("db_unavailable", "cannot connect to PostgreSQL: " + msg);
  }
  PQsetNoticeProcessor(c, notice_to_log, nullptr);
  std::unique_ptr<Conn> conn(new Conn(c, opts));
  if (auto r = conn->setup(); !r) return r.error();
  return conn;
}

Conn::~Conn() {
  if (c_) PQfinish(c_);
}

Result<void> Conn::setup() {
  std::string sql = "SET client_min_messages = warning; SET statement_timeout = " +
                    std::to_string(std::max(0, opts_.statement_timeout_ms)) +
                    "; SET idle_in_transaction_session_timeout = 60000";
  if (!opts_.schema.empty()) sql += "; SET search_path = " + quote_ident(opts_.schema);
  return exec_script(sql);
}

std::string Conn::quote_ident(std::string_view s) const {
  char* q = PQescapeIdentifier(c_, s.data(), s.size());
  if (!q) return "\"\"";
  std::string out(q);
  PQfreemem(q);
  return out;
}

Error Conn::error_of(PGresult* r, std::string_view what) const { return classify(c_, r, what); }

Result<Res> Conn::exec(const std::string& sql, const Params& params) {
  auto ptrs = params.pointers();
  PGresult* r = PQexecParams(c_, sql.c_str(), int(ptrs.size()), nullptr, ptrs.data(), nullptr, nullptr, 0);
  auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return Res(r);
  Error e = error_of(r, "query failed");
  if (r) PQclear(r);
  return e;
}

Result<void> Conn::exec_script(const std::string& sql) {
  PGresult* r = PQexec(c_, sql.c_str());
  auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    PQclear(r);
    return {};
  }
  Error e = error_of(r, "statement failed");
  if (r) PQclear(r);
  return e;
}

PipelineResult Conn::pipeline(const std::vector<Stmt>& stmts) {
  PipelineResult out;
  if (stmts.empty()) return out;
  auto fail = [&](size_t at, PGresult* r, std::string_view what) {
    if (!out.error) {
      out.error = error_of(r, what);
      out.failed_at = at;
    }
  };
  if (PQenterPipelineMode(c_) != 1) {
    fail(0, nullptr, "cannot enter pipeline mode");
    return out;
  }
  size_t sent = 0;
  for (const auto& s : stmts) {
    auto ptrs = s.params.pointers();
    if (!PQsendQueryParams(c_, s.sql.c_str(), int(ptrs.size()), nullptr, ptrs.data(), nullptr, nullptr, 0)) {
      fail(sent, nullptr, "cannot send query");
      poisoned_ = true;  // the connection is unusable; the pool discards it
      return out;
    }
    ++sent;
  }
  if (PQpipelineSync(c_) != 1) {
    fail(sent, nullptr, "cannot send pipeline sync");
    poisoned_ = true;
    return out;  // the connection is unusable; the pool discards it
  }
  for (size_t i = 0; i < sent; ++i) {
    PGresult* r = PQgetResult(c_);
    if (!r) {  // the connection went away
      fail(i, nullptr, "connection lost in pipeline");
      poisoned_ = true;
      return out;
    }
    auto st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
      if (!out.error) out.results.emplace_back(r);
      else PQclear(r);
    } else {
      if (st != PGRES_PIPELINE_ABORTED) fail(i, r, "query failed");
      else fail(i, nullptr, "query skipped");  // only after an error, which is already recorded
      PQclear(r);
    }
    while ((r = PQgetResult(c_)) != nullptr) {  // each query's results end with NULL
      if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {  // a lost connection ends early
        poisoned_ = true;
        PQclear(r);
        return out;
      }
      PQclear(r);
    }
  }
  PGresult* r = PQgetResult(c_);
  if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
    fail(sent, r, "pipeline did not end with a sync");
    poisoned_ = true;
  }
  if (r) PQclear(r);
  if (!poisoned_ && PQexitPipelineMode(c_) != 1) poisoned_ = true;
  return out;
}

bool Conn::healthy() const {
  return !poisoned_ && PQstatus(c_) == CONNECTION_OK && PQpipelineStatus(c_) == PQ_PIPELINE_OFF;
}
bool Conn::idle() const { return PQtransactionStatus(c_) == PQTRANS_IDLE; }
bool Conn::in_failed_tx() const { return PQtransactionStatus(c_) == PQTRANS_INERROR; }
int Conn::backend_pid() const { return PQbackendPID(c_); }
int Conn::socket() const { return PQsocket(c_); }

Result<void> Conn::reset() {
  PQreset(c_);
  if (PQstatus(c_) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c_);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return Error::unavailable("db_unavailable", "cannot reconnect to PostgreSQL: " + msg);
  }
  poisoned_ = false;
  return setup();
}

// ---------- Pool ----------

namespace {
struct PoolMetrics {
  metrics::Gauge& size;
  metrics::Gauge& in_use;
  metrics::Histogram& wait;
  static PoolMetrics& get() {
    static PoolMetrics m{
        metrics::registry().gauge("paystream_db_pool_size", "Connections the database pool may open"),
        metrics::registry().gauge("paystream_db_pool_in_use", "Database connections leased right now"),
        metrics::registry().histogram("paystream_db_pool_wait_seconds",
                                      "Time spent waiting for a database connection")};
    return m;
  }
};
}  // namespace

Pool::Pool(PoolOptions opts) : opts_(std::move(opts)) {
  if (opts_.size == 0) opts_.size = 1;
  PoolMetrics::get().size.inc(double(opts_.size));
}

Pool::~Pool() {
  PoolMetrics::get().size.dec(double(opts_.size));
  std::lock_guard g(mu_);
  idle_.clear();
}

size_t Pool::open_connections() const {
  std::lock_guard g(mu_);
  return open_;
}
size_t Pool::in_use() const {
  std::lock_guard g(mu_);
  return leased_;
}

Result<void> Pool::prefill() {
  std::vector<Lease> held;
  held.reserve(opts_.size);
  while (held.size() < opts_.size) {
    auto l = acquire();
    if (!l) return l.error();
    held.push_back(std::move(*l));
  }
  return {};  // the leases go back to the idle list here
}

Result<Pool::Lease> Pool::acquire() {
  auto& m = PoolMetrics::get();
  const auto t0 = std::chrono::steady_clock::now();
  const auto deadline = t0 + std::chrono::milliseconds(std::max(0, opts_.wait_timeout_ms));
  std::unique_ptr<Conn> c;
  bool create = false;
  {
    std::unique_lock lk(mu_);
    for (;;) {
      if (!idle_.empty()) {
        c = std::move(idle_.back());
        idle_.pop_back();
        break;
      }
      if (open_ < opts_.size) {
        ++open_;
        create = true;
        break;
      }
      if (cv_.wait_until(lk, deadline) == std::cv_status::timeout && idle_.empty() && open_ >= opts_.size) {
        m.wait.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        return Error::unavailable("db_pool_exhausted", "no database connection free within " +
                                                           std::to_string(opts_.wait_timeout_ms) + " ms");
      }
    }
    ++leased_;
  }
  m.wait.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  m.in_use.inc();
  auto give_back_slot = [&] {
    {
      std::lock_guard g(mu_);
      --open_;
      --leased_;
    }
    cv_.notify_one();
    m.in_use.dec();
  };
  if (create) {
    auto r = Conn::connect(opts_.conn);
    if (!r) {
      give_back_slot();
      return r.error();
    }
    c = std::move(r.value());
  } else if (!c->healthy()) {
    if (auto r = c->reset(); !r) {
      c.reset();
      give_back_slot();
      return r.error();
    }
  }
  return Lease(this, std::move(c));
}

void Pool::release(std::unique_ptr<Conn> c) {
  if (c->healthy() && !c->idle()) (void)c->exec_script("ROLLBACK");
  bool keep = c->healthy() && c->idle();
  {
    std::lock_guard g(mu_);
    --leased_;
    if (keep) idle_.push_back(std::move(c));
    else --open_;
  }
  cv_.notify_one();
  PoolMetrics::get().in_use.dec();
  // A broken connection (if any) is closed here, outside the lock.
}

}  // namespace ps::pg
