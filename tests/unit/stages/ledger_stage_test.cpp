#include <gtest/gtest.h>

#include <map>

#include "domain/ids.hpp"
#include "fakes.hpp"
#include "stages/ledger_stage.hpp"

namespace ps {
namespace {
using testing::make_payment;
using testing::make_refund;
using testing::payment_record;
using testing::refund_record;

int64_t posting(const JournalEntry& e, const std::string& account) {
  int64_t s = 0;
  for (const auto& p : e.postings)
    if (p.account == account) s += p.amount_minor;
  return s;
}

TEST(Ledger, FeeIsBpsPlusFixedClampedToAmount) {
  EXPECT_EQ(fee_for(10'000, {0, 0}), 0);
  EXPECT_EQ(fee_for(10'000, {290, 30}), 320);      // 2.9 % + 0.30
  EXPECT_EQ(fee_for(99, {100, 0}), 0);             // rounds down
  EXPECT_EQ(fee_for(50, {0, 80}), 50);             // never above the amount
  EXPECT_EQ(fee_for(INT64_MAX, {10'000, 0}), INT64_MAX);   // no overflow
}

TEST(Ledger, SettlementEntrySumsToZeroWithFees) {
  auto p = make_payment("pay_s", "tok_approve", 10'000);
  auto e = settlement_entry(p, {290, 30}, 123);
  EXPECT_EQ(e.id, deterministic_id("je_", "pay_s", "settlement"));
  EXPECT_EQ(e.kind, EntryKind::settlement);
  EXPECT_EQ(e.created_ms, 123);
  EXPECT_EQ(posting(e, "acquirer:clearing"), 10'000);
  EXPECT_EQ(posting(e, "merchant:mer_1:available"), -(10'000 - 320));
  EXPECT_EQ(posting(e, "platform:fees"), -320);
  EXPECT_TRUE(entry_balances(e));
  for (const auto& ps : e.postings) EXPECT_EQ(ps.currency, "EUR");
}

TEST(Ledger, SettlementWithoutFeeHasNoFeePosting) {
  auto e = settlement_entry(make_payment("pay_nf", "tok_approve", 777), {}, 1);
  ASSERT_EQ(e.postings.size(), 2u);
  EXPECT_TRUE(entry_balances(e));
  EXPECT_EQ(posting(e, "merchant:mer_1:available"), -777);
}

TEST(Ledger, EntryBalancesDetectsImbalanceAndCurrencyMix) {
  JournalEntry e;
  e.postings = {{"a", "EUR", 100}, {"b", "EUR", -99}};
  EXPECT_FALSE(entry_balances(e));
  e.postings = {{"a", "EUR", 100}, {"b", "USD", -100}};
  EXPECT_FALSE(entry_balances(e));
  e.postings = {{"a", "EUR", INT64_MAX}, {"b", "EUR", INT64_MAX}, {"c", "EUR", 2}};
  EXPECT_FALSE(entry_balances(e));
}

TEST(Ledger, RefundReversal) {
  auto r = make_refund("re_1", "pay_1", 400);
  auto e = refund_entry(r, 55);
  EXPECT_EQ(e.kind, EntryKind::refund);
  EXPECT_EQ(e.refund_id, "re_1");
  EXPECT_EQ(e.payment_id, "pay_1");
  EXPECT_EQ(posting(e, "merchant:mer_1:available"), 400);
  EXPECT_EQ(posting(e, "acquirer:clearing"), -400);
  EXPECT_TRUE(entry_balances(e));
  EXPECT_NE(e.id, refund_entry(make_refund("re_2", "pay_1", 400), 55).id);
}

// A refund with a fee share: the merchant pays the amount less the share, the fee account
// gives the share back, clearing gets the whole amount: the reverse of the settlement.
TEST(Ledger, RefundReversalGivesTheFeeShareBack) {
  auto r = make_refund("re_fee", "pay_1", 1000);
  r.fee_refunded_minor = 29;
  auto e = refund_entry(r, 55);
  EXPECT_EQ(posting(e, "merchant:mer_1:available"), 971);
  EXPECT_EQ(posting(e, "platform:fees"), 29);
  EXPECT_EQ(posting(e, "acquirer:clearing"), -1000);
  EXPECT_TRUE(entry_balances(e));
  // With the settlement of the same payment (fee 29), every account is back at zero.
  Payment p = make_payment("pay_1", "tok_approve", 1000);
  auto s = settlement_entry(p, {290, 0}, 1);
  for (const char* acct : {"merchant:mer_1:available", "platform:fees", "acquirer:clearing"})
    EXPECT_EQ(posting(s, acct) + posting(e, acct), 0) << acct;
}

TEST(LedgerStage, OutcomesForEveryTerminalEventType) {
  ManualClock clock;
  LedgerStage stage(clock, {100, 5});
  auto ok = make_payment("pay_ok", "tok_approve", 2000);
  ok.status = PaymentStatus::succeeded;
  auto bad = make_payment("pay_bad", "tok_decline", 2000);
  bad.status = PaymentStatus::failed;
  bad.failure_code = "card_declined";
  auto rs = make_refund("re_s", "pay_ok", 500);
  auto rf = make_refund("re_f", "pay_ok", 500);
  rf.failure_code = "amount_exceeds_charge";
  auto rec_ok = payment_record(ok, event_types::payment_succeeded);
  auto r = stage.handle({rec_ok, payment_record(bad, event_types::payment_failed),
                         refund_record(rs, event_types::refund_succeeded), refund_record(rf, event_types::refund_failed),
                         testing::garbage_record(9, "payment.succeeded")});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->payment_outcomes.size(), 2u);
  const auto& po = r->payment_outcomes[0];
  EXPECT_EQ(po.payment.status, PaymentStatus::succeeded);
  ASSERT_TRUE(po.settlement.has_value());
  EXPECT_TRUE(entry_balances(*po.settlement));
  EXPECT_EQ(posting(*po.settlement, "platform:fees"), -25);   // 1 % of 2000 + 5
  EXPECT_EQ(po.settlement->created_ms, rec_ok.event.time_ms);  // deterministic on redelivery
  EXPECT_EQ(r->payment_outcomes[1].payment.status, PaymentStatus::failed);
  EXPECT_EQ(r->payment_outcomes[1].payment.failure_code, "card_declined");
  EXPECT_FALSE(r->payment_outcomes[1].settlement.has_value());
  ASSERT_EQ(r->refund_outcomes.size(), 2u);
  EXPECT_EQ(r->refund_outcomes[0].refund.status, RefundStatus::succeeded);
  ASSERT_TRUE(r->refund_outcomes[0].reversal.has_value());
  EXPECT_EQ(posting(*r->refund_outcomes[0].reversal, "merchant:mer_1:available"), 500);
  EXPECT_EQ(r->refund_outcomes[1].refund.status, RefundStatus::failed);
  EXPECT_FALSE(r->refund_outcomes[1].reversal.has_value());
  ASSERT_EQ(r->dead_letters.size(), 1u);
  EXPECT_EQ(r->dead_letters[0].original.offset, 9);
  // Redelivery yields the identical entry.
  auto again = stage.handle({rec_ok});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->payment_outcomes[0].settlement->id, po.settlement->id);
  EXPECT_EQ(again->payment_outcomes[0].settlement->postings.size(), po.settlement->postings.size());
}

}  // namespace
}  // namespace ps
