// Ports to systems outside paystream: acquirer, risk provider, merchant webhook
// endpoints. Every call takes a timeout and returns within it (plus scheduling slack).
// Errors are values: retryable (timeout, unavailable, transient) or permanent.
// Thread-safety: implementations are thread-safe.
#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "domain/http_url.hpp"

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

// The decline code of a charge whose payment id was voided by lookup_charge (below): the
// acquirer recorded "not charged" for that id before the charge reached it.
inline constexpr std::string_view kChargeVoidedCode = "charge_voided";

// Charging the same payment_id twice returns the first result and moves money once.
//
// A charge() that fails with a retryable error (a timeout, a lost connection, a 503) has an
// UNKNOWN outcome: the acquirer may have captured it and the answer been lost, or the
// request may still be on its way and execute later. lookup_charge() resolves it:
//   Ok(result)        a charge with this payment id was executed: its recorded result
//                     (approved or declined), the same a repeated charge() returns.
//   Ok(std::nullopt)  DEFINITIVE "not charged": no charge with this id was executed, and
//                     the acquirer has recorded that (it voided the id), so none ever will
//                     be: a charge() with this id that arrives later (still in flight, a
//                     retry, a redelivery, a replay) is declined with kChargeVoidedCode and
//                     moves no money. The lookup and the charge of one id are atomic with
//                     respect to each other; the void is as durable as a charge, and is
//                     itself idempotent (a repeated lookup returns nullopt again).
//   an error          no answer (timeout, unavailable, a malformed answer, an acquirer that
//                     cannot look charges up): the outcome stays unknown. Retryable errors
//                     may be retried (the lookup is idempotent); nothing may be concluded.
// The void-on-lookup is the acquirer-side fence (a reversal of a timed-out authorization)
// without which a negative answer would not be final.
class Acquirer {
 public:
  virtual ~Acquirer() = default;
  virtual Result<AcquirerResult> charge(const ChargeRequest& req, std::chrono::milliseconds timeout) = 0;
  virtual Result<AcquirerResult> refund(const AcquirerRefundRequest& req,
                                        std::chrono::milliseconds timeout) = 0;
  virtual Result<std::optional<AcquirerResult>> lookup_charge(const std::string& payment_id,
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

// Name resolution for outbound calls: the addresses of a DNS name (never an IP literal),
// within `timeout`. Errors: timeout (retryable); unavailable "resolve_failed" (the name
// does not resolve, or the resolver failed) or "resolve_busy" (too many lookups pending).
class HostResolver {
 public:
  virtual ~HostResolver() = default;
  virtual Result<std::vector<IpAddress>> resolve(const std::string& host, std::chrono::milliseconds timeout) = 0;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;
// POSTs a webhook. Ok(status) for any HTTP answer; an error for connect/timeout failures,
// and invalid_request "url_invalid" / "url_not_allowed" (not retryable, nothing sent) for
// a URL that is malformed or reaches an address the sender's policy refuses (SPEC §3).
class WebhookSender {
 public:
  virtual ~WebhookSender() = default;
  virtual Result<int> post(const std::string& url, const HttpHeaders& headers,
                           const std::string& body, std::chrono::milliseconds timeout) = 0;
};

}  // namespace ps
