// Outbound HTTP/1.1 clients (Boost.Beast underneath; no Boost in this header).
// URLs are parsed by parse_http_url (domain/http_url.hpp), the parser the API checks
// webhook URLs with. A DNS name is resolved once, through a HostResolver bounded by the
// call's timeout, and the connection goes to the addresses that lookup returned (never
// resolved again); the whole call — lookup, connect, exchange — takes at most `timeout`
// plus scheduling slack. https verifies the peer against the system CA store and the URL's
// host (SNI set for names); the Host header is the URL's host[:port]. A failed handshake
// is a retryable unavailable error "tls_failed".
// One connection per call (Connection: close). Response bodies are capped at 64 KiB.
// Thread-safety: both classes are stateless per call and thread-safe.
#pragma once
#include <chrono>
#include <string>

#include "common/result.hpp"
#include "ports/external.hpp"

namespace ps {

struct HttpClientResponse {
  int status = 0;
  std::string body;
};
// POSTs `body` to `url` (any address: for operator-configured URLs). Errors:
// invalid_request "url_invalid"; "tls_failed";
// timeout (code "timeout", retryable); unavailable "connect_failed"/"io_failed" (retryable).
Result<HttpClientResponse> http_post(const std::string& url, const HttpHeaders& headers,
                                     const std::string& body, std::chrono::milliseconds timeout);

// Webhooks go only to addresses `policy` allows (SPEC §3): every address the name resolves
// to is checked before connecting, and one that is not allowed refuses the whole call with
// invalid_request "url_not_allowed" and no connection. `resolver` (default: the system
// resolver) must outlive the sender.
class HttpWebhookSender final : public WebhookSender {
 public:
  explicit HttpWebhookSender(AddressPolicy policy = {}, HostResolver* resolver = nullptr);
  Result<int> post(const std::string& url, const HttpHeaders& headers, const std::string& body,
                   std::chrono::milliseconds timeout) override;

 private:
  AddressPolicy policy_;
  HostResolver* resolver_;
};

// POSTs {payment_id, merchant_id, amount, currency, source} and expects 2xx with
// {"approve": bool, "score": int[, "reason": string]}. Any other answer is an
// unavailable error ("risk_bad_response"), so the caller's fallback applies.
class HttpRiskProvider final : public RiskProvider {
 public:
  explicit HttpRiskProvider(std::string url);
  Result<RiskVerdict> assess(const RiskRequest& req, std::chrono::milliseconds timeout) override;

 private:
  std::string url_;
};

}  // namespace ps
