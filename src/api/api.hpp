// The HTTP API of paystream (docs/API.md, SPEC §3): routing, authentication, rate
// limiting, idempotency, validation and the JSON answers. Transport-neutral: the HTTP
// server adapter hands it HttpRequest values and a Respond callback.
// Thread-safety: handle() may be called concurrently from any number of threads; it never
// blocks on a timer and never throws. Store callbacks and the Prefer-wait thread may call
// Respond from their own threads.
// Lifetime: the ports in ApiDeps must outlive the Api, and the Api must outlive every
// pending store callback (stop the HTTP server and the stores first). ~Api answers the
// requests still waiting on Prefer: wait with their 202.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "api/http_types.hpp"
#include "common/result.hpp"
#include "ports/backlog.hpp"
#include "ports/clock.hpp"
#include "ports/external.hpp"
#include "ports/fast_state.hpp"
#include "ports/stores.hpp"

namespace ps {

// Admin keys shorter than this are refused at start-up (guessable).
inline constexpr size_t kMinAdminKeyLength = 24;

struct ApiConfig {
  std::string admin_key;                     // empty: admin routes always answer 401
  int64_t max_amount_minor = 99'999'999'999;
  double default_rate_per_s = 1000;
  int64_t default_burst = 2000;
  int max_wait_ms = 30000;                   // cap of Prefer: wait
  int json_max_depth = 32;
  size_t max_waiters = 10000;                // Prefer: wait requests parked at once; beyond: 202 now
  size_t max_waiter_bytes = size_t(64) << 20; // payload bytes held by parked requests; beyond: 202 now
  size_t max_endpoints_per_merchant = 16;    // the next create answers 422 endpoint_limit_reached
  // Store lookups of API keys that are in no cache and turn out unknown: a token bucket per
  // client address (HttpRequest::peer). While a client's is empty, its keys missing from the
  // auth cache answer 429 without a lookup; other clients are not affected.
  double auth_failure_rate_per_s = 1000;
  // A cached API key is read from the store again after this long, so a key rotated out
  // or revoked through another gateway is refused here within it.
  int64_t auth_cache_ttl_ms = 5000;
  int64_t auth_failure_burst = 1000;
  // Wrong admin keys, per client address: beyond the burst, admin routes answer 429 for
  // that address (refilled at the rate) and the key is not compared.
  double admin_failure_rate_per_s = 1;
  int64_t admin_failure_burst = 10;
  // Intake admission (SPEC §2.6): with ApiDeps::backlog set, a new payment or refund is
  // refused with 503 store_overloaded + Retry-After while the settling stages have at
  // least max_backlog_records records to consume, or the oldest has waited
  // max_backlog_age_ms. 0 = that bound is off. Retries of a known key still replay.
  uint64_t max_backlog_records = 0;
  int64_t max_backlog_age_ms = 0;
  // Webhook endpoint URLs (SPEC §3): an IP literal must be one `webhook_targets` allows; a
  // DNS name is resolved (ApiDeps::resolver, at most webhook_resolve_timeout_ms) and every
  // address must be allowed. Otherwise 400 url_not_allowed; a name that does not resolve
  // (or no resolver) is 400 url_unresolvable. The sender checks again at connect time.
  AddressPolicy webhook_targets;
  int64_t webhook_resolve_timeout_ms = 2000;
};

struct ApiDeps {
  IntakeStore& intake;
  PaymentQueries& payments;
  MerchantStore& merchants;
  EndpointStore& endpoints;
  EventQueries& events;
  DeliveryStore& deliveries;
  IdempotencyCache& idempotency;
  RateLimiter& rate_limiter;
  const Clock& clock;
  const BacklogProbe* backlog = nullptr;   // intake admission; null: no bound
  HostResolver* resolver = nullptr;        // webhook URL names; null: names are refused
};

struct RouteSpec {
  std::string method;  // "GET", "POST", "DELETE"
  std::string path;    // template, e.g. "/v1/payments/{id}"
};

class Api {
 public:
  Api(ApiDeps deps, ApiConfig config);
  ~Api();
  Api(const Api&) = delete;
  Api& operator=(const Api&) = delete;

  // Loads the auth cache from MerchantStore::all_merchants; returns those merchants (the
  // gateway warms the payment-status cache for them).
  Result<std::vector<Merchant>> warm();
  void handle(HttpRequest req, Respond respond);
  void set_ready(bool ready);
  void set_draining(bool draining);          // /v1 requests answer 503 "draining"; /readyz 503;
                                             // requests parked on Prefer: wait get their 202 now
  void notify_terminal(const std::vector<std::string>& payment_ids);  // wakes Prefer: wait waiters
  size_t waiting() const;                    // requests parked on Prefer: wait

  static const std::vector<RouteSpec>& routes();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ps
