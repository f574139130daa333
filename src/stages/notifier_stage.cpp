#include "stages/notifier_stage.hpp"

#include <boost/json.hpp>

#include <algorithm>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/thread_name.hpp"
#include "domain/ids.hpp"
#include "domain/json_codec.hpp"

namespace ps {
using namespace std::chrono_literals;

std::string sign_webhook(std::string_view whsec_secret, std::string_view msg_id, int64_t timestamp_s,
                         std::string_view body) {
  std::string_view b64 = whsec_secret;
  if (b64.substr(0, 6) == "whsec_") b64.remove_prefix(6);
  std::string key = base64_decode(b64);
  if (key.empty()) key = std::string(b64);   // not base64: sign with the raw bytes
  std::string msg;
  msg.reserve(msg_id.size() + body.size() + 24);
  msg.append(msg_id).append(".").append(std::to_string(timestamp_s)).append(".").append(body);
  return "v1," + base64_encode(hmac_sha256(key, msg));
}

std::string sign_webhook(const std::vector<std::string_view>& secrets, std::string_view msg_id, int64_t timestamp_s,
                         std::string_view body) {
  std::string out;
  for (auto s : secrets) {
    if (!out.empty()) out += ' ';
    out += sign_webhook(s, msg_id, timestamp_s, body);
  }
  return out;
}

// ---------------------------------------------------------------- NotifierStage

NotifierStage::NotifierStage(DeliveryStore& deliveries, const Clock& clock)
    : store_(deliveries), clock_(clock) {}

Result<Effects> NotifierStage::handle(const std::vector<Record>& batch) {
  Effects out;
  std::map<std::string, std::vector<WebhookEndpoint>> endpoints;  // per merchant, this batch
  for (const auto& rec : batch) {
    const auto& type = rec.event.type;
    const bool is_payment = type == event_types::payment_succeeded || type == event_types::payment_failed;
    const bool is_refund = type == event_types::refund_succeeded || type == event_types::refund_failed;
    if (!is_payment && !is_refund) {
      out.dead_letters.push_back({rec, "unexpected event type for notifier: " + type, 1});
      continue;
    }
    auto payload = decode_payload(rec.event.data);
    if (!payload || (is_payment && !payload->payment) || (is_refund && !payload->refund)) {
      out.dead_letters.push_back(
          {rec, payload ? "event_schema_invalid: payload does not match " + type
                        : payload.error().code + ": " + payload.error().message, 1});
      continue;
    }
    MerchantEvent me;
    me.id = rec.event.id;
    me.type = type;
    me.created_ms = rec.event.time_ms;
    if (is_payment) {
      me.merchant_id = payload->payment->merchant_id;
      me.data_json = payment_json(*payload->payment);
    } else {
      me.merchant_id = payload->refund->merchant_id;
      me.data_json = refund_json(*payload->refund);
    }
    auto it = endpoints.find(me.merchant_id);
    if (it == endpoints.end()) {
      auto eps = store_.endpoints_for(me.merchant_id);
      if (!eps) {
        Error e = eps.error();
        e.retryable = true;   // the store is durable state: wait for it, never drop the event
        return e;
      }
      it = endpoints.emplace(me.merchant_id, std::move(eps.value())).first;
    }
    const int64_t now = clock_.now_ms();
    for (const auto& ep : it->second) {
      if (!ep.wants(type)) continue;
      WebhookDelivery d;
      d.id = deterministic_id("wd_", me.id, ep.id);
      d.event_id = me.id;
      d.endpoint_id = ep.id;
      d.merchant_id = me.merchant_id;
      d.status = DeliveryStatus::pending;
      d.attempts = 0;
      d.next_attempt_ms = now;
      out.deliveries.push_back(std::move(d));
    }
    out.merchant_events.push_back(std::move(me));
  }
  return out;
}

// ---------------------------------------------------------------- WebhookDispatcher

std::vector<std::chrono::milliseconds> default_webhook_retry_schedule() {
  return {5s, 5min, 30min, 2h, 5h, 10h, 10h, 10h, 10h, 10h, 10h};
}

namespace {
metrics::Counter& dead_letters_total() {
  return metrics::registry().counter("paystream_dead_letters_total", "Records sent to tx.dlq",
                                     {{"stage", "webhooks"}});
}

metrics::Counter& deliveries_total(const char* outcome) {
  return metrics::registry().counter("paystream_webhook_deliveries_total",
                                     "Webhook delivery attempts by outcome", {{"outcome", outcome}});
}

// Endpoint breakers by state, as counts: a per-endpoint series on the unauthenticated
// /metrics would tell anyone whether a merchant's target answers.
metrics::Gauge& endpoint_breakers(const char* state) {
  return metrics::registry().gauge("paystream_webhook_endpoint_breakers",
                                   "Webhook endpoint circuit breakers currently open or half-open",
                                   {{"state", state}});
}

void count_breaker_change(CircuitBreaker::State from, CircuitBreaker::State to) {
  using S = CircuitBreaker::State;
  if (from == S::open) endpoint_breakers("open").dec();
  if (from == S::half_open) endpoint_breakers("half_open").dec();
  if (to == S::open) endpoint_breakers("open").inc();
  if (to == S::half_open) endpoint_breakers("half_open").inc();
}

// The payment id a merchant event is about (the key of its dead letter).
std::string payment_id_of(const MerchantEvent& e) {
  boost::system::error_code ec;
  auto v = boost::json::parse(e.data_json, ec);
  if (ec || !v.is_object()) return e.id;
  const auto& o = v.get_object();
  const char* field = e.type.rfind("refund.", 0) == 0 ? "payment_id" : "id";
  if (auto* f = o.if_contains(field); f && f->is_string()) return std::string(f->get_string());
  return e.id;
}
}  // namespace

WebhookDispatcher::WebhookDispatcher(DeliveryStore& store, WebhookSender& sender, const Clock& clock,
                                     DispatcherOptions opts)
    : store_(store), sender_(sender), clock_(clock), opts_(std::move(opts)), rng_(opts_.seed) {
  dead_letters_total();  // exported at 0 from the start (alert baseline)
  // Every outcome exported at 0 from the start too: a scrape right after the first
  // delivery (or before any) sees the family, and rate() has a baseline.
  for (const char* o : {"succeeded", "failed_attempt", "dead_lettered", "circuit_open"}) deliveries_total(o);
  endpoint_breakers("open");
  endpoint_breakers("half_open");
}

WebhookDispatcher::~WebhookDispatcher() { stop(); }

void WebhookDispatcher::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] {
    name_this_thread("ps-webhooks");
    while (!stopping_) {
      if (run_once() == 0) {
        std::unique_lock lk(wake_mu_);
        wake_.wait_for(lk, opts_.idle_wait, [this] { return stopping_.load(); });
      }
    }
  });
}

