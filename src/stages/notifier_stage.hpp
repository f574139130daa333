// Notifier: NotifierStage turns terminal pipeline events into merchant events and webhook
// deliveries; WebhookDispatcher sends due deliveries with Standard Webhooks signatures.
//
// NotifierStage (group "notifier", consumes tx.settled and tx.failed): for
// payment.succeeded/failed and refund.succeeded/failed it emits a MerchantEvent (id = the
// pipeline event id, so a redelivered event dedupes) and one WebhookDelivery per endpoint
// of the merchant that wants the type (id = deterministic_id("wd_", event id, endpoint
// id), status pending, due now). A DeliveryStore error is retryable (the batch waits).
//
// WebhookDispatcher (own thread): repeatedly takes due deliveries (bounded batch) and
// sends them with up to `concurrency` threads. Per endpoint a CircuitBreaker
// ("webhook:<endpoint id>", named in logs only): while open, a delivery is rescheduled to when the endpoint may
// be tried again, without counting an attempt. 2xx -> succeeded; otherwise attempts+1 and
// the next attempt after retry_schedule[attempts-1] plus jitter (0..jitter_fraction of the
// delay); after the last scheduled retry the delivery is failed and a DeadLetter (topic
// tx.settled/tx.failed per event type, event data = the merchant event JSON, key = the
// payment id) is recorded with it. Webhooks are at-least-once: a crash after the POST but
// before record_attempt sends it again with the same webhook-id.
// Metrics: paystream_webhook_deliveries_total{outcome} (succeeded, failed_attempt,
// dead_lettered, circuit_open), paystream_webhook_attempt_duration_seconds, and
// paystream_webhook_endpoint_breakers{state="open"|"half_open"} (counts: no series names
// an endpoint, so the unauthenticated /metrics tells nobody whether a target answers).
// Thread-safety: start/stop/run_once from one owner thread; internals are synchronised.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ports/clock.hpp"
#include "ports/event_log.hpp"
#include "ports/external.hpp"
#include "ports/stores.hpp"
#include "stages/resilience.hpp"
#include "stages/stage_runner.hpp"

namespace ps {

// Standard Webhooks signature: "v1," + base64(HMAC-SHA256(key, "<msg_id>.<timestamp_s>.<body>"))
// where key = base64-decoded secret after the "whsec_" prefix.
std::string sign_webhook(std::string_view whsec_secret, std::string_view msg_id, int64_t timestamp_s,
                         std::string_view body);
// During a secret rotation: one signature per secret, space-separated (Standard Webhooks
// "v1,<sig1> v1,<sig2>"); a receiver accepts the message if any one verifies.
std::string sign_webhook(const std::vector<std::string_view>& secrets, std::string_view msg_id, int64_t timestamp_s,
                         std::string_view body);

class NotifierStage final : public Stage {
 public:
  NotifierStage(DeliveryStore& deliveries, const Clock& clock);
  std::string_view name() const override { return "notifier"; }
  Result<Effects> handle(const std::vector<Record>& batch) override;

 private:
  DeliveryStore& store_;
  const Clock& clock_;
};

// Roughly the Standard Webhooks schedule: 5 s, 5 min, 30 min, 2 h, 5 h, then 10 h x 6
// (12 attempts in all, about 2.8 days).
std::vector<std::chrono::milliseconds> default_webhook_retry_schedule();

struct DispatcherOptions {
  size_t batch_max = 64;                               // deliveries per pass
  size_t concurrency = 8;                              // sending threads per pass
  std::chrono::milliseconds attempt_timeout{10'000};
  std::chrono::milliseconds idle_wait{500};            // real time between empty passes
  std::vector<std::chrono::milliseconds> retry_schedule = default_webhook_retry_schedule();
  double jitter_fraction = 0.1;
  BreakerOptions endpoint_breaker{5, std::chrono::milliseconds(60'000), 1};
  std::chrono::milliseconds breaker_reschedule_min{1'000};  // earliest retry when refused
  size_t max_breakers = 10'000;                        // endpoints tracked at once
  uint64_t seed = 42;
};

class WebhookDispatcher {
 public:
  WebhookDispatcher(DeliveryStore& store, WebhookSender& sender, const Clock& clock,
                    DispatcherOptions opts = {});
  ~WebhookDispatcher();
  WebhookDispatcher(const WebhookDispatcher&) = delete;
  WebhookDispatcher& operator=(const WebhookDispatcher&) = delete;

  void start();
  void stop();   // finishes the pass in hand, then joins
  // One pass on the calling thread; returns how many due deliveries were handled.
  size_t run_once();
  std::shared_ptr<CircuitBreaker> breaker_for(const std::string& endpoint_id);

 private:
  void deliver(const DueDelivery& d);
  std::chrono::milliseconds jitter(std::chrono::milliseconds base);

  DeliveryStore& store_;
  WebhookSender& sender_;
  const Clock& clock_;
  const DispatcherOptions opts_;
  std::mutex breakers_mu_;
  std::map<std::string, std::shared_ptr<CircuitBreaker>> breakers_;
  std::mutex rng_mu_;
  std::mt19937_64 rng_;
  std::atomic<bool> stopping_{false};
  std::mutex wake_mu_;
  std::condition_variable wake_;
  std::thread thread_;
};

}  // namespace ps
