// LogEngine specifics beyond the port contracts (which run against it as "LogEngine"):
// the record codec, recovery (the tail past the projection, the bus refilled with what
// the stages had not consumed), a log that does not belong to the database, and one
// creator per key under concurrency.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include "adapters/embedded/engine_record.hpp"
#include "adapters/embedded/log_engine.hpp"
#include "contract/store_harness.hpp"

namespace ps::contract {
namespace {

ProjectedWrite sample_payment(const std::string& key, int64_t now) {
  ProjectedWrite w;
  w.now_ms = now;
  AcceptPayment c = payment_cmd("mer_1", key, 1234, now);
  c.payment.description = "two\nlines, \"quoted\" \xc3\xa9";
  c.payment.metadata["empty"] = "";
  c.initiated.traceparent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01";
  w.payment = std::move(c);
  return w;
}

TEST(IntakeRecord, PaymentAndResponseRecordsRoundTrip) {
  ProjectedWrite w = sample_payment("k-1", 42);
  auto d = engine_record::decode(engine_record::record_type(w), engine_record::encode(w));
  ASSERT_TRUE(d.ok()) << d.error().message;
  ASSERT_TRUE(d->payment.has_value());
  const AcceptPayment& a = *w.payment;
  const AcceptPayment& b = *d->payment;
  EXPECT_EQ(d->now_ms, 42);
  EXPECT_EQ(b.payment.id, a.payment.id);
  EXPECT_EQ(b.payment.merchant_id, a.payment.merchant_id);
  EXPECT_EQ(b.payment.idempotency_key, a.payment.idempotency_key);
  EXPECT_EQ(b.payment.amount_minor, 1234);
  EXPECT_EQ(b.payment.currency, a.payment.currency);
  EXPECT_EQ(b.payment.source, a.payment.source);
  EXPECT_EQ(b.payment.description, a.payment.description);
  EXPECT_EQ(b.payment.metadata, a.payment.metadata);
  EXPECT_EQ(b.payment.status, a.payment.status);
  EXPECT_EQ(b.payment.created_ms, a.payment.created_ms);
  EXPECT_EQ(b.initiated.id, a.initiated.id);
  EXPECT_EQ(b.initiated.type, a.initiated.type);
  EXPECT_EQ(b.initiated.source, a.initiated.source);
  EXPECT_EQ(b.initiated.time_ms, a.initiated.time_ms);
  EXPECT_EQ(b.initiated.key, a.initiated.key);
  EXPECT_EQ(b.initiated.traceparent, a.initiated.traceparent);
  EXPECT_EQ(b.initiated.data, a.initiated.data);
  EXPECT_EQ(b.record.fingerprint, a.record.fingerprint);
  EXPECT_EQ(b.record.http_status, 202);
  EXPECT_EQ(b.record.response_body, a.record.response_body);
  EXPECT_EQ(b.record.resource_id, a.record.resource_id);

  ProjectedWrite r;
  r.kind = ProjectedWrite::Kind::response;
  r.now_ms = 7;
  r.merchant_id = "mer_1";
  r.key = "k-1";
  r.http_status = 201;
  r.body = "{\"status\":\"succeeded\"}";
  auto e = engine_record::decode(engine_record::record_type(r), engine_record::encode(r));
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_FALSE(e->payment.has_value());
  EXPECT_EQ(e->merchant_id, "mer_1");
  EXPECT_EQ(e->key, "k-1");
  EXPECT_EQ(e->http_status, 201);
  EXPECT_EQ(e->body, r.body);
}

TEST(IntakeRecord, EveryTruncationTrailingByteAndUnknownTypeIsRefused) {
  const std::string full = engine_record::encode(sample_payment("k-2", 1));
  for (size_t n = 0; n < full.size(); ++n) {
    auto d = engine_record::decode(engine_record::kPaymentAccepted, std::string_view(full).substr(0, n));
    ASSERT_FALSE(d.ok()) << "a " << n << "-byte prefix decoded";
    EXPECT_NE(d.error().message.find("log_record_undecodable"), std::string::npos);
  }
  EXPECT_FALSE(engine_record::decode(engine_record::kPaymentAccepted, full + "x").ok());
  EXPECT_FALSE(engine_record::decode(99, full).ok());
  std::string other_version = full;
  other_version[0] = 2;
  EXPECT_FALSE(engine_record::decode(engine_record::kPaymentAccepted, other_version).ok());
}

class LogEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ps_log_engine_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir = tmpl;
  }
  void TearDown() override {
    close();
    std::filesystem::remove_all(dir);
  }
  wal::LogOptions log_opts() {
    wal::LogOptions o;
    o.dir = (dir / "log").string();
    o.segment_bytes = 1u << 20;
    return o;
  }
  Result<void> open(bool stepped = false) {
    SqliteOptions so;
    so.path = (dir / "db.sqlite").string();
    auto s = SqliteStore::open(so, clock);
    if (!s) return s.error();
    store = std::move(s.value());
    LogEngineOptions lo;
    lo.log = log_opts();
    lo.projection_batch = 4;  // several transactions in a replay
    lo.groups = groups;
    lo.stepped = stepped;
    auto l = LogEngine::open(lo, fs, *store, clock);
    if (!l) return l.error();
    intake = std::move(l.value());
    return ok();
  }
  void close() {
    intake.reset();
    store.reset();
  }
  int64_t sql_count(const std::string& q) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2((dir / "db.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, q.c_str(), -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    int64_t v = -1;
    if (st && sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
  }
  std::filesystem::path dir;
  ManualClock clock;
  wal::PosixLogFs fs;
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<LogEngine> intake;
  std::vector<EventBus::Subscription> groups;
};

TEST_F(LogEngineTest, RestartReplaysOnlyTheAcknowledgedTailPastTheProjection) {
  ASSERT_TRUE(open().ok());
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(accept_payment_sync(*intake, payment_cmd("mer_1", "k" + std::to_string(i), 100, 1))->created);
  close();  // projects everything durable before it stops
  EXPECT_EQ(sql_count("SELECT lsn FROM log_projection"), 5);

  // Three more payments acknowledged from the log whose projection never ran (the process
  // died between the fsync and the projection): written to the log as intake writes them.
  {
    auto log = wal::SegmentLog::open(log_opts(), fs, 6, [](const wal::LogRecord&) { return ok(); });
    ASSERT_TRUE(log.ok()) << log.error().message;
    for (int i = 5; i < 8; ++i) {
      auto r = (*log)->append_wait(engine_record::kPaymentAccepted,
                                   engine_record::encode_payment(1, payment_cmd("mer_1", "k" + std::to_string(i), 100, 1)));
      ASSERT_TRUE(r.ok()) << r.error().message;
      EXPECT_EQ(*r, uint64_t(i + 1));
    }
  }
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM payments"), 5);

  ASSERT_TRUE(open().ok());
  EXPECT_EQ(intake->projected_lsn(), 8u);
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM payments"), 8);
  EXPECT_EQ(intake->bus().appended("tx.initiated"), 8u);  // the bus, refilled from the log
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM events WHERE topic = 'tx.initiated'"), 0);  // not a store row
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM idempotency"), 8);
  EXPECT_EQ(sql_count("SELECT lsn FROM log_projection"), 8);
  // A replayed key is a key: the retry gets the first record, not a second payment.
  auto again = accept_payment_sync(*intake, payment_cmd("mer_1", "k6", 100, 2));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->record.resource_id, payment_id_for("mer_1", "k6"));
  // The next record continues the log's numbering.
  ASSERT_TRUE(accept_payment_sync(*intake, payment_cmd("mer_1", "k9", 100, 2))->created);
  ASSERT_TRUE(intake->await_projection().ok());
  EXPECT_EQ(intake->projected_lsn(), 9u);
  close();
  ASSERT_TRUE(open().ok());  // nothing left to replay: opens at the projected position
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM payments"), 9);
}

// Stepped mode (the simulation's): an acceptance is admitted at step_admission(), durable
// and answered at step_log(); a second request with the key meanwhile waits for the first
// and is admitted again (a replay) at the next step_admission(); a stage's commit writes
// the log itself; projection happens at step_projection() (or a read that waits for it).
// crash() drops what is queued unanswered, and the next open recovers what was durable.
TEST_F(LogEngineTest, SteppedModeRunsEachPartOnlyWhenStepped) {
  groups = {{"fraud", {"tx.initiated"}}};
  ASSERT_TRUE(open(true).ok());
  std::vector<std::string> answers;
  auto answer = [&](const char* who) {
    return [&answers, who](Result<AcceptOutcome> r) {
      answers.push_back(std::string(who) + (r ? (r->created ? " created" : " replayed") : " " + r.error().code));
    };
  };
  intake->accept_payment(payment_cmd("mer_1", "k1", 100, 1), answer("first"));
  EXPECT_TRUE(answers.empty());
  EXPECT_EQ(intake->step_admission(), 1u);
  intake->accept_payment(payment_cmd("mer_1", "k1", 100, 1), answer("second"));
  EXPECT_EQ(intake->step_admission(), 1u);   // waits for the first: its record is not durable
  EXPECT_TRUE(answers.empty());
  EXPECT_EQ(intake->step_log(), 1u);
  ASSERT_EQ(answers, std::vector<std::string>{"first created"});
  EXPECT_EQ(intake->step_admission(), 1u);
  EXPECT_EQ(answers.back(), "second replayed");
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM payments"), 0) << "not projected yet";

  auto recs = intake->poll("fraud", {"tx.initiated"}, 10, std::chrono::milliseconds(0));
  ASSERT_TRUE(recs.ok());
  ASSERT_EQ(recs->size(), 1u);
  ASSERT_TRUE(intake->commit("fraud", *recs, Effects{}).ok()) << "a commit writes the log itself";
  EXPECT_EQ(intake->step_projection(), 1u) << "one transaction (projection_batch 4) for both records";
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM payments"), 1);

  // crash(): the admission queue is dropped unanswered and nothing more is projected. The
  // log's queued append is still written here (this file system did not crash with the
  // process; the simulation crashes its file system first), so it is durable and answered,
  // and the next open projects it from the log.
  intake->accept_payment(payment_cmd("mer_1", "k2", 100, 1), answer("appended"));
  EXPECT_EQ(intake->step_admission(), 1u);
  intake->accept_payment(payment_cmd("mer_1", "k3", 100, 1), answer("queued"));
  const size_t before = answers.size();
  intake->crash();
  close();
  ASSERT_EQ(answers.size(), before + 1);
  EXPECT_EQ(answers.back(), "appended created");
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM payments"), 1) << "the crash projected nothing";
  ASSERT_TRUE(open(true).ok());
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM payments"), 2) << "recovery projected k2 from the log";
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM idempotency WHERE key = 'k3'"), 0);
  EXPECT_EQ(intake->bus().kept(), 1u) << "fraud had consumed k1, not k2";
}

TEST_F(LogEngineTest, RestartGivesEachStageWhatItHadNotConsumedAndNothingElse) {
  groups = {{"fraud", {"tx.initiated"}}};
  ASSERT_TRUE(open().ok());
  for (int i = 0; i < 6; ++i)
    ASSERT_TRUE(accept_payment_sync(*intake, payment_cmd("mer_1", "k" + std::to_string(i), 100, 1))->created);
  auto recs = intake->poll("fraud", {"tx.initiated"}, 4, std::chrono::milliseconds(0));
  ASSERT_TRUE(recs.ok());
  ASSERT_EQ(recs->size(), 4u);
  Effects fx;
  fx.produce.push_back(test_event((*recs)[0].event.key, event_types::payment_validated, 1));
  ASSERT_TRUE(intake->commit("fraud", *recs, std::move(fx)).ok());
  EXPECT_EQ(intake->bus().kept(), 2u + 1u);  // two initiated left; the validated event has no registered reader
  close();
  ASSERT_TRUE(open().ok());
  auto rest = intake->poll("fraud", {"tx.initiated"}, 100, std::chrono::milliseconds(0));
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->size(), 2u);
  EXPECT_EQ((*rest)[0].event.key, payment_id_for("mer_1", "k4"));
  EXPECT_EQ((*rest)[1].event.key, payment_id_for("mer_1", "k5"));
  auto validated = intake->poll("processor", {"tx.validated"}, 100, std::chrono::milliseconds(0));
  ASSERT_TRUE(validated.ok());
  ASSERT_EQ(validated->size(), 1u);
  EXPECT_GT((*validated)[0].offset, (*recs)[3].offset);  // one order across topics
  EXPECT_EQ(sql_count("SELECT position FROM consumer_positions WHERE group_id = 'fraud'"), (*recs)[3].offset);
}

