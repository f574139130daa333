#include "domain/ledger_rules.hpp"

#include <algorithm>
#include <cstdlib>
#include <map>

#include "common/log.hpp"
#include "domain/ids.hpp"
#include "domain/money.hpp"

namespace ps {

std::string merchant_available_account(const std::string& merchant_id) {
  return "merchant:" + merchant_id + ":available";
}

bool entry_balances(const JournalEntry& e) {
  std::map<std::string, int64_t> sums;
  for (const auto& p : e.postings) {
    int64_t out = 0;
    if (add_overflows(sums[p.currency], p.amount_minor, &out)) return false;
    sums[p.currency] = out;
  }
  for (const auto& [cur, s] : sums)
    if (s != 0) return false;
  return !e.id.empty() && !e.postings.empty();
}

void assert_balanced(const JournalEntry& e, std::string_view where) {
  if (entry_balances(e)) return;
  std::string postings;
  for (const auto& p : e.postings)
    postings += p.account + " " + std::to_string(p.amount_minor) + " " + p.currency + "; ";
  log::error("BUG: journal entry does not balance; stopping before it is posted",
             {{"where", std::string(where)}, {"entry_id", e.id}, {"payment_id", e.payment_id},
              {"refund_id", e.refund_id}, {"postings", postings}});
  std::abort();
}

int64_t refund_fee_share(int64_t payment_amount_minor, int64_t payment_fee_minor, int64_t claimed_minor,
                         int64_t refund_amount_minor) {
  const int64_t a = payment_amount_minor;
  if (a <= 0 || payment_fee_minor <= 0 || refund_amount_minor <= 0) return 0;
  const int64_t fee = std::min(payment_fee_minor, a);
  const int64_t before = std::clamp<int64_t>(claimed_minor, 0, a);
  const int64_t after = std::min<int64_t>(a, before + std::min(refund_amount_minor, a));
  auto upto = [&](int64_t x) { return static_cast<int64_t>((__int128)fee * x / a); };
  return upto(after) - upto(before);
}

std::string settlement_entry_id(const std::string& payment_id) {
  return deterministic_id("je_", payment_id, "settlement");
}

Result<AdmittedRefund> admit_refund(const Payment& payment, const RefundAdmission& in) {
  if (payment.status != PaymentStatus::succeeded)
    return Error::unprocessable("payment_not_succeeded",
                                "payment " + payment.id + " is " + std::string(to_string(payment.status)) +
                                    "; only succeeded payments can be refunded");
  if (in.requested_minor < 0) return Error::invalid("amount_invalid", "refund amount must be positive", "amount");
  const int64_t refundable = payment.amount_minor - payment.amount_refunded_minor - in.processing_for_payment;
  const int64_t amount = in.requested_minor == 0 ? refundable : in.requested_minor;
  if (amount <= 0 || amount > refundable)
    return Error::unprocessable("amount_exceeds_refundable",
                                "at most " + std::to_string(std::max<int64_t>(refundable, 0)) +
                                    " can still be refunded on payment " + payment.id,
                                "amount");
  const int64_t fee_share = refund_fee_share(payment.amount_minor, in.payment_fee_minor,
                                             payment.amount_refunded_minor + in.processing_for_payment, amount);
  if (in.check_balance && in.available_minor - in.processing_for_merchant < amount - fee_share)
    return Error::unprocessable("insufficient_balance",
                                "the available " + payment.currency + " balance does not cover this refund");
  return AdmittedRefund{amount, fee_share};
}

}  // namespace ps
