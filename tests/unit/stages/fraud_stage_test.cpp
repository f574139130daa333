#include <gtest/gtest.h>

#include "adapters/memory/velocity_counter.hpp"
#include "fakes.hpp"
#include "stages/fraud_stage.hpp"

namespace ps {
namespace {
using namespace std::chrono_literals;
using testing::make_payment;
using testing::payment_of;
using testing::payment_record;

struct FraudFixture : ::testing::Test {
  ManualClock clock;
  InMemoryVelocityCounter velocity;

  Effects run(FraudStage& stage, const std::vector<Record>& batch) {
    auto r = stage.handle(batch);
    EXPECT_TRUE(r.ok());
    return r.ok() ? r.value() : Effects{};
  }
  void expect_declined(const Event& e) {
    EXPECT_EQ(e.type, "payment.failed");
    EXPECT_EQ(topic_for(e.type), "tx.failed");
    auto p = payment_of(e);
    EXPECT_EQ(p.status, PaymentStatus::failed);
    EXPECT_EQ(p.failure_code, "fraud_declined");
  }
  void expect_validated(const Event& e) {
    EXPECT_EQ(e.type, "payment.validated");
    EXPECT_EQ(topic_for(e.type), "tx.validated");
    EXPECT_EQ(payment_of(e).status, PaymentStatus::processing);
  }
};

TEST_F(FraudFixture, ApprovesCleanPaymentCarryingTraceparent) {
  FraudStage stage(velocity, clock);
  auto rec = payment_record(make_payment("pay_1"), event_types::payment_initiated);
  auto fx = run(stage, {rec});
  ASSERT_EQ(fx.produce.size(), 1u);
  expect_validated(fx.produce[0]);
  EXPECT_EQ(fx.produce[0].source, "/paystream/fraud");
  EXPECT_EQ(fx.produce[0].key, "pay_1");
  EXPECT_EQ(fx.produce[0].traceparent, rec.event.traceparent);
  EXPECT_EQ(fx.produce[0].id, make_event_id("pay_1", "payment.validated"));
}

TEST_F(FraudFixture, BlocklistDeclinesTokFraud) {
  FraudStage stage(velocity, clock);
  auto fx = run(stage, {payment_record(make_payment("pay_f", "tok_fraud"), event_types::payment_initiated)});
  ASSERT_EQ(fx.produce.size(), 1u);
  expect_declined(fx.produce[0]);
}

TEST_F(FraudFixture, AmountLimitPerCurrency) {
  FraudConfig cfg;
  cfg.amount_limit_minor["EUR"] = 5000;
  FraudStage stage(velocity, clock, cfg);
  auto fx = run(stage, {payment_record(make_payment("p_at", "tok_approve", 5000), event_types::payment_initiated),
                        payment_record(make_payment("p_over", "tok_approve", 5001), event_types::payment_initiated),
                        payment_record(make_payment("p_usd", "tok_approve", 999999, "USD"), event_types::payment_initiated)});
  ASSERT_EQ(fx.produce.size(), 3u);
  expect_validated(fx.produce[0]);
  expect_declined(fx.produce[1]);
  expect_validated(fx.produce[2]);   // no USD limit configured
}

TEST_F(FraudFixture, VelocityPerSourceWithinSlidingWindow) {
  FraudConfig cfg;
  cfg.max_per_source = 2;
  cfg.velocity_window_ms = 60'000;
  FraudStage stage(velocity, clock, cfg);
  std::vector<Record> batch;
  for (int i = 0; i < 3; ++i)
    batch.push_back(payment_record(make_payment("pv" + std::to_string(i), "tok_same"), event_types::payment_initiated));
  auto fx = run(stage, batch);
  ASSERT_EQ(fx.produce.size(), 3u);
  expect_validated(fx.produce[0]);
  expect_validated(fx.produce[1]);
  expect_declined(fx.produce[2]);
  clock.advance(60s);   // the window slid past the earlier hits
  auto fx2 = run(stage, {payment_record(make_payment("pv9", "tok_same"), event_types::payment_initiated)});
  expect_validated(fx2.produce.at(0));
}

TEST_F(FraudFixture, VelocityPerMerchant) {
  FraudConfig cfg;
  cfg.max_per_merchant = 1;
  FraudStage stage(velocity, clock, cfg);
  auto fx = run(stage, {payment_record(make_payment("pm1", "tok_a"), event_types::payment_initiated),
                        payment_record(make_payment("pm2", "tok_b"), event_types::payment_initiated),
                        payment_record(make_payment("pm3", "tok_c", 10, "EUR", "mer_2"), event_types::payment_initiated)});
  expect_validated(fx.produce.at(0));
  expect_declined(fx.produce.at(1));
  expect_validated(fx.produce.at(2));
}

TEST_F(FraudFixture, RiskProviderApprovesAndDeclines) {
  testing::FakeRisk risk;
  risk.fn = [](const RiskRequest& r) { return Result<RiskVerdict>(RiskVerdict{r.amount_minor < 700, 50, "x"}); };
  FraudStage stage(velocity, clock, {}, &risk);
  auto fx = run(stage, {payment_record(make_payment("r1", "tok_approve", 500), event_types::payment_initiated),
                        payment_record(make_payment("r2", "tok_approve", 800), event_types::payment_initiated)});
  EXPECT_EQ(risk.calls, 2);
  expect_validated(fx.produce.at(0));
  expect_declined(fx.produce.at(1));
}

TEST_F(FraudFixture, RiskTimeoutAppliesFallback) {
  testing::FakeRisk risk;
  risk.fn = [](const RiskRequest&) { return Result<RiskVerdict>(Error::timeout("risk slow")); };
  FraudConfig cfg;
  cfg.fallback_approve_below_minor = 1000;
  FraudStage stage(velocity, clock, cfg, &risk);
  auto fx = run(stage, {payment_record(make_payment("t1", "tok_approve", 999), event_types::payment_initiated),
                        payment_record(make_payment("t2", "tok_approve", 1000), event_types::payment_initiated)});
  EXPECT_EQ(risk.calls, 2);
  expect_validated(fx.produce.at(0));
  expect_declined(fx.produce.at(1));
}

TEST_F(FraudFixture, OpenBreakerSkipsProviderAndAppliesFallback) {
  testing::FakeRisk risk;
  risk.fn = [](const RiskRequest&) { return Result<RiskVerdict>(Error::unavailable("down", "risk down")); };
  FraudConfig cfg;
  cfg.fallback_approve_below_minor = 1000;
  cfg.risk_breaker = {2, 30s, 1};
  FraudStage stage(velocity, clock, cfg, &risk);
  run(stage, {payment_record(make_payment("b1", "tok_a", 10), event_types::payment_initiated),
              payment_record(make_payment("b2", "tok_b", 10), event_types::payment_initiated)});
  EXPECT_EQ(risk.calls, 2);
  EXPECT_EQ(stage.risk_breaker().state(), CircuitBreaker::State::open);
  risk.fn = [](const RiskRequest&) { return Result<RiskVerdict>(RiskVerdict{false, 99, "would decline"}); };
  auto fx = run(stage, {payment_record(make_payment("b3", "tok_c", 10), event_types::payment_initiated),
                        payment_record(make_payment("b4", "tok_d", 5000), event_types::payment_initiated)});
  EXPECT_EQ(risk.calls, 2);                 // not called while open
  expect_validated(fx.produce.at(0));       // fallback: below the limit
  expect_declined(fx.produce.at(1));        // fallback: above it
  clock.advance(30s);                       // half-open: the provider is asked again
  auto fx2 = run(stage, {payment_record(make_payment("b5", "tok_e", 10), event_types::payment_initiated)});
  EXPECT_EQ(risk.calls, 3);
  expect_declined(fx2.produce.at(0));
}

TEST_F(FraudFixture, UndecodableAndUnexpectedRecordsBecomeDeadLetters) {
  FraudStage stage(velocity, clock);
  auto wrong_type = payment_record(make_payment("w1"), event_types::payment_succeeded);
  auto fx = run(stage, {testing::garbage_record(1), wrong_type,
                        payment_record(make_payment("ok1"), event_types::payment_initiated)});
  ASSERT_EQ(fx.dead_letters.size(), 2u);
  EXPECT_NE(fx.dead_letters[0].error.find("event_undecodable"), std::string::npos);
  EXPECT_EQ(fx.dead_letters[0].original.offset, 1);
  ASSERT_EQ(fx.produce.size(), 1u);
  EXPECT_EQ(fx.produce[0].key, "ok1");
}

TEST(VelocityCounter, SlidingWindowCountsAndPrunes) {
  InMemoryVelocityCounter v({3, 1000});
  const int64_t t = 1'000'000;
  EXPECT_EQ(v.hit("k", t, 100).value(), 1);
  EXPECT_EQ(v.hit("k", t + 50, 100).value(), 2);
  EXPECT_EQ(v.hit("k", t + 100, 100).value(), 2);   // t left the window (now - 100, now]
  EXPECT_EQ(v.hit("k", t + 101, 100).value(), 3);
  EXPECT_EQ(v.hit("k", t + 102, 100).value(), 3);   // capped at max_per_key
  EXPECT_EQ(v.hit("other", t, 100).value(), 1);
  EXPECT_FALSE(v.hit("k", t, 0).ok());
}

TEST(VelocityCounter, KeyCountStaysBounded) {
  InMemoryVelocityCounter v({10, 160});   // 10 keys per stripe
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(v.hit("k" + std::to_string(i), 1000 + i, 5).value(), 1);
  EXPECT_LE(v.key_count(), 160u);
}

}  // namespace
}  // namespace ps
