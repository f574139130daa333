// StageLog contract: at-least-once poll after the committed position, atomic commit of
// effects + position, durable positions, produce dedup by event id, bounded waits.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "contract/store_harness.hpp"

namespace ps::contract {
namespace {
using namespace std::chrono_literals;

class StageLogContract : public ::testing::TestWithParam<HarnessFactory> {
 protected:
  void SetUp() override { h = GetParam().make(); }
  std::vector<Record> poll(const std::string& group, std::vector<std::string> topics, size_t max = 100,
                           std::chrono::milliseconds wait = 0ms) {
    auto r = h->log().poll(group, topics, max, wait);
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
    return r ? r.value() : std::vector<Record>{};
  }
  void produce(std::vector<Event> events) {
    Effects fx;
    fx.produce = std::move(events);
    auto r = h->log().commit("producer", {}, std::move(fx));
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  std::unique_ptr<StoreHarness> h;
};

TEST_P(StageLogContract, PollReturnsRecordsAfterCommittedPositionInOrder) {
  int64_t now = h->clock.now_ms();
  produce({test_event("pay_a", event_types::payment_initiated, now),
           test_event("pay_b", event_types::payment_initiated, now + 1),
           test_event("pay_c", event_types::payment_initiated, now + 2)});
  auto recs = poll("fraud", {"tx.initiated"});
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_LT(recs[0].offset, recs[1].offset);
  EXPECT_LT(recs[1].offset, recs[2].offset);
  EXPECT_EQ(recs[0].topic, "tx.initiated");
  EXPECT_EQ(recs[0].partition, 0);
  Event want = test_event("pay_a", event_types::payment_initiated, now);
  EXPECT_EQ(recs[0].event.id, want.id);
  EXPECT_EQ(recs[0].event.type, want.type);
  EXPECT_EQ(recs[0].event.source, want.source);
  EXPECT_EQ(recs[0].event.time_ms, want.time_ms);
  EXPECT_EQ(recs[0].event.key, want.key);
  EXPECT_EQ(recs[0].event.traceparent, want.traceparent);
  EXPECT_EQ(recs[0].event.data, want.data);

  // Not committed yet: redelivered.
  EXPECT_EQ(poll("fraud", {"tx.initiated"}).size(), 3u);
  ASSERT_TRUE(h->log().commit("fraud", {recs[0], recs[1]}, {}).ok());
  auto rest = poll("fraud", {"tx.initiated"});
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].event.key, "pay_c");
  // Another group has its own position.
  EXPECT_EQ(poll("other", {"tx.initiated"}).size(), 3u);
  // Other topics are not returned.
  EXPECT_TRUE(poll("fraud", {"tx.settled"}).empty());
}

TEST_P(StageLogContract, PollHonoursMaxAndMergesTopicsByOffset) {
  if (!h->global_log_order()) GTEST_SKIP() << "offsets are ordered per topic partition only, not across topics";
  int64_t now = h->clock.now_ms();
  produce({test_event("p1", event_types::payment_validated, now),
           test_event("p2", event_types::payment_succeeded, now),
           test_event("p3", event_types::payment_failed, now),
           test_event("p4", event_types::payment_validated, now)});
  auto two = poll("g", {"tx.validated", "tx.settled", "tx.failed"}, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].event.key, "p1");
  EXPECT_EQ(two[1].event.key, "p2");
  auto all = poll("g", {"tx.settled", "tx.failed", "tx.validated"}, 10);
  ASSERT_EQ(all.size(), 4u);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].offset, all[i].offset);
  EXPECT_EQ(all[2].topic, "tx.failed");
}

TEST_P(StageLogContract, FailedCommitLeavesNeitherEffectsNorPosition) {
  int64_t now = h->clock.now_ms();
  auto cmd = payment_cmd("mer_1", "k1", 1000, now);
  Payment p = cmd.payment;
  ASSERT_TRUE(accept_payment_sync(h->intake(), std::move(cmd)).ok());
  auto recs = poll("ledger", {"tx.initiated"});
  ASSERT_EQ(recs.size(), 1u);

  Effects fx = succeed_payment(p, now);
  // Not terminal: refused with an error (an unbalanced entry would stop the process instead,
  // see the stores' death tests).
  fx.payment_outcomes[0].payment.status = PaymentStatus::processing;
  fx.produce.push_back(test_event(p.id, event_types::payment_succeeded, now));
  MerchantEvent me{"evt_x", "mer_1", "payment.succeeded", "{}", now};
  fx.merchant_events.push_back(me);
  auto r = h->log().commit("ledger", recs, std::move(fx));
  ASSERT_FALSE(r.ok());

  EXPECT_EQ(poll("ledger", {"tx.initiated"}).size(), 1u) << "position must not move";
  if (h->produce_atomic_with_store()) {  // else the produced event went out before the database failed
    EXPECT_EQ(h->count_events("tx.settled"), 0);
  }
  auto got = h->queries().get_payment("mer_1", p.id);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->status, PaymentStatus::processing);
  EXPECT_TRUE(h->queries().balances("mer_1")->empty());
  EXPECT_FALSE(h->events().get_event("mer_1", "evt_x")->has_value());

  // The same commit with a balanced entry succeeds and moves everything together.
  ASSERT_TRUE(h->log().commit("ledger", recs, succeed_payment(p, now)).ok());
  EXPECT_TRUE(poll("ledger", {"tx.initiated"}).empty());
  EXPECT_EQ(h->queries().get_payment("mer_1", p.id)->value().status, PaymentStatus::succeeded);
}

