// PgEventDedup against a real PostgreSQL (PAYSTREAM_POSTGRES_URL), a fresh schema per test.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "postgres/pg_test_util.hpp"

namespace ps {
namespace {

Record rec(const std::string& id, int64_t offset, int32_t partition = 0, const std::string& topic = "tx.initiated") {
  Record r;
  r.topic = topic;
  r.partition = partition;
  r.offset = offset;
  r.event.id = id;
  return r;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class PgEventDedupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url = pg_test::url();
    ASSERT_FALSE(url.empty());
    schema = pg_test::unique_schema();
    auto v = pg_migrate(url, schema);
    ASSERT_TRUE(v.ok()) << v.error().message;
    ASSERT_GE(*v, 2);
    dedup = open();
    ASSERT_TRUE(dedup);
  }
  void TearDown() override {
    dedup.reset();
    pg_test::drop_schema(url, schema);
  }
  std::unique_ptr<PgEventDedup> open() {
    PgOptions o;
    o.url = url;
    o.schema = schema;
    o.pool_wait_timeout_ms = 10000;
    auto d = PgEventDedup::open(o);
    EXPECT_TRUE(d.ok()) << (d ? "" : d.error().message);
    return d ? std::move(d.value()) : nullptr;
  }
  std::vector<bool> ask(const std::string& group, const std::vector<Record>& rs, PgEventDedup* on = nullptr) {
    auto r = (on ? on : dedup.get())->first_copies(group, rs);
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
    return r ? r.value() : std::vector<bool>{};
  }

  std::string url, schema;
  std::unique_ptr<PgEventDedup> dedup;
};

TEST_F(PgEventDedupTest, FirstCopyWinsAndItsRedeliveryIsStillFirst) {
  EXPECT_EQ(ask("fraud", {rec("evt_a", 5)}), std::vector<bool>{true});
  // Redelivery of the first copy (same position, e.g. after a failed commit).
  EXPECT_EQ(ask("fraud", {rec("evt_a", 5)}), std::vector<bool>{true});
  // A copy at another position (offset, partition or topic) is not first.
  EXPECT_EQ(ask("fraud", {rec("evt_a", 9), rec("evt_a", 5, 1), rec("evt_a", 5, 0, "tx.validated")}),
            (std::vector<bool>{false, false, false}));
  // Per group.
  EXPECT_EQ(ask("processor", {rec("evt_a", 9)}), std::vector<bool>{true});
  // Two copies in one batch: the first in record order wins; empty ids are always first.
  EXPECT_EQ(ask("fraud", {rec("evt_b", 10), rec("", 11), rec("evt_b", 12), rec("", 13), rec("evt_a", 5)}),
            (std::vector<bool>{true, true, false, true, true}));
  EXPECT_TRUE(ask("fraud", {}).empty());
  // Ids with characters that need quoting in array literals.
  EXPECT_EQ(ask("fraud", {rec("evt \"q\\,{}", 20), rec("evt \"q\\,{}", 21)}), (std::vector<bool>{true, false}));
}

TEST_F(PgEventDedupTest, ConcurrentCallersAgreeOnOneFirstCopyPerEvent) {
  // Eight callers over two instances (two pools) race on the same 40 ids, each claiming them
  // at its own positions: exactly one caller wins each id, and a repeated question gives
  // every caller the same answer as before.
  auto other = open();
  ASSERT_TRUE(other);
  constexpr int kCallers = 8, kIds = 40;
  std::vector<std::vector<bool>> answers(kCallers);
  std::vector<std::vector<Record>> batches(kCallers);
  for (int c = 0; c < kCallers; ++c)
    for (int i = 0; i < kIds; ++i) batches[c].push_back(rec("evt_" + std::to_string((i * 7 + c) % kIds), c * 1000 + i));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int c = 0; c < kCallers; ++c)
    threads.emplace_back([&, c] {
      auto r = (c % 2 ? other.get() : dedup.get())->first_copies("fraud", batches[c]);
      if (r) answers[c] = r.value();
      else ++failures;
    });
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  std::map<std::string, int> winners;
  for (int c = 0; c < kCallers; ++c) {
    ASSERT_EQ(answers[c].size(), size_t(kIds));
    for (int i = 0; i < kIds; ++i)
      if (answers[c][i]) ++winners[batches[c][i].event.id];
  }
  ASSERT_EQ(winners.size(), size_t(kIds));
  for (const auto& [id, n] : winners) EXPECT_EQ(n, 1) << id;
  for (int c = 0; c < kCallers; ++c) EXPECT_EQ(ask("fraud", batches[c]), answers[c]) << "caller " << c;
}

TEST_F(PgEventDedupTest, PurgeForgetsOldEntriesInBoundedBatches) {
  std::vector<Record> rs;
  for (int i = 0; i < 5; ++i) rs.push_back(rec("evt_old" + std::to_string(i), i));
  ASSERT_EQ(ask("fraud", rs), std::vector<bool>(5, true));
  ASSERT_EQ(ask("fraud", {rec("evt_new", 100)}), std::vector<bool>{true});
  auto sql = pg_test::raw(url, schema);
  ASSERT_TRUE(sql);
  const int64_t old_ms = now_ms() - 8LL * 24 * 3600 * 1000;
  ASSERT_TRUE(sql->exec("UPDATE event_firsts SET seen_ms = $1::bigint WHERE event_id LIKE 'evt_old%'",
                        pg::Params(old_ms)).ok());

  const int64_t cutoff = now_ms() - 7LL * 24 * 3600 * 1000;
  auto p1 = dedup->purge(cutoff, 2);
  ASSERT_TRUE(p1.ok()) << p1.error().message;
  EXPECT_EQ(*p1, 2u) << "bounded batch";
  auto p2 = dedup->purge(cutoff, 100);
  ASSERT_TRUE(p2.ok()) << p2.error().message;
  EXPECT_EQ(*p2, 3u);
  auto p3 = dedup->purge(cutoff, 100);
  ASSERT_TRUE(p3.ok());
  EXPECT_EQ(*p3, 0u);
  auto left = sql->exec("SELECT count(*) FROM event_firsts");
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->i64(0, 0), 1) << "recent entries stay";
  // A forgotten event's next copy counts as first again; the recent one is still known.
  EXPECT_EQ(ask("fraud", {rec("evt_old0", 50), rec("evt_new", 101)}), (std::vector<bool>{true, false}));
}

TEST_F(PgEventDedupTest, FirstCopiesPurgesExpiredEntriesOnItsOwn) {
  ASSERT_EQ(ask("fraud", {rec("evt_x", 1)}), std::vector<bool>{true});
  auto sql = pg_test::raw(url, schema);
  ASSERT_TRUE(sql);
  ASSERT_TRUE(sql->exec("UPDATE event_firsts SET seen_ms = 0").ok());
  // A fresh instance purges on its first call (then at most once an hour).
  auto fresh = open();
  ASSERT_TRUE(fresh);
  ASSERT_EQ(ask("fraud", {rec("evt_y", 2)}, fresh.get()), std::vector<bool>{true});
  auto left = sql->exec("SELECT event_id FROM event_firsts ORDER BY event_id");
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->rows(), 1);
  EXPECT_EQ(left->text(0, 0), "evt_y");
}

TEST_F(PgEventDedupTest, UnreachableDatabaseIsARetryableError) {
  PgOptions o;
  o.url = "postgresql://nobody@127.0.0.1:1/none";
  o.connect_timeout_ms = 1000;
  auto d = PgEventDedup::open(o);
  ASSERT_FALSE(d.ok());
  EXPECT_TRUE(d.error().retryable);
}

}  // namespace
}  // namespace ps