void WebhookDispatcher::stop() {
  {
    std::lock_guard lk(wake_mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<CircuitBreaker> WebhookDispatcher::breaker_for(const std::string& endpoint_id) {
  std::lock_guard lk(breakers_mu_);
  auto it = breakers_.find(endpoint_id);
  if (it != breakers_.end()) return it->second;
  if (breakers_.size() >= opts_.max_breakers) {
    // Bound memory: forget closed breakers (they carry no state worth keeping).
    for (auto b = breakers_.begin(); b != breakers_.end();) {
      if (b->second->state() == CircuitBreaker::State::closed) b = breakers_.erase(b);
      else ++b;
    }
  }
  auto b = std::make_shared<CircuitBreaker>("webhook:" + endpoint_id, clock_, opts_.endpoint_breaker,
                                            count_breaker_change);
  breakers_.emplace(endpoint_id, b);
  return b;
}

std::chrono::milliseconds WebhookDispatcher::jitter(std::chrono::milliseconds base) {
  const auto hi = static_cast<int64_t>(double(base.count()) * std::clamp(opts_.jitter_fraction, 0.0, 1.0));
  if (hi <= 0) return 0ms;
  std::lock_guard lk(rng_mu_);
  return std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(0, hi)(rng_));
}

void WebhookDispatcher::deliver(const DueDelivery& d) {
  const auto breaker_ptr = breaker_for(d.endpoint.id);
  CircuitBreaker& breaker = *breaker_ptr;
  WebhookDelivery upd = d.delivery;
  const int64_t now = clock_.now_ms();
  std::optional<DeadLetter> letter;

  if (d.endpoint.disabled) {
    // Disabling fails the endpoint's pending deliveries; this one was created by a batch
    // that read the endpoint before it was disabled.
    upd.status = DeliveryStatus::failed;
    upd.last_error = "endpoint_disabled";
    deliveries_total("endpoint_disabled").inc();
  } else if (!breaker.allow()) {
    upd.next_attempt_ms = std::max(breaker.retry_at_ms(), now + opts_.breaker_reschedule_min.count());
    upd.last_error = "circuit_open";
    deliveries_total("circuit_open").inc();
  } else {
    const std::string body = merchant_event_json(d.event);
    const int64_t ts_s = now / 1000;
    HttpHeaders headers{{"webhook-id", d.event.id},
                        {"webhook-timestamp", std::to_string(ts_s)},
                        {"webhook-signature", sign_webhook(d.endpoint.signing_secrets(now), d.event.id, ts_s, body)},
                        {"content-type", "application/json"}};
    const auto t0 = std::chrono::steady_clock::now();
    auto r = sender_.post(d.endpoint.url, headers, body, opts_.attempt_timeout);
    metrics::registry()
        .histogram("paystream_webhook_attempt_duration_seconds", "Latency of one webhook POST")
        .observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    upd.attempts = d.delivery.attempts + 1;
    upd.last_http_status = r ? r.value() : 0;
    if (r && r.value() >= 200 && r.value() < 300) {
      breaker.on_success();
      upd.status = DeliveryStatus::succeeded;
      upd.last_error.clear();
      deliveries_total("succeeded").inc();
    } else {
      breaker.on_failure();
      upd.last_error = r ? "http_status_" + std::to_string(r.value()) : r.error().code + ": " + r.error().message;
      const size_t idx = size_t(std::max(1, upd.attempts) - 1);
      if (idx < opts_.retry_schedule.size()) {
        const auto delay = opts_.retry_schedule[idx];
        upd.status = DeliveryStatus::pending;
        upd.next_attempt_ms = now + delay.count() + jitter(delay).count();
        deliveries_total("failed_attempt").inc();
      } else {
        upd.status = DeliveryStatus::failed;
        Record original;
        std::string_view topic = topic_for(d.event.type);
        original.topic = (topic == topics::settled || topic == topics::failed) ? std::string(topic)
                                                                               : std::string(topics::settled);
        original.event.id = d.event.id;
        original.event.type = d.event.type;
        original.event.source = "/paystream/notifier";
        original.event.time_ms = d.event.created_ms;
        original.event.key = payment_id_of(d.event);
        original.event.data = body;
        letter = DeadLetter{std::move(original),
                            "webhook delivery to " + d.endpoint.id + " failed: " + upd.last_error,
                            upd.attempts};
        deliveries_total("dead_lettered").inc();
        dead_letters_total().inc();
        log::warn("webhook delivery dead-lettered",
                  {{"delivery_id", upd.id}, {"endpoint_id", d.endpoint.id}, {"event_id", d.event.id}});
      }
    }
  }
  auto rec = store_.record_attempt(upd, std::move(letter));
  if (!rec)
    log::warn("recording a webhook attempt failed; it will be retried",
              {{"delivery_id", upd.id}, {"error", rec.error().message}});
}

size_t WebhookDispatcher::run_once() {
  auto due = store_.due_deliveries(clock_.now_ms(), std::max<size_t>(1, opts_.batch_max));
  if (!due) {
    log::warn("listing due webhook deliveries failed", {{"error", due.error().message}});
    return 0;
  }
  auto& list = due.value();
  if (list.empty()) return 0;
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < list.size();) deliver(list[i]);
  };
  const size_t threads = std::min(std::max<size_t>(1, opts_.concurrency), list.size());
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
  return list.size();
}

}  // namespace ps
