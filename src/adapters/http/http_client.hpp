// Outbound HTTP/1.1 clients (Boost.Beast underneath; no Boost in this header).
// Every call runs on a private io_context for at most `timeout` (run_for), so it returns
// within the timeout plus scheduling slack — except that name resolution of a non-numeric
// host runs through getaddrinfo, which the io_context joins on destruction.
// http:// and https:// URLs; https verifies the peer against the system CA store and the
// host name (SNI set). A failed handshake is a retryable unavailable error "tls_failed".
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
// POSTs `body` to `url`. Errors: invalid_request "url_invalid"; "tls_failed";
// timeout (code "timeout", retryable); unavailable "connect_failed"/"io_failed" (retryable).
Result<HttpClientResponse> http_post(const std::string& url, const HttpHeaders& headers,
                                     const std::string& body, std::chrono::milliseconds timeout);

class HttpWebhookSender final : public WebhookSender {
 public:
  Result<int> post(const std::string& url, const HttpHeaders& headers, const std::string& body,
                   std::chrono::milliseconds timeout) override;
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
