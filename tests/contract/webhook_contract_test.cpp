// EndpointStore and DeliveryStore contracts: soft delete, due deliveries, attempts,
// dead-lettered deliveries and manual redelivery.
#include <gtest/gtest.h>

#include "contract/store_harness.hpp"

namespace ps::contract {
namespace {

class WebhookContract : public ::testing::TestWithParam<HarnessFactory> {
 protected:
  void SetUp() override {
    h = GetParam().make();
    now = h->clock.now_ms();
    ASSERT_TRUE(h->endpoints().create_endpoint(endpoint("we_1", "mer_1", {})).ok());
    ASSERT_TRUE(h->endpoints().create_endpoint(endpoint("we_2", "mer_1", {"payment.failed"})).ok());
    ASSERT_TRUE(h->endpoints().create_endpoint(endpoint("we_3", "mer_2", {"*"})).ok());
    Effects fx;
    fx.merchant_events.push_back({"evt_s", "mer_1", "payment.succeeded", "{\"id\":\"pay_1\"}", now});
    fx.merchant_events.push_back({"evt_f", "mer_1", "payment.failed", "{\"id\":\"pay_2\"}", now});
    ASSERT_TRUE(h->log().commit("notifier", {}, std::move(fx)).ok());
  }
  WebhookEndpoint endpoint(std::string id, std::string merchant, std::vector<std::string> events) {
    return WebhookEndpoint{id, merchant, "http://127.0.0.1:9/" + id, "whsec_abc", events, now};
  }
  WebhookDelivery delivery(const std::string& event, const std::string& ep, int64_t due) {
    WebhookDelivery d;
    d.id = deterministic_id("wd_", event, ep);
    d.event_id = event;
    d.endpoint_id = ep;
    d.merchant_id = "mer_1";
    d.next_attempt_ms = due;
    return d;
  }
  void schedule(std::vector<WebhookDelivery> ds) {
    Effects fx;
    fx.deliveries = std::move(ds);
    auto r = h->log().commit("notifier", {}, std::move(fx));
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  std::vector<DueDelivery> due(int64_t at) {
    auto r = h->deliveries().due_deliveries(at, 100);
    EXPECT_TRUE(r.ok());
    return r ? r.value() : std::vector<DueDelivery>{};
  }
  std::unique_ptr<StoreHarness> h;
  int64_t now = 0;
};

TEST_P(WebhookContract, EndpointsListGetAndSoftDelete) {
  auto list = h->endpoints().list_endpoints("mer_1");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[1].enabled_events, std::vector<std::string>{"payment.failed"});
  auto got = h->endpoints().get_endpoint("mer_1", "we_1");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->secret, "whsec_abc");
  EXPECT_EQ((*got)->url, "http://127.0.0.1:9/we_1");
  EXPECT_FALSE(h->endpoints().get_endpoint("mer_2", "we_1")->has_value());

  EXPECT_FALSE(h->endpoints().delete_endpoint("mer_2", "we_1").value());
  EXPECT_TRUE(h->endpoints().delete_endpoint("mer_1", "we_1").value());
  EXPECT_FALSE(h->endpoints().delete_endpoint("mer_1", "we_1").value());
  EXPECT_FALSE(h->endpoints().get_endpoint("mer_1", "we_1")->has_value());
  EXPECT_EQ(h->endpoints().list_endpoints("mer_1")->size(), 1u);
  EXPECT_EQ(h->deliveries().endpoints_for("mer_1")->size(), 1u);
}

TEST_P(WebhookContract, DueDeliveriesAreOldestFirstAndJoinEndpointAndEvent) {
  schedule({delivery("evt_s", "we_1", now + 50), delivery("evt_f", "we_1", now), delivery("evt_f", "we_2", now + 10)});
  EXPECT_EQ(due(now - 1).size(), 0u);
  auto d = due(now + 10);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].delivery.event_id, "evt_f");
  EXPECT_EQ(d[0].delivery.endpoint_id, "we_1");
  EXPECT_EQ(d[0].endpoint.url, "http://127.0.0.1:9/we_1");
  EXPECT_EQ(d[0].event.type, "payment.failed");
  EXPECT_EQ(d[0].event.data_json, "{\"id\":\"pay_2\"}");
  EXPECT_EQ(d[1].delivery.endpoint_id, "we_2");
  EXPECT_EQ(due(now + 100).size(), 3u);
  EXPECT_EQ(h->deliveries().due_deliveries(now + 100, 1)->size(), 1u);
}

