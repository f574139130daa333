// DeadLetterStore contract: letters keep where they came from; replay puts the original
// event back on its topic once; a second replay is refused.
#include <gtest/gtest.h>

#include "contract/store_harness.hpp"

namespace ps::contract {
namespace {
using namespace std::chrono_literals;

class DeadLetterContract : public ::testing::TestWithParam<HarnessFactory> {
 protected:
  void SetUp() override { h = GetParam().make(); }
  std::unique_ptr<StoreHarness> h;
};

TEST_P(DeadLetterContract, StageDeadLetterIsListedShownAndReplayedOnce) {
  int64_t now = h->clock.now_ms();
  Effects in;
  in.produce.push_back(test_event("pay_bad", event_types::payment_validated, now));
  in.produce.push_back(test_event("pay_good", event_types::payment_validated, now));
  ASSERT_TRUE(h->log().commit("gateway", {}, std::move(in)).ok());
  auto recs = h->log().poll("processor", {"tx.validated"}, 10, 0ms).value();
  ASSERT_EQ(recs.size(), 2u);

  Effects fx;
  fx.dead_letters.push_back(DeadLetter{recs[0], "event_undecodable: not JSON", 3});
  ASSERT_TRUE(h->log().commit("processor", recs, fx).ok());
  if (h->log_dedups_event_ids()) {  // else a redelivered commit appends the letter again
    ASSERT_TRUE(h->log().commit("processor", recs, fx).ok());  // redelivered commit: one letter
  }
  EXPECT_EQ(h->count_events("tx.dlq"), 1);
  EXPECT_TRUE(h->log().poll("processor", {"tx.validated"}, 10, 0ms)->empty());

  auto list = h->dead_letters().list_dead_letters(10);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  const DeadLetterView& v = (*list)[0];
  EXPECT_FALSE(v.replayed);
  EXPECT_EQ(v.letter.original.topic, "tx.validated");
  EXPECT_EQ(v.letter.original.offset, recs[0].offset);
  EXPECT_EQ(v.letter.original.event.id, recs[0].event.id);
  EXPECT_EQ(v.letter.original.event.data, recs[0].event.data);
  EXPECT_EQ(v.letter.original.event.traceparent, recs[0].event.traceparent);
  EXPECT_EQ(v.letter.error, "event_undecodable: not JSON");
  EXPECT_EQ(v.letter.attempts, 3);
  EXPECT_GT(v.created_ms, 0);
  auto dlq_rec = h->log().poll("alerts", {"tx.dlq"}, 10, 0ms).value();
  ASSERT_EQ(dlq_rec.size(), 1u);
  EXPECT_EQ(dlq_rec[0].offset, v.offset);
  EXPECT_EQ(dlq_rec[0].event.type, "paystream.dead_letter");

  auto shown = h->dead_letters().get_dead_letter(v.offset);
  ASSERT_TRUE(shown.ok() && shown->has_value());
  EXPECT_EQ((*shown)->letter.error, v.letter.error);
  EXPECT_FALSE(h->dead_letters().get_dead_letter(v.offset + 1000)->has_value());
  EXPECT_FALSE(h->dead_letters().get_dead_letter(recs[1].offset)->has_value()) << "not a dlq offset";

  ASSERT_TRUE(h->dead_letters().replay_dead_letter(v.offset).ok());
  auto again = h->log().poll("processor", {"tx.validated"}, 10, 0ms).value();
  ASSERT_EQ(again.size(), 1u) << "the replayed event is seen exactly once";
  EXPECT_EQ(again[0].event.id, recs[0].event.id);
  EXPECT_EQ(again[0].event.data, recs[0].event.data);
  EXPECT_GT(again[0].offset, recs[1].offset);
  EXPECT_TRUE(h->dead_letters().get_dead_letter(v.offset)->value().replayed);

  auto twice = h->dead_letters().replay_dead_letter(v.offset);
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().kind, ErrorKind::conflict);
  EXPECT_EQ(twice.error().code, "already_replayed");
  EXPECT_EQ(h->count_events("tx.validated"), 3);

