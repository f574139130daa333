// PgStore against a real PostgreSQL (PAYSTREAM_POSTGRES_URL), each test in a fresh schema:
// migrations, database-level uniqueness, the pool's bounds, killed connections, the
// outbox relay, LISTEN/NOTIFY, group commit with a failing job, PositionSink idempotency
// and the refund checks under concurrency. The EventPublisher here is the recording test
// double from pg_test_util.hpp (a port; the Kafka publisher is tested with Kafka).
#include <gtest/gtest.h>

#include <future>
#include <set>
#include <thread>

#include "common/metrics.hpp"
#include "adapters/postgres/pg_schema.hpp"
#include "contract/store_harness.hpp"
#include "postgres/pg_test_util.hpp"

namespace ps {
namespace {

using contract::accept_payment_sync;
using contract::accept_refund_sync;
using contract::payment_cmd;
using contract::refund_cmd;
using contract::reversal_for;
using contract::succeed_payment;
using pg_test::eventually;

class PgStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url = pg_test::url();
    ASSERT_FALSE(url.empty());
    schema = pg_test::unique_schema();
    auto v = pg_migrate(url, schema);
    ASSERT_TRUE(v.ok()) << v.error().message;
    ASSERT_EQ(*v, pg_schema_version());
    sql = pg_test::raw(url, schema);
    mon = pg_test::raw(url, schema);
    ASSERT_TRUE(sql && mon);
  }
  void TearDown() override {
    store.reset();
    sql.reset();
    mon.reset();
    pg_test::drop_schema(url, schema);
  }
  PgOptions options() {
    PgOptions o;
    o.url = url;
    o.schema = schema;
    o.pool_size = 4;
    return o;
  }
  std::unique_ptr<PgStore> open(const PgOptions& o) {
    auto r = PgStore::open(o, clock, pub);
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
    return r ? std::move(r.value()) : nullptr;
  }
  int64_t scalar(const std::string& q, const pg::Params& ps = {}, pg::Conn* on = nullptr) {
    auto r = (on ? on : sql.get())->exec(q, ps);
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
    return r ? r->i64(0, 0) : -1;
  }
  // Backends of this test's store (found by application_name).
  int64_t backends(const std::string& app, const std::string& extra = "") {
    return scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1" + extra, pg::Params(app),
                  mon.get());
  }
  // Terminates the store's backends and waits until they are gone.
  void kill_backends(const std::string& app, const std::string& extra = "") {
    auto pids = mon->exec("WITH victims AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE application_name = $1" +
                              extra + ") SELECT string_agg(pid::text, ',') FROM victims WHERE pg_terminate_backend(pid)",
                          pg::Params(app));
    ASSERT_TRUE(pids.ok()) << pids.error().message;
    ASSERT_FALSE(pids->text(0, 0).empty()) << "no backend to kill";
    ASSERT_TRUE(eventually([&] {
      return scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(string_to_array($1, ',')::int[])",
                    pg::Params(pids->text(0, 0)), mon.get()) == 0;
    })) << "killed " << pids->text(0, 0) << "; still there: "
        << mon->exec("SELECT string_agg(pid || ' ' || state || ' ' || query, '; ') FROM pg_stat_activity "
                     "WHERE pid = ANY(string_to_array($1, ',')::int[])",
                     pg::Params(pids->text(0, 0)))
               ->text(0, 0);
  }
  PgStore::Totals totals() {
    auto t = store->totals();
    EXPECT_TRUE(t.ok()) << (t ? "" : t.error().message);
    return t ? *t : PgStore::Totals{};
  }
  Payment accepted_payment(const std::string& merchant, const std::string& key, int64_t amount) {
    auto cmd = payment_cmd(merchant, key, amount, clock.now_ms());
    Payment p = cmd.payment;
    auto r = accept_payment_sync(*store, std::move(cmd));
    EXPECT_TRUE(r.ok() && r->created) << (r ? "" : r.error().message);
    return p;
  }
  Payment settled(const std::string& merchant, const std::string& key, int64_t amount, int64_t fee = 0) {
    Payment p = accepted_payment(merchant, key, amount);
    auto r = store->apply("ledger", {}, succeed_payment(p, clock.now_ms(), fee));
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
    return p;
  }

  ManualClock clock;
  pg_test::RecordingPublisher pub;
  std::string url, schema;
  std::unique_ptr<pg::Conn> sql;
  // pg_stat_activity is read on its own connection: inside a transaction (as `sql` may be)
  // the view is a snapshot taken at its first read.
  std::unique_ptr<pg::Conn> mon;
  std::unique_ptr<PgStore> store;
};

// ---------- migrations ----------

TEST_F(PgStoreTest, MigrationsAreIdempotentAndSafeToRunConcurrently) {
  std::string fresh = pg_test::unique_schema();
  std::vector<std::thread> threads;
  std::vector<Result<int>> results(8, Error::internal("unset"));
  for (int i = 0; i < 8; ++i) threads.emplace_back([&, i] { results[i] = pg_migrate(url, fresh); });
  for (auto& t : threads) t.join();
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(*r, pg_schema_version());
  }
  auto again = pg_migrate(url, fresh);
  ASSERT_TRUE(again.ok());
  auto c = pg_test::raw(url, fresh);
  auto n = c->exec("SELECT count(*), max(version) FROM schema_migrations");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->i64(0, 0), pg_schema_version()) << "one row per version, whoever applied it";
  EXPECT_EQ(n->i64(0, 1), pg_schema_version());
  auto tables = c->exec(
      "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name IN ('merchants', "
      "'payments', 'refunds', 'idempotency', 'journal_entries', 'postings', 'webhook_endpoints', 'merchant_events', "
      "'webhook_deliveries', 'outbox', 'consumer_positions', 'dlq_replays', 'schema_migrations')",
      pg::Params(fresh));
  ASSERT_TRUE(tables.ok());
  EXPECT_EQ(tables->i64(0, 0), 13);
  pg_test::drop_schema(url, fresh);

  // A store refuses a database that was not migrated.
  PgOptions o = options();
  o.schema = pg_test::unique_schema();
  auto refused = PgStore::open(o, clock, pub);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("older"), std::string::npos) << refused.error().message;
}

// ---------- database-level uniqueness ----------

TEST_F(PgStoreTest, UniqueAndCheckConstraintsRejectDuplicatesInTheDatabase) {
  auto exec = [&](const std::string& q) { return sql->exec(q); };
  auto expect_code = [&](const std::string& q, const char* code) {
    auto r = exec(q);
    ASSERT_FALSE(r.ok()) << q;
    EXPECT_EQ(r.error().code, code) << r.error().message;
  };
  const std::string pay =
      "INSERT INTO payments(id, merchant_id, idempotency_key, amount_minor, currency, status, created_ms, updated_ms) "
      "VALUES";
  ASSERT_TRUE(exec(pay + "('pay_a', 'mer_1', 'k', 100, 'EUR', 'succeeded', 1, 1)").ok());
  expect_code(pay + "('pay_b', 'mer_1', 'k', 100, 'EUR', 'succeeded', 1, 1)", "unique_violation");
  expect_code(pay + "('pay_c', 'mer_1', 'k2', 100, 'EUR', 'bogus', 1, 1)", "check_violation");
  expect_code(pay + "('pay_d', 'mer_1', 'k3', 0, 'EUR', 'processing', 1, 1)", "check_violation");
  expect_code("UPDATE payments SET amount_refunded_minor = 101 WHERE id = 'pay_a'", "check_violation");

  const std::string je = "INSERT INTO journal_entries(id, kind, merchant_id, payment_id, refund_id, created_ms) VALUES";
  ASSERT_TRUE(exec(je + "('je_1', 'settlement', 'mer_1', 'pay_a', NULL, 1)").ok());
  expect_code(je + "('je_2', 'settlement', 'mer_1', 'pay_a', NULL, 1)", "unique_violation");  // 2nd settlement

  const std::string rf =
      "INSERT INTO refunds(id, payment_id, merchant_id, idempotency_key, amount_minor, currency, status, "
      "created_ms, updated_ms) VALUES";
  ASSERT_TRUE(exec(rf + "('re_1', 'pay_a', 'mer_1', 'rk', 10, 'EUR', 'processing', 1, 1)").ok());
  expect_code(rf + "('re_2', 'pay_a', 'mer_1', 'rk', 10, 'EUR', 'processing', 1, 1)", "unique_violation");
  expect_code(rf + "('re_3', 'pay_zzz', 'mer_1', 'rk3', 10, 'EUR', 'processing', 1, 1)", "foreign_key_violation");
  ASSERT_TRUE(exec(je + "('je_r1', 'refund', 'mer_1', 'pay_a', 're_1', 1)").ok());
  expect_code(je + "('je_r2', 'refund', 'mer_1', 'pay_a', 're_1', 1)", "unique_violation");  // 2nd reversal

  expect_code("INSERT INTO idempotency VALUES('mer_1', 'k', 'f', 202, '', 'pay_a', 1), ('mer_1', 'k', 'g', 202, '', "
              "'pay_a', 1)",
              "unique_violation");
  expect_code("INSERT INTO consumer_positions VALUES('g', 't', 0, 1), ('g', 't', 0, 2)", "unique_violation");

  store = open(options());
  Merchant m{"mer_1", "One", "hash-1", 0, 0, 1};
  ASSERT_TRUE(store->create_merchant(m).ok());
  m.id = "mer_2";
  auto dup = store->create_merchant(m);  // same key hash
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, "merchant_exists");
}

