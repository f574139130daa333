// LedgerStage (group "ledger", consumes tx.settled and tx.failed): turns terminal pipeline
// events into PaymentOutcome / RefundOutcome effects, which the StageLog commit applies
// idempotently in the same transaction as the consumed position.
//   payment.succeeded -> PaymentOutcome{succeeded, settlement entry}
//   payment.failed    -> PaymentOutcome{failed, no entry}
//   refund.succeeded  -> RefundOutcome{succeeded, reversal entry}
//   refund.failed     -> RefundOutcome{failed, no entry}
// Entries are deterministic (ids from the payment/refund id; created_ms = event time), so a
// redelivered event yields the identical entry. Sign convention: debit +, credit -.
//   settlement: acquirer:clearing +amount; merchant:<id>:available -(amount - fee);
//               platform:fees -fee (only when fee > 0)
//   reversal:   merchant:<id>:available +amount; acquirer:clearing -amount
// Every entry is checked to sum to zero per currency before it leaves this stage; a
// violation is a bug and aborts the process (PS_CHECK-style) rather than post it.
// Thread-safety: the free functions are pure; handle() is called from one runner thread.
#pragma once
#include <cstdint>
#include <string>

#include "domain/ledger_rules.hpp"  // account names, entry_balances
#include "ports/clock.hpp"
#include "ports/event_log.hpp"
#include "stages/stage_runner.hpp"

namespace ps {

struct FeeConfig {
  int64_t fee_bps = 0;          // basis points of the amount (1 bps = 0.01 %), rounded down
  int64_t fee_fixed_minor = 0;  // added per payment
};

// Fee for an amount: amount * bps / 10000 + fixed, clamped to [0, amount]. Overflow-safe.
int64_t fee_for(int64_t amount_minor, const FeeConfig& fees);
// Settlement entry of a succeeded payment (id deterministic_id("je_", payment id, "settlement")).
JournalEntry settlement_entry(const Payment& p, const FeeConfig& fees, int64_t created_ms);
// Reversal entry of a succeeded refund (id deterministic_id("je_", refund id, "refund")).
JournalEntry refund_entry(const Refund& r, int64_t created_ms);   // uses r.merchant_id

class LedgerStage final : public Stage {
 public:
  explicit LedgerStage(const Clock& clock, FeeConfig fees = {});
  std::string_view name() const override { return "ledger"; }
  Result<Effects> handle(const std::vector<Record>& batch) override;

 private:
  const Clock& clock_;
  const FeeConfig fees_;
};

}  // namespace ps
