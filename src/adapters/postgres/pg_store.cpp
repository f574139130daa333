// PgStore: see pg_store.hpp for the contract. Design notes:
//
// * Intake group commit. One writer thread takes up to max_batch queued jobs
//   (accept_payment, accept_refund, update_idempotent_response) and runs them in one
//   transaction, each job inside SAVEPOINT job / RELEASE SAVEPOINT job, then COMMITs once.
//   Payment and response-update jobs need no decision between their statements, so a run
//   of consecutive such jobs is sent in ONE round trip with libpq pipeline mode
//   (SAVEPOINT, the job's statements, RELEASE for every job, one Sync). If a statement
//   fails, the server skips the rest of the pipeline: that job gets its error, we roll back
//   to its savepoint and pipeline the jobs after it again. Refund jobs need decisions
//   (lock, checks, rendered body), so they run statement by statement. Chosen over
//   multi-row INSERTs because per-job savepoints keep one bad job from failing the others
//   and each job keeps its own outcome (created or the stored record), in one round trip.
// * Idempotency: the idempotency table (merchant_id, key) is the arbiter, as in the
//   embedded store where payments and refunds share the key space: the record is inserted
//   first with ON CONFLICT DO NOTHING; only if it was inserted are the payment (or refund)
//   and its outbox row inserted, in the same statement. A concurrent request with the
//   same key waits on the conflicting row and, once that commits, reads the stored record
//   (READ COMMITTED: the next statement sees it) and reports created=false. The payment
//   and refund tables keep UNIQUE(merchant_id, idempotency_key), so even a bypass of the
//   record cannot store a duplicate (the job then fails with conflict "payment_exists").
// * Refunds take an advisory transaction lock per merchant (the balance check spans all
//   of the merchant's payments) and SELECT ... FOR UPDATE the payment row; the sums they
//   check are read in one statement, i.e. from one snapshot.
// * Lock order. Intake refunds and ledger applies both lock payment rows, and several
//   gateways' batches take the merchants' advisory locks; taken in arbitrary orders they
//   deadlock (SQLSTATE 40P01, found only after deadlock_timeout). So every transaction
//   that locks several payments does it in one order, by (merchant_id, payment id),
//   bytewise (COLLATE "C" = std::string's <): an intake batch runs its refund jobs after
//   the other jobs, sorted that way (stable: refunds of one payment keep arrival order),
//   and apply() first locks every payment it will update in that order. What remains
//   possible (two batches inserting the same new idempotency keys in opposite orders, an
//   advisory-lock hash collision, a redelivery racing a notifier apply) is handled by
//   running the transaction again: a deadlock or serialization failure (40P01/40001)
//   retries the whole transaction up to kTxAttempts times with a short jittered backoff
//   before the callers (or the stage) get the retryable error.
// * After COMMIT the batch's events go to EventPublisher::publish in one call; its callback
//   (publisher thread) only queues a completion: the completion thread runs the callers'
//   callbacks and hands the acknowledged outbox ids to the deleter thread, which deletes
//   them in batches (SKIP LOCKED), so a slow or blocked DELETE never delays a response.
//   Callers are answered whether the publish succeeded or not: their data is committed and
//   the relay re-publishes outbox rows older than relay_after_ms (consumers deduplicate by
//   event id).
// * Outbox ages. An outbox row's created_ms is stamped right before COMMIT (same
//   transaction), so its age counts from when it became visible, not from when the job was
//   queued. Ids whose publish this process still has in flight are kept in memory
//   (Completions::publishing) and the relay of this process skips them; other gateways rely
//   on the age alone (relay_after_ms must exceed the bus's request timeout by a margin).
// * Relay without long locks. A round claims rows in one short statement (UPDATE ... SET
//   created_ms = now WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)): the bump is a lease
//   of relay_after_ms against other relays. It then publishes outside any transaction and
//   deletes what was acknowledged; rows whose publish failed get their age back so the next
//   round takes them. Undecodable dead letters are deleted (logged, counted).
// * Webhook deliveries are claimed: due_deliveries moves next_attempt_ms of the rows it
//   returns to now + kDeliveryLeaseMs in the same statement (SKIP LOCKED), so notifier
//   replicas never get the same delivery while an attempt may be running; the rows are
//   returned with their original next_attempt_ms. This store instance remembers its claims
//   and returns them again (like the embedded store, a pending due row stays due until an
//   attempt is recorded) while they are still its own (row pending, lease value unchanged).
//   record_attempt only updates rows still 'pending' (or inserts a missing one): a stale
//   attempt never overwrites a terminal row and then writes no dead letter.
// * PositionSink::apply sends the whole transaction (BEGIN, every outcome as one statement
//   with data-modifying CTEs, events, deliveries, positions) in one pipeline, reads which
//   payments changed (RETURNING), then NOTIFY and COMMIT in a second round trip.
// * Terminal notifications use channel "paystream_terminal" (schema "" ) or
//   "paystream_terminal_<schema>" so stores in different schemas of one database (tests)
//   do not hear each other.
#include "adapters/postgres/pg_store.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <unordered_map>
#include <thread>
#include <tuple>

#include "adapters/postgres/pg_conn.hpp"
#include "adapters/postgres/pg_rows.hpp"
#include "adapters/postgres/pg_schema.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "domain/ids.hpp"
#include "domain/ledger_rules.hpp"
#include "domain/money.hpp"
#include "domain/store_codec.hpp"

