#include "adapters/postgres/pg_activity_monitor.hpp"

#include <array>
#include <atomic>
#include <mutex>

#include "adapters/postgres/pg_conn.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/periodic.hpp"

namespace ps {
namespace {

// PostgreSQL 15's wait_event_type values that a client backend can show (Activity is the
// idle wait of background processes and is left out).
constexpr std::array<const char*, 8> kWaitTypes{"Lock", "LWLock", "IO", "IPC", "Client", "Timeout", "BufferPin",
                                                "Extension"};

constexpr const char* kSampleSql =
    "SELECT wait_event_type, count(*), "
    "       coalesce(max(extract(epoch FROM now() - query_start)) FILTER (WHERE wait_event_type = 'Lock'), 0) "
    "FROM pg_stat_activity "
    "WHERE datname = current_database() AND backend_type = 'client backend' AND state <> 'idle' "
    "  AND pid <> pg_backend_pid() AND wait_event_type IS NOT NULL "
    "GROUP BY wait_event_type";

metrics::Gauge& waiting(const char* type) {
  return metrics::registry().gauge("paystream_postgres_waiting_sessions",
                                   "Non-idle sessions of the database waiting, by wait_event_type (pg_stat_activity)",
                                   {{"wait_event_type", type}});
}
metrics::Gauge& lock_wait_max() {
  return metrics::registry().gauge("paystream_postgres_lock_wait_seconds_max",
                                   "Longest running statement among sessions waiting on a Lock (pg_stat_activity)");
}

}  // namespace

struct PgActivityMonitor::Impl {
  pg::ConnOptions opts;
  std::unique_ptr<pg::Conn> conn;
  std::mutex sample_mu;  // sample_once may be called by a test beside the thread
  std::atomic<int64_t> failures{0};
  std::unique_ptr<Periodic> thread;  // last: stopped first
};

PgActivityMonitor::PgActivityMonitor(std::string url, std::chrono::milliseconds interval, PgTls tls)
    : impl_(std::make_unique<Impl>()) {
  impl_->opts.url = std::move(url);
  impl_->opts.tls = std::move(tls);
  impl_->opts.statement_timeout_ms = 2000;
  for (const char* t : kWaitTypes) waiting(t).set(0);  // every series exists from the start
  lock_wait_max().set(0);
  impl_->thread = std::make_unique<Periodic>(interval, [this] { sample_once(); });
}

PgActivityMonitor::~PgActivityMonitor() { impl_->thread.reset(); }

bool PgActivityMonitor::sample_once() {
  Impl& im = *impl_;
  std::lock_guard l(im.sample_mu);
  auto fail = [&](const Error& e) {
    im.conn.reset();  // reconnect at the next sample
    // Log the first failure and then every 60th, not one line per interval.
    if (im.failures.fetch_add(1) % 60 == 0)
      log::warn("pg_stat_activity sample failed", {{"error", e.message}});
    return false;
  };
  if (!im.conn) {
    auto c = pg::Conn::connect(im.opts);
    if (!c) return fail(c.error());
    im.conn = std::move(c.value());
  }
  auto r = im.conn->exec(kSampleSql);
  if (!r) return fail(r.error());
  im.failures = 0;
  std::array<double, kWaitTypes.size()> counts{};
  double max_lock_wait = 0;
  for (int i = 0; i < r->rows(); ++i) {
    const std::string type = r->text(i, 0);
    for (size_t k = 0; k < kWaitTypes.size(); ++k)
      if (type == kWaitTypes[k]) counts[k] = double(r->i64(i, 1));
    if (type == "Lock") max_lock_wait = r->f64(i, 2);
  }
  for (size_t k = 0; k < kWaitTypes.size(); ++k) waiting(kWaitTypes[k]).set(counts[k]);
  lock_wait_max().set(max_lock_wait);
  return true;
}

}  // namespace ps