// ---------- pool ----------

TEST_F(PgStoreTest, PoolIsBoundedAndWaitingTimesOutWithARetryableError) {
  auto& in_use = metrics::registry().gauge("paystream_db_pool_in_use", "");
  auto& waits = metrics::registry().histogram("paystream_db_pool_wait_seconds", "");
  const double base = in_use.value();
  const uint64_t waited = waits.snapshot().count;
  pg::Pool pool(pg::PoolOptions{pg::ConnOptions{url, schema, 3000, 5000}, 2, 200});
  auto a = pool.acquire();
  auto b = pool.acquire();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(pool.open_connections(), 2u);
  EXPECT_EQ(in_use.value(), base + 2);
  auto t0 = std::chrono::steady_clock::now();
  auto c = pool.acquire();
  auto waited_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().kind, ErrorKind::unavailable);
  EXPECT_TRUE(c.error().retryable);
  EXPECT_EQ(c.error().code, "db_pool_exhausted");
  EXPECT_GE(waited_ms, 180);
  EXPECT_LT(waited_ms, 2000);
  EXPECT_EQ(waits.snapshot().count, waited + 3);

  // A waiter gets the connection released meanwhile.
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto gone = std::move(a.value());
  });
  auto d = pool.acquire();
  release.join();
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(pool.open_connections(), 2u);
  EXPECT_TRUE((*d)->exec("SELECT 1").ok());
}

TEST_F(PgStoreTest, StoreCallsFailFastWhenEveryConnectionIsBusy) {
  const std::string app = "pstapp_" + schema;
  PgOptions o = options();
  o.url = pg_test::with_app_name(url, app);
  o.pool_size = 1;
  o.pool_wait_timeout_ms = 300;
  store = open(o);
  ASSERT_TRUE(store);
  ASSERT_TRUE(sql->exec_script("BEGIN; LOCK TABLE merchants IN ACCESS EXCLUSIVE MODE").ok());
  auto blocked = std::async(std::launch::async, [&] { return store->all_merchants(); });
  ASSERT_TRUE(eventually([&] { return backends(app, " AND wait_event_type = 'Lock'") == 1; }));
  auto r = store->get_payment("mer_1", "pay_x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "db_pool_exhausted");
  EXPECT_TRUE(r.error().retryable);
  ASSERT_TRUE(sql->exec_script("COMMIT").ok());
  auto m = blocked.get();
  EXPECT_TRUE(m.ok()) << m.error().message;
  EXPECT_TRUE(store->get_payment("mer_1", "pay_x").ok());
}

// ---------- killed connections ----------

TEST_F(PgStoreTest, KilledConnectionIsARetryableErrorThenTheStoreRecovers) {
  const std::string app = "pstapp_" + schema;
  PgOptions o = options();
  o.url = pg_test::with_app_name(url, app);
  o.pool_size = 1;
  store = open(o);
  ASSERT_TRUE(store);

  // Idle connection killed: the next read fails retryably, the one after works.
  ASSERT_TRUE(store->get_payment("mer_1", "pay_x").ok());
  kill_backends(app);
  auto r = store->get_payment("mer_1", "pay_x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::unavailable) << r.error().message;
  EXPECT_TRUE(r.error().retryable);
  EXPECT_TRUE(store->get_payment("mer_1", "pay_x").ok());

  // The intake writer: same.
  kill_backends(app);
  auto cmd = payment_cmd("mer_1", "k1", 500, clock.now_ms());
  Payment p = cmd.payment;
  auto a = accept_payment_sync(*store, cmd);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().kind, ErrorKind::unavailable) << a.error().message;
  auto b = accept_payment_sync(*store, cmd);
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_TRUE(b->created);

  // Killed in the middle of a transaction (apply waits on a row lock): retryable, nothing
  // half-applied, and the retry applies it.
  ASSERT_TRUE(eventually([&] { return totals().outbox_pending == 0; }));  // the pool is idle again
  ASSERT_TRUE(sql->exec_script("BEGIN").ok());
  ASSERT_TRUE(sql->exec("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", pg::Params(p.id)).ok());
  auto applying = std::async(std::launch::async, [&] {
    return store->apply("ledger", {Record{"tx.validated", 0, 7, Event{}}}, succeed_payment(p, clock.now_ms()));
  });
  ASSERT_TRUE(eventually([&] { return backends(app, " AND wait_event_type = 'Lock'") == 1; }));
  kill_backends(app);
  auto killed = applying.get();
  ASSERT_FALSE(killed.ok());
  EXPECT_EQ(killed.error().kind, ErrorKind::unavailable) << killed.error().message;
  ASSERT_TRUE(sql->exec_script("ROLLBACK").ok());
  EXPECT_EQ(scalar("SELECT count(*) FROM consumer_positions"), 0);
  auto retried = store->apply("ledger", {Record{"tx.validated", 0, 7, Event{}}}, succeed_payment(p, clock.now_ms()));
  ASSERT_TRUE(retried.ok()) << retried.error().message;
  EXPECT_EQ(store->get_payment("mer_1", p.id)->value().status, PaymentStatus::succeeded);
  EXPECT_EQ(totals().settlements, 1);
  EXPECT_EQ(store->positions("ledger")->at({"tx.validated", 0}), 8);
}

// ---------- outbox and relay ----------

TEST_F(PgStoreTest, RelayRepublishesWhatAFailedPublishLeftInTheOutbox) {
  PgOptions o = options();
  o.relay_after_ms = 1000;
  store = open(o);
  ASSERT_TRUE(store);

  pub.fail = true;
  auto cmd = payment_cmd("mer_1", "k1", 500, clock.now_ms());
  Event initiated = cmd.initiated;
  auto r = accept_payment_sync(*store, cmd);
  ASSERT_TRUE(r.ok()) << r.error().message;  // committed: the caller is answered anyway
  EXPECT_TRUE(r->created);
  EXPECT_EQ(totals().outbox_pending, 1);

  auto young = store->relay_outbox_once();  // not older than relay_after_ms yet
  ASSERT_TRUE(young.ok());
  EXPECT_EQ(*young, 0u);
  clock.advance(std::chrono::milliseconds(2000));
  auto down = store->relay_outbox_once();  // the bus is still down: rows stay
  ASSERT_FALSE(down.ok());
  EXPECT_TRUE(down.error().retryable);
  EXPECT_EQ(totals().outbox_pending, 1);

  pub.fail = false;
  auto up = store->relay_outbox_once();
  ASSERT_TRUE(up.ok()) << up.error().message;
  EXPECT_EQ(*up, 1u);
  auto evs = pub.events();
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].id, initiated.id);
  EXPECT_EQ(evs[0].key, initiated.key);
  EXPECT_EQ(evs[0].type, "payment.initiated");
  EXPECT_EQ(evs[0].data, initiated.data);
  EXPECT_EQ(evs[0].traceparent, initiated.traceparent);
  EXPECT_EQ(totals().outbox_pending, 0);

  // A webhook dead letter goes through the outbox too.
  Effects fx;
  fx.merchant_events.push_back({"evt_1", "mer_1", "payment.succeeded", "{}", clock.now_ms()});
  ASSERT_TRUE(store->apply("notifier", {}, fx).ok());
  WebhookDelivery d;
  d.id = "wd_1";
  d.event_id = "evt_1";
  d.endpoint_id = "we_1";
  d.merchant_id = "mer_1";
  d.status = DeliveryStatus::failed;
  d.attempts = 3;
  DeadLetter dl;
  dl.original.topic = "tx.settled";
  dl.original.offset = 4;
  dl.original.event = initiated;
  dl.error = "webhook delivery failed: http_500";
  dl.attempts = 3;
  pub.fail = true;
  ASSERT_TRUE(store->record_attempt(d, dl).ok());
  ASSERT_TRUE(store->record_attempt(d, dl).ok());  // a retried call adds nothing
  EXPECT_EQ(totals().outbox_pending, 1);
  clock.advance(std::chrono::milliseconds(2000));
  pub.fail = false;
  ASSERT_EQ(store->relay_outbox_once().value(), 1u);
  auto letters = pub.letters();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].error, dl.error);
  EXPECT_EQ(letters[0].original.topic, "tx.settled");
  EXPECT_EQ(letters[0].original.offset, 4);
  EXPECT_EQ(letters[0].original.event.id, initiated.id);
  EXPECT_EQ(totals().outbox_pending, 0);

  // With the bus up, the row is deleted right after the publish.
  ASSERT_TRUE(accept_payment_sync(*store, payment_cmd("mer_1", "k2", 500, clock.now_ms())).ok());
  EXPECT_TRUE(eventually([&] { return totals().outbox_pending == 0; }));
}