TEST_P(WebhookContract, RecordAttemptReschedulesSucceedsAndDeadLetters) {
  schedule({delivery("evt_s", "we_1", now)});
  auto d = due(now).at(0).delivery;
  d.attempts = 1;
  d.next_attempt_ms = now + 1000;
  d.last_http_status = 500;
  d.last_error = "http_500";
  ASSERT_TRUE(h->deliveries().record_attempt(d, std::nullopt).ok());
  EXPECT_TRUE(due(now + 999).empty());
  auto again = due(now + 1000);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].delivery.attempts, 1);
  EXPECT_EQ(again[0].delivery.last_http_status, 500);
  EXPECT_EQ(again[0].delivery.last_error, "http_500");

  // Last attempt fails: delivery failed, a dead letter in the same transaction.
  d.attempts = 2;
  d.status = DeliveryStatus::failed;
  DeadLetter dl;
  dl.original.topic = "tx.settled";
  dl.original.offset = 1;
  dl.original.event = test_event("pay_1", event_types::payment_succeeded, now);
  dl.error = "webhook delivery failed: http_500";
  dl.attempts = 2;
  ASSERT_TRUE(h->deliveries().record_attempt(d, dl).ok());
  EXPECT_TRUE(due(now + 1'000'000).empty());
  EXPECT_EQ(h->count_events("tx.dlq"), 1);
  ASSERT_TRUE(h->deliveries().record_attempt(d, dl).ok());  // a retried call adds nothing
  EXPECT_EQ(h->count_events("tx.dlq"), 1);
  auto letters = h->dead_letters().list_dead_letters(10);
  ASSERT_EQ(letters->size(), 1u);
  EXPECT_EQ((*letters)[0].letter.error, dl.error);

  // Redelivered stage output re-schedules a failed delivery (dead-letter replay)...
  schedule({delivery("evt_s", "we_1", now + 5)});
  auto back = due(now + 5);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].delivery.attempts, 0);
  // ... and failing again is a new dead letter.
  ASSERT_TRUE(h->deliveries().record_attempt(d, dl).ok());
  EXPECT_EQ(h->count_events("tx.dlq"), 2);
}

TEST_P(WebhookContract, RedeliveredStageOutputNeverDuplicatesPendingOrSucceeded) {
  schedule({delivery("evt_s", "we_1", now + 100)});
  schedule({delivery("evt_s", "we_1", now)});  // same id: ignored while pending
  EXPECT_TRUE(due(now + 99).empty());
  auto d = due(now + 100).at(0).delivery;
  d.status = DeliveryStatus::succeeded;
  d.attempts = 1;
  d.last_http_status = 200;
  ASSERT_TRUE(h->deliveries().record_attempt(d, std::nullopt).ok());
  schedule({delivery("evt_s", "we_1", now)});
  EXPECT_TRUE(due(now + 1'000'000).empty());
}

TEST_P(WebhookContract, ManualRedeliveryTargetsEveryInterestedEndpoint) {
  schedule({delivery("evt_f", "we_1", now)});
  auto d = due(now).at(0).delivery;
  d.status = DeliveryStatus::succeeded;
  d.attempts = 3;
  ASSERT_TRUE(h->deliveries().record_attempt(d, std::nullopt).ok());
  ASSERT_TRUE(due(now + 10).empty());

  auto r = h->deliveries().redeliver("mer_1", "evt_f", now + 10);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
  auto again = due(now + 10);
  ASSERT_EQ(again.size(), 2u);  // we_1 (all events) and we_2 (payment.failed)
  for (auto& x : again) EXPECT_EQ(x.delivery.attempts, 0);

  // we_2 only wants payment.failed.
  ASSERT_TRUE(h->deliveries().redeliver("mer_1", "evt_s", now + 20).value());
  auto s = due(now + 20);
  int for_s = 0;
  for (auto& x : s) for_s += x.delivery.event_id == "evt_s";
  EXPECT_EQ(for_s, 1);

  EXPECT_FALSE(h->deliveries().redeliver("mer_2", "evt_f", now).value());
  EXPECT_FALSE(h->deliveries().redeliver("mer_1", "evt_unknown", now).value());
}

TEST_P(WebhookContract, DeletedEndpointAbandonsPendingDeliveries) {
  schedule({delivery("evt_f", "we_1", now), delivery("evt_f", "we_2", now)});
  ASSERT_EQ(due(now).size(), 2u);
  ASSERT_TRUE(h->endpoints().delete_endpoint("mer_1", "we_2").value());
  auto d = due(now);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].delivery.endpoint_id, "we_1");
  ASSERT_TRUE(h->deliveries().redeliver("mer_1", "evt_f", now).value());
  EXPECT_EQ(due(now).size(), 1u);
}