namespace ps {
namespace json = boost::json;
using pg::Conn;
using pg::Params;
using pg::Res;
using pg::Stmt;
using namespace pg;

namespace {

constexpr size_t kMaxQueue = 100000;            // queued intake jobs before "store_overloaded"
constexpr int64_t kRelayBatch = 500;            // outbox rows per relay round
constexpr auto kPublishWait = std::chrono::seconds(30);   // the relay waits this long for the bus
constexpr auto kDeadLetterWait = std::chrono::seconds(10);  // record_attempt waits this long
constexpr auto kShutdownPublishWait = std::chrono::seconds(10);
constexpr size_t kNotifyChunkBytes = 7000;      // NOTIFY payloads must stay below 8000 bytes
constexpr size_t kDeleteChunk = 5000;           // outbox ids per DELETE
constexpr size_t kMaxPendingDeletes = 1000000;  // acknowledged ids waiting for the deleter
constexpr size_t kMaxRelayExclusions = 4096;    // in-flight ids passed to one relay claim
constexpr int64_t kDeliveryLeaseMs = 60000;     // a claimed webhook delivery (> an attempt's timeout)
constexpr int kRefundLockClass = 0x70730002;    // advisory lock class: refunds of one merchant
constexpr int kTxAttempts = 3;                  // runs of a transaction that hit 40P01/40001
constexpr auto kTxRetryBackoff = std::chrono::milliseconds(20);  // times the attempt, plus up to as much jitter

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
void retry_backoff(int attempt) {
  thread_local std::minstd_rand rng{std::random_device{}()};
  const auto base = kTxRetryBackoff * attempt;
  std::uniform_int_distribution<int64_t> jitter(0, base.count());
  std::this_thread::sleep_for(base + std::chrono::milliseconds(jitter(rng)));
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Encoding helpers and the balance check: domain/store_codec.hpp (shared with SQLite).


std::vector<std::string> split_ids(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string_view::npos) end = s.size();
    if (end > start) out.emplace_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Comma-separated chunks below kNotifyChunkBytes.
std::vector<std::string> notify_chunks(const std::vector<std::string>& ids) {
  std::vector<std::string> out;
  std::string cur;
  for (const auto& id : ids) {
    if (!cur.empty() && cur.size() + 1 + id.size() > kNotifyChunkBytes) {
      out.push_back(std::move(cur));
      cur.clear();
    }
    if (!cur.empty()) cur += ',';
    cur += id;
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

std::string channel_for(const std::string& schema) {
  std::string ch = schema.empty() ? "paystream_terminal" : "paystream_terminal_" + schema;
  if (ch.size() > 63) ch.resize(63);  // NAMEDATALEN - 1
  return ch;
}


// One queued intake write and, once the batch ran, its outcome.
struct IntakeJob {
  enum class Kind { payment, refund, update } kind = Kind::payment;
  AcceptPayment pay;
  AcceptRefund ref;
  std::string merchant_id, key, body;  // update
  int http_status = 0;
  AcceptCallback accept_cb;
  std::function<void(Result<void>)> update_cb;
  int64_t now = 0;

  std::optional<Error> error;
  AcceptOutcome outcome;
  std::optional<Event> event;       // to publish after commit
  int64_t outbox_id = 0;
  std::optional<Payment> accepted;  // for the payment-change listener

  void reset_outcome() {
    error.reset();
    outcome = AcceptOutcome{};
    event.reset();
    outbox_id = 0;
    accepted.reset();
  }
  // The caller's callback with this job's outcome.
  void answer() {
    if (kind == Kind::update) {
      if (update_cb) update_cb(error ? Result<void>(*error) : Result<void>());
    } else if (accept_cb) {
      accept_cb(error ? Result<AcceptOutcome>(*error) : Result<AcceptOutcome>(outcome));
    }
  }
};
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

}  // namespace

// ---------- Impl ----------

// One relay round (PgStore::relay_outbox_once and the relay thread).
Result<size_t> pg_relay_once(PgStore::Impl& impl);

struct PgStore::Impl {
  Impl(const PgOptions& o, const Clock& c, EventPublisher& p)
      : opts(o),
        clock(c),
        publisher(p),
        channel(channel_for(o.schema)),
        pool(pg::PoolOptions{conn_options(o), o.pool_size, o.pool_wait_timeout_ms}),
        completions(std::make_shared<Completions>()) {}

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

  void start();
  void stop();
  void submit(JobPtr j);
  void writer_loop();
  void completion_loop();
  void deleter_loop();
  void queue_deletes(const std::vector<int64_t>& ids);
  void relay_loop();
  void listen_loop();
  bool sleep_unless_stopped(std::chrono::milliseconds d);

  void run_batch(std::vector<JobPtr>& batch);
  std::optional<Error> run_batch_once(std::vector<JobPtr>& batch);
  std::optional<Error> run_pipelined(Conn& c, std::vector<JobPtr>& batch, size_t from, size_t to);
  std::optional<Error> run_interactive(Conn& c, IntakeJob& j);
  Result<void> refund_body(Conn& c, IntakeJob& j);
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

void PgStore::Impl::start() {
  writer = std::thread([this] { writer_loop(); });
  completer = std::thread([this] { completion_loop(); });
  if (opts.publish_wait_ms > 0) publish_waiter = std::thread([this] { publish_wait_loop(); });
  deleter = std::thread([this] { deleter_loop(); });
  if (opts.relay_interval_ms > 0) relay = std::thread([this] { relay_loop(); });
  if (opts.listen_terminal) {
    listener = std::thread([this] { listen_loop(); });
    // Traffic may start right after open(): wait (bounded) for the first LISTEN attempt.
    std::unique_lock lk(stop_mu);
    stop_cv.wait_for(lk, std::chrono::milliseconds(opts.connect_timeout_ms + 2000),
                     [&] { return listen_state.load() != 0; });
    if (listen_state.load() != 1) log::warn("terminal listener not connected yet; it keeps retrying");
  }
}

void PgStore::Impl::stop() {
  {
    std::lock_guard g(stop_mu);
    stop_bg = true;
  }
  stop_cv.notify_all();
  if (relay.joinable()) relay.join();
  {
    std::lock_guard g(q_mu);
    stopping = true;
  }
  q_cv.notify_all();
  if (writer.joinable()) writer.join();  // finishes the queued writes first
  {
    // Let publishes in flight answer their callers (and delete their rows).
    std::unique_lock lk(completions->mu);
    auto deadline = std::chrono::steady_clock::now() + kShutdownPublishWait;
    while (completions->inflight > 0)
      if (completions->cv.wait_until(lk, deadline) == std::cv_status::timeout) break;
    completions->closed = true;
  }
  completions->cv.notify_all();
  if (completer.joinable()) completer.join();
  {
    std::lock_guard g(pw_mu);
    pw_stop = true;  // answers every caller still waiting for the bus
  }
  pw_cv.notify_all();
  if (publish_waiter.joinable()) publish_waiter.join();
  {
    std::lock_guard g(del_mu);
    del_stop = true;  // the deleter drains what is queued, then ends
  }
  del_cv.notify_all();
  if (deleter.joinable()) deleter.join();
  if (listener.joinable()) listener.join();
}

bool PgStore::Impl::sleep_unless_stopped(std::chrono::milliseconds d) {
  std::unique_lock lk(stop_mu);
  return !stop_cv.wait_for(lk, d, [&] { return stop_bg; });
}

void PgStore::Impl::changed(const std::vector<Payment>& ps) {
  if (ps.empty()) return;
  std::function<void(const std::vector<Payment>&)> fn;
  {
    std::lock_guard g(fn_mu);
    fn = change_fn;
  }
  if (!fn) return;
  try {
    fn(ps);
  } catch (const std::exception& e) {
    log::error("payment change listener threw", {{"error", e.what()}});
  }
}

// ---------- intake: queue, writer, batches ----------

void PgStore::Impl::submit(JobPtr j) {
  std::unique_lock lk(q_mu);
  if (stopping) {
    lk.unlock();
    j->error = Error::unavailable("store_closed", "the store is shutting down");
    j->answer();
    return;
  }
  if (queue.size() >= kMaxQueue) {
    lk.unlock();
    j->error = Error::unavailable("store_overloaded", "the store write queue is full");
    completions->push({{[j] { j->answer(); }}, {}});
    return;
  }
  queue.push_back(std::move(j));
  lk.unlock();
  q_cv.notify_one();
}

void PgStore::Impl::writer_loop() {
  for (;;) {
    std::vector<JobPtr> batch;
    {
      std::unique_lock lk(q_mu);
      q_cv.wait(lk, [&] { return stopping || !queue.empty(); });
      if (queue.empty()) break;  // stopping and drained
      size_t n = std::min(std::max<size_t>(1, opts.max_batch), queue.size());
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue.front()));
        queue.pop_front();
      }
    }
    run_batch(batch);
  }
}

void PgStore::Impl::run_batch(std::vector<JobPtr>& batch) {
  // Lock order (file comment): the refund jobs last, by merchant and payment.
  auto refunds = std::stable_partition(batch.begin(), batch.end(),
                                       [](const JobPtr& j) { return j->kind != IntakeJob::Kind::refund; });
  std::stable_sort(refunds, batch.end(), [](const JobPtr& a, const JobPtr& b) {
    const Refund &x = a->ref.refund, &y = b->ref.refund;
    return std::tie(x.merchant_id, x.payment_id) < std::tie(y.merchant_id, y.payment_id);
  });
  auto t0 = std::chrono::steady_clock::now();
  std::optional<Error> abort;
  for (int attempt = 1;; ++attempt) {
    abort = run_batch_once(batch);
    if (!abort || !pg::is_retryable_transaction_error(*abort) || attempt >= kTxAttempts) break;
    StoreMetrics::get().intake_retries.inc();
    log::warn("intake transaction rolled back by a deadlock or serialization failure; running it again",
              {{"attempt", std::to_string(attempt)}, {"jobs", std::to_string(batch.size())},
               {"error", abort->message}});
    for (auto& j : batch) j->reset_outcome();  // the rolled-back attempt left nothing
    retry_backoff(attempt);
  }
  auto& m = StoreMetrics::get();
  m.tx_seconds.observe(since(t0));
  m.batch_size.observe(double(batch.size()));
  if (abort) {
    log::error("intake transaction failed", {{"error", abort->message}, {"jobs", std::to_string(batch.size())}});
    for (auto& j : batch) {
      if (!j->error) j->error = *abort;  // jobs that failed on their own keep their error
      j->event.reset();
      j->accepted.reset();
    }
  }

  std::vector<Payment> accepted;
  std::vector<Event> events;
  std::vector<int64_t> ids;
  std::vector<std::function<void()>> after_publish, now;
  for (auto& j : batch) {
    if (j->accepted) accepted.push_back(*j->accepted);
    if (j->event) {
      events.push_back(*j->event);
      ids.push_back(j->outbox_id);
      after_publish.push_back([j] { j->answer(); });
    } else {
      now.push_back([j] { j->answer(); });
    }
  }
  changed(accepted);
  if (!now.empty()) completions->push({std::move(now), {}});
  if (!events.empty()) publish_then(std::move(events), std::move(ids), std::move(after_publish));
}

// One attempt at the batch's transaction: BEGIN, every job, COMMIT (ROLLBACK on failure).
std::optional<Error> PgStore::Impl::run_batch_once(std::vector<JobPtr>& batch) {
  auto lease = pool.acquire();
  if (!lease) return lease.error();
  Conn& c = **lease;
  std::optional<Error> abort;
  if (auto b = c.exec_script("BEGIN"); !b) abort = b.error();
  size_t i = 0;
  while (!abort && i < batch.size()) {
    if (batch[i]->kind == IntakeJob::Kind::refund) {
      abort = run_interactive(c, *batch[i]);
      ++i;
      continue;
    }
    size_t j = i;
    while (j < batch.size() && batch[j]->kind != IntakeJob::Kind::refund) ++j;
    abort = run_pipelined(c, batch, i, j);
    i = j;
  }
  if (!abort) {
    // The outbox rows' age starts now, at commit (file comment): stamped in the same
    // round trip as the COMMIT (the ids are integers, safe to inline).
    std::vector<int64_t> outbox_ids;
    for (const auto& j : batch)
      if (j->outbox_id != 0 && !j->error) outbox_ids.push_back(j->outbox_id);
    std::string script;
    if (!outbox_ids.empty())
      script = "UPDATE outbox SET created_ms = " + std::to_string(clock.now_ms()) + " WHERE id = ANY('" +
               pg::int_array(outbox_ids) + "'::bigint[]); ";
    if (auto cm = c.exec_script(script + "COMMIT"); !cm) abort = cm.error();
  }
  if (abort && c.healthy() && !c.idle()) (void)c.exec_script("ROLLBACK");
  return abort;
}

void PgStore::Impl::publish_then(std::vector<Event> events, std::vector<int64_t> ids,
                                 std::vector<std::function<void()>> cbs) {
  auto comp = completions;
  comp->started(ids, true);
  size_t n = events.size();
  auto once = std::make_shared<OnceCallbacks>();
  once->cbs = std::move(cbs);
  if (opts.publish_wait_ms > 0) {
    std::lock_guard g(pw_mu);
    pw_queue.emplace(std::chrono::steady_clock::now() + std::chrono::milliseconds(opts.publish_wait_ms), once);
  }
  pw_cv.notify_one();
  publisher.publish(std::move(events), [comp, ids = std::move(ids), once, n](Result<void> r) mutable {
    if (!r)
      log::warn("publishing accepted events failed; the outbox relay will retry",
                {{"events", std::to_string(n)}, {"error", r.error().message}});
    comp->published(ids, {once->take(), r ? ids : std::vector<int64_t>{}});
  });
}

// Runs the callbacks of publishes the bus has not answered within publish_wait_ms: the
// accepts are durable (committed with their outbox rows), so their callers need not wait
// for a slow or restarting broker; the publish itself goes on (and the relay backs it up).
void PgStore::Impl::publish_wait_loop() {
  static auto& late = metrics::registry().counter(
      "paystream_db_publish_wait_expired_total",
      "Accepts answered before the bus acknowledged their event (the outbox row guarantees it)");
  std::unique_lock lk(pw_mu);
  for (;;) {
    if (pw_stop) break;
    if (pw_queue.empty()) {
      pw_cv.wait(lk);
      continue;
    }
    auto it = pw_queue.begin();
    if (it->first > std::chrono::steady_clock::now()) {
      pw_cv.wait_until(lk, it->first);
      continue;
    }
    auto once = std::move(it->second);
    pw_queue.erase(it);
    lk.unlock();
    if (auto cbs = once->take(); !cbs.empty()) {
      late.inc();
      completions->push({std::move(cbs), {}});
    }
    lk.lock();
  }
  // Stopping: nobody is left to wait for; answer whoever still waits.
  auto rest = std::move(pw_queue);
  lk.unlock();
  for (auto& [t, once] : rest)
    if (auto cbs = once->take(); !cbs.empty()) Completions::run(cbs);
}

// Payment and response-update jobs from..to (exclusive): pipelined, see the file comment.
std::optional<Error> PgStore::Impl::run_pipelined(Conn& c, std::vector<JobPtr>& batch, size_t from, size_t to) {
  static const std::string kPaymentSql =
      "WITH idem AS (INSERT INTO idempotency(merchant_id, key, fingerprint, http_status, response_body, "
      "resource_id, created_ms) VALUES($1, $2, $3, $4, $5, $6, $7) "
      "ON CONFLICT (merchant_id, key) DO NOTHING RETURNING 1), "
      "pay AS (INSERT INTO payments(id, merchant_id, idempotency_key, amount_minor, currency, source, description, "
      "metadata, status, failure_code, amount_refunded_minor, created_ms, updated_ms) "
      "SELECT $8::text, $9::text, $10::text, $11::bigint, $12::text, $13::text, $14::text, $15::text, $16::text, "
      "$17::text, $18::bigint, $19::bigint, $20::bigint FROM idem RETURNING 1), "
      "ob AS (INSERT INTO outbox(kind, payload, created_ms) SELECT 'event', $21::text, $22::bigint FROM pay "
      "RETURNING id) "
      "SELECT (SELECT count(*) FROM idem), (SELECT id FROM ob)";
  static const std::string kUpdateSql =
      "UPDATE idempotency SET http_status = $1, response_body = $2 WHERE merchant_id = $3 AND key = $4";

  size_t k = from;
  while (k < to) {
    std::vector<Stmt> stmts;
    std::vector<size_t> first(to - k);  // index of each job's SAVEPOINT
    for (size_t m = k; m < to; ++m) {
      IntakeJob& j = *batch[m];
      first[m - k] = stmts.size();
      stmts.push_back({"SAVEPOINT job", {}});
      if (j.kind == IntakeJob::Kind::payment) {
        const Payment& p = j.pay.payment;
        const IdempotencyRecord& r = j.pay.record;
        Params ps(r.merchant_id, r.key, r.fingerprint, r.http_status, r.response_body, r.resource_id, r.created_ms);
        ps.add(p.id).add(p.merchant_id).add(p.idempotency_key).add(p.amount_minor).add(p.currency).add(p.source);
        ps.add(p.description).add(metadata_to_json(p.metadata)).add(to_string(p.status)).add(p.failure_code);
        ps.add(p.amount_refunded_minor).add(p.created_ms).add(p.updated_ms);
        ps.add(event_envelope_json(j.pay.initiated)).add(j.now);
        stmts.push_back({kPaymentSql, std::move(ps)});
        stmts.push_back({kIdemSelect, Params(r.merchant_id, r.key)});
      } else {
        stmts.push_back({kUpdateSql, Params(j.http_status, j.body, j.merchant_id, j.key)});
      }
      stmts.push_back({"RELEASE SAVEPOINT job", {}});
    }
    auto pr = c.pipeline(stmts);
    const size_t done = pr.error ? pr.failed_at : stmts.size();
    size_t m = k;
    for (; m < to; ++m) {
      size_t b = first[m - k];
      size_t e = (m + 1 < to) ? first[m + 1 - k] : stmts.size();
      if (e > done) break;  // this job did not complete
      IntakeJob& j = *batch[m];
      if (j.kind == IntakeJob::Kind::payment) {
        const Res& ins = pr.results[b + 1];
        const Res& rec = pr.results[b + 2];
        if (ins.i64(0, 0) == 1) {
          j.outcome.created = true;
          j.outcome.record = j.pay.record;
          j.event = j.pay.initiated;
          j.outbox_id = ins.i64(0, 1);
          j.accepted = j.pay.payment;
        } else if (auto r = read_idem_row(rec, j.pay.record.merchant_id, j.pay.record.key)) {
          j.outcome.created = false;
          j.outcome.record = std::move(*r);
        } else {
          j.error = Error::internal("idempotency record neither inserted nor found for key " + j.pay.record.key);
        }
      } else if (pr.results[b + 1].affected() == 0) {
        j.error = Error::not_found("no idempotency record for that key");
      }
    }
    if (!pr.error) return std::nullopt;
    // Job m failed. A failure outside its own statements, a lost connection or a deadlock
    // (run_batch runs the whole transaction again) fails the batch.
    size_t b = first[m - k];
    size_t e = (m + 1 < to) ? first[m + 1 - k] : stmts.size();
    if (!c.healthy() || pr.failed_at == b || pr.failed_at == e - 1 || pg::is_retryable_transaction_error(*pr.error))
      return pr.error;
    IntakeJob& j = *batch[m];
    Error err = *pr.error;
    if (j.kind == IntakeJob::Kind::payment && err.kind == ErrorKind::conflict)
      err = Error::conflict("payment_exists", "payment " + j.pay.payment.id + " cannot be stored: " + err.message);
    j.error = err;
    if (auto r = c.exec_script("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"); !r) return r.error();
    k = m + 1;
  }
  return std::nullopt;
}

std::optional<Error> PgStore::Impl::run_interactive(Conn& c, IntakeJob& j) {
  if (auto r = c.exec_script("SAVEPOINT job"); !r) return r.error();
  Result<void> r = refund_body(c, j);
  if (r) {
    if (auto rel = c.exec_script("RELEASE SAVEPOINT job"); !rel) return rel.error();
    return std::nullopt;
  }
  // The connection (and the transaction) is gone, or a deadlock: run_batch runs it again.
  if (!c.healthy() || pg::is_retryable_transaction_error(r.error())) return r.error();
  j.reset_outcome();
  j.error = r.error();
  if (auto rb = c.exec_script("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"); !rb) return rb.error();
  return std::nullopt;
}

// accept_refund inside the batch transaction; the checks and error codes of the embedded store.
Result<void> PgStore::Impl::refund_body(Conn& c, IntakeJob& j) {
  const AcceptRefund& cmd = j.ref;
  Refund refund = cmd.refund;
  const IdempotencyRecord& given = cmd.record;
  // Serialise refunds of this merchant: the balance check spans all its payments. Taken
  // before reading the record so a concurrent request with the same key is seen.
  PS_TRY(c.exec("SELECT pg_advisory_xact_lock($1::int, hashtext($2::text))",
                Params(kRefundLockClass, refund.merchant_id)));
  {
    auto existing = read_idempotency(c, given.merchant_id, given.key);
    if (!existing) return existing.error();
    if (*existing) {
      j.outcome.created = false;
      j.outcome.record = std::move(**existing);
      return {};
    }
  }
  Payment payment;
  {
    PS_EXEC(q, c, std::string("SELECT ") + kPaymentCols + " FROM payments WHERE id = $1 AND merchant_id = $2 FOR UPDATE",
            Params(refund.payment_id, refund.merchant_id));
    if (q.rows() == 0) return Error::not_found("no payment " + refund.payment_id);
    payment = read_payment(q, 0);
  }
  int64_t processing_for_payment = 0, available = 0, processing_for_merchant = 0, payment_fee = 0;
  {
    // One statement, one snapshot: a ledger commit between separate reads could otherwise
    // be half seen (reversal posted but refund still counted as processing, or the reverse).
    PS_EXEC(q, c,
            "SELECT (SELECT COALESCE(SUM(amount_minor), 0) FROM refunds WHERE payment_id = $1 AND status = 'processing'), "
            "COALESCE((SELECT -amount_minor FROM account_balances WHERE account = $2 AND currency = $3), 0), "
            "(SELECT COALESCE(SUM(amount_minor), 0) FROM refunds WHERE merchant_id = $4 AND currency = $3 "
            "AND status = 'processing'), "
            "(SELECT COALESCE(-SUM(amount_minor), 0) FROM postings WHERE entry_id = $5 AND account = $6)",
            Params(payment.id, merchant_available_account(payment.merchant_id), payment.currency, payment.merchant_id,
                   settlement_entry_id(payment.id), kFeesAccount));
    processing_for_payment = q.i64(0, 0);
    available = q.i64(0, 1);
    processing_for_merchant = q.i64(0, 2);
    payment_fee = q.i64(0, 3);
  }
  auto admitted = admit_refund(payment, RefundAdmission{refund.amount_minor, processing_for_payment, available,
                                                        processing_for_merchant, true, payment_fee});
  if (!admitted) return admitted.error();
  refund.amount_minor = admitted->amount_minor;
  refund.fee_refunded_minor = admitted->fee_share_minor;
  refund.currency = payment.currency;

  Event ev = admitted_refund_event(cmd.requested, refund, j.now);
  IdempotencyRecord rec = given;
  if (cmd.render) rec.response_body = cmd.render(refund);
  if (rec.resource_id.empty()) rec.resource_id = refund.id;

  Params ps(rec.merchant_id, rec.key, rec.fingerprint, rec.http_status, rec.response_body, rec.resource_id,
            rec.created_ms);
  ps.add(refund.id).add(refund.payment_id).add(refund.merchant_id).add(refund.idempotency_key);
  ps.add(refund.amount_minor).add(refund.currency).add(to_string(refund.status)).add(refund.failure_code);
  ps.add(refund.created_ms).add(refund.updated_ms).add(event_envelope_json(ev)).add(j.now);
  auto ins = c.exec(
      "WITH idem AS (INSERT INTO idempotency(merchant_id, key, fingerprint, http_status, response_body, "
      "resource_id, created_ms) VALUES($1, $2, $3, $4, $5, $6, $7) "
      "ON CONFLICT (merchant_id, key) DO NOTHING RETURNING 1), "
      "rf AS (INSERT INTO refunds(id, payment_id, merchant_id, idempotency_key, amount_minor, currency, status, "
      "failure_code, created_ms, updated_ms) SELECT $8::text, $9::text, $10::text, $11::text, $12::bigint, "
      "$13::text, $14::text, $15::text, $16::bigint, $17::bigint FROM idem RETURNING 1), "
      "ob AS (INSERT INTO outbox(kind, payload, created_ms) SELECT 'event', $18::text, $19::bigint FROM rf "
      "RETURNING id) "
      "SELECT (SELECT count(*) FROM idem), (SELECT id FROM ob)",
      ps);
  if (!ins) {
    if (ins.error().kind == ErrorKind::conflict)
      return Error::conflict("refund_exists", "refund " + refund.id + " cannot be stored: " + ins.error().message);
    return ins.error();
  }
  if (ins->i64(0, 0) == 0) {  // the key was taken meanwhile (by a payment): replay its record
    auto existing = read_idempotency(c, given.merchant_id, given.key);
    if (!existing) return existing.error();
    if (!*existing) return Error::internal("idempotency record neither inserted nor found for key " + given.key);
    j.outcome.created = false;
    j.outcome.record = std::move(**existing);
    return {};
  }
  j.outcome.created = true;
  j.outcome.record = std::move(rec);
  j.outbox_id = ins->i64(0, 1);
  j.event = std::move(ev);
  return {};
}

// ---------- completions ----------

void PgStore::Impl::completion_loop() {
  for (;;) {
    std::deque<Completions::Item> items;
    {
      std::unique_lock lk(completions->mu);
      completions->cv.wait(lk, [&] { return completions->closed || !completions->items.empty(); });
      if (completions->items.empty()) break;  // closed and drained
      items.swap(completions->items);
    }
    std::vector<int64_t> ids;
    for (auto& it : items) {
      Completions::run(it.callbacks);
      ids.insert(ids.end(), it.delete_ids.begin(), it.delete_ids.end());
    }
    queue_deletes(ids);  // never on this thread: a blocked DELETE would delay later callbacks
  }
}

void PgStore::Impl::queue_deletes(const std::vector<int64_t>& ids) {
  if (ids.empty()) return;
  {
    std::lock_guard g(del_mu);
    if (del_ids.size() + ids.size() > kMaxPendingDeletes) {
      log::warn("outbox delete queue full; the relay will publish these rows again",
                {{"rows", std::to_string(ids.size())}});
      return;
    }
    del_ids.insert(del_ids.end(), ids.begin(), ids.end());
  }
  del_cv.notify_one();
}

void PgStore::Impl::deleter_loop() {
  for (;;) {
    std::vector<int64_t> ids;
    {
      std::unique_lock lk(del_mu);
      del_cv.wait(lk, [&] { return del_stop || !del_ids.empty(); });
      if (del_ids.empty()) break;  // stopping and drained
      ids.swap(del_ids);
    }
    delete_outbox(ids);
  }
}

void PgStore::Impl::delete_outbox(const std::vector<int64_t>& ids) {
  for (size_t i = 0; i < ids.size(); i += kDeleteChunk) {
    std::vector<int64_t> chunk(ids.begin() + long(i), ids.begin() + long(std::min(ids.size(), i + kDeleteChunk)));
    auto lease = pool.acquire();
    // SKIP LOCKED: a row a relay is claiming right now is left to that relay.
    Result<Res> r = lease ? (*lease)->exec("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox "
                                           "WHERE id = ANY($1::bigint[]) FOR UPDATE SKIP LOCKED)",
                                           Params(pg::int_array(chunk)))
                          : Result<Res>(lease.error());
    if (!r)  // harmless: the relay publishes them again and consumers deduplicate
      log::warn("cannot delete published outbox rows", {{"rows", std::to_string(chunk.size())},
                                                        {"error", r.error().message}});
  }
}

// ---------- relay ----------

void PgStore::Impl::relay_loop() {
  while (sleep_unless_stopped(std::chrono::milliseconds(opts.relay_interval_ms))) {
    auto r = pg_relay_once(*this);
    if (!r) log::warn("outbox relay round failed", {{"error", r.error().message}});
  }
}

Result<size_t> pg_relay_once(PgStore::Impl& impl) {
  auto t0 = std::chrono::steady_clock::now();
  auto comp = impl.completions;
  const int64_t now = impl.clock.now_ms();
  const int64_t cutoff = now - impl.opts.relay_after_ms;

  // Ids this process is publishing right now are skipped. At most kMaxRelayExclusions of
  // them (the oldest) are sent; rows from the next in-flight id on wait for a later round.
  std::vector<int64_t> skip;
  std::optional<int64_t> below;
  {
    std::lock_guard g(comp->mu);
    for (auto id : comp->publishing) {
      if (skip.size() == kMaxRelayExclusions) {
        below = id;
        break;
      }
      skip.push_back(id);
    }
  }
  // Claim: one short statement, no lock held while publishing. The new created_ms keeps
  // other relays off these rows for relay_after_ms.
  Result<Res> rows = Error::internal("unset");
  {
    auto lease = impl.pool.acquire();
    if (!lease) return lease.error();
    rows = (*lease)->exec(
        "UPDATE outbox SET created_ms = $1 WHERE id IN (SELECT id FROM outbox WHERE created_ms <= $2 "
        "AND id <> ALL($3::bigint[]) AND id < $4 ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) "
        "RETURNING id, kind, payload",
        Params(now, cutoff, pg::int_array(skip), below.value_or(std::numeric_limits<int64_t>::max()), kRelayBatch));
  }
  if (!rows) return rows.error();
  if (rows->rows() == 0) return size_t(0);

  struct Row {
    int64_t id;
    bool letter;
    std::string payload;
  };
  std::vector<Row> claimed;
  for (int i = 0; i < rows->rows(); ++i)
    claimed.push_back({rows->i64(i, 0), rows->text(i, 1) == "dead_letter", rows->text(i, 2)});
  std::sort(claimed.begin(), claimed.end(), [](const Row& x, const Row& y) { return x.id < y.id; });

  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    int pending = 0;
    std::vector<int64_t> ok_ids, failed_ids;
    std::vector<std::string> errors;
  };
  auto w = std::make_shared<Wait>();
  std::vector<Event> events;
  std::vector<int64_t> event_ids, undecodable;
  std::vector<std::pair<int64_t, DeadLetter>> letters;
  for (auto& row : claimed) {
    if (row.letter) {
      auto d = decode_dead_letter(row.payload);
      if (!d) {  // it will never decode: re-reading it every round would only stall the relay
        log::error("undecodable dead letter in the outbox; deleting it",
                   {{"outbox_id", std::to_string(row.id)}, {"error", d.error().message}});
        undecodable.push_back(row.id);
        continue;
      }
      letters.emplace_back(row.id, std::move(d.value()));
    } else {
      events.push_back(parse_event_envelope(row.payload));
      event_ids.push_back(row.id);
    }
  }
  auto done = [w, comp](std::vector<int64_t> ids) {
    return [w, comp, ids = std::move(ids)](Result<void> r) {
      comp->forget(ids);
      std::lock_guard g(w->mu);
      auto& to = r ? w->ok_ids : w->failed_ids;
      to.insert(to.end(), ids.begin(), ids.end());
      if (!r) w->errors.push_back(r.error().message);
      --w->pending;
      w->cv.notify_all();
    };
  };
  w->pending = int(letters.size()) + (events.empty() ? 0 : 1);
  {
    std::vector<int64_t> all = event_ids;
    for (auto& l : letters) all.push_back(l.first);
    comp->started(all, false);
  }
  if (!events.empty()) impl.publisher.publish(std::move(events), done(event_ids));
  for (auto& [id, letter] : letters) impl.publisher.publish_dead_letter(std::move(letter), done({id}));

