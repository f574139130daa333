// SqliteStore specifics beyond the port contracts: schema as other tools read it,
// idempotent migrations, group commit, overload, terminal listener, thread rules.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <set>
#include <thread>

#include "adapters/sqlite/schema.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "common/metrics.hpp"
#include "contract/store_harness.hpp"

namespace ps::contract {
namespace {

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ps_sqlite_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir = tmpl;
    path = (dir / "db.sqlite").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::unique_ptr<SqliteStore> open(SqliteOptions o = {}) {
    o.path = path;
    auto r = SqliteStore::open(o, clock);
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
    return r ? std::move(r.value()) : nullptr;
  }
  // Runs `sql` on an independent connection, returning the first column of each row.
  std::vector<std::string> sql(const std::string& q) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    std::vector<std::string> out;
    EXPECT_EQ(sqlite3_prepare_v2(db, q.c_str(), -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    while (st && sqlite3_step(st) == SQLITE_ROW) {
      auto* t = sqlite3_column_text(st, 0);
      out.emplace_back(t ? reinterpret_cast<const char*>(t) : "NULL");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  }
  std::filesystem::path dir;
  std::string path;
  ManualClock clock;
};

TEST_F(SqliteStoreTest, SchemaHasTheTablesAndColumnsOthersRead) {
  { auto s = open(); }
  auto tables = sql("SELECT name FROM sqlite_master WHERE type='table'");
  std::set<std::string> t(tables.begin(), tables.end());
  for (const char* name : {"events", "consumer_positions", "merchants", "payments", "refunds", "idempotency",
                           "journal_entries", "postings", "merchant_events", "webhook_endpoints",
                           "webhook_deliveries", "dead_letter_replays", "log_projection"})
    EXPECT_TRUE(t.count(name)) << name;
  auto cols = sql("SELECT name FROM pragma_table_info('events')");
  std::set<std::string> c(cols.begin(), cols.end());
  for (const char* name : {"offset", "topic", "partition", "key", "id", "type", "source", "time_ms", "traceparent", "data"})
    EXPECT_TRUE(c.count(name)) << name;
  EXPECT_EQ(sql("PRAGMA user_version"), std::vector<std::string>{std::to_string(sqlite::kSchemaVersion)});
  EXPECT_EQ(sql("PRAGMA journal_mode"), std::vector<std::string>{"wal"});
}

TEST_F(SqliteStoreTest, ReopenIsANoOpMigrationAndKeepsData) {
  {
    auto s = open();
    ASSERT_TRUE(accept_payment_sync(*s, payment_cmd("mer_1", "k", 10, 1)).ok());
  }
  {
    auto s = open();
    EXPECT_EQ(s->list_payments("mer_1", std::nullopt, Page{10, ""})->size(), 1u);
    EXPECT_EQ(*s->count_events("tx.initiated"), 1);
  }
  EXPECT_EQ(sql("PRAGMA user_version"), std::vector<std::string>{std::to_string(sqlite::kSchemaVersion)});
  EXPECT_EQ(sql("SELECT status FROM payments"), std::vector<std::string>{"processing"});
  EXPECT_EQ(sql("SELECT topic || ':' || partition FROM events"), std::vector<std::string>{"tx.initiated:0"});
}

// Balances are maintained (schema v2), never summed: after captures, succeeded and failed
// refunds, every account's row equals the sum of its postings, and the reservations equal
// the refunds still processing.
class MaintainedBalances : public SqliteStoreTest {
 protected:
  void run_history(SqliteStore& s) {
    Payment a = accepted("a", 1000, s), b = accepted("b", 500, s);
    ASSERT_TRUE(s.commit("ledger", {}, succeed_payment(a, 2, 30)).ok());
    ASSERT_TRUE(s.commit("ledger", {}, succeed_payment(b, 3)).ok());
    refund_ok = refund(s, a.id, "r1", 200);
    refund_failed = refund(s, a.id, "r2", 100);
    refund_open = refund(s, b.id, "r3", 50);
    Effects fx;
    Refund ok = refund_ok;
    ok.status = RefundStatus::succeeded;
    ok.updated_ms = 5;
    fx.refund_outcomes.push_back({ok, reversal_for(ok)});
    Refund no = refund_failed;
    no.status = RefundStatus::failed;
    no.failure_code = "refund_declined";
    fx.refund_outcomes.push_back({no, std::nullopt});
    ASSERT_TRUE(s.commit("ledger", {}, fx).ok());
  }
  Payment accepted(const std::string& key, int64_t amount, SqliteStore& s) {
    auto cmd = payment_cmd("mer_1", key, amount, 1);
    Payment p = cmd.payment;
    EXPECT_TRUE(accept_payment_sync(s, std::move(cmd)).ok());
    return p;
  }
  Refund refund(SqliteStore& s, const std::string& payment_id, const std::string& key, int64_t amount) {
    auto cmd = refund_cmd("mer_1", payment_id, key, amount, 4);
    Refund r = cmd.refund;
    auto out = accept_refund_sync(s, std::move(cmd));
    EXPECT_TRUE(out.ok() && out->created) << (out ? "" : out.error().message);
    r.currency = "EUR";
    return r;
  }
  void expect_consistent() {
    EXPECT_EQ(sql("SELECT count(*) FROM (SELECT account, currency, SUM(amount_minor) s FROM postings "
                  "GROUP BY account, currency) p LEFT JOIN account_balances b USING (account, currency) "
                  "WHERE b.amount_minor IS NOT p.s"),
              std::vector<std::string>{"0"});
    EXPECT_EQ(sql("SELECT count(*) FROM account_balances"),
              sql("SELECT count(*) FROM (SELECT DISTINCT account, currency FROM postings)"));
    EXPECT_EQ(sql("SELECT group_concat(id || '=' || amount_refunding_minor) FROM payments ORDER BY id"),
              sql("SELECT group_concat(p.id || '=' || (SELECT COALESCE(SUM(r.amount_minor), 0) FROM refunds r "
                  "WHERE r.payment_id = p.id AND r.status = 'processing')) FROM payments p ORDER BY p.id"));
    EXPECT_EQ(sql("SELECT COALESCE(SUM(amount_minor), 0) FROM refund_reservations"),
              sql("SELECT COALESCE(SUM(amount_minor), 0) FROM refunds WHERE status = 'processing'"));
  }
  Refund refund_ok, refund_failed, refund_open;
};

TEST_F(MaintainedBalances, RowsEqualTheSumOfPostingsAndOpenRefunds) {
  auto s = open();
  run_history(*s);
  expect_consistent();
  // merchant: 970 + 500 credited, 200 refunded back.
  auto bal = s->balances("mer_1");
  ASSERT_TRUE(bal && bal->size() == 1u);
  EXPECT_EQ((*bal)[0].available_minor, 970 + 500 - 200);
  EXPECT_EQ(sql("SELECT amount_minor FROM refund_reservations"), std::vector<std::string>{"50"});
  // Admission reads the maintained rows: 1270 available, 50 reserved.
  auto too_much = accept_refund_sync(*s, refund_cmd("mer_1", refund_open.payment_id, "r4", 451, 6));
  ASSERT_FALSE(too_much);
  EXPECT_EQ(too_much.error().code, "amount_exceeds_refundable");   // 500 - 50 processing
}

TEST_F(MaintainedBalances, MigrationFromVersion1BackfillsFromPostingsAndRefunds) {
  {
    auto s = open();
    run_history(*s);
  }
  {
    // Make the file a version-1 database again: without the maintained rows.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "DROP TABLE account_balances; DROP TABLE refund_reservations; DROP TABLE log_projection; DROP TABLE dead_letter_replay_requests; "
                           "DROP TABLE api_keys; ALTER TABLE webhook_endpoints DROP COLUMN previous_secret; "
                           "ALTER TABLE webhook_endpoints DROP COLUMN previous_secret_expires_ms; "
                           "ALTER TABLE webhook_endpoints DROP COLUMN disabled; "
                           "ALTER TABLE payments DROP COLUMN amount_refunding_minor; PRAGMA user_version = 1;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  auto s = open();
  EXPECT_EQ(sql("PRAGMA user_version"), std::vector<std::string>{std::to_string(sqlite::kSchemaVersion)});
  expect_consistent();
  EXPECT_EQ(s->balances("mer_1")->at(0).available_minor, 970 + 500 - 200);
  EXPECT_EQ(sql("SELECT amount_refunding_minor FROM payments WHERE id = '" + refund_open.payment_id + "'"),
            std::vector<std::string>{"50"});
}

TEST_F(SqliteStoreTest, ConcurrentWritesAreGroupCommitted) {
  auto s = open();
  auto& commits = metrics::registry().counter("paystream_store_commits_total", "");
  double before = commits.value();
  constexpr int kN = 300;
  std::atomic<int> ok{0};
  std::promise<void> all_done;
  std::atomic<int> remaining{kN};
  for (int i = 0; i < kN; ++i) {
    s->accept_payment(payment_cmd("mer_1", "k" + std::to_string(i), 10, 1), [&](Result<AcceptOutcome> r) {
      if (r && r->created) ++ok;
      if (--remaining == 0) all_done.set_value();
    });
  }
  all_done.get_future().get();
  EXPECT_EQ(ok.load(), kN);
  double used = commits.value() - before;
  EXPECT_GE(used, 1);
  EXPECT_LT(used, kN) << "jobs should share transactions";
  EXPECT_EQ(sql("SELECT COUNT(*) FROM payments"), std::vector<std::string>{std::to_string(kN)});
}

TEST_F(SqliteStoreTest, FullQueueFailsJobsWithStoreOverloaded) {
  SqliteOptions o;
  o.max_queue = 1;
  o.max_batch = 1;
  auto s = open(o);
  constexpr int kN = 200;
  std::atomic<int> created{0}, overloaded{0}, other{0}, remaining{kN};
  std::promise<void> done;
  for (int i = 0; i < kN; ++i) {
    s->accept_payment(payment_cmd("mer_1", "k" + std::to_string(i), 10, 1), [&](Result<AcceptOutcome> r) {
      if (r) ++created;
      else if (r.error().code == "store_overloaded" && r.error().kind == ErrorKind::unavailable) ++overloaded;
      else ++other;
      if (--remaining == 0) done.set_value();
    });
  }
  done.get_future().get();
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(overloaded.load(), 0);
  EXPECT_GT(created.load(), 0);
  s.reset();
  EXPECT_EQ(sql("SELECT COUNT(*) FROM payments"), std::vector<std::string>{std::to_string(created.load())});
}

TEST_F(SqliteStoreTest, OneFailingJobDoesNotSpoilItsBatch) {
  auto s = open();
  // A payment with amount 0 violates CHECK(amount_minor > 0); its neighbours commit.
  constexpr int kN = 50;
  std::atomic<int> created{0}, failed{0}, remaining{kN};
  std::promise<void> done;
  for (int i = 0; i < kN; ++i) {
    s->accept_payment(payment_cmd("mer_1", "k" + std::to_string(i), i % 10 == 0 ? 0 : 10, 1),
                      [&](Result<AcceptOutcome> r) {
                        (r ? created : failed)++;
                        if (--remaining == 0) done.set_value();
                      });
  }
  done.get_future().get();
  EXPECT_EQ(failed.load(), 5);
  EXPECT_EQ(created.load(), 45);
  EXPECT_EQ(*s->count_events("tx.initiated"), 45);
  EXPECT_FALSE(s->find_idempotency("mer_1", "k0")->has_value());
  EXPECT_TRUE(s->find_idempotency("mer_1", "k1")->has_value());
}

TEST_F(SqliteStoreTest, TerminalListenerGetsNewlyTerminalPaymentsOnce) {
  auto s = open();
  std::mutex mu;
  std::vector<std::string> seen;
  s->set_terminal_listener([&](const std::vector<std::string>& ids) {
    std::lock_guard g(mu);
    seen.insert(seen.end(), ids.begin(), ids.end());
  });
  auto cmd = payment_cmd("mer_1", "k", 10, 1);
  Payment p = cmd.payment;
  ASSERT_TRUE(accept_payment_sync(*s, std::move(cmd)).ok());
  ASSERT_TRUE(s->commit("ledger", {}, succeed_payment(p, 2)).ok());
  ASSERT_TRUE(s->commit("ledger", {}, succeed_payment(p, 3)).ok());
  std::lock_guard g(mu);
  EXPECT_EQ(seen, std::vector<std::string>{p.id});
}

// An unbalanced entry is a bug upstream: the process stops before it is posted
// (domain/ledger_rules.hpp), it is not refused with a retryable error and retried for ever.
TEST_F(SqliteStoreTest, UnbalancedSettlementStopsTheProcessBeforeAnythingIsWritten) {
  auto s = open();
  auto cmd = payment_cmd("mer_1", "k", 10, 1);
  Payment p = cmd.payment;
  ASSERT_TRUE(accept_payment_sync(*s, std::move(cmd)).ok());
  Effects bad = succeed_payment(p, 2);
  bad.payment_outcomes[0].settlement->postings[0].amount_minor += 1;
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH((void)s->commit("ledger", {}, bad), "does not balance");
  EXPECT_EQ(s->get_payment("mer_1", p.id)->value().status, PaymentStatus::processing);
  EXPECT_TRUE(s->entries_for_payment("mer_1", p.id)->empty());
}

TEST_F(SqliteStoreTest, SyncWriteFromACallbackIsRefusedNotDeadlocked) {
  auto s = open();
  std::promise<Result<void>> inner;
  s->accept_payment(payment_cmd("mer_1", "k", 10, 1), [&](Result<AcceptOutcome>) {
    inner.set_value(s->create_merchant(Merchant{"mer_1", "x", "h", 0, 0, 1}));
  });
  auto r = inner.get_future().get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::internal);
}

TEST_F(SqliteStoreTest, DeadLetterRowsHaveTheDocumentedShape) {
  auto s = open();
  Record orig;
  orig.topic = "tx.validated";
  orig.offset = 9;
  orig.event = test_event("pay_1", event_types::payment_validated, 5);
  Effects fx;
  fx.dead_letters.push_back(DeadLetter{orig, "boom", 4});
  ASSERT_TRUE(s->commit("processor", {}, std::move(fx)).ok());
  s.reset();
  EXPECT_EQ(sql("SELECT type FROM events WHERE topic='tx.dlq'"), std::vector<std::string>{"paystream.dead_letter"});
  EXPECT_EQ(sql("SELECT json_extract(data, '$.topic') || '|' || json_extract(data, '$.offset') || '|' || "
                "json_extract(data, '$.error') || '|' || json_extract(data, '$.attempts') || '|' || "
                "json_extract(data, '$.event.id') FROM events WHERE topic='tx.dlq'"),
            std::vector<std::string>{"tx.validated|9|boom|4|" + orig.event.id});
}

}  // namespace
}  // namespace ps::contract