  // The replayed copy failing again is a new letter, and replayable once more.
  Effects fx2;
  fx2.dead_letters.push_back(DeadLetter{again[0], "still bad", 1});
  ASSERT_TRUE(h->log().commit("processor", again, fx2).ok());
  auto letters = h->dead_letters().list_dead_letters(10).value();
  ASSERT_EQ(letters.size(), 2u);
  EXPECT_EQ(letters[0].letter.error, "still bad");  // newest first
  ASSERT_TRUE(h->dead_letters().replay_dead_letter(letters[0].offset).ok());
  EXPECT_EQ(h->log().poll("processor", {"tx.validated"}, 10, 0ms)->size(), 1u);
}

TEST_P(DeadLetterContract, ReplayRepublishesTheLoggedEventNotTheLettersCopy) {
  if (!h->replay_uses_logged_event())
    GTEST_SKIP() << "a webhook letter is redelivered from the store, not appended to the log "
                    "(ReplayedWebhookDeadLetterIsDeliveredAgain covers it)";
  int64_t now = h->clock.now_ms();
  Event logged = test_event("pay_w", event_types::payment_succeeded, now);
  Effects in;
  in.produce.push_back(logged);
  ASSERT_TRUE(h->log().commit("ledger", {}, std::move(in)).ok());
  ASSERT_EQ(h->log().poll("notifier", {"tx.settled"}, 10, 0ms)->size(), 1u);
  ASSERT_TRUE(h->log().commit("notifier", h->log().poll("notifier", {"tx.settled"}, 10, 0ms).value(), {}).ok());
  // A webhook delivery gave up: its letter carries the webhook body.
  Record original;
  original.topic = "tx.settled";
  original.event = logged;
  original.event.data = "{\"object\":\"event\"}";
  WebhookDelivery d;
  d.id = "wd_1";
  d.event_id = logged.id;
  d.endpoint_id = "we_1";
  d.merchant_id = "mer_1";
  d.status = DeliveryStatus::failed;
  d.attempts = 8;
  ASSERT_TRUE(h->deliveries().record_attempt(d, DeadLetter{original, "gave up", 8}).ok());
  auto letters = h->dead_letters().list_dead_letters(10).value();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].letter.original.event.data, "{\"object\":\"event\"}");
  ASSERT_TRUE(h->dead_letters().replay_dead_letter(letters[0].offset).ok());
  auto again = h->log().poll("notifier", {"tx.settled"}, 10, 0ms).value();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].event.id, logged.id);
  EXPECT_EQ(again[0].event.data, logged.data);
  EXPECT_EQ(again[0].event.type, logged.type);
}

