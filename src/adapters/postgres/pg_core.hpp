// pg::Core: PgStore's engine room, shared by the parts that implement its ports
// (pg_store.hpp lists them; pg_store.cpp has the design). It owns the connection pool,
// the clock and the publisher, the intake queue and the threads: the intake writer (its
// loop and batches are PgIntake's, pg_intake.cpp), the completion thread, the publish-wait
// thread, the outbox deleter, the relay and the terminal listener (their loops are
// PgStore's, pg_store.cpp); and what runs after a commit (the payment-change listener).
// Internal to the PostgreSQL adapter; free of libpq includes.
//
// * After COMMIT the batch's events go to EventPublisher::publish in one call; its callback
//   (publisher thread) only queues a completion: the completion thread runs the callers'
//   callbacks and hands the acknowledged outbox ids to the deleter thread, which deletes
//   them in batches (SKIP LOCKED), so a slow or blocked DELETE never delays a response.
//   Callers are answered whether the publish succeeded or not: their data is committed and
//   the relay re-publishes outbox rows older than relay_after_ms (consumers deduplicate by
//   event id).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "adapters/postgres/pg_conn.hpp"
#include "adapters/postgres/pg_store.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/result.hpp"
#include "ports/clock.hpp"
#include "ports/event_publisher.hpp"