TEST_P(StageLogContract, PositionSurvivesReopen) {
  int64_t now = h->clock.now_ms();
  produce({test_event("a", event_types::payment_initiated, now), test_event("b", event_types::payment_initiated, now)});
  auto recs = poll("fraud", {"tx.initiated"});
  ASSERT_EQ(recs.size(), 2u);
  ASSERT_TRUE(h->log().commit("fraud", {recs[0]}, {}).ok());
  h->reopen();
  auto rest = poll("fraud", {"tx.initiated"});
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].offset, recs[1].offset);
  EXPECT_EQ(h->count_events("tx.initiated"), 2);
}

TEST_P(StageLogContract, PositionNeverMovesBackwards) {
  int64_t now = h->clock.now_ms();
  produce({test_event("a", event_types::payment_initiated, now), test_event("b", event_types::payment_initiated, now)});
  auto recs = poll("g", {"tx.initiated"});
  ASSERT_EQ(recs.size(), 2u);
  ASSERT_TRUE(h->log().commit("g", {recs[1]}, {}).ok());
  ASSERT_TRUE(h->log().commit("g", {recs[0]}, {}).ok());  // a late, older commit
  EXPECT_TRUE(poll("g", {"tx.initiated"}).empty());
}

TEST_P(StageLogContract, ReproducingAnEventIdIsIgnored) {
  if (!h->log_dedups_event_ids()) GTEST_SKIP() << "the log appends a re-produced event; consumers deduplicate by id";
  int64_t now = h->clock.now_ms();
  Event e = test_event("pay_dup", event_types::payment_validated, now);
  produce({e});
  produce({e});
  Event changed = e;
  changed.data = "{\"other\":1}";
  produce({changed});
  EXPECT_EQ(h->count_events("tx.validated"), 1);
  auto recs = poll("processor", {"tx.validated"});
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].event.data, e.data);
  // The same id on another topic is a different record.
  Event elsewhere = e;
  elsewhere.type = std::string(event_types::payment_failed);
  produce({elsewhere});
  EXPECT_EQ(h->count_events("tx.failed"), 1);
}

TEST_P(StageLogContract, PollWaitTimesOutWhenNothingArrives) {
  auto t0 = std::chrono::steady_clock::now();
  auto recs = poll("g", {"tx.initiated"}, 10, 200ms);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_TRUE(recs.empty());
  EXPECT_GE(took, 180ms);
  EXPECT_LT(took, 3s);
}

TEST_P(StageLogContract, PollWakesUpWhenAnEventIsCommitted) {
  std::thread producer([&] {
    std::this_thread::sleep_for(150ms);
    produce({test_event("late", event_types::payment_initiated, h->clock.now_ms())});
  });
  auto t0 = std::chrono::steady_clock::now();
  auto recs = poll("g", {"tx.initiated"}, 10, 10s);
  auto took = std::chrono::steady_clock::now() - t0;
  producer.join();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].event.key, "late");
  EXPECT_LT(took, 5s);
}

TEST_P(StageLogContract, PaymentOutcomeAppliedTwicePostsOnce) {
  int64_t now = h->clock.now_ms();
  auto cmd = payment_cmd("mer_1", "k1", 2500, now);
  Payment p = cmd.payment;
  ASSERT_TRUE(accept_payment_sync(h->intake(), std::move(cmd)).ok());
  ASSERT_TRUE(h->log().commit("ledger", {}, succeed_payment(p, now)).ok());
  ASSERT_TRUE(h->log().commit("ledger", {}, succeed_payment(p, now + 5)).ok());
  // A later contradicting outcome changes nothing either.
  Payment failed = p;
  failed.status = PaymentStatus::failed;
  failed.failure_code = "card_declined";
  Effects fx;
  fx.payment_outcomes.push_back({failed, std::nullopt});
  ASSERT_TRUE(h->log().commit("ledger", {}, std::move(fx)).ok());

  auto entries = h->queries().entries_for_payment("mer_1", p.id);
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].kind, EntryKind::settlement);
  EXPECT_EQ((*entries)[0].postings.size(), 2u);
  auto bal = h->queries().balances("mer_1");
  ASSERT_EQ(bal->size(), 1u);
  EXPECT_EQ((*bal)[0].available_minor, 2500);
  auto got = h->queries().get_payment("mer_1", p.id)->value();
  EXPECT_EQ(got.status, PaymentStatus::succeeded);
  EXPECT_EQ(got.failure_code, "");
}

TEST_P(StageLogContract, FailedOutcomeRecordsFailureCodeWithoutPosting) {
  int64_t now = h->clock.now_ms();
  auto cmd = payment_cmd("mer_1", "k1", 700, now);
  Payment p = cmd.payment;
  ASSERT_TRUE(accept_payment_sync(h->intake(), std::move(cmd)).ok());
  p.status = PaymentStatus::failed;
  p.failure_code = "card_declined";
  p.updated_ms = now + 10;
  Effects fx;
  fx.payment_outcomes.push_back({p, std::nullopt});
  ASSERT_TRUE(h->log().commit("ledger", {}, std::move(fx)).ok());
  auto got = h->queries().get_payment("mer_1", p.id)->value();
  EXPECT_EQ(got.status, PaymentStatus::failed);
  EXPECT_EQ(got.failure_code, "card_declined");
  EXPECT_EQ(got.updated_ms, now + 10);
  EXPECT_TRUE(h->queries().entries_for_payment("mer_1", p.id)->empty());
  EXPECT_TRUE(h->queries().balances("mer_1")->empty());
}

INSTANTIATE_TEST_SUITE_P(Adapters, StageLogContract, ::testing::ValuesIn(store_factories()), factory_name);

}  // namespace
}  // namespace ps::contract