TEST_F(PgStoreTest, RelayThreadPublishesInTheBackground) {
  PgOptions o = options();
  o.relay_interval_ms = 20;
  o.relay_after_ms = 0;
  store = open(o);
  ASSERT_TRUE(store);
  pub.fail = true;
  auto cmd = payment_cmd("mer_1", "k1", 500, clock.now_ms());
  ASSERT_TRUE(accept_payment_sync(*store, cmd).ok());
  pub.fail = false;
  EXPECT_TRUE(eventually([&] { return totals().outbox_pending == 0; }));
  EXPECT_TRUE(eventually([&] { return !pub.events().empty(); }));
  EXPECT_EQ(pub.events().at(0).id, cmd.initiated.id);
}

// A publisher that keeps every publish in flight until the test answers it.
class HoldingPublisher final : public EventPublisher {
 public:
  void publish(std::vector<Event> events, Callback cb) override {
    std::lock_guard g(mu_);
    published_ += int(events.size());
    held_.push_back(std::move(cb));
  }
  void publish_dead_letter(DeadLetter, Callback cb) override {
    std::lock_guard g(mu_);
    ++published_;
    held_.push_back(std::move(cb));
  }
  int published() {
    std::lock_guard g(mu_);
    return published_;
  }
  size_t held() {
    std::lock_guard g(mu_);
    return held_.size();
  }
  // Answers every held publish (ok or failed).
  void answer(bool ok) {
    std::vector<Callback> cbs;
    {
      std::lock_guard g(mu_);
      cbs.swap(held_);
    }
    for (auto& cb : cbs) ok ? cb({}) : cb(Error::unavailable("broker_down", "held publish failed"));
  }

 private:
  std::mutex mu_;
  std::vector<Callback> held_;
  int published_ = 0;
};

TEST_F(PgStoreTest, OutboxAgeStartsAtCommitAndTheRelaySkipsPublishesInFlight) {
  HoldingPublisher held;
  const std::string app = "pst_age_" + random_token("", 4);
  PgOptions o = options();
  o.url = pg_test::with_app_name(url, app);
  o.relay_after_ms = 5000;
  auto opened = PgStore::open(o, clock, held);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  store = std::move(opened.value());

  // The job is queued at t0 but cannot commit before we let it (outbox locked): its
  // outbox row must be stamped with the commit time, not t0.
  const int64_t t0 = clock.now_ms();
  auto locker = pg_test::raw(url, schema);
  ASSERT_TRUE(locker);
  ASSERT_TRUE(locker->exec_script("BEGIN; LOCK TABLE outbox IN EXCLUSIVE MODE").ok());
  std::promise<Result<AcceptOutcome>> answered;
  store->accept_payment(payment_cmd("mer_1", "k1", 500, t0),
                        [&](Result<AcceptOutcome> r) { answered.set_value(std::move(r)); });
  ASSERT_TRUE(eventually([&] { return backends(app, " AND wait_event_type = 'Lock'") == 1; }));
  clock.advance(std::chrono::milliseconds(7000));
  ASSERT_TRUE(locker->exec_script("COMMIT").ok());
  ASSERT_TRUE(eventually([&] { return held.held() == 1; })) << "the first publish is in flight";
  EXPECT_EQ(scalar("SELECT created_ms FROM outbox"), t0 + 7000);

  // In flight and older than relay_after_ms: this process's relay leaves it alone.
  clock.advance(std::chrono::milliseconds(6000));
  auto r = store->relay_outbox_once();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, 0u);
  EXPECT_EQ(held.published(), 1) << "no second publish while the first is in flight";

  // The first publish fails: the row is no longer in flight and the relay takes it.
  held.answer(false);
  ASSERT_EQ(answered.get_future().get().ok(), true);  // answered anyway: the data is committed
  std::promise<Result<size_t>> relayed;
  std::thread relay([&] { relayed.set_value(store->relay_outbox_once()); });
  ASSERT_TRUE(eventually([&] { return held.held() == 1; }));
  EXPECT_EQ(held.published(), 2);
  // While the relay waits for the bus it holds no row lock: the gateway's DELETE (here a
  // NOWAIT lock) is not blocked.
  auto nowait = sql->exec("SELECT id FROM outbox FOR UPDATE NOWAIT");
  EXPECT_TRUE(nowait.ok()) << nowait.error().message;
  EXPECT_EQ(nowait->rows(), 1);
  // Another round meanwhile (same process) does not publish it again either.
  clock.advance(std::chrono::milliseconds(6000));
  auto again = store->relay_outbox_once();
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, 0u);
  held.answer(true);
  relay.join();
  auto done = relayed.get_future().get();
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(*done, 1u);
  EXPECT_EQ(totals().outbox_pending, 0);
  EXPECT_EQ(held.published(), 2);
  store.reset();  // before `held` goes away
}

// A slow or restarting broker must not hold the intake's answers: after publish_wait_ms
// the caller is answered (the accept is committed with its outbox row), exactly once; the
// publish goes on, and its late acknowledgement still removes the outbox row.
TEST_F(PgStoreTest, AcceptIsAnsweredAfterThePublishWaitEvenIfTheBusHasNotAcknowledged) {
  HoldingPublisher held;
  PgOptions o = options();
  o.publish_wait_ms = 200;
  auto opened = PgStore::open(o, clock, held);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  store = std::move(opened.value());

  std::atomic<int> answers{0};
  std::promise<Result<AcceptOutcome>> answered;
  store->accept_payment(payment_cmd("mer_1", "k1", 500, clock.now_ms()), [&](Result<AcceptOutcome> r) {
    if (answers.fetch_add(1) == 0) answered.set_value(std::move(r));
  });
  auto f = answered.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "answered without the bus";
  auto r = f.get();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->created);
  EXPECT_EQ(held.held(), 1u) << "the publish is still in flight";
  EXPECT_EQ(totals().outbox_pending, 1) << "the row stays until the bus acknowledges";

  held.answer(true);  // the late acknowledgement
  ASSERT_TRUE(eventually([&] { return totals().outbox_pending == 0; })) << "the late ack deletes the row";
  EXPECT_EQ(answers.load(), 1) << "the caller is answered exactly once";
  store.reset();  // before `held` goes away
}