TEST_F(LogEngineTest, ACommitTheStoreWouldRefuseIsRefusedBeforeItIsLogged) {
  ASSERT_TRUE(open().ok());
  auto cmd = payment_cmd("mer_1", "k1", 100, 1);
  Payment p = cmd.payment;
  ASSERT_TRUE(accept_payment_sync(*intake, std::move(cmd))->created);
  ASSERT_TRUE(intake->await_projection().ok());
  const uint64_t before = intake->projected_lsn();
  Effects fx;
  PaymentOutcome o;
  o.payment = p;  // still processing: not an outcome
  fx.payment_outcomes.push_back(o);
  EXPECT_FALSE(intake->commit("ledger", {}, std::move(fx)).ok());
  close();
  ASSERT_TRUE(open().ok());  // and so nothing to trip over at the next start
  EXPECT_EQ(intake->projected_lsn(), before);
}

TEST_F(LogEngineTest, ALogThatEndsBeforeTheProjectionIsRefused) {
  ASSERT_TRUE(open().ok());
  ASSERT_TRUE(accept_payment_sync(*intake, payment_cmd("mer_1", "k1", 100, 1))->created);
  ASSERT_TRUE(accept_payment_sync(*intake, payment_cmd("mer_1", "k2", 100, 1))->created);
  close();
  std::filesystem::remove_all(dir / "log");
  auto r = open();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("engine_log_behind"), std::string::npos) << r.error().message;
  // Nothing was numbered again from 1: the store still holds the two payments once.
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM payments"), 2);
}

