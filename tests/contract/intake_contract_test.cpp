// IntakeStore contract: one payment per (merchant, key) under concurrency, refunds that
// never exceed what was captured, balance checks, idempotent response replacement.
#include <gtest/gtest.h>

#include <map>
#include <memory>

#include <atomic>
#include <set>
#include <thread>

#include "contract/store_harness.hpp"
#include "domain/event.hpp"

namespace ps::contract {
namespace {

class IntakeContract : public ::testing::TestWithParam<HarnessFactory> {
 protected:
  void SetUp() override { h = GetParam().make(); }
  std::unique_ptr<StoreHarness> h;
};

TEST_P(IntakeContract, AcceptPaymentStoresPaymentEventAndRecord) {
  int64_t now = h->clock.now_ms();
  auto cmd = payment_cmd("mer_1", "key-1", 1234, now, "USD");
  Payment p = cmd.payment;
  auto r = accept_payment_sync(h->intake(), cmd);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->created);
  EXPECT_EQ(r->record.response_body, cmd.record.response_body);

  auto got = h->queries().get_payment("mer_1", p.id);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->amount_minor, 1234);
  EXPECT_EQ((*got)->currency, "USD");
  EXPECT_EQ((*got)->metadata.at("order"), "key-1");
  EXPECT_EQ((*got)->source, "tok_approve");
  EXPECT_EQ((*got)->status, PaymentStatus::processing);
  EXPECT_FALSE(h->queries().get_payment("mer_other", p.id)->has_value());

  EXPECT_EQ(h->count_events("tx.initiated"), 1);
  auto idem = h->intake().find_idempotency("mer_1", "key-1");
  ASSERT_TRUE(idem.ok() && idem->has_value());
  EXPECT_EQ((*idem)->fingerprint, "fp-key-1");
  EXPECT_EQ((*idem)->http_status, 202);
  EXPECT_EQ((*idem)->resource_id, p.id);
  EXPECT_FALSE(h->intake().find_idempotency("mer_2", "key-1")->has_value());
}

TEST_P(IntakeContract, SameKeyFromSixteenThreadsCreatesExactlyOnePayment) {
  constexpr int kThreads = 16;
  std::vector<std::thread> threads;
  std::vector<Result<AcceptOutcome>> results(kThreads, Error::internal("unset"));
  std::atomic<bool> go{false};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto cmd = payment_cmd("mer_1", "same-key", 500, h->clock.now_ms());
      cmd.record.fingerprint = "fp-" + std::to_string(i);  // each caller's own fingerprint
      while (!go) std::this_thread::yield();
      results[i] = accept_payment_sync(h->intake(), std::move(cmd));
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  int created = 0;
  std::set<std::string> fingerprints;
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.error().message;
    created += r->created ? 1 : 0;
    fingerprints.insert(r->record.fingerprint);
  }
  EXPECT_EQ(created, 1);
  EXPECT_EQ(fingerprints.size(), 1u) << "everyone sees the first stored record";
  EXPECT_EQ(h->count_events("tx.initiated"), 1);
  auto list = h->queries().list_payments("mer_1", std::nullopt, Page{100, ""});
  EXPECT_EQ(list->size(), 1u);
}

TEST_P(IntakeContract, UpdateIdempotentResponseReplacesTheStoredResponse) {
  auto cmd = payment_cmd("mer_1", "k", 100, h->clock.now_ms());
  ASSERT_TRUE(accept_payment_sync(h->intake(), cmd).ok());
  std::promise<Result<void>> p;
  h->intake().update_idempotent_response("mer_1", "k", 201, "{\"status\":\"succeeded\"}",
                                         [&](Result<void> r) { p.set_value(r); });
  ASSERT_TRUE(p.get_future().get().ok());
  auto rec = h->intake().find_idempotency("mer_1", "k")->value();
  EXPECT_EQ(rec.http_status, 201);
  EXPECT_EQ(rec.response_body, "{\"status\":\"succeeded\"}");
  // A retry now replays the updated response.
  auto again = accept_payment_sync(h->intake(), cmd);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->record.http_status, 201);

  std::promise<Result<void>> missing;
  h->intake().update_idempotent_response("mer_1", "nope", 201, "{}", [&](Result<void> r) { missing.set_value(r); });
  EXPECT_FALSE(missing.get_future().get().ok());
}