// With publish_wait_ms = 0 the answer waits for the bus, however long.
TEST_F(PgStoreTest, WithoutAPublishWaitTheAnswerWaitsForTheBus) {
  HoldingPublisher held;
  PgOptions o = options();
  o.publish_wait_ms = 0;
  auto opened = PgStore::open(o, clock, held);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  store = std::move(opened.value());
  std::promise<Result<AcceptOutcome>> answered;
  store->accept_payment(payment_cmd("mer_1", "k2", 500, clock.now_ms()),
                        [&](Result<AcceptOutcome> r) { answered.set_value(std::move(r)); });
  auto f = answered.get_future();
  ASSERT_TRUE(eventually([&] { return held.held() == 1; }));
  EXPECT_EQ(f.wait_for(std::chrono::milliseconds(500)), std::future_status::timeout);
  held.answer(true);
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(f.get().ok());
  store.reset();
}

TEST_F(PgStoreTest, UndecodableDeadLettersAreDeletedNotReadForever) {
  store = open(options());
  ASSERT_TRUE(store);
  auto& undecodable = metrics::registry().counter("paystream_db_outbox_undecodable_total", "");
  const double before = undecodable.value();
  ASSERT_TRUE(sql->exec_script("INSERT INTO outbox(kind, payload, created_ms) SELECT 'dead_letter', 'not json', 0 "
                               "FROM generate_series(1, 600)")
                  .ok());
  auto cmd = payment_cmd("mer_1", "k1", 500, clock.now_ms());
  ASSERT_TRUE(sql->exec("INSERT INTO outbox(kind, payload, created_ms) VALUES('event', $1, 0)",
                        pg::Params(event_envelope_json(cmd.initiated)))
                  .ok());
  // 500 rows per round: the first round deletes 500 bad rows, the second the rest and
  // publishes the event behind them.
  auto r1 = store->relay_outbox_once();
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  EXPECT_EQ(*r1, 0u);
  auto r2 = store->relay_outbox_once();
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  EXPECT_EQ(*r2, 1u);
  EXPECT_EQ(totals().outbox_pending, 0);
  EXPECT_EQ(undecodable.value() - before, 600);
  ASSERT_EQ(pub.events().size(), 1u);
  EXPECT_EQ(pub.events()[0].id, cmd.initiated.id);
}

// ---------- webhook deliveries: claims ----------

TEST_F(PgStoreTest, ConcurrentNotifiersNeverGetTheSameDeliveryAndStaleAttemptsAreIgnored) {
  store = open(options());
  ASSERT_TRUE(store);
  auto other = open(options());  // a second notifier replica
  ASSERT_TRUE(other);
  const int64_t now = clock.now_ms();
  ASSERT_TRUE(store->create_endpoint({"we_1", "mer_1", "http://127.0.0.1:9/we_1", "whsec_abc", {}, now}).ok());
  Effects fx;
  for (int i = 0; i < 300; ++i) {
    std::string ev = "evt_" + std::to_string(i);
    fx.merchant_events.push_back({ev, "mer_1", "payment.succeeded", "{}", now});
    WebhookDelivery d;
    d.id = deterministic_id("wd_", ev, "we_1");
    d.event_id = ev;
    d.endpoint_id = "we_1";
    d.merchant_id = "mer_1";
    d.next_attempt_ms = now - i;
    fx.deliveries.push_back(d);
  }
  ASSERT_TRUE(store->apply("notifier", {}, fx).ok());

  // Both replicas poll at once until nothing is due; every delivery goes to exactly one.
  std::vector<std::string> got[2];
  PgStore* replicas[2] = {store.get(), other.get()};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 100; ++round) {
        auto due = replicas[t]->due_deliveries(now, 7);
        ASSERT_TRUE(due.ok()) << due.error().message;
        for (auto& d : *due) {
          EXPECT_LE(d.delivery.next_attempt_ms, now) << "returned with its original due time";
          got[t].push_back(d.delivery.id);
        }
        // Record an attempt (rescheduled far ahead) so this replica's claims are done.
        for (auto d : *due) {
          d.delivery.attempts = 1;
          d.delivery.next_attempt_ms = now + 3'600'000;
          ASSERT_TRUE(replicas[t]->record_attempt(d.delivery, std::nullopt).ok());
        }
        if (due->empty()) break;
      }
    });
  for (auto& th : threads) th.join();
  std::set<std::string> all(got[0].begin(), got[0].end());
  EXPECT_EQ(all.size(), got[0].size()) << "one replica got a delivery twice";
  for (auto& id : got[1]) EXPECT_TRUE(all.insert(id).second) << id << " went to both replicas";
  EXPECT_EQ(all.size(), 300u);

  // A claimed delivery is not due for the other replica until the claim's lease ends.
  Effects one;
  WebhookDelivery d;
  d.id = "wd_lease";
  d.event_id = "evt_0";
  d.endpoint_id = "we_1";
  d.merchant_id = "mer_1";
  d.next_attempt_ms = now;
  one.deliveries.push_back(d);
  ASSERT_TRUE(store->apply("notifier", {}, one).ok());
  ASSERT_EQ(store->due_deliveries(now, 10)->size(), 1u);
  EXPECT_TRUE(other->due_deliveries(now + 59'999, 10)->empty());
  EXPECT_EQ(store->due_deliveries(now, 10)->size(), 1u) << "its own claim is still due for the claimer";

  // Lease over: the other replica claims it, delivers and records success; the first
  // replica's late failure (and dead letter) must not overwrite it.
  auto late = other->due_deliveries(now + 60'000, 10);
  ASSERT_TRUE(late.ok());
  ASSERT_EQ(late->size(), 1u);
  WebhookDelivery ok = (*late)[0].delivery;
  EXPECT_EQ(ok.next_attempt_ms, now + 60'000) << "its due time before this claim: the first claim's lease";
  ok.status = DeliveryStatus::succeeded;
  ok.attempts = 1;
  ok.last_http_status = 200;
  ASSERT_TRUE(other->record_attempt(ok, std::nullopt).ok());
  WebhookDelivery stale = d;
  stale.status = DeliveryStatus::pending;
  stale.attempts = 1;
  stale.next_attempt_ms = now + 5000;
  stale.last_error = "http_status_500";
  ASSERT_TRUE(store->record_attempt(stale, std::nullopt).ok());
  stale.status = DeliveryStatus::failed;
  DeadLetter dl;
  dl.original.topic = "tx.settled";
  dl.original.event.id = "evt_0";
  dl.error = "webhook delivery failed";
  ASSERT_TRUE(store->record_attempt(stale, dl).ok());
  auto row = sql->exec("SELECT status, attempts, last_http_status, dead_letters FROM webhook_deliveries WHERE id = $1",
                       pg::Params(d.id));
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->text(0, 0), "succeeded");
  EXPECT_EQ(row->i64(0, 2), 200);
  EXPECT_EQ(row->i64(0, 3), 0) << "no dead letter for a succeeded delivery";
  EXPECT_EQ(scalar("SELECT count(*) FROM outbox WHERE kind = 'dead_letter'"), 0);
  EXPECT_TRUE(pub.letters().empty());
  other.reset();
}

// ---------- LISTEN / NOTIFY ----------

TEST_F(PgStoreTest, TerminalNotificationsReachTheListenerAndSurviveAReconnect) {
  const std::string app = "pstapp_" + schema;
  PgOptions o = options();
  o.url = pg_test::with_app_name(url, app);
  o.listen_terminal = true;
  store = open(o);
  ASSERT_TRUE(store);
  std::mutex mu;
  std::set<std::string> heard;
  std::map<std::string, Payment> changed;
  store->set_terminal_listener([&](const std::vector<std::string>& ids) {
    std::lock_guard g(mu);
    heard.insert(ids.begin(), ids.end());
  });
  store->set_payment_change_listener([&](const std::vector<Payment>& ps) {
    std::lock_guard g(mu);
    for (const auto& p : ps) changed[p.id] = p;
  });
  auto count_heard = [&] {
    std::lock_guard g(mu);
    return heard.size();
  };

  // 300 ids (~9 KB) in one commit: more than one NOTIFY payload.
  std::vector<std::future<Result<AcceptOutcome>>> pending;
  std::vector<Payment> ps;
  for (int i = 0; i < 300; ++i) {
    auto cmd = payment_cmd("mer_1", "k" + std::to_string(i), 100 + i, clock.now_ms());
    ps.push_back(cmd.payment);
    auto pr = std::make_shared<std::promise<Result<AcceptOutcome>>>();
    pending.push_back(pr->get_future());
    store->accept_payment(std::move(cmd), [pr](Result<AcceptOutcome> r) { pr->set_value(std::move(r)); });
  }
  for (auto& f : pending) ASSERT_TRUE(f.get().ok());
  {
    std::lock_guard g(mu);
    EXPECT_EQ(changed.size(), 300u) << "accepted payments go to the change listener";
  }
  Effects fx;
  for (auto& p : ps) {
    auto one = succeed_payment(p, clock.now_ms());
    fx.payment_outcomes.push_back(one.payment_outcomes[0]);
  }
  ASSERT_TRUE(store->apply("ledger", {}, fx).ok());
  ASSERT_TRUE(eventually([&] { return count_heard() == 300; })) << count_heard();
  {
    std::lock_guard g(mu);
    for (auto& p : ps) EXPECT_EQ(changed.at(p.id).status, PaymentStatus::succeeded);
  }

  // Kill the listening backend: the listener reconnects and hears the next commit.
  auto listening = [&] { return backends(app, " AND query LIKE 'LISTEN%'"); };
  ASSERT_EQ(listening(), 1);
  kill_backends(app, " AND query LIKE 'LISTEN%'");
  ASSERT_TRUE(eventually([&] { return listening() == 1; }));
  Payment late = accepted_payment("mer_1", "late", 700);
  ASSERT_TRUE(store->apply("ledger", {}, succeed_payment(late, clock.now_ms())).ok());
  EXPECT_TRUE(eventually([&] {
    std::lock_guard g(mu);
    return heard.count(late.id) == 1;
  }));
}

// ---------- group commit ----------

TEST_F(PgStoreTest, GroupCommitIsolatesAFailingJobAndDeduplicatesWithinABatch) {
  store = open(options());
  ASSERT_TRUE(store);
  constexpr int kJobs = 40;
  auto& batches = metrics::registry().histogram("paystream_db_intake_batch_size", "");
  const uint64_t batches_before = batches.snapshot().count;
  std::vector<std::future<Result<AcceptOutcome>>> fs;
  for (int i = 0; i < kJobs; ++i) {
    std::string key = i == 30 ? "k10" : "k" + std::to_string(i);  // 30 repeats 10's key
    auto cmd = payment_cmd("mer_1", key, i == 20 ? 0 : 100, clock.now_ms());  // 20 violates a CHECK
    cmd.record.fingerprint = "fp-" + std::to_string(i);
    auto pr = std::make_shared<std::promise<Result<AcceptOutcome>>>();
    fs.push_back(pr->get_future());
    store->accept_payment(std::move(cmd), [pr](Result<AcceptOutcome> r) { pr->set_value(std::move(r)); });
  }
  std::vector<Result<AcceptOutcome>> rs;
  for (auto& f : fs) rs.push_back(f.get());
  for (int i = 0; i < kJobs; ++i) {
    if (i == 20) {
      ASSERT_FALSE(rs[i].ok());
      EXPECT_EQ(rs[i].error().code, "payment_exists") << rs[i].error().message;
      continue;
    }
    ASSERT_TRUE(rs[i].ok()) << i << ": " << rs[i].error().message;
    if (i != 10 && i != 30) {
      EXPECT_TRUE(rs[i]->created) << i;
    }
  }
  EXPECT_LT(batches.snapshot().count - batches_before, uint64_t(kJobs)) << "jobs shared transactions";
  EXPECT_NE(rs[10]->created, rs[30]->created);
  EXPECT_EQ(rs[10]->record.fingerprint, rs[30]->record.fingerprint) << "both see the first stored record";
  auto list = store->list_payments("mer_1", std::nullopt, Page{100, ""});
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), size_t(kJobs - 2));
  EXPECT_TRUE(eventually([&] { return totals().outbox_pending == 0; }));
  EXPECT_EQ(pub.events().size(), size_t(kJobs - 2));

  // Response updates ride the same batches.
  std::promise<Result<void>> upd, missing;
  store->update_idempotent_response("mer_1", "k1", 201, "{\"ok\":1}", [&](Result<void> r) { upd.set_value(r); });
  store->update_idempotent_response("mer_1", "nope", 201, "{}", [&](Result<void> r) { missing.set_value(r); });
  EXPECT_TRUE(upd.get_future().get().ok());
  auto m = missing.get_future().get();
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::not_found);
  auto rec = store->find_idempotency("mer_1", "k1");
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->http_status, 201);
  EXPECT_EQ((*rec)->response_body, "{\"ok\":1}");
}

