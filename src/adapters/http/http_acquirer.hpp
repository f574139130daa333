// Acquirer over HTTP: the processor's adapter for `paystream acquirer-sim` (or any
// acquirer speaking the same small protocol, docs/ACQUIRER_SIMULATOR.md):
//   POST {base}/v1/charges  {"payment_id","amount","currency","source"}
//   POST {base}/v1/refunds  {"refund_id","payment_id","amount","currency"}
//   header Idempotency-Key: the payment (refund) id.
//   200 {"approved":bool,"decline_code":str,"acquirer_ref":str}; 503/504/timeouts are
//   retryable errors; other statuses permanent errors.
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
 private:
  std::string base_;
};

}  // namespace ps
