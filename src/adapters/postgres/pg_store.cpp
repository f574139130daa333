// PgStore: see pg_store.hpp for the contract and its parts. This file has what is left
// once the ports are in their parts: the lifecycle (open, start, stop), the outbox relay,
// the terminal listener and reconciliation (totals). Where the design notes are:
// intake group commit, idempotency and refunds in pg_intake.cpp; publishing after commit
// (completions, deleter) in pg_core.hpp; claimed webhook deliveries in pg_deliveries.cpp;
// apply's pipeline in pg_sink.cpp. Notes that span the parts:
//
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
// * Terminal notifications use channel "paystream_terminal" (schema "" ) or
//   "paystream_terminal_<schema>" so stores in different schemas of one database (tests)
//   do not hear each other.
#include "adapters/postgres/pg_store.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <limits>
#include <mutex>

#include "adapters/postgres/pg_conn.hpp"
#include "adapters/postgres/pg_core.hpp"
#include "adapters/postgres/pg_rows.hpp"
#include "adapters/postgres/pg_schema.hpp"
#include "common/log.hpp"
#include "domain/store_codec.hpp"

namespace ps {
using namespace pg;

namespace {

constexpr int64_t kRelayBatch = 500;            // outbox rows per relay round
constexpr auto kPublishWait = std::chrono::seconds(30);   // the relay waits this long for the bus
constexpr size_t kMaxRelayExclusions = 4096;    // in-flight ids passed to one relay claim

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

// ---------- relay ----------

// One relay round (PgStore::relay_outbox_once and the relay thread).
Result<size_t> pg_relay_once(Core& impl);

void relay_loop(Core& impl) {
  while (impl.sleep_unless_stopped(std::chrono::milliseconds(impl.opts.relay_interval_ms))) {
    auto r = pg_relay_once(impl);
    if (!r) log::warn("outbox relay round failed", {{"error", r.error().message}});
  }
}

Result<size_t> pg_relay_once(Core& impl) {
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

void listen_loop(Core& impl) {
  int backoff_ms = 100;
  for (;;) {
    {
      std::lock_guard g(impl.stop_mu);
      if (impl.stop_bg) return;
    }
    auto cr = Conn::connect(Core::conn_options(impl.opts));
    Result<void> lr = cr ? (*cr)->exec_script("LISTEN " + (*cr)->quote_ident(impl.channel)) : Result<void>(cr.error());
    if (!lr) {
      impl.set_listen_state(-1);
      log::warn("terminal listener cannot LISTEN; retrying", {{"error", lr.error().message},
                                                             {"retry_ms", std::to_string(backoff_ms)}});
      if (!impl.sleep_unless_stopped(std::chrono::milliseconds(backoff_ms))) return;
      backoff_ms = std::min(backoff_ms * 2, 5000);
      continue;
    }
    backoff_ms = 100;
    impl.set_listen_state(1);
    Conn& c = **cr;
    for (;;) {
      {
        std::lock_guard g(impl.stop_mu);
        if (impl.stop_bg) return;
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
          std::lock_guard g(impl.fn_mu);
          fn = impl.terminal_fn;
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
    impl.set_listen_state(-1);
    if (!impl.sleep_unless_stopped(std::chrono::milliseconds(backoff_ms))) return;
  }
}

}  // namespace

// ---------- PgStore: lifecycle ----------

namespace detail {
PgCoreHolder::PgCoreHolder(std::unique_ptr<pg::Core> c) : core(std::move(c)) {}
PgCoreHolder::~PgCoreHolder() = default;
}  // namespace detail

PgStore::PgStore(std::unique_ptr<Core> c)
    : PgCoreHolder(std::move(c)), PgIntake(*core), PgQueries(*core), PgDeliveries(*core), PgSink(*core) {}

PgStore::~PgStore() { core->stop(); }

Result<std::unique_ptr<PgStore>> PgStore::open(const PgOptions& opts, const Clock& clock, EventPublisher& publisher) {
  if (opts.url.empty()) return Error::invalid("config_invalid", "PostgreSQL url is empty", "url");
  StoreMetrics::get();
  auto impl = std::make_unique<Core>(opts, clock, publisher);
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
  std::unique_ptr<PgStore> store(new PgStore(std::move(impl)));
  store->start();
  return store;
}

void PgStore::set_terminal_listener(std::function<void(const std::vector<std::string>&)> fn) {
  std::lock_guard g(core->fn_mu);
  core->terminal_fn = std::move(fn);
}

void PgStore::set_payment_change_listener(std::function<void(const std::vector<Payment>&)> fn) {
  std::lock_guard g(core->fn_mu);
  core->change_fn = std::move(fn);
}

Result<size_t> PgStore::relay_outbox_once() { return pg_relay_once(*core); }

void PgStore::start() {
  Core* c = core.get();
  c->start([this] { writer_loop(); }, [c] { relay_loop(*c); }, [c] { listen_loop(*c); });
}

// ---------- reconciliation ----------

Result<PgStore::Totals> PgStore::totals() {
  PS_LEASE_FROM(*core, c);
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
