// The ledger and refund rules that the ledger stage, both durable stores and the API all
// apply — written once here, so they cannot drift apart (SPEC §2.5).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "domain/model.hpp"

namespace ps {

// ---- account names (model.hpp: "merchant:<id>:available", "platform:fees",
// "acquirer:clearing") ----
std::string merchant_available_account(const std::string& merchant_id);
inline constexpr std::string_view kClearingAccount = "acquirer:clearing";
inline constexpr std::string_view kFeesAccount = "platform:fees";

// ---- the balance invariant ----
// True iff the entry has postings, they sum to zero in every currency, and no sum
// overflows.
bool entry_balances(const JournalEntry& e);
// Stops the process (after logging the entry) if `e` does not balance. An unbalanced
// entry is a bug upstream, not a condition to retry: posting it would make the ledger
// wrong, and refusing it with a retryable error would retry it for ever.
void assert_balanced(const JournalEntry& e, std::string_view where);

// ---- refund admission ----
// What the store reads, inside the transaction that then stores the refund, to decide it.
struct RefundAdmission {
  int64_t requested_minor = 0;            // 0 = everything still refundable
  int64_t processing_for_payment = 0;     // Σ refunds of this payment still processing
  int64_t available_minor = 0;            // the merchant's available balance in the currency
  int64_t processing_for_merchant = 0;    // Σ the merchant's refunds in that currency still processing
  bool check_balance = true;              // false: the API's early check, before the store's
  int64_t payment_fee_minor = 0;          // the fee the payment's settlement charged (platform:fees)
};
struct AdmittedRefund {
  int64_t amount_minor = 0;               // the amount resolved (never 0)
  int64_t fee_share_minor = 0;            // refund_fee_share of it: what goes back to the merchant
};
// The refund, or the refusal: unprocessable "payment_not_succeeded",
// "amount_exceeds_refundable" (param amount), "insufficient_balance", or invalid
// "amount_invalid" for a negative request. A refund never exceeds what was captured
// minus what is refunded or being refunded, and never overdraws the merchant: its net
// debit (amount minus its fee share) must be covered by the available balance minus the
// full amounts of the refunds still processing.
Result<AdmittedRefund> admit_refund(const Payment& payment, const RefundAdmission& in);

// ---- fees on refunds ----
// A refund gives back the payment's fee pro rata, cumulatively: with `claimed` the amount
// of the payment's earlier refunds (succeeded or still processing),
//   share = floor(fee * (claimed + refund) / amount) - floor(fee * claimed / amount),
// so the shares of any sequence of refunds of the whole amount add up to exactly the fee
// and the merchant is debited exactly what its settlement credited. Decided at admission
// and carried by the refund's events. One inexactness remains: a refund that fails while
// a later one of the same payment was already admitted leaves that later share computed
// with the failed amount counted, off by at most one minor unit (the ledger still
// balances, and the balance check at admission still holds).
int64_t refund_fee_share(int64_t payment_amount_minor, int64_t payment_fee_minor, int64_t claimed_minor,
                         int64_t refund_amount_minor);
// The id of a payment's settlement entry (its fee is that entry's platform:fees credit).
std::string settlement_entry_id(const std::string& payment_id);

}  // namespace ps
