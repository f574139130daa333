// Acquirer over HTTP: the processor's adapter for `paystream acquirer-sim` (or any
// acquirer speaking the same small protocol, docs/ACQUIRER_SIMULATOR.md):
//   POST {base}/v1/charges  {"payment_id","amount","currency","source"}
//   POST {base}/v1/refunds  {"refund_id","payment_id","amount","currency"}
//   POST {base}/v1/charges/{payment_id}/lookup  {"payment_id"}   (Acquirer::lookup_charge)
//   header Idempotency-Key: the payment (refund) id.
//   200 {"approved":bool,"decline_code":str,"acquirer_ref":str}; a lookup's 200 is
//   {"charged":true, <the same fields>} or {"charged":false,"voided":true} (definitive
//   "not charged"; anything else, e.g. "charged":false without "voided":true, is a
//   retryable acquirer_bad_response, never a negative). 5xx (503, 504, others) and
//   client-side timeouts or connection failures are retryable errors; other statuses
//   (4xx, e.g. 404 from an acquirer without the lookup route) are permanent errors.
// Timeouts come from the caller (the processor stage also wraps it in its breaker).
#pragma once
#include <memory>
#include <string>

#include "ports/external.hpp"

namespace ps {

class HttpAcquirer final : public Acquirer {
 public:
  explicit HttpAcquirer(std::string base_url);
  ~HttpAcquirer() override;
  Result<AcquirerResult> charge(const ChargeRequest& req, std::chrono::milliseconds timeout) override;
  Result<AcquirerResult> refund(const AcquirerRefundRequest& req, std::chrono::milliseconds timeout) override;
  Result<std::optional<AcquirerResult>> lookup_charge(const std::string& payment_id,
                                                      std::chrono::milliseconds timeout) override;

 private:
  std::string base_;
};

}  // namespace ps
