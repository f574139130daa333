#include "adapters/postgres/pg_core.hpp"

#include <algorithm>
#include <random>

namespace ps::pg {

namespace {

constexpr auto kShutdownPublishWait = std::chrono::seconds(10);
constexpr size_t kDeleteChunk = 5000;           // outbox ids per DELETE
constexpr size_t kMaxPendingDeletes = 1000000;  // acknowledged ids waiting for the deleter
constexpr auto kTxRetryBackoff = std::chrono::milliseconds(20);  // times the attempt, plus up to as much jitter

std::string channel_for(const std::string& schema) {
  std::string ch = schema.empty() ? "paystream_terminal" : "paystream_terminal_" + schema;
  if (ch.size() > 63) ch.resize(63);  // NAMEDATALEN - 1
  return ch;
}

}  // namespace

void retry_backoff(int attempt) {
  thread_local std::minstd_rand rng{std::random_device{}()};
  const auto base = kTxRetryBackoff * attempt;
  std::uniform_int_distribution<int64_t> jitter(0, base.count());
  std::this_thread::sleep_for(base + std::chrono::milliseconds(jitter(rng)));
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Core::Core(const PgOptions& o, const Clock& c, EventPublisher& p)
    : opts(o),
      clock(c),
      publisher(p),
      channel(channel_for(o.schema)),
      pool(pg::PoolOptions{conn_options(o), o.pool_size, o.pool_wait_timeout_ms}),
      completions(std::make_shared<Completions>()) {}

void Core::start(std::function<void()> writer_loop, std::function<void()> relay_loop,
                 std::function<void()> listen_loop) {
  writer = std::thread(std::move(writer_loop));
  completer = std::thread([this] { completion_loop(); });
  if (opts.publish_wait_ms > 0) publish_waiter = std::thread([this] { publish_wait_loop(); });
  deleter = std::thread([this] { deleter_loop(); });
  if (opts.relay_interval_ms > 0) relay = std::thread(std::move(relay_loop));
  if (opts.listen_terminal) {
    listener = std::thread(std::move(listen_loop));
    // Traffic may start right after open(): wait (bounded) for the first LISTEN attempt.
    std::unique_lock lk(stop_mu);
    stop_cv.wait_for(lk, std::chrono::milliseconds(opts.connect_timeout_ms + 2000),
                     [&] { return listen_state.load() != 0; });
    if (listen_state.load() != 1) log::warn("terminal listener not connected yet; it keeps retrying");
  }
}

void Core::stop() {
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

bool Core::sleep_unless_stopped(std::chrono::milliseconds d) {
  std::unique_lock lk(stop_mu);
  return !stop_cv.wait_for(lk, d, [&] { return stop_bg; });
}

void Core::changed(const std::vector<Payment>& ps) {
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

// ---------- publishing: bounded wait for the bus ----------

void Core::publish_then(std::vector<Event> events, std::vector<int64_t> ids,
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
void Core::publish_wait_loop() {
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

// ---------- completions ----------

void Core::completion_loop() {
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

void Core::queue_deletes(const std::vector<int64_t>& ids) {
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

void Core::deleter_loop() {
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

void Core::delete_outbox(const std::vector<int64_t>& ids) {
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

}  // namespace ps::pg