TEST_P(IntakeContract, RefundOfAllResolvesAmountInsideTheTransaction) {
  Payment p = settled_payment(*h, "mer_1", "pay-k", 1000);
  auto part = accept_refund_sync(h->intake(), refund_cmd("mer_1", p.id, "r1", 300, h->clock.now_ms()));
  ASSERT_TRUE(part.ok()) << part.error().message;
  auto cmd = refund_cmd("mer_1", p.id, "r2", 0, h->clock.now_ms());
  std::string rid = cmd.refund.id;
  auto all = accept_refund_sync(h->intake(), std::move(cmd));
  ASSERT_TRUE(all.ok()) << all.error().message;
  EXPECT_TRUE(all->created);
  EXPECT_EQ(all->record.response_body, "{\"id\":\"" + rid + "\",\"amount\":700}");
  EXPECT_EQ(h->intake().find_idempotency("mer_1", "r2")->value().response_body, all->record.response_body);
  auto stored = h->queries().get_refund("mer_1", rid);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->amount_minor, 700);
  EXPECT_EQ((*stored)->currency, "EUR");
  EXPECT_EQ((*stored)->status, RefundStatus::processing);
  EXPECT_FALSE(h->queries().get_refund("mer_2", rid)->has_value());

  // The refund.requested event carries the resolved amount.
  auto recs = h->log().poll("check", {"tx.validated"}, 10, std::chrono::milliseconds(0));
  ASSERT_TRUE(recs.ok());
  ASSERT_EQ(recs->size(), 2u);
  auto payload = decode_payload((*recs)[1].event.data);
  ASSERT_TRUE(payload.ok()) << payload.error().message;
  ASSERT_TRUE(payload->refund.has_value());
  EXPECT_EQ(payload->refund->amount_minor, 700);
  EXPECT_EQ((*recs)[1].event.key, p.id);
  EXPECT_EQ((*recs)[1].event.type, "refund.requested");

  // Nothing left.
  auto more = accept_refund_sync(h->intake(), refund_cmd("mer_1", p.id, "r3", 0, h->clock.now_ms()));
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.error().code, "amount_exceeds_refundable");
  EXPECT_EQ(more.error().param, "amount");
  // Same key again: the stored record, not an error.
  auto replay = accept_refund_sync(h->intake(), refund_cmd("mer_1", p.id, "r2", 0, h->clock.now_ms()));
  ASSERT_TRUE(replay.ok());
  EXPECT_FALSE(replay->created);
  EXPECT_EQ(replay->record.response_body, all->record.response_body);
}

TEST_P(IntakeContract, RefundsFromSixteenThreadsNeverExceedCaptured) {
  Payment p = settled_payment(*h, "mer_1", "pay-k", 1000);
  constexpr int kThreads = 16;
  std::vector<std::thread> threads;
  std::vector<Result<AcceptOutcome>> results(kThreads, Error::internal("unset"));
  std::atomic<bool> go{false};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto cmd = refund_cmd("mer_1", p.id, "refund-" + std::to_string(i), 150, h->clock.now_ms());
      while (!go) std::this_thread::yield();
      results[i] = accept_refund_sync(h->intake(), std::move(cmd));
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  int created = 0;
  for (auto& r : results) {
    if (r.ok()) {
      EXPECT_TRUE(r->created);
      ++created;
    } else {
      EXPECT_EQ(r.error().code, "amount_exceeds_refundable") << r.error().message;
      EXPECT_EQ(r.error().kind, ErrorKind::unprocessable);
    }
  }
  EXPECT_EQ(created, 6);  // 6 * 150 = 900 <= 1000 < 7 * 150
  EXPECT_EQ(h->count_events("tx.validated"), 6);
}

TEST_P(IntakeContract, RefundNeedsASucceededPaymentOfTheMerchant) {
  auto cmd = payment_cmd("mer_1", "pay-k", 1000, h->clock.now_ms());
  Payment p = cmd.payment;
  ASSERT_TRUE(accept_payment_sync(h->intake(), std::move(cmd)).ok());
  auto r = accept_refund_sync(h->intake(), refund_cmd("mer_1", p.id, "r1", 100, h->clock.now_ms()));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "payment_not_succeeded");
  EXPECT_EQ(r.error().kind, ErrorKind::unprocessable);
  auto other = accept_refund_sync(h->intake(), refund_cmd("mer_2", p.id, "r1", 100, h->clock.now_ms()));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().kind, ErrorKind::not_found);
  // A refused request leaves the key unused.
  EXPECT_FALSE(h->intake().find_idempotency("mer_1", "r1")->has_value());
}

