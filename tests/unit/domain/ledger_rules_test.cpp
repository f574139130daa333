// The rules the ledger stage, both stores and the API share (domain/ledger_rules.hpp).
#include <gtest/gtest.h>

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
  EXPECT_EQ(*admit_refund(succeeded(1000, 300), ask(0, 200, 10'000, 200)), 500);
}

TEST(LedgerRules, RefundNeverExceedsWhatWasCapturedMinusRefundedAndProcessing) {
  auto p = succeeded(1000, 300);
  EXPECT_EQ(*admit_refund(p, ask(500, 200, 10'000, 0)), 500);
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
  EXPECT_EQ(*admit_refund(p, ask(400, 0, 600, 200)), 400);   // 600 - 200 covers 400
  auto r = admit_refund(p, ask(401, 0, 600, 200));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "insufficient_balance");
  RefundAdmission early = ask(401, 0, 600, 200);
  early.check_balance = false;   // the API's early check leaves the balance to the store
  EXPECT_EQ(*admit_refund(p, early), 401);
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