// ---------- PositionSink ----------

TEST_F(PgStoreTest, ApplyIsIdempotentAndPositionsNeverMoveBackwards) {
  store = open(options());
  ASSERT_TRUE(store);
  std::mutex mu;
  std::vector<Payment> changed;
  store->set_payment_change_listener([&](const std::vector<Payment>& ps) {
    std::lock_guard g(mu);
    changed.insert(changed.end(), ps.begin(), ps.end());
  });
  Payment p = accepted_payment("mer_1", "k", 1000);
  std::vector<Record> batch{{"tx.validated", 0, 5, {}}, {"tx.validated", 1, 3, {}}, {"tx.validated", 0, 4, {}}};
  ASSERT_TRUE(store->apply("ledger", batch, succeed_payment(p, clock.now_ms(), 100)).ok());
  ASSERT_TRUE(store->apply("ledger", {{"tx.validated", 0, 2, {}}}, succeed_payment(p, clock.now_ms(), 100)).ok());
  auto pos = store->positions("ledger");
  ASSERT_TRUE(pos.ok());
  EXPECT_EQ(pos->size(), 2u);
  EXPECT_EQ(pos->at({"tx.validated", 0}), 6);
  EXPECT_EQ(pos->at({"tx.validated", 1}), 4);
  EXPECT_TRUE(store->positions("other")->empty());
  auto t = totals();
  EXPECT_EQ(t.settlements, 1);
  EXPECT_EQ(t.succeeded, 1);
  EXPECT_EQ(t.unbalanced_entries, 0);
  EXPECT_EQ(store->balances("mer_1")->at(0).available_minor, 900);
  auto entries = store->entries_for_payment("mer_1", p.id);
  ASSERT_EQ(entries->size(), 1u);
  ASSERT_EQ((*entries)[0].postings.size(), 3u);
  EXPECT_EQ((*entries)[0].postings[0].account, "acquirer:clearing");
  EXPECT_EQ((*entries)[0].postings[2].account, "platform:fees");

  // A failed outcome after success changes nothing.
  Payment failed = p;
  failed.status = PaymentStatus::failed;
  failed.failure_code = "card_declined";
  Effects fx;
  fx.payment_outcomes.push_back({failed, std::nullopt});
  ASSERT_TRUE(store->apply("ledger", {}, fx).ok());
  EXPECT_EQ(store->get_payment("mer_1", p.id)->value().status, PaymentStatus::succeeded);

  // Refund outcome twice: one reversal, amount_refunded once.
  auto rc = refund_cmd("mer_1", p.id, "r1", 300, clock.now_ms());
  Refund rf = rc.refund;
  rf.currency = "EUR";
  ASSERT_TRUE(accept_refund_sync(*store, std::move(rc)).ok());
  rf.status = RefundStatus::succeeded;
  for (int i = 0; i < 2; ++i) {
    Effects rfx;
    rfx.refund_outcomes.push_back({rf, reversal_for(rf)});
    ASSERT_TRUE(store->apply("ledger", {}, rfx).ok());
  }
  EXPECT_EQ(store->get_payment("mer_1", p.id)->value().amount_refunded_minor, 300);
  EXPECT_EQ(store->balances("mer_1")->at(0).available_minor, 600);
  EXPECT_EQ(scalar("SELECT count(*) FROM journal_entries WHERE kind = 'refund'"), 1);
  {
    std::lock_guard g(mu);
    ASSERT_FALSE(changed.empty());
    EXPECT_EQ(changed.back().amount_refunded_minor, 300) << "the refunded payment went to the change listener";
  }

  // An unbalanced entry is a bug upstream: the process stops before anything is written
  // (domain/ledger_rules.hpp assert_balanced), it is never retried.
  Payment q = accepted_payment("mer_1", "k2", 50);
  Effects bad = succeed_payment(q, clock.now_ms());
  bad.payment_outcomes[0].settlement->postings[0].amount_minor += 1;
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH((void)store->apply("ledger", {{"tx.validated", 0, 99, {}}}, bad), "does not balance");
  EXPECT_EQ(store->positions("ledger")->at({"tx.validated", 0}), 6);
  EXPECT_EQ(store->get_payment("mer_1", q.id)->value().status, PaymentStatus::processing);
}

