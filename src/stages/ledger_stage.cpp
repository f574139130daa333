#include "stages/ledger_stage.hpp"

#include <algorithm>
#include <cstdlib>
#include <map>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "domain/ids.hpp"
#include "domain/ledger_rules.hpp"
#include "domain/money.hpp"

namespace ps {
namespace {
void count_payment(PaymentStatus s) {
  metrics::registry()
      .counter("paystream_payments_total", "Payments reaching a terminal status",
               {{"status", std::string(to_string(s))}})
      .inc();
}
}  // namespace

int64_t fee_for(int64_t amount_minor, const FeeConfig& fees) {
  if (amount_minor <= 0) return 0;
  __int128 f = (__int128)amount_minor * std::max<int64_t>(0, fees.fee_bps) / 10'000;
  f += std::max<int64_t>(0, fees.fee_fixed_minor);
  if (f > amount_minor) f = amount_minor;
  if (f < 0) f = 0;
  return static_cast<int64_t>(f);
}

JournalEntry settlement_entry(const Payment& p, const FeeConfig& fees, int64_t created_ms) {
  JournalEntry e;
  e.id = settlement_entry_id(p.id);
  e.kind = EntryKind::settlement;
  e.merchant_id = p.merchant_id;
  e.payment_id = p.id;
  e.created_ms = created_ms;
  const int64_t fee = fee_for(p.amount_minor, fees);
  e.postings.push_back({std::string(kClearingAccount), p.currency, p.amount_minor});
  e.postings.push_back({merchant_available_account(p.merchant_id), p.currency, -(p.amount_minor - fee)});
  if (fee > 0) e.postings.push_back({std::string(kFeesAccount), p.currency, -fee});
  return e;
}

JournalEntry refund_entry(const Refund& r, int64_t created_ms) {
  const std::string& merchant_id = r.merchant_id;
  JournalEntry e;
  e.id = deterministic_id("je_", r.id, "refund");
  e.kind = EntryKind::refund;
  e.merchant_id = merchant_id;
  e.payment_id = r.payment_id;
  e.refund_id = r.id;
  e.created_ms = created_ms;
  // The reverse of the settlement: the clearing account gives back the amount, the
  // merchant pays it less the fee share, the fee account pays the fee share.
  const int64_t fee_share = std::clamp<int64_t>(r.fee_refunded_minor, 0, r.amount_minor);
  e.postings.push_back({merchant_available_account(merchant_id), r.currency, r.amount_minor - fee_share});
  if (fee_share > 0) e.postings.push_back({std::string(kFeesAccount), r.currency, fee_share});
  e.postings.push_back({std::string(kClearingAccount), r.currency, -r.amount_minor});
  return e;
}

LedgerStage::LedgerStage(const Clock& clock, FeeConfig fees) : clock_(clock), fees_(fees) {}

Result<Effects> LedgerStage::handle(const std::vector<Record>& batch) {
  Effects out;
  for (const auto& rec : batch) {
    const auto& type = rec.event.type;
    const bool is_payment = type == event_types::payment_succeeded || type == event_types::payment_failed;
    const bool is_refund = type == event_types::refund_succeeded || type == event_types::refund_failed;
    if (!is_payment && !is_refund) {
      out.dead_letters.push_back({rec, "unexpected event type for ledger: " + type, 1});
      continue;
    }
    auto payload = decode_payload(rec.event.data);
    if (!payload) {
      out.dead_letters.push_back({rec, payload.error().code + ": " + payload.error().message, 1});
      continue;
    }
    if (is_payment) {
      if (!payload->payment) {
        out.dead_letters.push_back({rec, "event_schema_invalid: no payment in " + type, 1});
        continue;
      }
      PaymentOutcome o{std::move(*payload->payment), std::nullopt};
      if (type == event_types::payment_succeeded) {
        o.payment.status = PaymentStatus::succeeded;
        o.payment.failure_code.clear();
        JournalEntry e = settlement_entry(o.payment, fees_, rec.event.time_ms);
        assert_balanced(e, "ledger stage");
        o.settlement = std::move(e);
      } else {
        o.payment.status = PaymentStatus::failed;
        if (o.payment.failure_code.empty()) o.payment.failure_code = "processing_error";
      }
      count_payment(o.payment.status);
      log::info("payment posted", {{"payment_id", o.payment.id},
                                   {"status", std::string(to_string(o.payment.status))},
                                   {"trace_id", log::trace_id_of(rec.event.traceparent)}});
      out.payment_outcomes.push_back(std::move(o));
    } else {
      if (!payload->refund) {
        out.dead_letters.push_back({rec, "event_schema_invalid: no refund in " + type, 1});
        continue;
      }
      RefundOutcome o{std::move(*payload->refund), std::nullopt};
      if (type == event_types::refund_succeeded) {
        o.refund.status = RefundStatus::succeeded;
        o.refund.failure_code.clear();
        JournalEntry e = refund_entry(o.refund, rec.event.time_ms);
        assert_balanced(e, "ledger stage");
        o.reversal = std::move(e);
      } else {
        o.refund.status = RefundStatus::failed;
        if (o.refund.failure_code.empty()) o.refund.failure_code = "processing_error";
      }
      log::info("refund posted", {{"refund_id", o.refund.id}, {"payment_id", o.refund.payment_id},
                                  {"status", std::string(to_string(o.refund.status))},
                                  {"trace_id", log::trace_id_of(rec.event.traceparent)}});
      out.refund_outcomes.push_back(std::move(o));
    }
  }
  (void)clock_;
  return out;
}

}  // namespace ps