TEST_F(LogEngineTest, SixteenThreadsRacingOneKeyCreateOnePaymentAndAllSeeItsRecord) {
  ASSERT_TRUE(open().ok());
  for (int round = 0; round < 20; ++round) {
    const std::string key = "race-" + std::to_string(round);
    std::atomic<int> created{0}, replayed{0}, failed{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 16; ++t)
      ts.emplace_back([&] {
        auto r = accept_payment_sync(*intake, payment_cmd("mer_1", key, 100, 1));
        if (!r) ++failed;
        else if (r->created) ++created;
        else if (r->record.resource_id == payment_id_for("mer_1", key)) ++replayed;
      });
    for (auto& t : ts) t.join();
    EXPECT_EQ(created.load(), 1) << key;
    EXPECT_EQ(replayed.load(), 15) << key;
    EXPECT_EQ(failed.load(), 0) << key;
  }
  ASSERT_TRUE(intake->await_projection().ok());
  EXPECT_EQ(sql_count("SELECT COUNT(*) FROM payments"), 20);
}

TEST_F(LogEngineTest, ARefundWithAKeyOfAnUnprojectedPaymentGetsThatPaymentsRecord) {
  ASSERT_TRUE(open().ok());
  auto p = accept_payment_sync(*intake, payment_cmd("mer_1", "shared-key", 100, 1));
  ASSERT_TRUE(p.ok() && p->created);
  auto r = accept_refund_sync(*intake, refund_cmd("mer_1", payment_id_for("mer_1", "shared-key"), "shared-key", 10, 2));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->created);
  EXPECT_EQ(r->record.resource_id, payment_id_for("mer_1", "shared-key"));
}

TEST_F(LogEngineTest, ARefundOfAPaymentStillInTheLogIsRefusedAsNotSucceeded) {
  ASSERT_TRUE(open().ok());
  ASSERT_TRUE(accept_payment_sync(*intake, payment_cmd("mer_1", "fresh", 100, 1))->created);
  auto r = accept_refund_sync(*intake, refund_cmd("mer_1", payment_id_for("mer_1", "fresh"), "r1", 10, 2));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "payment_not_succeeded") << r.error().message;
}

}  // namespace
}  // namespace ps::contract