// ---------- refunds under concurrency ----------

TEST_F(PgStoreTest, ConcurrentRefundsAcrossPaymentsNeverOverdrawTheMerchant) {
  store = open(options());
  ASSERT_TRUE(store);
  // Two captures of 1000, each credited 500 (fee 500): available 1000 in total, while
  // each payment alone could refund 1000. A refund of 150 gives back 75 of the fee
  // (domain refund_fee_share), so its net debit is 75, and refunds still processing count
  // in full (150) against the balance.
  Payment a = settled("mer_1", "a", 1000, 500);
  Payment b = settled("mer_1", "b", 1000, 500);
  ASSERT_EQ(store->balances("mer_1")->at(0).available_minor, 1000);
  constexpr int kThreads = 16;
  std::vector<Result<AcceptOutcome>> rs(kThreads, Error::internal("unset"));
  std::vector<std::thread> ts;
  std::atomic<bool> go{false};
  for (int i = 0; i < kThreads; ++i)
    ts.emplace_back([&, i] {
      auto cmd = refund_cmd("mer_1", i % 2 ? a.id : b.id, "r" + std::to_string(i), 150, clock.now_ms());
      while (!go) std::this_thread::yield();
      rs[i] = accept_refund_sync(*store, std::move(cmd));
    });
  go = true;
  for (auto& t : ts) t.join();
  int created = 0;
  for (auto& r : rs) {
    if (r.ok()) {
      ++created;
    } else {
      // Which limit refuses depends on the interleaving: the merchant's balance (1000) or,
      // once one payment has 900 refunded, that payment's refundable amount.
      EXPECT_TRUE(r.error().code == "insufficient_balance" || r.error().code == "amount_exceeds_refundable")
          << r.error().code << ": " << r.error().message;
    }
  }
  // The k-th is admitted while 1000 - 150 * (k - 1) >= 75: k <= 7 (and <= 1000 per payment).
  EXPECT_EQ(created, 7);
  // The payment with fewer refunds reserved (at most 3 x 150 of its 1000) for the checks
  // below (refund i went to `a` when i is odd).
  int on_a = 0;
  for (int i = 0; i < kThreads; ++i) on_a += (i % 2 && rs[i].ok()) ? 1 : 0;
  const std::string target = on_a <= created - on_a ? a.id : b.id;

  // Checks and codes as in the embedded store.
  Payment open_p = accepted_payment("mer_1", "open", 100);
  auto ns = accept_refund_sync(*store, refund_cmd("mer_1", open_p.id, "x1", 10, clock.now_ms()));
  ASSERT_FALSE(ns.ok());
  EXPECT_EQ(ns.error().code, "payment_not_succeeded");
  auto other = accept_refund_sync(*store, refund_cmd("mer_2", a.id, "x2", 10, clock.now_ms()));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().kind, ErrorKind::not_found);
  EXPECT_FALSE(store->find_idempotency("mer_2", "x2")->has_value());
  // A refund key already used by a payment replays the payment's record.
  auto reused = accept_refund_sync(*store, refund_cmd("mer_1", a.id, "open", 10, clock.now_ms()));
  ASSERT_TRUE(reused.ok()) << reused.error().message;
  EXPECT_FALSE(reused->created);
  EXPECT_EQ(reused->record.resource_id, open_p.id);
  // Another capture of 200 (no fee): 1200 - 1050 in flight leaves 150. Refund of all
  // that is refundable on `target` (>= 550, net >= 275) does not fit; 100 (net 50) does.
  (void)settled("mer_1", "c", 200, 0);
  auto all = accept_refund_sync(*store, refund_cmd("mer_1", target, "all", 0, clock.now_ms()));
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(all.error().code, "insufficient_balance");
  auto small = accept_refund_sync(*store, refund_cmd("mer_1", target, "small", 100, clock.now_ms()));
  ASSERT_TRUE(small.ok()) << small.error().message;
  EXPECT_EQ(small->record.response_body,
            "{\"id\":\"" + refund_id_for("mer_1", "small") + "\",\"amount\":100}");
  auto stored = store->get_refund("mer_1", refund_id_for("mer_1", "small"));
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->currency, "EUR");
}

// ---------- lock order and deadlock retries ----------

double retries(const char* transaction) {
  return metrics::registry().counter("paystream_db_tx_retries_total", "", {{"transaction", transaction}}).value();
}

// A ledger apply settling refunds of payments B then A and an intake batch refunding A then
// B lock the same payment rows. Forced into the interleaving that used to deadlock (apply
// holds B and waits behind a lock we hold, the batch holds A and waits for B, we let go:
// apply wants A), they now both complete without a deadlock, because apply locks its
// payments up front in the order intake refunds take them.
TEST_F(PgStoreTest, IntakeRefundsAndApplyLockPaymentsInOneOrder) {
  const std::string app = "pst_order_" + random_token("", 4);
  PgOptions o = options();
  o.url = pg_test::with_app_name(url, app);
  store = open(o);
  ASSERT_TRUE(store);
  Payment a = settled("mer_1", "pa", 1000);
  Payment b = settled("mer_1", "pb", 1000);
  if (b.id < a.id) std::swap(a, b);  // the lock order is by (merchant, id): a first
  auto pending_refund = [&](const Payment& p, const std::string& key) {
    auto cmd = refund_cmd("mer_1", p.id, key, 100, clock.now_ms());
    Refund r = cmd.refund;
    r.currency = "EUR";
    auto res = accept_refund_sync(*store, std::move(cmd));
    EXPECT_TRUE(res.ok() && res->created) << (res ? "" : res.error().message);
    r.status = RefundStatus::succeeded;
    return r;
  };
  Refund ra = pending_refund(a, "ra"), rb = pending_refund(b, "rb");
  const double intake_before = retries("intake"), apply_before = retries("apply");
  auto lock_waiters = [&] { return backends(app, " AND wait_event_type = 'Lock'"); };

  // 1. We hold ra's row: apply (outcomes in the order rb, ra) stops there.
  auto hold_refund = pg_test::raw(url, schema);
  auto hold_key = pg_test::raw(url, schema);
  ASSERT_TRUE(hold_refund && hold_key);
  ASSERT_TRUE(hold_refund->exec_script("BEGIN").ok());
  ASSERT_TRUE(hold_refund->exec("SELECT 1 FROM refunds WHERE id = $1 FOR UPDATE", pg::Params(ra.id)).ok());
  Effects fx;
  fx.refund_outcomes.push_back({rb, reversal_for(rb)});
  fx.refund_outcomes.push_back({ra, reversal_for(ra)});
  auto applied = std::async(std::launch::async, [&] { return store->apply("ledger", {}, fx); });
  ASSERT_TRUE(eventually([&] { return lock_waiters() == 1; })) << "apply waits for ra";

  // 2. Two refunds (a, then b) in ONE intake batch: the writer is kept busy first by a
  //    payment whose idempotency key we inserted and have not committed.
  ASSERT_TRUE(hold_key->exec_script("BEGIN").ok());
  ASSERT_TRUE(hold_key
                  ->exec("INSERT INTO idempotency(merchant_id, key, fingerprint, http_status, response_body, "
                         "resource_id, created_ms) VALUES('mer_1', 'blocker', 'x', 202, '', 'x', 0)")
                  .ok());
  std::promise<Result<AcceptOutcome>> blocker, refund_a, refund_b;
  store->accept_payment(payment_cmd("mer_1", "blocker", 100, clock.now_ms()),
                        [&](Result<AcceptOutcome> r) { blocker.set_value(std::move(r)); });
  ASSERT_TRUE(eventually([&] { return lock_waiters() == 2; })) << "the writer waits for our key";
  store->accept_refund(refund_cmd("mer_1", a.id, "ra2", 100, clock.now_ms()),
                       [&](Result<AcceptOutcome> r) { refund_a.set_value(std::move(r)); });
  store->accept_refund(refund_cmd("mer_1", b.id, "rb2", 100, clock.now_ms()),
                       [&](Result<AcceptOutcome> r) { refund_b.set_value(std::move(r)); });
  ASSERT_TRUE(hold_key->exec_script("ROLLBACK").ok());
  auto blocked = blocker.get_future().get();
  ASSERT_TRUE(blocked.ok()) << blocked.error().message;
  ASSERT_TRUE(eventually([&] { return lock_waiters() == 2; })) << "the refund batch waits for a payment";

  // 3. Let apply go on.
  ASSERT_TRUE(hold_refund->exec_script("COMMIT").ok());
  auto ar = applied.get();
  ASSERT_TRUE(ar.ok()) << ar.error().message;
  auto r1 = refund_a.get_future().get(), r2 = refund_b.get_future().get();
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  EXPECT_TRUE(r1->created && r2->created);
  EXPECT_EQ(retries("intake"), intake_before) << "no deadlock, so nothing ran twice";
  EXPECT_EQ(retries("apply"), apply_before) << "no deadlock, so nothing ran twice";
  EXPECT_EQ(store->get_payment("mer_1", a.id)->value().amount_refunded_minor, 100);
  EXPECT_EQ(store->get_payment("mer_1", b.id)->value().amount_refunded_minor, 100);
  EXPECT_EQ(totals().unbalanced_entries, 0);
}