// A webhook delivery that gave up is delivered again once its letter (made as the webhook
// dispatcher makes it: source /paystream/notifier, data = the webhook body) is replayed.
// Embedded: the replay appends the logged event and the notifier, played here as
// NotifierStage does it (the merchant event and a pending delivery per endpoint for each
// record it polls), turns the failed delivery back into a pending one. Distributed: the
// replay redelivers in PostgreSQL and the notifier polls nothing. Either way the delivery
// is due again from the first attempt, and the letter is replayed once only.
TEST_P(DeadLetterContract, ReplayedWebhookDeadLetterIsDeliveredAgain) {
  const int64_t now = h->clock.now_ms();
  ASSERT_TRUE(h->endpoints()
                  .create_endpoint(WebhookEndpoint{"we_1", "mer_1", "http://127.0.0.1:9/we_1", "whsec_abc", {}, now})
                  .ok());
  const std::vector<std::string> topics{"tx.settled", "tx.failed"};
  auto notify = [&](const std::vector<Record>& recs) {
    Effects fx;
    for (const auto& r : recs) {
      fx.merchant_events.push_back({r.event.id, "mer_1", r.event.type, "{\"id\":\"pay_w\"}", r.event.time_ms});
      WebhookDelivery d;
      d.id = deterministic_id("wd_", r.event.id, "we_1");
      d.event_id = r.event.id;
      d.endpoint_id = "we_1";
      d.merchant_id = "mer_1";
      d.status = DeliveryStatus::pending;
      d.next_attempt_ms = h->clock.now_ms();
      fx.deliveries.push_back(std::move(d));
    }
    return h->log().commit("notifier", recs, std::move(fx));
  };
  Event logged = test_event("pay_w", event_types::payment_succeeded, now);
  Effects in;
  in.produce.push_back(logged);
  ASSERT_TRUE(h->log().commit("ledger", {}, std::move(in)).ok());
  auto recs = h->log().poll("notifier", topics, 10, 0ms).value();
  ASSERT_EQ(recs.size(), 1u);
  ASSERT_TRUE(notify(recs).ok());
  auto due = h->deliveries().due_deliveries(now, 10).value();
  ASSERT_EQ(due.size(), 1u);

  // The last attempt failed: the delivery is failed and its dead letter stored.
  WebhookDelivery gave_up = due[0].delivery;
  gave_up.status = DeliveryStatus::failed;
  gave_up.attempts = 8;
  gave_up.last_http_status = 500;
  gave_up.last_error = "http_status_500";
  Record original;
  original.topic = "tx.settled";
  original.event.id = logged.id;
  original.event.type = logged.type;
  original.event.source = "/paystream/notifier";
  original.event.time_ms = logged.time_ms;
  original.event.key = "pay_w";
  original.event.data = "{\"id\":\"" + logged.id + "\",\"object\":\"event\"}";
  ASSERT_TRUE(h->deliveries()
                  .record_attempt(gave_up, DeadLetter{original, "webhook delivery to we_1 failed: http_status_500", 8})
                  .ok());
  EXPECT_TRUE(h->deliveries().due_deliveries(now + 100'000'000, 10)->empty());
  auto letters = h->dead_letters().list_dead_letters(10).value();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].letter.original.event.source, "/paystream/notifier");

  h->clock.advance(std::chrono::milliseconds(1000));
  ASSERT_TRUE(h->dead_letters().replay_dead_letter(letters[0].offset).ok());
  ASSERT_TRUE(notify(h->log().poll("notifier", topics, 10, 0ms).value()).ok());
  auto again = h->deliveries().due_deliveries(h->clock.now_ms(), 10).value();
  ASSERT_EQ(again.size(), 1u) << "the failed delivery is due again";
  EXPECT_EQ(again[0].delivery.id, gave_up.id);
  EXPECT_EQ(again[0].delivery.status, DeliveryStatus::pending);
  EXPECT_EQ(again[0].delivery.attempts, 0);
  EXPECT_EQ(again[0].event.id, logged.id);
  EXPECT_EQ(again[0].endpoint.id, "we_1");
  EXPECT_TRUE(h->dead_letters().get_dead_letter(letters[0].offset)->value().replayed);
  auto twice = h->dead_letters().replay_dead_letter(letters[0].offset);
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().code, "already_replayed");
}

TEST_P(DeadLetterContract, ReplayOfUnknownOffsetIsNotFound) {
  auto r = h->dead_letters().replay_dead_letter(424242);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::not_found);
}

TEST_P(DeadLetterContract, ReplayedFlagSurvivesReopen) {
  int64_t now = h->clock.now_ms();
  Record orig;
  orig.topic = "tx.initiated";
  orig.offset = 17;
  orig.event = test_event("pay_x", event_types::payment_initiated, now);
  Effects fx;
  fx.dead_letters.push_back(DeadLetter{orig, "boom", 5});
  ASSERT_TRUE(h->log().commit("fraud", {}, std::move(fx)).ok());
  int64_t off = h->dead_letters().list_dead_letters(1)->at(0).offset;
  ASSERT_TRUE(h->dead_letters().replay_dead_letter(off).ok());
  h->reopen();
  EXPECT_TRUE(h->dead_letters().get_dead_letter(off)->value().replayed);
  EXPECT_EQ(h->dead_letters().replay_dead_letter(off).error().code, "already_replayed");
  EXPECT_EQ(h->count_events("tx.initiated"), 1);
}

INSTANTIATE_TEST_SUITE_P(Adapters, DeadLetterContract, ::testing::ValuesIn(store_factories()), factory_name);

}  // namespace
}  // namespace ps::contract
