#include <gtest/gtest.h>

#include "common/metrics.hpp"
#include "domain/ids.hpp"
#include "domain/json_codec.hpp"
#include "fakes.hpp"
#include "stages/notifier_stage.hpp"

namespace ps {
namespace {
using namespace std::chrono_literals;
using testing::make_payment;
using testing::make_refund;
using testing::payment_record;
using testing::refund_record;

TEST(SignWebhook, StandardWebhooksTestVector) {
  // The vector of the Standard Webhooks / Svix reference libraries (e.g. svix-php
  // WebhookTest::testSignFunctionWorks).
  EXPECT_EQ(sign_webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                         R"({"test": 2432232314})"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  // Without the prefix the same key is used; any change to the signed content changes it.
  EXPECT_EQ(sign_webhook("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                         R"({"test": 2432232314})"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  EXPECT_NE(sign_webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331,
                         R"({"test": 2432232314})"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

WebhookEndpoint endpoint(std::string id, std::vector<std::string> events, std::string merchant = "mer_1") {
  WebhookEndpoint e;
  e.id = std::move(id);
  e.merchant_id = std::move(merchant);
  e.url = "http://127.0.0.1:9/" + e.id;
  e.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  e.enabled_events = std::move(events);
  return e;
}

TEST(NotifierStage, EventsAndDeliveriesOnlyForWantingEndpoints) {
  ManualClock clock;
  testing::FakeDeliveryStore store;
  store.endpoints["mer_1"] = {endpoint("we_all", {}), endpoint("we_succ", {"payment.succeeded"}),
                              endpoint("we_ref", {"refund.failed", "refund.succeeded"})};
  NotifierStage stage(store, clock);
  auto p = make_payment("pay_n", "tok_approve", 1500);
  p.status = PaymentStatus::succeeded;
  auto f = make_payment("pay_f", "tok_decline", 1500);
  f.status = PaymentStatus::failed;
  f.failure_code = "card_declined";
  auto rf = make_refund("re_n", "pay_n", 100);
  rf.status = RefundStatus::succeeded;
  auto rec = payment_record(p, event_types::payment_succeeded);
  auto r = stage.handle({rec, payment_record(f, event_types::payment_failed),
                         refund_record(rf, event_types::refund_succeeded)});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->merchant_events.size(), 3u);
  const auto& me = r->merchant_events[0];
  EXPECT_EQ(me.id, rec.event.id);
  EXPECT_EQ(me.type, "payment.succeeded");
  EXPECT_EQ(me.merchant_id, "mer_1");
  EXPECT_EQ(me.created_ms, rec.event.time_ms);
  EXPECT_EQ(me.data_json, payment_json(p));
  EXPECT_EQ(r->merchant_events[2].data_json, refund_json(rf));
  // succeeded -> we_all, we_succ; failed -> we_all; refund.succeeded -> we_all, we_ref
  ASSERT_EQ(r->deliveries.size(), 5u);
  std::multiset<std::string> got;
  for (const auto& d : r->deliveries) {
    got.insert(d.event_id + "/" + d.endpoint_id);
    EXPECT_EQ(d.status, DeliveryStatus::pending);
    EXPECT_EQ(d.next_attempt_ms, clock.now_ms());
    EXPECT_EQ(d.id, deterministic_id("wd_", d.event_id, d.endpoint_id));
  }
  const auto e0 = r->merchant_events[0].id, e1 = r->merchant_events[1].id, e2 = r->merchant_events[2].id;
  EXPECT_EQ(got, (std::multiset<std::string>{e0 + "/we_all", e0 + "/we_succ", e1 + "/we_all", e2 + "/we_all",
                                             e2 + "/we_ref"}));
}

TEST(NotifierStage, StoreErrorIsRetryableAndGarbageIsDeadLettered) {
  ManualClock clock;
  testing::FakeDeliveryStore store;
  NotifierStage stage(store, clock);
  auto r = stage.handle({testing::garbage_record(3, "payment.succeeded")});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->dead_letters.size(), 1u);
  store.fail_endpoints = true;
  auto p = make_payment("pay_x");
  p.status = PaymentStatus::succeeded;
  auto r2 = stage.handle({payment_record(p, event_types::payment_succeeded)});
  ASSERT_FALSE(r2.ok());
  EXPECT_TRUE(r2.error().retryable);
}

struct DispatcherFixture : ::testing::Test {
  ManualClock clock;
  testing::FakeDeliveryStore store;
  testing::FakeSender sender;

  void add_due(const std::string& delivery_id, const WebhookEndpoint& ep, const std::string& type = "payment.succeeded") {
    DueDelivery d;
    d.endpoint = ep;
    d.event.id = "evt_" + delivery_id;
    d.event.merchant_id = ep.merchant_id;
    d.event.type = type;
    d.event.data_json = R"({"id":"pay_)" + delivery_id + R"(","object":"payment"})";
    d.event.created_ms = clock.now_ms() - 10;
    d.delivery.id = delivery_id;
    d.delivery.event_id = d.event.id;
    d.delivery.endpoint_id = ep.id;
    d.delivery.merchant_id = ep.merchant_id;
    d.delivery.next_attempt_ms = clock.now_ms();
    store.due.push_back(d);
  }
  DispatcherOptions opts() {
    DispatcherOptions o;
    o.retry_schedule = {1s, 10s, 100s};
    o.jitter_fraction = 0.1;
    o.endpoint_breaker = {100, 60s, 1};
    return o;
  }
};

TEST_F(DispatcherFixture, SuccessSendsSignedStandardWebhook) {
  add_due("wd_1", endpoint("we_1", {}));
  WebhookDispatcher disp(store, sender, clock, opts());
  EXPECT_EQ(disp.run_once(), 1u);
  ASSERT_EQ(sender.calls.size(), 1u);
  const auto& c = sender.calls[0];
  const auto& due = store.due[0];
  EXPECT_EQ(c.body, merchant_event_json(due.event));
  EXPECT_EQ(testing::FakeSender::header(c.headers, "webhook-id"), due.event.id);
  const auto ts = testing::FakeSender::header(c.headers, "webhook-timestamp");
  EXPECT_EQ(ts, std::to_string(clock.now_ms() / 1000));
  EXPECT_EQ(testing::FakeSender::header(c.headers, "webhook-signature"),
            sign_webhook(due.endpoint.secret, due.event.id, std::stoll(ts), c.body));
  EXPECT_EQ(testing::FakeSender::header(c.headers, "content-type"), "application/json");
  ASSERT_EQ(store.recorded.size(), 1u);
  EXPECT_EQ(store.recorded[0].first.status, DeliveryStatus::succeeded);
  EXPECT_EQ(store.recorded[0].first.attempts, 1);
  EXPECT_EQ(store.recorded[0].first.last_http_status, 200);
  EXPECT_EQ(disp.run_once(), 0u);   // nothing due any more
}

// During a secret rotation's overlap both secrets sign (Standard Webhooks: space-separated
// signatures, current first); after it only the current one.
TEST_F(DispatcherFixture, RotatedSecretSignsBesideTheNewOneUntilTheOverlapEnds) {
  WebhookEndpoint ep = endpoint("we_rot", {});
  ep.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  ep.previous_secret = "whsec_c2VjcmV0LW9mLXRoZS1wcmV2aW91cy1vbmU=";
  ep.previous_secret_expires_ms = clock.now_ms() + 1000;
  add_due("wd_rot1", ep);
  WebhookDispatcher disp(store, sender, clock, opts());
  ASSERT_EQ(disp.run_once(), 1u);
  ASSERT_EQ(sender.calls.size(), 1u);
  const auto& c = sender.calls[0];
  const int64_t ts = std::stoll(testing::FakeSender::header(c.headers, "webhook-timestamp"));
  const std::string both = testing::FakeSender::header(c.headers, "webhook-signature");
  EXPECT_EQ(both, sign_webhook(ep.secret, store.due[0].event.id, ts, c.body) + " " +
                      sign_webhook(ep.previous_secret, store.due[0].event.id, ts, c.body));
  EXPECT_NE(sign_webhook(ep.secret, store.due[0].event.id, ts, c.body),
            sign_webhook(ep.previous_secret, store.due[0].event.id, ts, c.body));

  clock.advance(1s);  // the overlap is over
  store.due.clear();
  add_due("wd_rot2", ep);
  ASSERT_EQ(disp.run_once(), 1u);
  ASSERT_EQ(sender.calls.size(), 2u);
  const auto& c2 = sender.calls[1];
  const int64_t ts2 = std::stoll(testing::FakeSender::header(c2.headers, "webhook-timestamp"));
  EXPECT_EQ(testing::FakeSender::header(c2.headers, "webhook-signature"),
            sign_webhook(ep.secret, store.due[0].event.id, ts2, c2.body));
}

// A delivery that reaches the dispatcher for a disabled endpoint is failed, not sent.
TEST_F(DispatcherFixture, DisabledEndpointIsNotSentTo) {
  WebhookEndpoint ep = endpoint("we_off", {});
  ep.disabled = true;
  EXPECT_FALSE(ep.wants("payment.succeeded"));
  add_due("wd_off", ep);
  WebhookDispatcher disp(store, sender, clock, opts());
  disp.run_once();
  EXPECT_TRUE(sender.calls.empty());
  ASSERT_EQ(store.recorded.size(), 1u);
  EXPECT_EQ(store.recorded[0].first.status, DeliveryStatus::failed);
  EXPECT_EQ(store.recorded[0].first.last_error, "endpoint_disabled");
}

TEST_F(DispatcherFixture, RetryScheduleThenDeadLetterAfterLastAttempt) {
  add_due("wd_2", endpoint("we_2", {}), "payment.failed");
  sender.fn = [](const std::string&) { return Result<int>(500); };
  WebhookDispatcher disp(store, sender, clock, opts());
  const std::vector<int64_t> schedule_ms{1000, 10'000, 100'000};
  for (size_t i = 0; i < schedule_ms.size(); ++i) {
    const int64_t t = clock.now_ms();
    ASSERT_EQ(disp.run_once(), 1u);
    const auto d = store.recorded.back().first;
    EXPECT_EQ(d.status, DeliveryStatus::pending);
    EXPECT_EQ(d.attempts, int(i + 1));
    EXPECT_EQ(d.last_http_status, 500);
    EXPECT_GE(d.next_attempt_ms, t + schedule_ms[i]);
    EXPECT_LE(d.next_attempt_ms, t + schedule_ms[i] + schedule_ms[i] / 10);
    EXPECT_FALSE(store.recorded.back().second.has_value());
    clock.advance(std::chrono::milliseconds(schedule_ms[i] - 1));
    EXPECT_EQ(disp.run_once(), 0u);   // not due before its scheduled time
    clock.advance(std::chrono::milliseconds(d.next_attempt_ms - clock.now_ms()));
  }
  ASSERT_EQ(disp.run_once(), 1u);   // the 4th and last attempt
  const auto& [d, letter] = store.recorded.back();
  EXPECT_EQ(d.status, DeliveryStatus::failed);
  EXPECT_EQ(d.attempts, 4);
  ASSERT_TRUE(letter.has_value());
  EXPECT_EQ(letter->attempts, 4);
  EXPECT_EQ(letter->original.topic, "tx.failed");
  EXPECT_EQ(letter->original.event.id, "evt_wd_2");
  EXPECT_EQ(letter->original.event.type, "payment.failed");
  EXPECT_EQ(letter->original.event.key, "pay_wd_2");
  EXPECT_EQ(letter->original.event.data, merchant_event_json(store.due[0].event));
  clock.advance(1000h);
  EXPECT_EQ(disp.run_once(), 0u);
  EXPECT_EQ(sender.calls.size(), 4u);
}

TEST_F(DispatcherFixture, BreakerPerEndpointReschedulesWithoutCountingAttempts) {
  auto o = opts();
  o.endpoint_breaker = {2, 60s, 1};
  o.retry_schedule = {1ms, 1ms, 1ms, 1ms, 1ms};
  o.jitter_fraction = 0;
  o.concurrency = 1;
  auto bad = endpoint("we_bad", {});
  auto good = endpoint("we_good", {});
  add_due("d_bad1", bad);
  add_due("d_good", good);
  sender.fn = [](const std::string& url) { return Result<int>(url.find("we_bad") != std::string::npos ? 503 : 204); };
  WebhookDispatcher disp(store, sender, clock, o);
  disp.run_once();               // bad: failure 1; good: succeeded
  clock.advance(1ms);
  disp.run_once();               // bad: failure 2 -> breaker open
  EXPECT_EQ(disp.breaker_for("we_bad")->state(), CircuitBreaker::State::open);
  EXPECT_EQ(disp.breaker_for("we_good")->state(), CircuitBreaker::State::closed);
  const size_t sent = sender.calls.size();
  clock.advance(1ms);
  disp.run_once();               // refused by the breaker: rescheduled, not sent, not counted
  EXPECT_EQ(sender.calls.size(), sent);
  const auto d = store.recorded.back().first;
  EXPECT_EQ(d.id, "d_bad1");
  EXPECT_EQ(d.attempts, 2);
  EXPECT_EQ(d.status, DeliveryStatus::pending);
  EXPECT_EQ(d.next_attempt_ms, disp.breaker_for("we_bad")->retry_at_ms());
  EXPECT_EQ(d.last_error, "circuit_open");
  EXPECT_EQ(disp.run_once(), 0u);   // not due until the breaker may be tried
  clock.advance(60s);
  sender.fn = [](const std::string&) { return Result<int>(200); };
  EXPECT_EQ(disp.run_once(), 1u);   // half-open trial succeeds
  EXPECT_EQ(store.recorded.back().first.status, DeliveryStatus::succeeded);
  EXPECT_EQ(store.recorded.back().first.attempts, 3);
  EXPECT_EQ(disp.breaker_for("we_bad")->state(), CircuitBreaker::State::closed);
}

// /metrics is unauthenticated: no series may name an endpoint (it would tell anyone
// whether a merchant's target answers); open endpoint breakers are exported as a count.
TEST_F(DispatcherFixture, EndpointBreakersAreCountedNotNamedInMetrics) {
  auto gauge = [](const char* state) {
    return metrics::registry().gauge("paystream_webhook_endpoint_breakers", "", {{"state", state}}).value();
  };
  auto o = opts();
  o.endpoint_breaker = {1, 60s, 1};
  o.retry_schedule = {1ms, 1ms, 1ms};
  o.jitter_fraction = 0;
  o.concurrency = 1;
  add_due("d_m1", endpoint("we_metrics_probe", {}));
  sender.fn = [](const std::string&) { return Result<int>(503); };
  WebhookDispatcher disp(store, sender, clock, o);
  const double open0 = gauge("open"), half0 = gauge("half_open");
  disp.run_once();   // failure 1 -> open
  ASSERT_EQ(disp.breaker_for("we_metrics_probe")->state(), CircuitBreaker::State::open);
  const std::string text = metrics::registry().render();
  EXPECT_EQ(text.find("we_metrics_probe"), std::string::npos) << "an endpoint id is on /metrics";
  EXPECT_EQ(text.find("dependency=\"webhook:"), std::string::npos);
  EXPECT_NE(text.find("paystream_webhook_endpoint_breakers{state=\"open\"}"), std::string::npos);
  EXPECT_EQ(gauge("open"), open0 + 1);
  clock.advance(60s);
  EXPECT_EQ(disp.breaker_for("we_metrics_probe")->state(), CircuitBreaker::State::half_open);
  EXPECT_EQ(gauge("open"), open0);
  EXPECT_EQ(gauge("half_open"), half0 + 1);
  sender.fn = [](const std::string&) { return Result<int>(200); };
  disp.run_once();   // the trial succeeds -> closed
  EXPECT_EQ(disp.breaker_for("we_metrics_probe")->state(), CircuitBreaker::State::closed);
  EXPECT_EQ(gauge("open"), open0);
  EXPECT_EQ(gauge("half_open"), half0);
}

TEST_F(DispatcherFixture, TransportErrorCountsAsFailedAttempt) {
  add_due("wd_t", endpoint("we_t", {}));
  sender.fn = [](const std::string&) { return Result<int>(Error::timeout("no answer")); };
  WebhookDispatcher disp(store, sender, clock, opts());
  EXPECT_EQ(disp.run_once(), 1u);
  const auto& d = store.recorded.back().first;
  EXPECT_EQ(d.attempts, 1);
  EXPECT_EQ(d.last_http_status, 0);
  EXPECT_NE(d.last_error.find("timeout"), std::string::npos);
}

TEST_F(DispatcherFixture, ThreadDeliversThenStops) {
  add_due("wd_th", endpoint("we_th", {}));
  auto o = opts();
  o.idle_wait = 5ms;
  WebhookDispatcher disp(store, sender, clock, o);
  disp.start();
  for (int i = 0; i < 400; ++i) {
    {
      std::lock_guard lk(store.mu);
      if (!store.recorded.empty()) break;
    }
    std::this_thread::sleep_for(5ms);
  }
  disp.stop();
  std::lock_guard lk(store.mu);
  ASSERT_EQ(store.recorded.size(), 1u);
  EXPECT_EQ(store.recorded[0].first.status, DeliveryStatus::succeeded);
}

}  // namespace
}  // namespace ps