// Deadlocks no lock order prevents (here with a connection of ours that locks rows in the
// opposite order): the store's transaction is the victim, is rolled back and runs again,
// and the caller sees success. Intake (a refund) and apply (two settlements) alike.
// Which side is the victim: PostgreSQL checks for a cycle once, deadlock_timeout (1 s)
// after a wait began, and the check that finds it aborts its own transaction. The store
// waits first, so its check finds the cycle if we close it within that second; on a
// machine too busy for that, ours finds it instead and the store's transaction simply
// goes on (nothing to retry). Such a round proves nothing, so it is run again (the test
// user may not change deadlock_timeout to widen the window).
TEST_F(PgStoreTest, DeadlockedTransactionsAreRunAgain) {
  const std::string app = "pst_deadlock_" + random_token("", 4);
  PgOptions o = options();
  o.url = pg_test::with_app_name(url, app);
  store = open(o);
  ASSERT_TRUE(store);
  // Waits for a row or key another transaction holds (wait_event 'transactionid'), not any
  // Lock: refunds first take a per-merchant advisory lock, which a test in another schema
  // running at the same time may hold for the same merchant id (advisory locks are
  // database-wide); a wait for it is not the wait this test sets up.
  auto lock_waiters = [&] {
    return backends(app, " AND wait_event_type = 'Lock' AND wait_event = 'transactionid'");
  };
  auto other = pg_test::raw(url, schema);
  ASSERT_TRUE(other);
  auto we_were_the_victim = [](const Result<pg::Res>& ours) {
    if (ours.ok()) return false;
    EXPECT_NE(ours.error().message.find("deadlock detected"), std::string::npos) << ours.error().message;
    return true;
  };
  constexpr int kRounds = 5;
  int settlements = 0;

  // Intake: the refund locks payment a, then waits for the idempotency key we inserted;
  // we then want payment a.
  bool intake_retried = false;
  for (int round = 0; round < kRounds && !intake_retried; ++round) {
    const std::string key = "rk" + std::to_string(round);
    Payment a = settled("mer_1", "pa" + std::to_string(round), 1000);
    ++settlements;
    const double intake_before = retries("intake");
    ASSERT_TRUE(other->exec_script("BEGIN").ok());
    ASSERT_TRUE(other
                    ->exec("INSERT INTO idempotency(merchant_id, key, fingerprint, http_status, response_body, "
                           "resource_id, created_ms) VALUES('mer_1', $1, 'x', 202, '', 'x', 0)",
                           pg::Params(key))
                    .ok());
    std::promise<Result<AcceptOutcome>> refund;
    store->accept_refund(refund_cmd("mer_1", a.id, key, 100, clock.now_ms()),
                         [&](Result<AcceptOutcome> r) { refund.set_value(std::move(r)); });
    ASSERT_TRUE(eventually([&] { return lock_waiters() == 1; })) << "the refund waits for our key";
    auto ours = other->exec("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", pg::Params(a.id));
    const bool lost = we_were_the_victim(ours);
    ASSERT_TRUE(other->exec_script("ROLLBACK").ok());
    auto r = refund.get_future().get();
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_TRUE(r->created);
    EXPECT_TRUE(store->get_refund("mer_1", refund_id_for("mer_1", key))->has_value());
    if (lost) continue;
    EXPECT_GE(retries("intake"), intake_before + 1);
    intake_retried = true;
  }
  EXPECT_TRUE(intake_retried) << "the store's intake transaction was never the victim in " << kRounds << " rounds";

  // Apply: it locks both payments (in order); we hold the second and then want the first.
  bool apply_retried = false;
  for (int round = 0; round < kRounds && !apply_retried; ++round) {
    const double apply_before = retries("apply");
    Payment c = accepted_payment("mer_1", "pc" + std::to_string(round), 100);
    Payment d = accepted_payment("mer_1", "pd" + std::to_string(round), 100);
    if (d.id < c.id) std::swap(c, d);
    Effects fx = succeed_payment(c, clock.now_ms());
    fx.payment_outcomes.push_back(succeed_payment(d, clock.now_ms()).payment_outcomes[0]);
    ASSERT_TRUE(other->exec_script("BEGIN").ok());
    ASSERT_TRUE(other->exec("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", pg::Params(d.id)).ok());
    auto applied = std::async(std::launch::async, [&] { return store->apply("ledger", {}, fx); });
    ASSERT_TRUE(eventually([&] { return lock_waiters() == 1; })) << "apply waits for d";
    auto ours = other->exec("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", pg::Params(c.id));
    const bool lost = we_were_the_victim(ours);
    ASSERT_TRUE(other->exec_script(lost ? "ROLLBACK" : "COMMIT").ok());
    auto ar = applied.get();
    ASSERT_TRUE(ar.ok()) << ar.error().message;
    settlements += 2;
    EXPECT_EQ(store->get_payment("mer_1", c.id)->value().status, PaymentStatus::succeeded);
    EXPECT_EQ(store->get_payment("mer_1", d.id)->value().status, PaymentStatus::succeeded);
    if (lost) continue;
    EXPECT_GE(retries("apply"), apply_before + 1);
    apply_retried = true;
  }
  EXPECT_TRUE(apply_retried) << "the store's apply transaction was never the victim in " << kRounds << " rounds";
  EXPECT_EQ(totals().settlements, settlements);
}

// ---------- maintained balances ----------

// SPEC §5: balances are maintained, never recomputed by summing postings. Settlements in
// two currencies, a fee, a repeated outcome, a refund's reversal: every row of
// account_balances equals the sum of its postings, and the merchant's balance and refund
// admission read it.
TEST_F(PgStoreTest, MaintainedBalancesEqualTheirPostings) {
  store = open(options());
  ASSERT_TRUE(store);
  Payment a = settled("mer_1", "ka", 1000, 30);
  settled("mer_1", "kb", 500, 0);
  auto usd_cmd = payment_cmd("mer_1", "kc", 700, clock.now_ms(), "USD");
  Payment c = usd_cmd.payment;
  ASSERT_TRUE(accept_payment_sync(*store, std::move(usd_cmd)).ok());
  Effects usd = succeed_payment(c, clock.now_ms(), 7);
  ASSERT_TRUE(store->apply("ledger", {}, usd).ok());
  ASSERT_TRUE(store->apply("ledger", {}, usd).ok()) << "a repeated outcome changes nothing";
  auto r = accept_refund_sync(*store, refund_cmd("mer_1", a.id, "rk", 400, clock.now_ms()));
  ASSERT_TRUE(r.ok() && r->created) << (r ? "" : r.error().message);
  Refund refund = store->get_refund("mer_1", refund_id_for("mer_1", "rk"))->value();
  refund.status = RefundStatus::succeeded;
  Effects rfx;
  rfx.refund_outcomes.push_back({refund, contract::reversal_for(refund)});
  ASSERT_TRUE(store->apply("ledger", {}, rfx).ok());

  EXPECT_EQ(totals().balance_drift, 0);
  EXPECT_EQ(totals().unbalanced_entries, 0);
  auto b = store->balances("mer_1");
  ASSERT_TRUE(b.ok()) << b.error().message;
  ASSERT_EQ(b->size(), 2u);
  EXPECT_EQ((*b)[0].currency, "EUR");
  EXPECT_EQ((*b)[0].available_minor, 970 + 500 - 400);
  EXPECT_EQ((*b)[1].currency, "USD");
  EXPECT_EQ((*b)[1].available_minor, 693);
  EXPECT_EQ(scalar("SELECT amount_minor FROM account_balances WHERE account = 'platform:fees' AND currency = 'EUR'"),
            -30);
  // Admission and GET /v1/balance read the maintained row, not the postings: with the row
  // lowered by hand (drift a summing store would not see), a refund the payment still
  // allows (200 of its 600 left) is refused for the balance.
  ASSERT_TRUE(sql->exec("UPDATE account_balances SET amount_minor = amount_minor + 1000 "
                        "WHERE account = 'merchant:mer_1:available' AND currency = 'EUR'").ok());
  EXPECT_EQ(store->balances("mer_1")->at(0).available_minor, 70);
  EXPECT_EQ(totals().balance_drift, 1);
  auto over = accept_refund_sync(*store, refund_cmd("mer_1", a.id, "rk2", 200, clock.now_ms()));
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, "insufficient_balance");
}