// Update: url, events and the disabled flag change in place (durably); disabling fails the
// endpoint's pending deliveries; a secret rotation keeps the previous secret and its
// expiry, which due deliveries carry to the dispatcher.
TEST_P(WebhookContract, UpdateChangesUrlEventsDisabledAndRotatesTheSecret) {
  schedule({delivery("evt_f", "we_1", now), delivery("evt_f", "we_2", now)});
  EndpointUpdate u;
  u.url = "http://127.0.0.1:9/moved";
  u.enabled_events = std::vector<std::string>{"refund.failed"};
  auto e = h->endpoints().update_endpoint("mer_1", "we_1", u);
  ASSERT_TRUE(e.ok()) << e.error().message;
  ASSERT_TRUE(e->has_value());
  EXPECT_EQ((*e)->url, "http://127.0.0.1:9/moved");
  EXPECT_EQ((*e)->enabled_events, std::vector<std::string>{"refund.failed"});
  EXPECT_EQ((*e)->secret, "whsec_abc");
  EXPECT_FALSE((*e)->disabled);

  EndpointUpdate rot;
  rot.new_secret = "whsec_new";
  rot.previous_secret_expires_ms = now + 60'000;
  ASSERT_TRUE(h->endpoints().update_endpoint("mer_1", "we_1", rot).ok());
  auto d = due(now);
  ASSERT_EQ(d.size(), 2u);
  const DueDelivery& d1 = d[0].endpoint.id == "we_1" ? d[0] : d[1];
  EXPECT_EQ(d1.endpoint.url, "http://127.0.0.1:9/moved") << "the next attempt goes to the new URL";
  EXPECT_EQ(d1.endpoint.secret, "whsec_new");
  EXPECT_EQ(d1.endpoint.previous_secret, "whsec_abc");
  EXPECT_EQ(d1.endpoint.previous_secret_expires_ms, now + 60'000);
  EXPECT_EQ(d1.event.id, "evt_f") << "the event columns still line up after the endpoint's";

  EndpointUpdate off;
  off.disabled = true;
  auto disabled = h->endpoints().update_endpoint("mer_1", "we_2", off);
  ASSERT_TRUE(disabled.ok() && disabled->has_value());
  EXPECT_TRUE((*disabled)->disabled);
  d = due(now);
  ASSERT_EQ(d.size(), 1u) << "the disabled endpoint's pending delivery failed";
  EXPECT_EQ(d[0].delivery.endpoint_id, "we_1");
  // Disabled endpoints are still listed, but get no new deliveries.
  auto listed = h->endpoints().list_endpoints("mer_1");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 2u);
  auto targets = h->deliveries().endpoints_for("mer_1");
  ASSERT_TRUE(targets.ok());
  bool saw_disabled = false;
  for (const auto& t : *targets)
    if (t.id == "we_2") {
      saw_disabled = true;
      EXPECT_TRUE(t.disabled);
      EXPECT_FALSE(t.wants("payment.failed")) << "it subscribed to payment.failed, but is disabled";
    }
  EXPECT_TRUE(saw_disabled);

  // Unknown, foreign and deleted endpoints are not found and not changed.
  EXPECT_FALSE(h->endpoints().update_endpoint("mer_1", "we_none", off)->has_value());
  EXPECT_FALSE(h->endpoints().update_endpoint("mer_2", "we_1", off)->has_value());
  ASSERT_TRUE(h->endpoints().delete_endpoint("mer_2", "we_3").value());
  EXPECT_FALSE(h->endpoints().update_endpoint("mer_2", "we_3", off)->has_value());

  h->reopen();
  auto back = h->endpoints().get_endpoint("mer_1", "we_1");
  ASSERT_TRUE(back.ok() && back->has_value());
  EXPECT_EQ((*back)->url, "http://127.0.0.1:9/moved");
  EXPECT_EQ((*back)->secret, "whsec_new");
  EXPECT_EQ((*back)->previous_secret, "whsec_abc");
  EXPECT_TRUE(h->endpoints().get_endpoint("mer_1", "we_2")->value().disabled);
}

INSTANTIATE_TEST_SUITE_P(Adapters, WebhookContract, ::testing::ValuesIn(store_factories()), factory_name);

}  // namespace
}  // namespace ps::contract