// With a fee, a refund gives the fee back pro rata (domain refund_fee_share): the store
// reads the fee from the payment's settlement, and the balance must cover the refund's net
// debit (amount minus its fee share) after the full amounts of refunds still in flight.
TEST_P(IntakeContract, RefundWithAFeeNeedsTheNetDebitAndCarriesItsFeeShare) {
  // The merchant was credited 900 of a 1000 capture (100 fee).
  Payment p = settled_payment(*h, "mer_1", "pay-k", 1000, "EUR", 100);
  auto bal = h->queries().balances("mer_1");
  ASSERT_EQ(bal->size(), 1u);
  EXPECT_EQ((*bal)[0].available_minor, 900);
  auto fee_of = std::make_shared<std::map<std::string, int64_t>>();
  auto cmd = [&](const std::string& key, int64_t amount) {
    AcceptRefund c = refund_cmd("mer_1", p.id, key, amount, h->clock.now_ms());
    auto inner = c.render;
    c.render = [fee_of, key, inner](const Refund& rf) {
      (*fee_of)[key] = rf.fee_refunded_minor;
      return inner(rf);
    };
    return c;
  };
  // 600 in flight (its net debit 540 fits 900).
  ASSERT_TRUE(accept_refund_sync(h->intake(), cmd("r2", 600)).ok());
  EXPECT_EQ((*fee_of)["r2"], 60);
  // The other 400 (net 360) does not fit 900 - 600; 300 (net 270) does.
  auto r3 = accept_refund_sync(h->intake(), cmd("r3", 400));
  ASSERT_FALSE(r3.ok());
  EXPECT_EQ(r3.error().code, "insufficient_balance");
  EXPECT_FALSE(h->intake().find_idempotency("mer_1", "r3")->has_value());
  ASSERT_TRUE(accept_refund_sync(h->intake(), cmd("r4", 300)).ok());
  EXPECT_EQ((*fee_of)["r4"], 30);

  // A merchant's first payment refunded in full: the fee share it was admitted with.
  auto full_refund_of_first_payment = [&](const std::string& merchant, int64_t fee) -> int64_t {
    Payment q = settled_payment(*h, merchant, "pay-" + merchant, 1000, "EUR", fee);
    AcceptRefund full = refund_cmd(merchant, q.id, "all", 0, h->clock.now_ms());
    int64_t share = -1;
    full.render = [&share](const Refund& rf) {
      share = rf.fee_refunded_minor;
      return std::string("{}");
    };
    auto ok = accept_refund_sync(h->intake(), std::move(full));
    EXPECT_TRUE(ok.ok()) << (ok ? "" : ok.error().message);
    return share;
  };
  EXPECT_EQ(full_refund_of_first_payment("mer_3", 100), 100) << "the whole fee comes back";
  EXPECT_EQ(full_refund_of_first_payment("mer_4", 0), 0) << "without a fee nothing is given back";
}

TEST_P(IntakeContract, RefundOutcomeAppliedTwiceReversesOnce) {
  Payment p = settled_payment(*h, "mer_1", "pay-k", 1000);
  auto cmd = refund_cmd("mer_1", p.id, "r1", 400, h->clock.now_ms());
  Refund rf = cmd.refund;
  rf.currency = "EUR";
  ASSERT_TRUE(accept_refund_sync(h->intake(), std::move(cmd)).ok());
  rf.status = RefundStatus::succeeded;
  rf.updated_ms = h->clock.now_ms() + 1;
  for (int i = 0; i < 2; ++i) {
    Effects fx;
    fx.refund_outcomes.push_back({rf, reversal_for(rf)});
    auto c = h->log().commit("ledger", {}, std::move(fx));
    ASSERT_TRUE(c.ok()) << c.error().message;
  }
  EXPECT_EQ(h->queries().get_payment("mer_1", p.id)->value().amount_refunded_minor, 400);
  EXPECT_EQ(h->queries().get_refund("mer_1", rf.id)->value().status, RefundStatus::succeeded);
  EXPECT_EQ(h->queries().balances("mer_1")->at(0).available_minor, 600);
  auto entries = h->queries().entries_for_payment("mer_1", p.id);
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].kind, EntryKind::settlement);
  EXPECT_EQ((*entries)[1].kind, EntryKind::refund);
  EXPECT_EQ((*entries)[1].refund_id, rf.id);
  // Refundable is now 600; a failed refund releases its hold.
  auto c2 = refund_cmd("mer_1", p.id, "r2", 600, h->clock.now_ms());
  Refund rf2 = c2.refund;
  ASSERT_TRUE(accept_refund_sync(h->intake(), std::move(c2)).ok());
  auto none = accept_refund_sync(h->intake(), refund_cmd("mer_1", p.id, "r3", 1, h->clock.now_ms()));
  EXPECT_EQ(none.error().code, "amount_exceeds_refundable");
  rf2.status = RefundStatus::failed;
  rf2.failure_code = "acquirer_unavailable";
  Effects fx;
  fx.refund_outcomes.push_back({rf2, std::nullopt});
  ASSERT_TRUE(h->log().commit("ledger", {}, std::move(fx)).ok());
  EXPECT_TRUE(accept_refund_sync(h->intake(), refund_cmd("mer_1", p.id, "r4", 600, h->clock.now_ms())).ok());
}

INSTANTIATE_TEST_SUITE_P(Adapters, IntakeContract, ::testing::ValuesIn(store_factories()), factory_name);

}  // namespace
}  // namespace ps::contract