  std::vector<int64_t> ok, failed;
  std::vector<std::string> errors;
  bool timed_out = false;
  {
    std::unique_lock lk(w->mu);
    timed_out = !w->cv.wait_for(lk, kPublishWait, [&] { return w->pending == 0; });
    ok = w->ok_ids;
    failed = w->failed_ids;
    errors = w->errors;
  }
  std::vector<int64_t> remove = ok;
  remove.insert(remove.end(), undecodable.begin(), undecodable.end());
  {
    auto lease = impl.pool.acquire();
    if (!lease) return lease.error();
    if (!remove.empty())
      PS_TRY((*lease)->exec("DELETE FROM outbox WHERE id = ANY($1::bigint[])", Params(pg::int_array(remove))));
    // A failed publish is not in flight any more: give the rows their age back (unless
    // someone claimed them meanwhile) so the next round takes them.
    if (!failed.empty())
      PS_TRY((*lease)->exec("UPDATE outbox SET created_ms = $1 WHERE id = ANY($2::bigint[]) AND created_ms = $3",
                            Params(cutoff, pg::int_array(failed), now)));
  }
  auto& m = StoreMetrics::get();
  m.tx_seconds.observe(since(t0));
  m.relayed.inc(double(ok.size()));
  m.undecodable.inc(double(undecodable.size()));
  if (!ok.empty()) log::info("outbox rows re-published", {{"rows", std::to_string(ok.size())}});
  if (timed_out)
    return Error::timeout("outbox relay: the event bus did not acknowledge within " +
                          std::to_string(kPublishWait.count()) + " s");
  if (!errors.empty())
    return Error::unavailable("publish_failed", "outbox relay: " + std::to_string(errors.size()) +
                                                    " publish(es) failed: " + errors.front());
  return ok.size();
}

// ---------- terminal listener ----------

void PgStore::Impl::listen_loop() {
  int backoff_ms = 100;
  for (;;) {
    {
      std::lock_guard g(stop_mu);
      if (stop_bg) return;
    }
    auto cr = Conn::connect(conn_options(opts));
    Result<void> lr = cr ? (*cr)->exec_script("LISTEN " + (*cr)->quote_ident(channel)) : Result<void>(cr.error());
    if (!lr) {
      set_listen_state(-1);
      log::warn("terminal listener cannot LISTEN; retrying", {{"error", lr.error().message},
                                                             {"retry_ms", std::to_string(backoff_ms)}});
      if (!sleep_unless_stopped(std::chrono::milliseconds(backoff_ms))) return;
      backoff_ms = std::min(backoff_ms * 2, 5000);
      continue;
    }
    backoff_ms = 100;
    set_listen_state(1);
    Conn& c = **cr;
    for (;;) {
      {
        std::lock_guard g(stop_mu);
        if (stop_bg) return;
      }
      pollfd p{c.socket(), POLLIN, 0};
      int n = ::poll(&p, 1, 250);  // bounded, so stop() is noticed
      if (n < 0 && errno != EINTR) break;
      if (n <= 0) continue;
      if (!PQconsumeInput(c.raw())) {
        log::warn("terminal listener lost its connection; reconnecting", {{"error", PQerrorMessage(c.raw())}});
        break;
      }
      std::vector<std::string> ids;
      while (PGnotify* nt = PQnotifies(c.raw())) {
        auto part = split_ids(nt->extra ? nt->extra : "");
        ids.insert(ids.end(), part.begin(), part.end());
        PQfreemem(nt);
      }
      if (!ids.empty()) {
        std::function<void(const std::vector<std::string>&)> fn;
        {
          std::lock_guard g(fn_mu);
          fn = terminal_fn;
        }
        if (fn) {
          try {
            fn(ids);
          } catch (const std::exception& e) {
            log::error("terminal listener threw", {{"error", e.what()}});
          }
        }
      }
      if (!c.healthy()) break;
    }
    set_listen_state(-1);
    if (!sleep_unless_stopped(std::chrono::milliseconds(backoff_ms))) return;
  }
}

// ---------- PgStore: lifecycle ----------

PgStore::PgStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PgStore::~PgStore() { impl_->stop(); }

Result<std::unique_ptr<PgStore>> PgStore::open(const PgOptions& opts, const Clock& clock, EventPublisher& publisher) {
  if (opts.url.empty()) return Error::invalid("config_invalid", "PostgreSQL url is empty", "url");
  StoreMetrics::get();
  auto impl = std::make_unique<Impl>(opts, clock, publisher);
  {
    auto lease = impl->pool.acquire();
    if (!lease) return lease.error();
    auto v = pg::stored_version(**lease);
    if (!v) return v.error();
    if (*v < pg::kSchemaVersion)
      return Error::internal("database schema version " + std::to_string(*v) + " is older than this binary's " +
                             std::to_string(pg::kSchemaVersion) + "; apply the migrations first");
  }
  if (auto p = impl->pool.prefill(); !p) return p.error();
  impl->start();
  return std::unique_ptr<PgStore>(new PgStore(std::move(impl)));
}

void PgStore::set_terminal_listener(std::function<void(const std::vector<std::string>&)> fn) {
  std::lock_guard g(impl_->fn_mu);
  impl_->terminal_fn = std::move(fn);
}

void PgStore::set_payment_change_listener(std::function<void(const std::vector<Payment>&)> fn) {
  std::lock_guard g(impl_->fn_mu);
  impl_->change_fn = std::move(fn);
}

Result<size_t> PgStore::relay_outbox_once() { return pg_relay_once(*impl_); }

// ---------- IntakeStore ----------

void PgStore::accept_payment(AcceptPayment cmd, AcceptCallback cb) {
  auto j = std::make_shared<IntakeJob>();
  j->kind = IntakeJob::Kind::payment;
  j->pay = std::move(cmd);
  j->accept_cb = std::move(cb);
  j->now = impl_->clock.now_ms();
  impl_->submit(std::move(j));
}

void PgStore::accept_refund(AcceptRefund cmd, AcceptCallback cb) {
  auto j = std::make_shared<IntakeJob>();
  j->kind = IntakeJob::Kind::refund;
  j->ref = std::move(cmd);
  j->accept_cb = std::move(cb);
  j->now = impl_->clock.now_ms();
  impl_->submit(std::move(j));
}

void PgStore::update_idempotent_response(const std::string& merchant_id, const std::string& key, int http_status,
                                         std::string body, std::function<void(Result<void>)> cb) {
  auto j = std::make_shared<IntakeJob>();
  j->kind = IntakeJob::Kind::update;
  j->merchant_id = merchant_id;
  j->key = key;
  j->http_status = http_status;
  j->body = std::move(body);
  j->update_cb = std::move(cb);
  j->now = impl_->clock.now_ms();
  impl_->submit(std::move(j));
}

#define PS_LEASE(var)                            \
  auto var##_lease = impl_->pool.acquire();      \
  if (!var##_lease) return var##_lease.error(); \
  Conn& var = **var##_lease

Result<std::optional<IdempotencyRecord>> PgStore::find_idempotency(const std::string& merchant_id,
                                                                   const std::string& key) {
  PS_LEASE(c);
  return read_idempotency(c, merchant_id, key);
}

// ---------- PaymentQueries ----------

Result<std::optional<Payment>> PgStore::get_payment(const std::string& merchant_id, const std::string& payment_id) {
  PS_LEASE(c);
  PS_EXEC(q, c, std::string("SELECT ") + kPaymentCols + " FROM payments WHERE id = $1 AND merchant_id = $2",
          Params(payment_id, merchant_id));
  if (q.rows() == 0) return std::optional<Payment>();
  return std::optional<Payment>(read_payment(q, 0));
}

Result<std::vector<Payment>> PgStore::list_payments(const std::string& merchant_id,
                                                    std::optional<PaymentStatus> status, const Page& page) {
  std::vector<Payment> out;
  PS_LEASE(c);
  std::optional<int64_t> cursor_ms;
  if (!page.starting_after.empty()) {
    PS_EXEC(q, c, "SELECT created_ms FROM payments WHERE id = $1 AND merchant_id = $2",
            Params(page.starting_after, merchant_id));
    if (q.rows() == 0)
      return Error::invalid("cursor_invalid", "starting_after is not a payment of yours", "starting_after");
    cursor_ms = q.i64(0, 0);
  }
  std::string sql = std::string("SELECT ") + kPaymentCols + " FROM payments WHERE merchant_id = $1";
  Params ps(merchant_id);
  if (status) {
    ps.add(to_string(*status));
    sql += " AND status = $" + std::to_string(ps.size());
  }
  if (cursor_ms) {
    ps.add(*cursor_ms).add(page.starting_after);
    std::string a = "$" + std::to_string(ps.size() - 1), b = "$" + std::to_string(ps.size());
    sql += " AND (created_ms < " + a + " OR (created_ms = " + a + " AND id < " + b + "))";
  }
  ps.add(int64_t(clamp_limit(page.limit)));
  sql += " ORDER BY created_ms DESC, id DESC LIMIT $" + std::to_string(ps.size());
  PS_EXEC(q, c, sql, ps);
  for (int i = 0; i < q.rows(); ++i) out.push_back(read_payment(q, i));
  return out;
}

Result<std::optional<Refund>> PgStore::get_refund(const std::string& merchant_id, const std::string& refund_id) {
  PS_LEASE(c);
  PS_EXEC(q, c, std::string("SELECT ") + kRefundCols + " FROM refunds WHERE id = $1 AND merchant_id = $2",
          Params(refund_id, merchant_id));
  if (q.rows() == 0) return std::optional<Refund>();
  return std::optional<Refund>(read_refund(q, 0));
}

Result<std::vector<Balance>> PgStore::balances(const std::string& merchant_id) {
  std::vector<Balance> out;
  PS_LEASE(c);
  PS_EXEC(q, c,
          "SELECT currency, -amount_minor FROM account_balances WHERE account = $1 ORDER BY currency",
          Params(merchant_available_account(merchant_id)));
  for (int i = 0; i < q.rows(); ++i) out.push_back(Balance{q.text(i, 0), q.i64(i, 1)});
  return out;
}

Result<std::vector<JournalEntry>> PgStore::entries_for_payment(const std::string& merchant_id,
                                                               const std::string& payment_id) {
  std::vector<JournalEntry> out;
  PS_LEASE(c);
  PS_EXEC(q, c,
          "SELECT e.id, e.kind, e.merchant_id, e.payment_id, COALESCE(e.refund_id, ''), e.created_ms, "
          "p.account, p.currency, p.amount_minor, p.seq IS NOT NULL "
          "FROM journal_entries e LEFT JOIN postings p ON p.entry_id = e.id "
          "WHERE e.payment_id = $1 AND e.merchant_id = $2 "
          "ORDER BY e.created_ms, CASE e.kind WHEN 'settlement' THEN 0 ELSE 1 END, e.id, p.seq",
          Params(payment_id, merchant_id));
  for (int i = 0; i < q.rows(); ++i) {
    if (out.empty() || out.back().id != q.text(i, 0)) {
      JournalEntry e;
      e.id = q.text(i, 0);
      e.kind = q.text(i, 1) == "refund" ? EntryKind::refund : EntryKind::settlement;
      e.merchant_id = q.text(i, 2);
      e.payment_id = q.text(i, 3);
      e.refund_id = q.text(i, 4);
      e.created_ms = q.i64(i, 5);
      out.push_back(std::move(e));
    }
    if (q.boolean(i, 9)) out.back().postings.push_back(Posting{q.text(i, 6), q.text(i, 7), q.i64(i, 8)});
  }
  return out;
}

// ---------- MerchantStore ----------

Result<void> PgStore::create_merchant(const Merchant& m) {
  auto r = impl_->transact<void>([&](Conn& c) -> Result<void> {
    PS_TRY(c.exec(
        "INSERT INTO merchants(id, name, api_key_hash, rate_limit_per_s, rate_limit_burst, created_ms) "
        "VALUES($1, $2, $3, $4, $5, $6)",
        Params(m.id, m.name, m.api_key_hash, m.rate_limit_per_s, m.rate_limit_burst, m.created_ms)));
    PS_TRY(c.exec("INSERT INTO api_keys(key_hash, merchant_id, created_ms) VALUES($1, $2, $3)",
                  Params(m.api_key_hash, m.id, m.created_ms)));
    return {};
  });
  if (!r && r.error().kind == ErrorKind::conflict)
    return Error::conflict("merchant_exists", "a merchant with this id or key already exists");
  return r;
}

Result<std::optional<Merchant>> PgStore::find_merchant_by_key_hash(const std::string& key_hash) {
  PS_LEASE(c);
  PS_EXEC(q, c, std::string("SELECT ") + kMerchantCols + kMerchantKeyFrom + " WHERE k.key_hash = $1",
          Params(key_hash));
  if (q.rows() == 0) return std::optional<Merchant>();
  return std::optional<Merchant>(read_merchant(q, 0));
}

Result<std::vector<Merchant>> PgStore::all_merchants() {
  std::vector<Merchant> out;
  PS_LEASE(c);
  PS_EXEC(q, c,
          std::string("SELECT ") + kMerchantCols + kMerchantKeyFrom + " ORDER BY m.created_ms, m.id, k.created_ms");
  for (int i = 0; i < q.rows(); ++i) out.push_back(read_merchant(q, i));
  return out;
}

Result<std::optional<std::vector<Merchant>>> PgStore::rotate_api_key(const std::string& merchant_id,
                                                                        const std::string& new_key_hash,
                                                                        int64_t now_ms, int64_t old_keys_expire_ms) {
  using Out = std::optional<std::vector<Merchant>>;
  auto r = impl_->transact<Out>([&](Conn& c) -> Result<Out> {
    // The merchant row is locked first: concurrent rotations of one merchant serialise.
    PS_EXEC(u, c, "UPDATE merchants SET api_key_hash = $1 WHERE id = $2", Params(new_key_hash, merchant_id));
    if (u.affected() == 0) return Out();
    PS_TRY(c.exec("DELETE FROM api_keys WHERE merchant_id = $1 AND expires_ms IS NOT NULL AND expires_ms <= $2",
                  Params(merchant_id, now_ms)));
    PS_TRY(c.exec("UPDATE api_keys SET expires_ms = $1 WHERE merchant_id = $2 AND (expires_ms IS NULL OR expires_ms > $1)",
                  Params(old_keys_expire_ms, merchant_id)));
    PS_EXEC(q, c, std::string("SELECT ") + kMerchantCols + kMerchantKeyFrom + " WHERE k.merchant_id = $1",
            Params(merchant_id));
    std::vector<Merchant> others;
    for (int i = 0; i < q.rows(); ++i) others.push_back(read_merchant(q, i));
    PS_TRY(c.exec("INSERT INTO api_keys(key_hash, merchant_id, created_ms) VALUES($1, $2, $3)",
                  Params(new_key_hash, merchant_id, now_ms)));
    return Out(std::move(others));
  });
  if (!r && r.error().kind == ErrorKind::conflict) return Error::conflict("api_key_exists", "this API key already exists");
  return r;
}

// ---------- EndpointStore ----------

Result<void> PgStore::create_endpoint(const WebhookEndpoint& e) {
  PS_LEASE(c);
  auto r = c.exec(
      "INSERT INTO webhook_endpoints(id, merchant_id, url, secret, enabled_events, created_ms) "
      "VALUES($1, $2, $3, $4, $5, $6)",
      Params(e.id, e.merchant_id, e.url, e.secret, strings_to_json(e.enabled_events), e.created_ms));
  if (!r && r.error().kind == ErrorKind::conflict)
    return Error::conflict("endpoint_exists", "a webhook endpoint with this id already exists");
  if (!r) return r.error();
  return {};
}

Result<std::vector<WebhookEndpoint>> PgStore::list_endpoints(const std::string& merchant_id) {
  std::vector<WebhookEndpoint> out;
  PS_LEASE(c);
  PS_EXEC(q, c,
          std::string("SELECT ") + kEndpointCols +
              " FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_ms IS NULL ORDER BY created_ms, id",
          Params(merchant_id));
  for (int i = 0; i < q.rows(); ++i) out.push_back(read_endpoint(q, i));
  return out;
}

Result<std::optional<WebhookEndpoint>> PgStore::get_endpoint(const std::string& merchant_id,
                                                             const std::string& endpoint_id) {
  PS_LEASE(c);
  PS_EXEC(q, c,
          std::string("SELECT ") + kEndpointCols +
              " FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 AND deleted_ms IS NULL",
          Params(endpoint_id, merchant_id));
  if (q.rows() == 0) return std::optional<WebhookEndpoint>();
  return std::optional<WebhookEndpoint>(read_endpoint(q, 0));
}

Result<bool> PgStore::delete_endpoint(const std::string& merchant_id, const std::string& endpoint_id) {
  const int64_t now = impl_->clock.now_ms();
  return impl_->transact<bool>([&](Conn& c) -> Result<bool> {
    PS_EXEC(q, c,
            "UPDATE webhook_endpoints SET deleted_ms = $1 WHERE id = $2 AND merchant_id = $3 AND deleted_ms IS NULL",
            Params(now, endpoint_id, merchant_id));
    if (q.affected() == 0) return false;
    PS_TRY(c.exec("UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint_deleted' "
                  "WHERE endpoint_id = $1 AND status = 'pending'",
                  Params(endpoint_id)));
    return true;
  });
}

Result<std::optional<WebhookEndpoint>> PgStore::update_endpoint(const std::string& merchant_id,
                                                                const std::string& endpoint_id,
                                                                const EndpointUpdate& u) {
  using Out = std::optional<WebhookEndpoint>;
  return impl_->transact<Out>([&](Conn& c) -> Result<Out> {
    PS_EXEC(q, c,
            std::string("SELECT ") + kEndpointCols +
                " FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 AND deleted_ms IS NULL FOR UPDATE",
            Params(endpoint_id, merchant_id));
    if (q.rows() == 0) return Out();
    const WebhookEndpoint cur = read_endpoint(q, 0);
    WebhookEndpoint e = apply_endpoint_update(cur, u);
    PS_TRY(c.exec("UPDATE webhook_endpoints SET url = $1, enabled_events = $2, disabled = $3, secret = $4, "
                  "previous_secret = $5, previous_secret_expires_ms = $6 WHERE id = $7",
                  Params(e.url, strings_to_json(e.enabled_events), e.disabled, e.secret, e.previous_secret,
                         e.previous_secret_expires_ms, endpoint_id)));
    if (e.disabled && !cur.disabled)
      PS_TRY(c.exec("UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint_disabled' "
                    "WHERE endpoint_id = $1 AND status = 'pending'",
                    Params(endpoint_id)));
    return Out(std::move(e));
  });
}

// ---------- EventQueries ----------

Result<std::vector<MerchantEvent>> PgStore::list_events(const std::string& merchant_id, const Page& page) {
  std::vector<MerchantEvent> out;
  PS_LEASE(c);
  std::optional<int64_t> cursor_ms;
  if (!page.starting_after.empty()) {
    PS_EXEC(q, c, "SELECT created_ms FROM merchant_events WHERE id = $1 AND merchant_id = $2",
            Params(page.starting_after, merchant_id));
    if (q.rows() == 0)
      return Error::invalid("cursor_invalid", "starting_after is not an event of yours", "starting_after");
    cursor_ms = q.i64(0, 0);
  }
  std::string sql = std::string("SELECT ") + kMerchantEventCols + " FROM merchant_events WHERE merchant_id = $1";
  Params ps(merchant_id);
  if (cursor_ms) {
    ps.add(*cursor_ms).add(page.starting_after);
    sql += " AND (created_ms < $2 OR (created_ms = $2 AND id < $3))";
  }
  ps.add(int64_t(clamp_limit(page.limit)));
  sql += " ORDER BY created_ms DESC, id DESC LIMIT $" + std::to_string(ps.size());
  PS_EXEC(q, c, sql, ps);
  for (int i = 0; i < q.rows(); ++i) out.push_back(read_merchant_event(q, i));
  return out;
}

Result<std::optional<MerchantEvent>> PgStore::get_event(const std::string& merchant_id, const std::string& event_id) {
  PS_LEASE(c);
  PS_EXEC(q, c,
          std::string("SELECT ") + kMerchantEventCols + " FROM merchant_events WHERE id = $1 AND merchant_id = $2",
          Params(event_id, merchant_id));
  if (q.rows() == 0) return std::optional<MerchantEvent>();
  return std::optional<MerchantEvent>(read_merchant_event(q, 0));
}

// ---------- DeliveryStore ----------

Result<std::vector<WebhookEndpoint>> PgStore::endpoints_for(const std::string& merchant_id) {
  return list_endpoints(merchant_id);
}

// Claims due rows (file comment). Rows this instance claimed before and still owns are
// returned again first-class; new claims fill up to `max`.
Result<std::vector<DueDelivery>> PgStore::due_deliveries(int64_t now_ms, size_t max) {
  static const std::string kCols =
      "d.id, d.event_id, d.endpoint_id, d.merchant_id, d.status, d.attempts, d.next_attempt_ms, "
      "d.last_http_status, d.last_error, "
      "e.id, e.merchant_id, e.url, e.secret, e.enabled_events, e.created_ms, e.previous_secret, "
      "e.previous_secret_expires_ms, e.disabled, "
      "m.id, m.merchant_id, m.type, m.data_json, m.created_ms ";
  static const std::string kJoins =
      "JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.deleted_ms IS NULL "
      "JOIN merchant_events m ON m.id = d.event_id ";
  std::vector<DueDelivery> out;
  max = std::min(max, kMaxListRows);
  if (max == 0) return out;
  auto& im = *impl_;
  std::map<std::string, Impl::Claim> own;  // due now, claimed by this instance earlier
  {
    std::lock_guard g(im.claim_mu);
    for (auto it = im.claims.begin(); it != im.claims.end();) {
      if (it->second.lease_ms <= now_ms) {  // expired: anyone may claim it again (us included)
        it = im.claims.erase(it);
        continue;
      }
      if (it->second.due_ms <= now_ms) own.emplace(it->first, it->second);
      ++it;
    }
  }
  PS_LEASE(c);
  if (!own.empty()) {
    std::vector<std::string> ids;
    for (const auto& [id, cl] : own) ids.push_back(id);
    PS_EXEC(q, c, "SELECT " + kCols + "FROM webhook_deliveries d " + kJoins +
                      "WHERE d.id = ANY($1::text[]) AND d.status = 'pending'",
            Params(pg::text_array(ids)));
    std::set<std::string> still;
    for (int i = 0; i < q.rows(); ++i) {
      DueDelivery dd{read_delivery(q, i, 0), read_endpoint(q, i, 9), read_merchant_event(q, i, 18)};
      const auto& cl = own.at(dd.delivery.id);
      if (dd.delivery.next_attempt_ms != cl.lease_ms) continue;  // rescheduled by someone else
      dd.delivery.next_attempt_ms = cl.due_ms;
      still.insert(dd.delivery.id);
      out.push_back(std::move(dd));
    }
    std::lock_guard g(im.claim_mu);
    for (const auto& [id, cl] : own)
      if (!still.count(id)) im.claims.erase(id);
  }
  if (out.size() < max) {
    const int64_t lease_ms = now_ms + kDeliveryLeaseMs;
    // The claim: lock due rows (SKIP LOCKED: another replica's claim is not waited for),
    // move them out of everyone's due window, return them with the old next_attempt_ms.
    PS_EXEC(q, c,
            "WITH due AS (SELECT d.id, d.next_attempt_ms FROM webhook_deliveries d " + kJoins +
                "WHERE d.status = 'pending' AND d.next_attempt_ms <= $1 "
                "ORDER BY d.next_attempt_ms, d.id LIMIT $2 FOR UPDATE OF d SKIP LOCKED), "
                "claimed AS (UPDATE webhook_deliveries w SET next_attempt_ms = $3 FROM due WHERE w.id = due.id "
                "RETURNING w.id, w.event_id, w.endpoint_id, w.merchant_id, w.status, w.attempts, "
                "due.next_attempt_ms, w.last_http_status, w.last_error) "
                "SELECT " + kCols + "FROM claimed d " + kJoins,
            Params(now_ms, int64_t(max - out.size()), lease_ms));
    std::lock_guard g(im.claim_mu);
    for (int i = 0; i < q.rows(); ++i) {
      DueDelivery dd{read_delivery(q, i, 0), read_endpoint(q, i, 9), read_merchant_event(q, i, 18)};
      im.claims[dd.delivery.id] = Impl::Claim{dd.delivery.next_attempt_ms, lease_ms};
      out.push_back(std::move(dd));
    }
  }
  std::sort(out.begin(), out.end(), [](const DueDelivery& x, const DueDelivery& y) {
    return std::tie(x.delivery.next_attempt_ms, x.delivery.id) < std::tie(y.delivery.next_attempt_ms, y.delivery.id);
  });
  if (out.size() > max) out.resize(max);  // own claims left out stay ours for the next call
  return out;
}

Result<void> PgStore::record_attempt(const WebhookDelivery& updated, std::optional<DeadLetter> dead_letter) {
  const int64_t now = impl_->clock.now_ms();
  int64_t outbox_id = 0;
  bool stale = false;
  auto r = impl_->transact<void>([&](Conn& c) -> Result<void> {
    // Only a pending row is updated (or a missing one inserted): a late attempt of another
    // replica never overwrites succeeded/failed, and a retried call adds nothing.
    PS_EXEC(q, c,
            "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
            "next_attempt_ms, last_http_status, last_error) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "ON CONFLICT (id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, "
            "next_attempt_ms = excluded.next_attempt_ms, last_http_status = excluded.last_http_status, "
            "last_error = excluded.last_error WHERE webhook_deliveries.status = 'pending' RETURNING 1",
            delivery_params(updated));
    stale = q.rows() == 0;
    if (dead_letter && !stale) {
      // One letter per time the delivery is given up on.
      PS_EXEC(d, c, "INSERT INTO outbox(kind, payload, created_ms) VALUES('dead_letter', $1, $2) RETURNING id",
              Params(encode_dead_letter(*dead_letter), now));
      outbox_id = d.i64(0, 0);
      PS_TRY(c.exec("UPDATE webhook_deliveries SET dead_letters = dead_letters + 1 WHERE id = $1", Params(updated.id)));
    }
    return {};
  });
  if (r) {
    std::lock_guard g(impl_->claim_mu);
    impl_->claims.erase(updated.id);
  } else {
    outbox_id = 0;
  }
  if (stale)
    log::info("webhook attempt not recorded: the delivery is no longer pending",
              {{"delivery_id", updated.id}, {"status", std::string(to_string(updated.status))}});
  if (!r || outbox_id == 0) return r;
  log::warn("dead letter stored", {{"delivery_id", updated.id},
                                   {"topic", dead_letter->original.topic},
                                   {"offset", std::to_string(dead_letter->original.offset)},
                                   {"error", dead_letter->error},
                                   {"payment_id", dead_letter->original.event.key}});
  // Publish now and wait (bounded), so the letter is on tx.dlq when this returns in the
  // normal case; if the bus is slow or down the relay publishes it later.
  auto comp = impl_->completions;
  auto done = std::make_shared<std::promise<bool>>();
  auto fut = done->get_future();
  comp->started({outbox_id}, true);
  impl_->publisher.publish_dead_letter(*dead_letter, [comp, done, outbox_id](Result<void> pr) {
    if (!pr) log::warn("publishing a dead letter failed; the outbox relay will retry", {{"error", pr.error().message}});
    comp->published({outbox_id}, {{}, pr ? std::vector<int64_t>{outbox_id} : std::vector<int64_t>{}});
    done->set_value(pr.ok());
  });
  if (fut.wait_for(kDeadLetterWait) != std::future_status::ready)
    log::warn("dead letter publish not acknowledged yet; the outbox relay will retry",
              {{"delivery_id", updated.id}});
  return {};
}

Result<bool> PgStore::redeliver(const std::string& merchant_id, const std::string& event_id, int64_t now_ms) {
  return impl_->transact<bool>([&](Conn& c) -> Result<bool> {
    std::string type;
    {
      PS_EXEC(q, c, "SELECT type FROM merchant_events WHERE id = $1 AND merchant_id = $2",
              Params(event_id, merchant_id));
      if (q.rows() == 0) return false;
      type = q.text(0, 0);
    }
    PS_EXEC(q, c,
            std::string("SELECT ") + kEndpointCols +
                " FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_ms IS NULL ORDER BY created_ms, id",
            Params(merchant_id));
    for (int i = 0; i < q.rows(); ++i) {
      WebhookEndpoint e = read_endpoint(q, i);
      if (!e.wants(type)) continue;
      PS_TRY(c.exec(
          "INSERT INTO webhook_deliveries(id, event_id, endpoint_id, merchant_id, status, attempts, "
          "next_attempt_ms, last_http_status, last_error) VALUES($1, $2, $3, $4, 'pending', 0, $5, 0, '') "
          "ON CONFLICT (id) DO UPDATE SET status = 'pending', attempts = 0, "
          "next_attempt_ms = excluded.next_attempt_ms, last_http_status = 0, last_error = ''",
          Params(deterministic_id("wd_", event_id, e.id), event_id, e.id, merchant_id, now_ms)));
    }
    return true;
  });
}

// ---------- PositionSink ----------

Result<void> PgStore::apply(const std::string& group, const std::vector<Record>& consumed, const Effects& effects) {
  // Validation first: nothing is sent for an outcome the embedded store would refuse.
  for (const auto& po : effects.payment_outcomes) PS_TRY(check_outcome(po));
  for (const auto& ro : effects.refund_outcomes) PS_TRY(check_outcome(ro));
  const int64_t now = impl_->clock.now_ms();
  std::map<TopicPartition, int64_t> next;
  for (const auto& r : consumed) {
    auto [it, fresh] = next.emplace(TopicPartition{r.topic, r.partition}, r.offset + 1);
    if (!fresh) it->second = std::max(it->second, r.offset + 1);
  }

  static const std::string kPaymentOutcome =
      std::string("WITH upd AS (UPDATE payments SET status = $2, failure_code = $3, updated_ms = $4 "
                  "WHERE id = $1 AND status = 'processing' RETURNING ") +
      kPaymentCols + "), " + entry_ctes("upd", 5) + "SELECT " + kPaymentCols + " FROM upd";
  static const std::string kRefundOutcome =
      std::string("WITH upd AS (UPDATE refunds SET status = $2, failure_code = $3, updated_ms = $4 "
                  "WHERE id = $1 AND status = 'processing' RETURNING payment_id, amount_minor), ") +
      entry_ctes("upd", 5) +
      ", pay AS (UPDATE payments p SET amount_refunded_minor = p.amount_refunded_minor + upd.amount_minor, "
      "updated_ms = $4 FROM upd WHERE p.id = upd.payment_id AND EXISTS (SELECT 1 FROM ent) RETURNING " +
      kPaymentColsP + ") SELECT * FROM pay";

  std::vector<Stmt> stmts;
  stmts.push_back({"BEGIN", {}});
  {
    // Lock order (file comment): every payment this transaction updates, locked first in
    // the order intake refunds lock them.
    std::vector<std::string> ids;
    for (const auto& po : effects.payment_outcomes) ids.push_back(po.payment.id);
    for (const auto& ro : effects.refund_outcomes) ids.push_back(ro.refund.payment_id);
    if (!ids.empty())
      stmts.push_back({"SELECT 1 FROM payments WHERE id = ANY($1::text[]) "
                       "ORDER BY merchant_id COLLATE \"C\", id FOR NO KEY UPDATE",
                       Params(pg::text_array(ids))});
    // Then the balance rows its entries post to, in one order (account, currency): each
    // entry's statement updates its rows (the trigger), and two applies touching
    // acquirer:clearing in EUR and USD in opposite orders would otherwise deadlock. Only
    // postings write balances; intake reads them. A row that does not exist yet is not
    // locked: its first two inserters are serialised by the primary key (rarely a
    // deadlock, run again as above).
    std::set<std::pair<std::string, std::string>> rows;
    for (const auto& po : effects.payment_outcomes)
      if (po.settlement)
        for (const auto& pp : po.settlement->postings) rows.emplace(pp.account, pp.currency);
    for (const auto& ro : effects.refund_outcomes)
      if (ro.reversal)
        for (const auto& pp : ro.reversal->postings) rows.emplace(pp.account, pp.currency);
    if (!rows.empty()) {
      std::vector<std::string> acc, cur;
      for (const auto& [a, cu] : rows) {
        acc.push_back(a);
        cur.push_back(cu);
      }
      stmts.push_back({"SELECT 1 FROM account_balances b JOIN unnest($1::text[], $2::text[]) AS t(a, c) "
                       "ON b.account = t.a AND b.currency = t.c ORDER BY b.account, b.currency FOR UPDATE OF b",
                       Params(pg::text_array(acc), pg::text_array(cur))});
    }
  }
  const size_t pay_first = stmts.size();
  for (const auto& po : effects.payment_outcomes) {
    const Payment& p = po.payment;
    Params ps(p.id, to_string(p.status), p.failure_code, p.updated_ms ? p.updated_ms : now);
    add_entry_params(ps, po.settlement);
    stmts.push_back({kPaymentOutcome, std::move(ps)});
  }
  const size_t ref_first = stmts.size();
  for (const auto& ro : effects.refund_outcomes) {
    const Refund& r = ro.refund;
    Params ps(r.id, to_string(r.status), r.failure_code, r.updated_ms ? r.updated_ms : now);
    add_entry_params(ps, ro.reversal);
    stmts.push_back({kRefundOutcome, std::move(ps)});
  }
  const size_t ref_end = stmts.size();
  for (const auto& me : effects.merchant_events)
    stmts.push_back({"INSERT INTO merchant_events(id, merchant_id, type, data_json, created_ms) "
                     "VALUES($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                     Params(me.id, me.merchant_id, me.type, me.data_json, me.created_ms)});
  for (const auto& d : effects.deliveries) stmts.push_back({kUpsertDeliveryIfFailed, delivery_params(d)});
  for (const auto& [tp, offset] : next)
    stmts.push_back({"INSERT INTO consumer_positions(group_id, topic, partition, next_offset) "
                     "VALUES($1, $2, $3, $4) ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
                     "next_offset = GREATEST(consumer_positions.next_offset, excluded.next_offset)",
                     Params(group, tp.first, int64_t(tp.second), offset)});

  PS_LEASE(c);
  // One attempt: the statements, then NOTIFY and COMMIT; the payments that changed.
  auto attempt = [&]() -> Result<std::vector<Payment>> {
    auto t0 = std::chrono::steady_clock::now();
    auto fail = [&](const Error& e) -> Result<std::vector<Payment>> {
      if (c.healthy() && !c.idle()) (void)c.exec_script("ROLLBACK");
      StoreMetrics::get().tx_seconds.observe(since(t0));
      return e;
    };
    auto pr = c.pipeline(stmts);
    if (pr.error) return fail(*pr.error);
    std::vector<Payment> changed;
    std::vector<std::string> terminal;
    for (size_t i = pay_first; i < ref_end; ++i) {
      const Res& q = pr.results[i];
      for (int row = 0; row < q.rows(); ++row) {
        changed.push_back(read_payment(q, row));
        if (i < ref_first) terminal.push_back(changed.back().id);
      }
    }
    // NOTIFY inside the transaction: delivered to listeners exactly when it commits.
    std::vector<Stmt> tail;
    for (auto& chunk : notify_chunks(terminal))
      tail.push_back({"SELECT pg_notify($1, $2)", Params(impl_->channel, chunk)});
    tail.push_back({"COMMIT", {}});
    auto pc = c.pipeline(tail);
    if (pc.error) return fail(*pc.error);
    StoreMetrics::get().tx_seconds.observe(since(t0));
    return changed;
  };
  for (int n = 1;; ++n) {
    auto r = attempt();
    if (r) {
      impl_->changed(*r);
      return {};
    }
    if (!pg::is_retryable_transaction_error(r.error()) || n >= kTxAttempts) return r.error();
    StoreMetrics::get().apply_retries.inc();
    log::warn("apply transaction rolled back by a deadlock or serialization failure; running it again",
              {{"group", group}, {"attempt", std::to_string(n)}, {"error", r.error().message}});
    retry_backoff(n);
  }
}

Result<std::map<TopicPartition, int64_t>> PgStore::positions(const std::string& group) {
  std::map<TopicPartition, int64_t> out;
  PS_LEASE(c);
  PS_EXEC(q, c, "SELECT topic, partition, next_offset FROM consumer_positions WHERE group_id = $1", Params(group));
  for (int i = 0; i < q.rows(); ++i) out[{q.text(i, 0), int32_t(q.i64(i, 1))}] = q.i64(i, 2);
  return out;
}

// ---------- dead-letter replay bookkeeping ----------

Result<bool> PgStore::mark_dead_letter_replayed(int64_t position, int64_t now_ms) {
  PS_LEASE(c);
  PS_EXEC(q, c, "INSERT INTO dlq_replays(position, replayed_ms) VALUES($1, $2) ON CONFLICT (position) DO NOTHING",
          Params(position, now_ms));
  return q.affected() > 0;
}

Result<void> PgStore::unmark_dead_letter_replayed(int64_t position) {
  PS_LEASE(c);
  PS_TRY(c.exec("DELETE FROM dlq_replays WHERE position = $1", Params(position)));
  return {};
}

Result<bool> PgStore::dead_letter_replayed(int64_t position) {
  PS_LEASE(c);
  PS_EXEC(q, c, "SELECT 1 FROM dlq_replays WHERE position = $1", Params(position));
  return q.rows() > 0;
}

Result<std::optional<std::string>> PgStore::merchant_of_event(const std::string& event_id) {
  PS_LEASE(c);
  PS_EXEC(q, c, "SELECT merchant_id FROM merchant_events WHERE id = $1", Params(event_id));
  if (q.rows() == 0) return std::optional<std::string>();
  return std::optional<std::string>(q.text(0, 0));
}

// ---------- reconciliation ----------

Result<PgStore::Totals> PgStore::totals() {
  PS_LEASE(c);
  PS_EXEC(q, c,
          "SELECT (SELECT count(*) FROM payments), "
          "(SELECT count(*) FROM payments WHERE status = 'processing'), "
          "(SELECT count(*) FROM payments WHERE status = 'succeeded'), "
          "(SELECT count(*) FROM payments WHERE status = 'failed'), "
          "(SELECT count(*) FROM journal_entries WHERE kind = 'settlement'), "
          "(SELECT count(DISTINCT entry_id) FROM (SELECT entry_id FROM postings GROUP BY entry_id, currency "
          "HAVING SUM(amount_minor) <> 0) u), "
          "(SELECT count(*) FROM outbox), "
          "(SELECT count(*) FROM (SELECT account, currency, SUM(amount_minor) s FROM postings GROUP BY 1, 2) p "
          "FULL JOIN account_balances b USING (account, currency) "
          "WHERE COALESCE(b.amount_minor, 0) <> COALESCE(p.s, 0))");
  Totals t;
  t.payments = q.i64(0, 0);
  t.processing = q.i64(0, 1);
  t.succeeded = q.i64(0, 2);
  t.failed = q.i64(0, 3);
  t.settlements = q.i64(0, 4);
  t.unbalanced_entries = q.i64(0, 5);
  t.outbox_pending = q.i64(0, 6);
  t.balance_drift = q.i64(0, 7);
  return t;
}

}  // namespace ps