// Migration 4 backfills account_balances from the postings a version-3 database holds,
// and the database keeps the rows up to date from then on, whoever inserts postings.
TEST_F(PgStoreTest, MigrationFourBackfillsBalancesFromPostings) {
  const std::string old_schema = pg_test::unique_schema();
  auto v3 = pg::migrate_to(url, old_schema, {}, 3);
  ASSERT_TRUE(v3.ok()) << v3.error().message;
  EXPECT_EQ(*v3, 3);
  {
    auto c = pg_test::raw(url, old_schema);
    ASSERT_TRUE(c);
    EXPECT_FALSE(c->exec("SELECT 1 FROM account_balances").ok()) << "version 3 has no balances table";
    ASSERT_TRUE(c->exec_script(
                     "INSERT INTO journal_entries(id, kind, merchant_id, payment_id, refund_id, created_ms) VALUES "
                     "('je_1', 'settlement', 'mer_1', 'pay_1', NULL, 1), ('je_2', 'settlement', 'mer_1', 'pay_2', NULL, 1);"
                     "INSERT INTO postings(entry_id, seq, account, currency, amount_minor) VALUES "
                     "('je_1', 1, 'acquirer:clearing', 'EUR', 1000), ('je_1', 2, 'merchant:mer_1:available', 'EUR', -970), "
                     "('je_1', 3, 'platform:fees', 'EUR', -30), ('je_2', 1, 'acquirer:clearing', 'EUR', 500), "
                     "('je_2', 2, 'merchant:mer_1:available', 'EUR', -500)")
                    .ok());
  }
  auto v4 = pg_migrate(url, old_schema);
  ASSERT_TRUE(v4.ok()) << v4.error().message;
  EXPECT_EQ(*v4, 4);
  auto c = pg_test::raw(url, old_schema);
  ASSERT_TRUE(c);
  auto rows = c->exec("SELECT account, amount_minor FROM account_balances WHERE currency = 'EUR' ORDER BY account");
  ASSERT_TRUE(rows.ok()) << rows.error().message;
  ASSERT_EQ(rows->rows(), 3);
  EXPECT_EQ(rows->text(0, 0), "acquirer:clearing");
  EXPECT_EQ(rows->i64(0, 1), 1500);
  EXPECT_EQ(rows->text(1, 0), "merchant:mer_1:available");
  EXPECT_EQ(rows->i64(1, 1), -1470);
  EXPECT_EQ(rows->i64(2, 1), -30);
  // Postings written the way a schema-3 binary writes them (during a rolling upgrade) are
  // added to the rows too: the database maintains them, not the store's statements.
  ASSERT_TRUE(c->exec_script("INSERT INTO journal_entries(id, kind, merchant_id, payment_id, refund_id, created_ms) "
                             "VALUES ('je_3', 'settlement', 'mer_1', 'pay_3', NULL, 1);"
                             "INSERT INTO postings(entry_id, seq, account, currency, amount_minor) VALUES "
                             "('je_3', 1, 'acquirer:clearing', 'USD', 200), "
                             "('je_3', 2, 'merchant:mer_1:available', 'USD', -200)")
                  .ok());
  auto usd = c->exec("SELECT amount_minor FROM account_balances WHERE account = 'merchant:mer_1:available' "
                     "AND currency = 'USD'");
  ASSERT_TRUE(usd.ok() && usd->rows() == 1);
  EXPECT_EQ(usd->i64(0, 0), -200);
  c.reset();
  pg_test::drop_schema(url, old_schema);
}

// ---------- webhook dead-letter replay support ----------

TEST_F(PgStoreTest, MerchantOfEventAndRedeliveryOfAFailedDelivery) {
  store = open(options());
  ASSERT_TRUE(store);
  const int64_t now = clock.now_ms();
  ASSERT_TRUE(store->create_endpoint({"we_1", "mer_1", "http://127.0.0.1:9/we_1", "whsec_abc", {}, now}).ok());
  Effects fx;
  fx.merchant_events.push_back({"evt_1", "mer_1", "payment.succeeded", "{\"id\":\"pay_1\"}", now});
  WebhookDelivery d;
  d.id = deterministic_id("wd_", "evt_1", "we_1");
  d.event_id = "evt_1";
  d.endpoint_id = "we_1";
  d.merchant_id = "mer_1";
  d.status = DeliveryStatus::failed;
  d.attempts = 8;
  fx.deliveries.push_back(d);
  ASSERT_TRUE(store->apply("notifier", {}, fx).ok());
  auto m = store->merchant_of_event("evt_1");
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_TRUE(m->has_value());
  EXPECT_EQ(**m, "mer_1");
  EXPECT_FALSE(store->merchant_of_event("evt_nope")->has_value());
  EXPECT_TRUE(store->due_deliveries(now + 1'000'000, 10)->empty());
  // What replaying the delivery's dead letter does (app::replay_distributed_dead_letter).
  ASSERT_TRUE(store->redeliver(**m, "evt_1", now + 5).value());
  auto due = store->due_deliveries(now + 5, 10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 1u);
  EXPECT_EQ((*due)[0].delivery.id, d.id);
  EXPECT_EQ((*due)[0].delivery.attempts, 0);
}

// ---------- queries ----------

TEST_F(PgStoreTest, ListsAreNewestFirstWithCursors) {
  store = open(options());
  ASSERT_TRUE(store);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(accepted_payment("mer_1", "k" + std::to_string(i), 100).id);
    if (i % 2) clock.advance(std::chrono::milliseconds(1));  // some share a created_ms
  }
  accepted_payment("mer_2", "k0", 100);
  auto all = store->list_payments("mer_1", std::nullopt, Page{100, ""});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 5u);
  for (size_t i = 1; i < all->size(); ++i) {
    const auto& x = (*all)[i - 1];
    const auto& y = (*all)[i];
    EXPECT_TRUE(x.created_ms > y.created_ms || (x.created_ms == y.created_ms && x.id > y.id));
  }
  auto page1 = store->list_payments("mer_1", std::nullopt, Page{2, ""});
  auto page2 = store->list_payments("mer_1", std::nullopt, Page{2, page1->back().id});
  ASSERT_TRUE(page2.ok());
  ASSERT_EQ(page2->size(), 2u);
  EXPECT_EQ((*page2)[0].id, (*all)[2].id);
  auto bad = store->list_payments("mer_2", std::nullopt, Page{2, page1->back().id});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, "cursor_invalid");
  EXPECT_EQ(bad.error().param, "starting_after");
  EXPECT_EQ(store->list_payments("mer_1", PaymentStatus::succeeded, Page{10, ""})->size(), 0u);
  EXPECT_EQ(store->list_payments("mer_1", PaymentStatus::processing, Page{10, ""})->size(), 5u);
}

}  // namespace
}  // namespace ps
