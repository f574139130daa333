// PgActivityMonitor against the real server: a session blocked on a row lock another
// session holds shows up as a Lock wait, with its duration; without it the gauge is 0.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "adapters/postgres/pg_activity_monitor.hpp"
#include "common/metrics.hpp"
#include "postgres/pg_test_util.hpp"

namespace ps::pg_test {
namespace {
using namespace std::chrono_literals;

double gauge(const std::string& name, const metrics::Labels& labels = {}) {
  return metrics::registry().gauge(name, "", labels).value();
}
double lock_waiters() { return gauge("paystream_postgres_waiting_sessions", {{"wait_event_type", "Lock"}}); }

TEST(PgActivityMonitor, SessionBlockedOnARowLockIsALockWait) {
  const std::string u = url();
  ASSERT_FALSE(u.empty());
  const std::string schema = unique_schema();
  auto holder = raw(u, "");
  ASSERT_TRUE(holder);
  ASSERT_TRUE(holder->exec_script("CREATE SCHEMA " + schema + "; CREATE TABLE " + schema +
                                  ".t (id int PRIMARY KEY); INSERT INTO " + schema + ".t VALUES (1)")
                  .ok());
  PgActivityMonitor monitor(u, 1h);  // sampled by hand below
  ASSERT_TRUE(monitor.sample_once());
  // Other suites share the server, but none of them holds a row lock for long.
  const auto quiet_until = std::chrono::steady_clock::now() + 10s;
  while (lock_waiters() != 0 && std::chrono::steady_clock::now() < quiet_until) {
    std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(monitor.sample_once());
  }
  EXPECT_EQ(lock_waiters(), 0);
  EXPECT_EQ(gauge("paystream_postgres_lock_wait_seconds_max"), 0);

  ASSERT_TRUE(holder->exec_script("BEGIN; SELECT * FROM " + schema + ".t WHERE id = 1 FOR UPDATE").ok());
  auto waiter = raw(u, "");
  ASSERT_TRUE(waiter);
  auto blocked = std::async(std::launch::async, [&] {
    return waiter->exec("UPDATE " + schema + ".t SET id = 1 WHERE id = 1").ok();
  });
  // The waiter appears as a Lock wait once its UPDATE reached the row.
  const auto until = std::chrono::steady_clock::now() + 10s;
  do {
    std::this_thread::sleep_for(100ms);
    ASSERT_TRUE(monitor.sample_once());
  } while (lock_waiters() < 1 && std::chrono::steady_clock::now() < until);
  EXPECT_GE(lock_waiters(), 1);
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(monitor.sample_once());
  EXPECT_GE(gauge("paystream_postgres_lock_wait_seconds_max"), 0.3);

  ASSERT_TRUE(holder->exec_script("COMMIT").ok());
  EXPECT_TRUE(blocked.get()) << "the UPDATE goes through once the lock is released";
  ASSERT_TRUE(monitor.sample_once());
  EXPECT_EQ(lock_waiters(), 0);
  drop_schema(u, schema);
}

TEST(PgActivityMonitor, UnreachableServerFailsTheSample) {
  PgActivityMonitor monitor("postgresql://paystream@127.0.0.1:1/none?connect_timeout=1", 1h);
  EXPECT_FALSE(monitor.sample_once());
  EXPECT_FALSE(monitor.sample_once()) << "it tries to connect again";
}

}  // namespace
}  // namespace ps::pg_test
