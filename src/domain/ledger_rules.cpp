#include "domain/ledger_rules.hpp"

#include <cstdlib>
#include <map>

#include "common/log.hpp"
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

Result<int64_t> admit_refund(const Payment& payment, const RefundAdmission& in) {
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
  if (in.check_balance && in.available_minor - in.processing_for_merchant < amount)
    return Error::unprocessable("insufficient_balance",
                                "the available " + payment.currency + " balance does not cover this refund");
  return amount;
}

}  // namespace ps