// A pooled connection as `var` for the rest of the scope, from `core` (a pg::Core).
#define PS_LEASE_FROM(core, var)                  \
  auto var##_lease = (core).pool.acquire();       \
  if (!var##_lease) return var##_lease.error();   \
  ::ps::pg::Conn& var = **var##_lease
// The same in a part of the store (its member core_).
#define PS_LEASE(var) PS_LEASE_FROM(core_, var)

namespace ps::pg {

inline constexpr int kTxAttempts = 3;  // runs of a transaction that hit 40P01/40001

struct StoreMetrics {
  metrics::Histogram& tx_seconds;
  metrics::Histogram& batch_size;
  metrics::Counter& relayed;
  metrics::Counter& undecodable;
  metrics::Counter& intake_retries;
  metrics::Counter& apply_retries;
  static StoreMetrics& get() {
    static const char* const kRetryHelp =
        "Database transactions run again after a deadlock or serialization failure";
    static StoreMetrics m{
        metrics::registry().histogram("paystream_db_tx_seconds", "Duration of one database transaction"),
        metrics::registry().histogram("paystream_db_intake_batch_size", "Intake writes per database transaction",
                                      {}, {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}),
        metrics::registry().counter("paystream_db_outbox_relayed_total",
                                    "Outbox rows re-published by the relay"),
        metrics::registry().counter("paystream_db_outbox_undecodable_total",
                                    "Undecodable outbox rows deleted by the relay"),
        metrics::registry().counter("paystream_db_tx_retries_total", kRetryHelp, {{"transaction", "intake"}}),
        metrics::registry().counter("paystream_db_tx_retries_total", kRetryHelp, {{"transaction", "apply"}})};
    return m;
  }
};

// Before running a transaction again after a deadlock or serialization failure: the
// attempt's share of kTxRetryBackoff plus jitter, so the two parties do not collide again.
void retry_backoff(int attempt);
// Seconds since t0.
double since(std::chrono::steady_clock::time_point t0);

// One queued intake write and, once the batch ran, its outcome (pg_intake.cpp).
struct IntakeJob;
using JobPtr = std::shared_ptr<IntakeJob>;

// Work handed from publisher callbacks to the completion thread. Shared so a callback
// arriving after the store is gone still finds it (and then answers inline).
struct Completions {
  struct Item {
    std::vector<std::function<void()>> callbacks;
    std::vector<int64_t> delete_ids;  // acknowledged outbox rows
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> items;
  size_t inflight = 0;  // publishes not answered yet
  bool closed = false;
  std::set<int64_t> publishing;  // outbox ids whose publish by this process is in flight

  // Marks `ids` in flight (a publish is about to start); counted in `inflight` if tracked.
  void started(const std::vector<int64_t>& ids, bool tracked) {
    std::lock_guard g(mu);
    publishing.insert(ids.begin(), ids.end());
    if (tracked) ++inflight;
  }
  void forget(const std::vector<int64_t>& ids) {
    std::lock_guard g(mu);
    for (auto id : ids) publishing.erase(id);
  }

  static void run(std::vector<std::function<void()>>& cbs) {
    for (auto& cb : cbs) {
      try {
        cb();
      } catch (const std::exception& e) {
        log::error("store callback threw", {{"error", e.what()}});
      }
    }
  }
  void push(Item it) {
    {
      std::lock_guard g(mu);
      if (!closed) {
        items.push_back(std::move(it));
        cv.notify_all();
        return;
      }
    }
    run(it.callbacks);  // closed: the rows stay for the relay
  }
  // A tracked publish of `ids` answered; `it` carries the callbacks and the ids to delete.
  void published(const std::vector<int64_t>& ids, Item it) {
    {
      std::lock_guard g(mu);
      for (auto id : ids) publishing.erase(id);
      --inflight;
    }
    push(std::move(it));
  }
};

struct Core {
  Core(const PgOptions& o, const Clock& c, EventPublisher& p);

  static pg::ConnOptions conn_options(const PgOptions& o) {
    return pg::ConnOptions{o.url, o.schema, o.connect_timeout_ms, o.statement_timeout_ms, o.tls};
  }

  PgOptions opts;
  const Clock& clock;
  EventPublisher& publisher;
  const std::string channel;
  pg::Pool pool;
  std::shared_ptr<Completions> completions;
  // Bounded wait for the bus (PgOptions::publish_wait_ms): the callbacks of one publish,
  // run by whichever comes first, the publisher's answer or the deadline thread.
  struct OnceCallbacks {
    std::atomic<bool> taken{false};
    std::vector<std::function<void()>> cbs;
    std::vector<std::function<void()>> take() {
      if (taken.exchange(true)) return {};
      return std::move(cbs);
    }
  };
  std::mutex pw_mu;
  std::condition_variable pw_cv;
  std::multimap<std::chrono::steady_clock::time_point, std::shared_ptr<OnceCallbacks>> pw_queue;
  bool pw_stop = false;
  std::thread publish_waiter;
  void publish_wait_loop();

  std::mutex q_mu;
  std::condition_variable q_cv;
  std::deque<JobPtr> queue;
  bool stopping = false;
  std::thread writer, completer, relay, listener, deleter;

  // Acknowledged outbox ids for the deleter thread (bounded: beyond kMaxPendingDeletes the
  // rows are left to the relay, which publishes them again).
  std::mutex del_mu;
  std::condition_variable del_cv;
  std::vector<int64_t> del_ids;
  bool del_stop = false;

  // Webhook deliveries this store instance claimed (due_deliveries) and has not recorded yet.
  struct Claim {
    int64_t due_ms = 0;    // next_attempt_ms before the claim
    int64_t lease_ms = 0;  // the next_attempt_ms the claim wrote
  };
  std::mutex claim_mu;
  std::unordered_map<std::string, Claim> claims;

  std::mutex stop_mu;  // relay and listener sleeps
  std::condition_variable stop_cv;
  bool stop_bg = false;
  std::atomic<int> listen_state{0};  // 0 connecting, 1 listening, -1 failed attempt
  void set_listen_state(int v) {
    {
      std::lock_guard g(stop_mu);
      listen_state = v;
    }
    stop_cv.notify_all();
  }

  std::mutex fn_mu;
  std::function<void(const std::vector<std::string>&)> terminal_fn;
  std::function<void(const std::vector<Payment>&)> change_fn;

  // Starts the threads: the intake writer (PgIntake's loop), the core's own, the relay
  // (if relay_interval_ms > 0) and the listener (if listen_terminal; waits, bounded, for
  // its first LISTEN attempt), whose loops are PgStore's.
  void start(std::function<void()> writer_loop, std::function<void()> relay_loop,
             std::function<void()> listen_loop);
  void stop();
  void completion_loop();
  void deleter_loop();
  void queue_deletes(const std::vector<int64_t>& ids);
  bool sleep_unless_stopped(std::chrono::milliseconds d);

  void publish_then(std::vector<Event> events, std::vector<int64_t> ids, std::vector<std::function<void()>> cbs);
  void changed(const std::vector<Payment>& ps);
  void delete_outbox(const std::vector<int64_t>& ids);

  // Runs f(conn) inside BEGIN/COMMIT on a pooled connection.
  template <class T, class F>
  Result<T> transact(F&& f) {
    auto t0 = std::chrono::steady_clock::now();
    auto lease = pool.acquire();
    if (!lease) return lease.error();
    Conn& c = **lease;
    if (auto b = c.exec_script("BEGIN"); !b) return b.error();
    Result<T> r = f(c);
    if (r) {
      if (auto cm = c.exec_script("COMMIT"); !cm) r = cm.error();
    } else if (c.healthy()) {
      (void)c.exec_script("ROLLBACK");
    }
    StoreMetrics::get().tx_seconds.observe(since(t0));
    return r;
  }
};

}  // namespace ps::pg
