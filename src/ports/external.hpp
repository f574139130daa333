// Ports to systems outside paystream: acquirer, risk provider, merchant webhook
// endpoints. Every call takes a timeout and returns within it (plus scheduling slack).
// Errors are values: retryable (timeout, unavailable, transient) or permanent.
// Thread-safety: implementations are thread-safe.
#pragma once
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace ps {

struct ChargeRequest {
  std::string payment_id;   // also the acquirer's idempotency key
  int64_t amount_minor = 0;
  std::string currency;
  std::string source;
};
struct AcquirerRefundRequest {
  std::string refund_id;    // the acquirer's idempotency key
  std::string payment_id;
  int64_t amount_minor = 0;
  std::string currency;
};
struct AcquirerResult {
  bool approved = false;
  std::string decline_code;   // "card_declined", "insufficient_funds" when not approved
  std::string acquirer_ref;
};

// Charging the same payment_id twice returns the first result and moves money once.
class Acquirer {
 public:
  virtual ~Acquirer() = default;
  virtual Result<AcquirerResult> charge(const ChargeRequest& req, std::chrono::milliseconds timeout) = 0;
  virtual Result<AcquirerResult> refund(const AcquirerRefundRequest& req,
                                        std::chrono::milliseconds timeout) = 0;
};

struct RiskRequest {
  std::string payment_id;
  std::string merchant_id;
  int64_t amount_minor = 0;
  std::string currency;
  std::string source;
};
struct RiskVerdict {
  bool approve = true;
  int score = 0;            // 0..100, higher = riskier
  std::string reason;
};
class RiskProvider {
 public:
  virtual ~RiskProvider() = default;
  virtual Result<RiskVerdict> assess(const RiskRequest& req, std::chrono::milliseconds timeout) = 0;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;
// POSTs a webhook. Ok(status) for any HTTP answer; an error for connect/timeout failures.
class WebhookSender {
 public:
  virtual ~WebhookSender() = default;
  virtual Result<int> post(const std::string& url, const HttpHeaders& headers,
                           const std::string& body, std::chrono::milliseconds timeout) = 0;
};

}  // namespace ps
