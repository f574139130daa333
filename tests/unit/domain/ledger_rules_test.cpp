// The rules the ledger stage, both stores and the API share (domain/ledger_rules.hpp).
#include <gtest/gtest.h>

#include <algorithm>

#include "domain/ledger_rules.hpp"

namespace ps {
namespace {

Payment succeeded(int64_t amount, int64_t refunded = 0) {
  Payment p;
  p.id = "pay_1";
  p.merchant_id = "mer_1";
  p.amount_minor = amount;
  p.amount_refunded_minor = refunded;
  p.currency = "EUR";
  p.status = PaymentStatus::succeeded;
  return p;
}

RefundAdmission ask(int64_t requested, int64_t processing_payment, int64_t available, int64_t processing_merchant) {
  return RefundAdmission{requested, processing_payment, available, processing_merchant, true};
}

TEST(LedgerRules, AccountNames) {
  EXPECT_EQ(merchant_available_account("mer_9"), "merchant:mer_9:available");
  EXPECT_EQ(kClearingAccount, "acquirer:clearing");
  EXPECT_EQ(kFeesAccount, "platform:fees");
}

TEST(LedgerRules, RefundOfEverythingRefundableResolvesTheAmount) {
  EXPECT_EQ(admit_refund(succeeded(1000, 300), ask(0, 200, 10'000, 200))->amount_minor, 500);
}

TEST(LedgerRules, RefundNeverExceedsWhatWasCapturedMinusRefundedAndProcessing) {
  auto p = succeeded(1000, 300);
  EXPECT_EQ(admit_refund(p, ask(500, 200, 10'000, 0))->amount_minor, 500);
  auto r = admit_refund(p, ask(501, 200, 10'000, 0));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "amount_exceeds_refundable");
  EXPECT_EQ(r.error().param, "amount");
  EXPECT_EQ(r.error().kind, ErrorKind::unprocessable);
  auto none_left = admit_refund(succeeded(1000, 1000), ask(0, 0, 10'000, 0));
  ASSERT_FALSE(none_left);
  EXPECT_EQ(none_left.error().code, "amount_exceeds_refundable");
}

TEST(LedgerRules, RefundNeverOverdrawsTheMerchant) {
  auto p = succeeded(1000);
  EXPECT_EQ(admit_refund(p, ask(400, 0, 600, 200))->amount_minor, 400);   // 600 - 200 covers 400
  auto r = admit_refund(p, ask(401, 0, 600, 200));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "insufficient_balance");
  RefundAdmission early = ask(401, 0, 600, 200);
  early.check_balance = false;   // the API's early check leaves the balance to the store
  EXPECT_EQ(admit_refund(p, early)->amount_minor, 401);
}

TEST(LedgerRules, OnlySucceededPaymentsAndPositiveAmounts) {
  auto p = succeeded(1000);
  p.status = PaymentStatus::processing;
  EXPECT_EQ(admit_refund(p, ask(1, 0, 10'000, 0)).error().code, "payment_not_succeeded");
  EXPECT_EQ(admit_refund(succeeded(1000), ask(-1, 0, 10'000, 0)).error().code, "amount_invalid");
}

TEST(LedgerRules, EntryBalancesPerCurrencyWithoutOverflow) {
  JournalEntry e;
  e.id = "je_1";
  e.postings = {{"a", "EUR", 100}, {"b", "EUR", -100}};
  EXPECT_TRUE(entry_balances(e));
  e.postings = {{"a", "EUR", 100}, {"b", "USD", -100}};
  EXPECT_FALSE(entry_balances(e));
  e.postings = {{"a", "EUR", INT64_MAX}, {"b", "EUR", INT64_MAX}, {"c", "EUR", 2}};
  EXPECT_FALSE(entry_balances(e));
  e.postings.clear();
  EXPECT_FALSE(entry_balances(e));
}

// Refunds give the fee back pro rata, cumulatively: any split of the whole amount gives
// back exactly the fee.
TEST(LedgerRules, RefundFeeSharesOfTheWholeAmountAddUpToTheFee) {
  EXPECT_EQ(refund_fee_share(1000, 29, 0, 1000), 29);
  EXPECT_EQ(refund_fee_share(1000, 29, 0, 500), 14);
  EXPECT_EQ(refund_fee_share(1000, 29, 500, 500), 15);
  EXPECT_EQ(refund_fee_share(1000, 29, 0, 1), 0);
  EXPECT_EQ(refund_fee_share(1000, 0, 0, 1000), 0);
  EXPECT_EQ(refund_fee_share(1000, 29, 0, 0), 0);
  EXPECT_EQ(refund_fee_share(1000, 29, 1000, 5), 0) << "nothing left to give back";
  EXPECT_EQ(refund_fee_share(INT64_MAX, INT64_MAX / 2, 0, INT64_MAX), INT64_MAX / 2) << "no overflow";
  for (int64_t amount : {1, 7, 1000, 99'999}) {
    const int64_t fee = amount * 29 / 1000 + 1;
    for (int64_t parts : {1, 2, 3, 7}) {
      int64_t claimed = 0, total = 0;
      while (claimed < amount) {
        const int64_t r = std::max<int64_t>(1, std::min(amount - claimed, amount / parts));
        const int64_t share = refund_fee_share(amount, fee, claimed, r);
        EXPECT_GE(share, 0);
        EXPECT_LE(share, r);
        total += share;
        claimed += r;
      }
      EXPECT_EQ(total, fee) << amount << " in " << parts;
    }
  }
}

// With a fee, the merchant's first payment can be refunded in full: the balance must cover
// the net debit (amount minus the fee share), and in-flight refunds count in full.
TEST(LedgerRules, RefundBalanceCheckCoversTheNetDebit) {
  {
    // Two halves of the first payment: the second is covered by what the first left.
    Payment half = succeeded(1000, 500);
    RefundAdmission in = ask(0, 0, 971 - (500 - 14), 0);
    in.payment_fee_minor = 29;
    auto second = admit_refund(half, in);
    ASSERT_TRUE(second.ok()) << second.error().message;
    EXPECT_EQ(second->amount_minor, 500);
    EXPECT_EQ(second->fee_share_minor, 15);
  }
  Payment p = succeeded(1000);
  RefundAdmission in = ask(0, 0, 971, 0);  // the settlement credited 1000 - 29
  in.payment_fee_minor = 29;
  auto full = admit_refund(p, in);
  ASSERT_TRUE(full.ok()) << full.error().message;
  EXPECT_EQ(full->amount_minor, 1000);
  EXPECT_EQ(full->fee_share_minor, 29);
  in.available_minor = 970;
  EXPECT_EQ(admit_refund(p, in).error().code, "insufficient_balance");
  in.available_minor = 971;
  in.processing_for_merchant = 1;  // another refund in flight
  EXPECT_EQ(admit_refund(p, in).error().code, "insufficient_balance");
}

TEST(LedgerRulesDeathTest, AnUnbalancedEntryStopsTheProcess) {
  JournalEntry e;
  e.id = "je_bad";
  e.postings = {{"a", "EUR", 100}, {"b", "EUR", -99}};
  EXPECT_DEATH(assert_balanced(e, "test"), "does not balance");
  e.postings[1].amount_minor = -100;
  assert_balanced(e, "test");   // returns
}

}  // namespace
}  // namespace ps
